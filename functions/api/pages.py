"""Server-rendered HTML pages: customer receipts and the error-code reference.

Pages are built from string templates with the standard library only. Every value that
reaches the markup goes through `html.escape` first: merchant names, descriptions and
emails are merchant input, and the error pages take codes from callers. The pages carry
one small inline style sheet and nothing else: no scripts, fonts or images.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from html import escape
from typing import Any

from clearline.money import CURRENCIES

# Where the error-code reference is served: the index at ERRORS_PATH, each code below it.
ERRORS_PATH = "/errors"

_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

_CARD_BRANDS = {
    "amex": "American Express",
    "cartes_bancaires": "Cartes Bancaires",
    "diners": "Diners Club",
    "discover": "Discover",
    "eftpos_au": "eftpos Australia",
    "interac": "Interac",
    "jcb": "JCB",
    "mastercard": "Mastercard",
    "unionpay": "UnionPay",
    "unknown": "Card",
    "visa": "Visa",
}

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body {
  margin: 0; padding: 1.5rem 1rem; background: #f4f5f7; color: #1f2328;
  font: 16px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, Helvetica, Arial,
    sans-serif;
}
main {
  max-width: 40rem; margin: 0 auto; padding: 1.5rem; background: #fff;
  border: 1px solid #d8dce1; border-radius: 8px;
}
h1 { font-size: 1.4rem; margin: 0 0 0.25rem; }
h2 { font-size: 1.1rem; margin: 1.5rem 0 0.5rem; }
p { margin: 0.5rem 0; }
a { color: #0b57d0; }
code { font: 0.95em/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  background: #f0f2f4; padding: 0.05em 0.3em; border-radius: 4px; overflow-wrap: anywhere; }
.muted { color: #59636e; }
.amount { font-size: 2rem; font-weight: 600; margin: 0.75rem 0; }
.status { display: inline-block; padding: 0.1rem 0.5rem; border-radius: 999px;
  background: #e7f3ea; color: #1a6b32; font-size: 0.85rem; }
.status.other { background: #f0f2f4; color: #59636e; }
table { width: 100%; border-collapse: collapse; margin: 0.5rem 0; }
th, td { padding: 0.5rem 0; border-bottom: 1px solid #eceef1; vertical-align: top;
  text-align: left; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
tr.total th, tr.total td { font-weight: 600; border-bottom: 0; }
dl { margin: 0; }
dt { margin-top: 1rem; }
dd { margin: 0.25rem 0 0; }
footer { max-width: 40rem; margin: 1rem auto 0; font-size: 0.85rem; color: #59636e;
  text-align: center; }
@media (max-width: 30rem) {
  body { padding: 0; }
  main { border: 0; border-radius: 0; padding: 1rem; }
  .amount { font-size: 1.6rem; }
}
""".strip()

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="{robots}">
<title>{title}</title>
<style>
{css}
</style>
</head>
<body>
<main>
{body}
</main>
{footer}
</body>
</html>
"""


def _page(title: str, body: str, *, footer: str = "", indexable: bool = True) -> str:
    """A whole document; `title` is plain text, `body` and `footer` are escaped markup."""
    return _PAGE.format(
        robots="index, follow" if indexable else "noindex, nofollow",
        title=escape(title),
        css=_CSS,
        body=body,
        footer=f"<footer>{footer}</footer>" if footer else "",
    )


# ---- values -------------------------------------------------------------------------------


def currency_exponent(currency: str) -> int:
    """Digits after the decimal point for `currency` (ISO 4217); 2 for unlisted ones."""
    known = CURRENCIES.get(currency.lower())
    return known.exponent if known is not None else 2


def format_money(amount: int, currency: str) -> str:
    """An amount in minor units as text, e.g. 2000 usd -> "20.00 USD", 500 jpy -> "500 JPY",
    1230 kwd -> "1.230 KWD". Integer arithmetic only; thousands are separated by commas."""
    exponent = currency_exponent(currency)
    sign = "-" if amount < 0 else ""
    major, minor = divmod(abs(int(amount)), 10**exponent)
    text = f"{major:,}"
    if exponent:
        text += f".{minor:0{exponent}d}"
    return f"{sign}{text} {currency.upper()}"


def format_date(timestamp: int | float) -> str:
    """A Unix time as a UTC calendar date, e.g. "25 November 2026"."""
    day = dt.datetime.fromtimestamp(int(timestamp), tz=dt.UTC)
    return f"{day.day} {_MONTHS[day.month - 1]} {day.year}"


def _card_text(charge: Mapping[str, Any]) -> str | None:
    """ "Visa ending in 4242", from the card's brand and last four digits only."""
    details = charge.get("payment_method_details") or {}
    card = details.get("card") if isinstance(details, Mapping) else None
    if not isinstance(card, Mapping):
        return None
    raw_brand = str(card.get("brand") or "").strip()
    brand = _CARD_BRANDS.get(raw_brand.lower(), raw_brand.replace("_", " ").title() or "Card")
    last4 = "".join(ch for ch in str(card.get("last4") or "") if ch.isdigit())[-4:]
    if len(last4) != 4:
        return brand
    return f"{brand} ending in {last4}"


