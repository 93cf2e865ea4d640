"""The vault's HTML pages for people: the 3-D Secure test challenge, and a page for a
link that leads nowhere. Every value reaches the markup through `html.escape`; the one
inline style sheet runs under the response's CSP nonce."""

from __future__ import annotations

from html import escape

from clearline.money import CURRENCIES
from vault.models import Authentication

_CSS = """
* { box-sizing: border-box; }
body {
  margin: 0; padding: 2rem 1rem; background: #f4f5f7; color: #1f2328;
  font: 16px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, Helvetica, Arial,
    sans-serif;
}
main {
  max-width: 26rem; margin: 0 auto; padding: 1.5rem; background: #fff;
  border: 1px solid #d8dce1; border-radius: 8px; text-align: center;
}
.badge {
  display: inline-block; padding: 0 .5rem; border-radius: 4px; background: #fff4d6;
  color: #7a5300; font-size: .8rem; font-weight: 600; letter-spacing: .04em;
}
.amount { font-size: 1.6rem; font-weight: 600; margin: .5rem 0 1rem; }
form { margin: .5rem 0; }
button {
  width: 100%; padding: .7rem; border: 0; border-radius: 6px; font: inherit; cursor: pointer;
}
#complete-authentication { background: #2f6f4f; color: #fff; }
#fail-authentication { background: #e8eaed; color: #1f2328; }
.muted { color: #59636e; font-size: .9rem; }
"""


def format_amount(amount: int, currency: str) -> str:
    known = CURRENCIES.get(currency.lower())
    if known is None:
        return f"{amount} {currency.upper()}"
    if known.exponent == 0:
        return f"{amount:,} {currency.upper()}"
    return f"{amount / 10**known.exponent:,.{known.exponent}f} {currency.upper()}"


def _page(title: str, body: str, nonce: str, head: str = "") -> str:
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">{head}
<title>{escape(title)}</title>
<style nonce="{escape(nonce)}">{_CSS}</style>
</head>
<body>
<main>
{body}
</main>
</body>
</html>
"""


def challenge_page(authentication: Authentication, nonce: str) -> str:
    """Stripe's test challenge: the cardholder completes or fails it. The forms post to
    the page's own URL, whatever stage prefix it is served under."""
    amount = format_amount(authentication.amount, authentication.currency)
    if authentication.status == "challenge_required":
        actions = """<form method="post">
<input type="hidden" name="outcome" value="succeeded">
<button id="complete-authentication" type="submit">Complete authentication</button>
</form>
<form method="post">
<input type="hidden" name="outcome" value="failed">
<button id="fail-authentication" type="submit">Fail authentication</button>
</form>"""
    else:
        actions = (
            f'<p class="muted">This authentication has already been answered '
            f"({escape(authentication.status)}).</p>"
        )
    body = f"""<span class="badge">TEST MODE</span>
<h1>3D Secure 2 test page</h1>
<p>Your bank asks you to confirm this payment.</p>
<p class="amount">{escape(amount)}</p>
{actions}
<p class="muted">This is a test authentication: no bank is involved, and no real card
can be charged.</p>"""
    return _page("Confirm your payment", body, nonce)


def return_page(complete_url: str, nonce: str) -> str:
    """After the answer: on to Clearline, which records it and sends the customer back to
    the merchant. A refresh, not a form's redirect, so no form-action policy holds it."""
    url = escape(complete_url, quote=True)
    body = f"""<h1>Returning to the merchant</h1>
<p class="muted">Your answer was recorded. If nothing happens,
<a id="continue" href="{url}">continue</a>.</p>"""
    refresh = f'\n<meta http-equiv="refresh" content="0;url={url}">'
    return _page("Returning to the merchant", body, nonce, head=refresh)


def notice_page(title: str, text: str, nonce: str) -> str:
    body = f"""<h1>{escape(title)}</h1>
<p class="muted">{escape(text)}</p>"""
    return _page(title, body, nonce)


def not_found_page(nonce: str) -> str:
    return notice_page(
        "Page not found", "This page does not exist, or the link is incomplete.", nonce
    )
