"""The card vault's domain: the only code that ever holds a card number.

Cards from browsers are validated (`card_data`, `requests`), sealed under KMS and stored
(`sealing`, `service`), shown in Stripe's shapes without the number (`rendering`), put
through 3-D Secure test challenges (`authentications`) and forwarded to the processor
(`forwarding`); publishable-key traffic is rate limited (`rate_limits`). No API Gateway
event shapes here: the vault function's routes translate requests into these calls.
"""