def _status_text(charge: Mapping[str, Any]) -> tuple[str, bool]:
    """What the customer is told about the payment, and whether it went through."""
    status = str(charge.get("status") or "")
    captured = int(charge.get("amount_captured") or 0)
    refunded = int(charge.get("amount_refunded") or 0)
    if status == "failed":
        return "Payment failed", False
    if status == "pending":
        return "Payment pending", False
    if charge.get("refunded") or (captured and refunded >= captured):
        return "Refunded", True
    if refunded:
        return "Partially refunded", True
    if status == "succeeded" and not captured:
        return "Authorized, not yet charged", False
    if charge.get("paid"):
        return "Paid", True
    return status.replace("_", " ").capitalize() or "Unknown", False


def _row(label: str, value: str, *, total: bool = False) -> str:
    css = ' class="total"' if total else ""
    return f'<tr{css}><th scope="row">{label}</th><td class="num">{value}</td></tr>'


# ---- receipts -----------------------------------------------------------------------------


def receipt_page(charge: Mapping[str, Any], merchant_name: str) -> str:
    """The customer's receipt for `charge` (a charge in Stripe's JSON shape)."""
    currency = str(charge.get("currency") or "usd")
    amount = int(charge.get("amount") or 0)
    captured = int(charge.get("amount_captured") or 0)
    refunded = int(charge.get("amount_refunded") or 0)
    paid_amount = captured or amount
    status, went_through = _status_text(charge)
    merchant = escape(merchant_name)
    charge_id = escape(str(charge.get("id") or ""))

    parts = [
        f'<p class="muted">Receipt from {merchant}</p>',
        f"<h1>{merchant}</h1>",
        f'<p class="amount">{escape(format_money(paid_amount, currency))}</p>',
        f'<p><span class="status{"" if went_through else " other"}">{escape(status)}</span></p>',
    ]

    details = [_row("Receipt number", f"<code>{charge_id}</code>")]
    if charge.get("created") is not None:
        details.append(_row("Date", escape(format_date(charge["created"]))))
    card = _card_text(charge)
    if card is not None:
        details.append(_row("Payment method", escape(card)))
    if charge.get("receipt_email"):
        details.append(_row("Sent to", escape(str(charge["receipt_email"]))))
    parts += ["<h2>Summary</h2>", "<table>", *details, "</table>"]

    if charge.get("description"):
        parts += ["<h2>Description</h2>", f"<p>{escape(str(charge['description']))}</p>"]

    refunds = [r for r in ((charge.get("refunds") or {}).get("data") or []) if r]
    if refunds or refunded:
        rows = [_row("Amount paid", escape(format_money(paid_amount, currency)))]
        for refund in sorted(refunds, key=lambda r: int(r.get("created") or 0)):
            label = "Refund"
            if refund.get("created") is not None:
                label += f" on {format_date(refund['created'])}"
            state = str(refund.get("status") or "succeeded")
            if state != "succeeded":
                label += f" ({state.replace('_', ' ')})"
            refund_currency = str(refund.get("currency") or currency)
            money = format_money(-int(refund.get("amount") or 0), refund_currency)
            rows.append(_row(escape(label), escape(money)))
        net = paid_amount - refunded
        rows.append(_row("Net amount", escape(format_money(net, currency)), total=True))
        parts += ["<h2>Refunds</h2>", "<table>", *rows, "</table>"]

    footer = (
        f"Questions about this payment? Contact {merchant} and quote the receipt number "
        f"<code>{charge_id}</code>."
    )
    return _page(
        f"Receipt from {merchant_name}",
        "\n".join(parts),
        footer=footer,
        indexable=False,
    )


