"""Stripe's shapes, rendered at the edges from the domain's typed models.

The domain library (`clearline`) never imports this package: it returns models, and the
two edges that speak Stripe's wire format (the API's responses, and the relay that
publishes events to webhooks) render them here. This is the one place that knows which
fields a Stripe object has, which are null, how ids expand and where URLs point.
"""