# ---- after a 3-D Secure challenge, for an intent with no return_url ------------------------


def authentication_done_page(redirect_status: str) -> str:
    """What a customer sees after authenticating when the merchant gave no page to return to."""
    said = {
        "succeeded": "Your payment was authenticated. You can close this window.",
        "failed": "Your payment could not be authenticated. Return to the merchant to try "
        "another payment method.",
    }.get(redirect_status, "Your payment is being processed. You can close this window.")
    return _page("Payment authentication", f"<h1>Authentication complete</h1><p>{escape(said)}</p>")


# ---- error codes --------------------------------------------------------------------------

# Every `code` Clearline puts in an error body, and every `decline_code` a card error can
# carry: what happened, and what to do about it.
ERROR_CODES: dict[str, str] = {
    "amount_too_large": (
        "The amount is above what this operation allows: more than 99,999,999 in the "
        "currency's minor unit, more than the charge authorized (for a capture), or more than "
        "is left to refund. Send a smaller amount; the message states the limit."
    ),
    "amount_too_small": (
        "The amount is below the smallest one allowed: each currency has a minimum charge "
        "(for example 0.50 USD), and captures and refunds must be positive. Send a larger "
        "amount."
    ),
    "api_key_invalid": (
        "The API key in the Authorization header is not one Clearline knows: it is mistyped, "
        "was rolled or deleted, or belongs to another environment. Copy the current key from "
        "your account and send it again."
    ),
    "api_key_missing": (
        "The request carried no API key. Send your secret key in the Authorization header, as "
        "'Authorization: Bearer sk_...' (or as the user name of Basic auth)."
    ),
    "api_version_invalid": (
        "The Stripe-Version header is not a version Clearline recognizes. Send a date-based "
        "version such as 2024-06-20, or leave the header out to use your account's pinned "
        "version."
    ),
    "authentication_required": (
        "The card's issuer asks the customer to authenticate this payment (3-D Secure), and "
        "nobody could: the payment was off-session, or made through the Charges API. Bring the "
        "customer back to confirm a PaymentIntent on-session, where they can pass the challenge."
    ),
    "card_declined": (
        "The card issuer declined the payment. The decline_code, when present, says why; ask "
        "the customer to use another card or to contact their bank."
    ),
    "card_number_in_request": (
        "The request contained something that looks like a card number. Clearline never "
        "accepts raw card numbers: collect card details with the processor's tokenization and "
        "send the resulting token (tok_... or pm_...) instead."
    ),
    "charge_already_captured": (
        "The charge was captured already, so it cannot be captured or released again. Fetch "
        "the charge to see its current state; refund it if the money should go back."
    ),
    "charge_already_refunded": (
        "The charge has been refunded in full (or its uncaptured hold was released), so there "
        "is nothing left to capture or refund. No further action is needed."
    ),
    "charge_disputed": (
        "The cardholder's bank has charged this payment back: the money has already been "
        "returned to the cardholder through the dispute, so it cannot be refunded as well. "
        "Respond to the dispute instead; if you win it, the charge becomes refundable again."
    ),
    "dispute_already_submitted": (
        "Evidence for this dispute has already been submitted and is with the card network. "
        "Wait for the decision (a charge.dispute.closed event); staged fields can no longer "
        "be changed."
    ),
    "balance_insufficient": (
        "The payout is larger than the available balance in its currency. Pay out at most "
        "the available amount that GET /v1/balance shows, or wait for pending funds to "
        "become available."
    ),
    "routing_number_invalid": (
        "The bank account's routing number is not a valid nine-digit ABA routing number "
        "(its check digit does not match). Check it against the merchant's bank statement; "
        "the sandbox bank's is 110000000."
    ),
    "account_number_invalid": (
        "The bank account number must be 4 to 17 digits, with no spaces or dashes."
    ),
    "resource_already_exists": (
        "Something with that name already exists: a value list's alias is unique in your "
        "account, and a value is in a list at most once. Use the existing one, or another "
        "name."
    ),
    "fx_rates_unavailable": (
        "Clearline has no exchange rates recent enough to convert this payment into your "
        "settlement currency, so it refuses rather than guess (nothing was charged or "
        "recorded). Retry with backoff; charges in one of your settlement currencies are not "
        "affected."
    ),
    "fx_quote_expired": (
        "The FX quote's lock has expired, or it never had one (lock_duration none). Create a "
        "new quote with a lock (five_minutes, hour or day) and use it before lock_expires_at."
    ),
    "fx_quote_invalid": (
        "The FX quote cannot convert this payment: your account has no such quote, or it is "
        "for another currency pair (the payment's currency must be among its "
        "from_currencies, and its to_currency the currency the payment settles in)."
    ),
    "payouts_not_allowed": (
        "Payouts need a bank account in the payout's currency. An operator sets one with "
        "`clearline merchants bank-account`; then retry the payout."
    ),
    "payout_not_cancelable": (
        "Only a pending payout you created can be canceled: once the bank has it (in_transit) "
        "it cannot be recalled, and automatic payouts are not canceled by request."
    ),
    "charge_expired_for_capture": (
        "The authorization was not captured within the capture window, so the hold on the "
        "customer's card was released. Create a new charge to collect the payment."
    ),
    "charge_not_capturable": (
        "The charge cannot be captured: it failed, or the processor refused the capture. "
        "Check the charge's failure details, and create a new charge if the payment is still "
        "owed."
    ),
    "charge_not_refundable": (
        "The charge failed, so no money moved and there is nothing to refund. No action is needed."
    ),
    "connect_not_supported": (
        "The request used a Connect feature (such as the Stripe-Account header or "
        "on_behalf_of), which Clearline does not support. Each merchant has its own account: "
        "call the API with that merchant's own keys."
    ),
    "expired_card": (
        "The card has expired. Ask the customer to check the expiry date or to pay with "
        "another card."
    ),
    "fraudulent": (
        "The issuer declined the payment because it suspects fraud. Do not retry; tell the "
        "customer only that the card was declined, and review the order before accepting "
        "another payment for it."
    ),
    "generic_decline": (
        "The issuer declined the payment without giving a reason. Ask the customer to contact "
        "their bank or to use another card."
    ),
    "idempotency_key_in_use": (
        "Another request with the same Idempotency-Key is still being processed, usually "
        "because it was sent twice. Wait a moment and retry with the same key: once the first "
        "request finishes, the retry returns its result."
    ),
    "idempotency_key_invalid": (
        "The Idempotency-Key header is too long. Use a value of at most 255 characters, such "
        "as a UUID."
    ),
    "idempotency_key_required": (
        "Every POST request needs an Idempotency-Key header, so that a retried request can "
        "never move money twice. Send a unique value (such as a UUID) per operation and reuse "
        "it only when retrying that operation."
    ),
    "incorrect_cvc": (
        "The card's security code (CVC) is wrong. Ask the customer to enter it again, or to "
        "use another card."
    ),
    "incorrect_number": (
        "The card number fails its check digit (Luhn): it was mistyped. Ask the customer to "
        "enter it again. Card numbers only ever go to the card vault, never to Clearline's API."
    ),
    "insufficient_funds": (
        "The card does not have enough funds or credit for this payment. Ask the customer to "
        "use another card or another payment method."
    ),
    "invalid_cvc": (
        "The card's security code is not valid: three digits, or four for American Express. "
        "Ask the customer to enter it again."
    ),
    "invalid_expiry_month": (
        "The card's expiry month is not a month (1 to 12), or with its year it is in the "
        "past. Ask the customer to check the expiry date."
    ),
    "invalid_expiry_year": (
        "The card's expiry year is not a year, or it is in the past. Ask the customer to check "
        "the expiry date, or to use another card."
    ),
    "invalid_number": (
        "The card number is not a card number: digits only (spaces and dashes are ignored), 12 "
        "to 19 of them. Ask the customer to enter it again."
    ),
    "lock_timeout": (
        "Another request was changing the same object at the same time, so this one was "
        "stopped before it changed anything. Retry shortly, with the same Idempotency-Key."
    ),
    "lost_card": (
        "The card has been reported lost, so the issuer declined the payment. Do not retry; "
        "tell the customer only that the card was declined and ask for another payment method."
    ),
    "method_not_allowed": (
        "The URL exists but does not accept this HTTP method. Use one of the methods listed "
        "in the response's Allow header."
    ),
    "parameter_invalid": (
        "A parameter, or the request body itself, is malformed: a value has the wrong type or "
        "format, or the body could not be parsed. The param field names the offending "
        "parameter; correct it and send the request again."
    ),
    "parameter_invalid_currency": (
        "The currency is not one Clearline supports. Send a supported three-letter ISO "
        "currency code in lowercase, such as usd or eur; the message lists them all."
    ),
    "parameter_missing": (
        "A required parameter was not sent. The param field names it; add it and send the "
        "request again."
    ),
    "parameter_unknown": (
        "The request contained a parameter that this endpoint does not accept, often a typo "
        "or a parameter of another endpoint. Remove it, or check its spelling."
    ),
    "payment_intent_authentication_failure": (
        "The customer did not pass the 3-D Secure challenge, so nothing was charged. The "
        "PaymentIntent is back at requires_payment_method: let the customer try again or choose "
        "another card."
    ),
    "payment_intent_invalid_parameter": (
        "The client_secret sent with a publishable key does not belong to this PaymentIntent. "
        "Pass the client_secret your server received when it created the intent, unchanged."
    ),
    "payment_intent_unexpected_state": (
        "The PaymentIntent's status does not allow this: only an intent that requires a payment "
        "method or confirmation can be confirmed or updated, only one that requires capture "
        "can be captured, and a succeeded or canceled one cannot be canceled. Retrieve it "
        "and act on its status."
    ),
    "payment_method_unexpected_state": (
        "The PaymentMethod cannot be used this way as things stand: it is attached to another "
        "customer (detach it first, or name that customer), or it is not attached to any (so it "
        "cannot be detached)."
    ),
    "processing_error": (
        "An error occurred while the card was being processed, and the customer was not "
        "charged. Try again; if it keeps failing, ask the customer for another card."
    ),
    "processor_busy": (
        "The card processor is at its rate limit, so the request was not sent to it: nothing "
        "was charged or moved. Retry with the same Idempotency-Key (the Stripe libraries do, "
        "as the Stripe-Should-Retry header asks)."
    ),
    "processor_unavailable": (
        "The card processor did not answer in time, so the outcome is not known yet. Retry "
        "with the same Idempotency-Key: the retry finishes the original operation and never "
        "charges twice."
    ),
    "rate_limit": (
        "Too many requests in a short time: an API key may make 25 a second in test mode and 100 "
        "live (or its account's own limit), an address that keeps failing authentication is "
        "refused for a while, and the card vault limits publishable keys. Back off "
        "exponentially; Stripe-Rate-Limited-Reason or Retry-After says which limit it was."
    ),
    "refund_not_cancelable": (
        "Only a pending refund, one the processor has not made yet, can be canceled. This one "
        "succeeded, failed or was canceled already; its status says which."
    ),
    "request_too_large": (
        "The request body is larger than Clearline accepts (64 KiB). Send fewer or shorter "
        "parameters, for example by trimming metadata."
    ),
    "resource_missing": (
        "The object named in the request does not exist, or belongs to another account or "
        "environment; for a new charge, the card token is unknown. Check the ID and the API "
        "key you are using."
    ),
    "secret_key_required": (
        "This endpoint needs a secret key, and the request used a publishable key. Make the "
        "call from your server with your secret key (sk_...); never put it in client code."
    ),
    "service_unavailable": (
        "Clearline could not reach a service it depends on, so it refused the request rather "
        "than risk an inconsistent result. Retry after a short pause, with the same "
        "Idempotency-Key."
    ),
    "stolen_card": (
        "The card has been reported stolen, so the issuer declined the payment. Do not retry; "
        "tell the customer only that the card was declined and ask for another payment method."
    ),
    "token_already_used": (
        "The card token was used before: a token is good for one use only. Tokenize the card "
        "again, or use the PaymentMethod the first use made."
    ),
    # The dashboard's own refusals, shown on its pages.
    "csrf_token_invalid": (
        "A dashboard form was sent without its session's CSRF token, or with another one: it "
        "did not come from a page of this session. Nothing was changed; reload the page and "
        "send the form again."
    ),
    "filter_invalid": (
        "A dashboard filter is not one the search can use: a date that is not a date, an "
        "amount that is not a whole number of minor units, or a value with quotes in it. "
        "Correct the filter and search again."
    ),
    "sign_in_link_invalid": (
        "The dashboard sign-in link was used before, has expired (links last 15 minutes), "
        "or never existed. Ask for a new one with `clearline dashboard link`."
    ),
    "sign_in_failed": (
        "Signing in to the deployed dashboard did not complete: the sign-in was not started "
        "from this browser, the sign-in service refused the code, the identity token did "
        "not verify, or the user names no merchant (its custom:merchant attribute)."
    ),
}

# Values that appear as `decline_code` on a card error, rather than (or as well as) `code`.
DECLINE_CODES = frozenset(
    {
        "expired_card",
        "fraudulent",
        "generic_decline",
        "incorrect_cvc",
        "insufficient_funds",
        "lost_card",
        "processing_error",
        "stolen_card",
        "authentication_required",
    }
)
# Decline codes that only ever appear as `decline_code`, never as the error's `code`.
_DECLINE_ONLY = frozenset(
    {
        "authentication_required",
        "fraudulent",
        "generic_decline",
        "insufficient_funds",
        "lost_card",
        "stolen_card",
    }
)


def _where(code: str) -> str:
    if code in _DECLINE_ONLY:
        return "Appears as <code>error.decline_code</code> on card errors."
    if code in DECLINE_CODES:
        return "Appears as <code>error.code</code> and as <code>error.decline_code</code>."
    return "Appears as <code>error.code</code>."


def _code_href(code: str) -> str:
    return escape(f"{ERRORS_PATH}/{code}")


def error_codes_page(codes: Mapping[str, str]) -> str:
    """The index of error codes: one entry per code, with an anchor named after it."""
    entries = []
    for code in sorted(codes):
        anchor = escape(code)
        entries.append(
            f'<dt id="{anchor}"><a href="#{anchor}"><code>{anchor}</code></a></dt>\n'
            f"<dd>{escape(codes[code])} "
            f'<a href="{_code_href(code)}">More about {anchor}</a></dd>'
        )
    contents = "\n".join(
        f'<li><a href="#{escape(code)}"><code>{escape(code)}</code></a></li>'
        for code in sorted(codes)
    )
    body = "\n".join(
        [
            "<h1>Error codes</h1>",
            "<p>When Clearline refuses a request, the JSON error carries a "
            "<code>code</code> (and, for card declines, a <code>decline_code</code>). "
            "This page explains each one and what to do about it.</p>",
            "<h2>Contents</h2>",
            f"<ul>{contents}</ul>",
            "<h2>All codes</h2>",
            "<dl>",
            *entries,
            "</dl>",
        ]
    )
    return _page("Error codes · Clearline", body)


def error_code_page(code: str, explanation: str) -> str:
    """One error code: what it means, what to do, and where it appears in an error."""
    shown = escape(code)
    body = "\n".join(
        [
            f'<p class="muted"><a href="{escape(ERRORS_PATH)}#{shown}">All error codes</a></p>',
            f"<h1><code>{shown}</code></h1>",
            f"<p>{escape(explanation)}</p>",
            f'<p class="muted">{_where(code)}</p>',
        ]
    )
    return _page(f"{code} · Clearline error codes", body)
