"""A demo merchant's checkout on an origin of its own: what a shop that integrates Clearline
builds, served by `clearline up`.

Its server holds the merchant's secret key and creates PaymentIntents through Clearline's
API with the stripe SDK. Its page collects the card in the vault's hosted card field (an
iframe of the vault's origin) and confirms the intent with clearline.js, so the card
number never reaches this server: it only ever receives the request for a client secret
and the customer's return from 3-D Secure, and it logs no request body.

Development only: it runs under `clearline up` and is never shipped.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import sys
import threading
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import stripe

from clearline.cards import contains_card_number

ITEM = "Clearline mug"
AMOUNT = 2000  # minor units of CURRENCY
CURRENCY = "usd"
MAX_BODY_BYTES = 4096
# A browser's checkout attempt: its intent's idempotency key, so a repeated Pay (after a
# decline, or a retried request) confirms the same intent instead of making another.
_CHECKOUT_ID = re.compile(r"[A-Za-z0-9-]{16,64}")
_INTENT_ID = re.compile(r"pi_[A-Za-z0-9]{1,64}")

_CSS = """
* { box-sizing: border-box; }
body {
  margin: 0; padding: 2rem 1rem; background: #f4f5f7; color: #1f2328;
  font: 16px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, Helvetica, Arial,
    sans-serif;
}
main {
  max-width: 28rem; margin: 0 auto; padding: 1.5rem; background: #fff;
  border: 1px solid #d8dce1; border-radius: 8px;
}
h1 { font-size: 1.3rem; margin: 0 0 1rem; }
.order { display: flex; justify-content: space-between; padding: .75rem 0;
  border-top: 1px solid #e8eaed; border-bottom: 1px solid #e8eaed; margin-bottom: 1rem; }
label { display: block; font-size: .9rem; color: #59636e; margin: .75rem 0 .25rem; }
#name { width: 100%; padding: .55rem .75rem; border: 1px solid #c9ced6; border-radius: 6px;
  font: inherit; }
#card-element { min-height: 72px; }
button { width: 100%; padding: .7rem; border: 0; border-radius: 6px; font: inherit;
  background: #4a6fd1; color: #fff; cursor: pointer; }
button:disabled { opacity: .6; cursor: default; }
#message { min-height: 1.5em; margin: 1rem 0 0; }
#message.succeeded { color: #2f6f4f; font-weight: 600; }
#message.failed { color: #c62828; }
.muted { color: #59636e; font-size: .85rem; }
"""

# The page's behaviour, served from the shop's own origin: its CSP allows no inline script.
CHECKOUT_JS = """\
(function () {
  'use strict';

  var checkout = document.getElementById('checkout');
  var clearline = Clearline(checkout.dataset.publishableKey, {
    apiUrl: checkout.dataset.apiUrl
  });
  var card = clearline.elements().create('card');
  card.mount('#card-element');

  var form = document.getElementById('payment-form');
  var pay = document.getElementById('pay');
  var message = document.getElementById('message');
  var checkoutId = window.crypto.randomUUID();

  function show(text, outcome, paymentIntent) {
    message.textContent = text;
    message.className = outcome || '';
    message.dataset.paymentIntent = paymentIntent || '';
  }

  // Only the shop's own server is asked for an intent; it decides the amount.
  function createPaymentIntent() {
    return fetch('/create-payment-intent', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ checkout: checkoutId })
    }).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) throw new Error(body.error || 'The shop could not start the payment.');
        return body.clientSecret;
      });
    });
  }

  form.addEventListener('submit', function (event) {
    event.preventDefault();
    pay.disabled = true;
    show('Processing...');
    createPaymentIntent().then(function (clientSecret) {
      return clearline.confirmCardPayment(clientSecret, {
        payment_method: {
          card: card,
          billing_details: { name: document.getElementById('name').value }
        },
        return_url: window.location.origin + '/complete'
      });
    }).then(function (result) {
      if (result.error) {
        show(result.error.message, 'failed');
      } else if (result.paymentIntent.status === 'succeeded') {
        show('Payment succeeded', 'succeeded', result.paymentIntent.id);
      } else {
        show('Payment ' + result.paymentIntent.status, '', result.paymentIntent.id);
      }
    }, function (error) {
      show(error.message, 'failed');
    }).then(function () {
      pay.disabled = false;
    });
  });
})();
"""


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def price() -> str:
    return f"${AMOUNT / 100:,.2f}"


def _page(title: str, body: str, nonce: str, scripts: tuple[str, ...] = ()) -> str:
    tags = "".join(f'<script src="{escape(src)}"></script>\n' for src in scripts)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<link rel="icon" href="data:,">
<style nonce="{escape(nonce)}">{_CSS}</style>
</head>
<body>
{body}
{tags}</body>
</html>
"""


def checkout_page(publishable_key: str, api_url: str, vault_url: str, nonce: str) -> str:
    body = f"""<main id="checkout" data-publishable-key="{escape(publishable_key)}"
      data-api-url="{escape(api_url)}">
<h1>Demo shop</h1>
<div class="order"><span>{escape(ITEM)}</span><strong>{escape(price())}</strong></div>
<form id="payment-form" novalidate>
  <label for="name">Name on card</label>
  <input id="name" name="name" autocomplete="cc-name" placeholder="Jenny Rosen">
  <label>Card</label>
  <div id="card-element"></div>
  <button id="pay" type="submit">Pay {escape(price())}</button>
</form>
<p id="message" role="status"></p>
<p class="muted">Test mode: pay with one of Stripe's test cards, any future date and any
CVC.</p>
</main>"""
    return _page("Demo shop: checkout", body, nonce, (f"{vault_url}/clearline.js", "/checkout.js"))


def complete_page(intent: Any, nonce: str) -> str:
    """What the customer sees on coming back from 3-D Secure: the intent as the shop's
    server read it with the secret key, never what the URL claims."""
    if intent is None:
        text, outcome, detail, intent_id = "Payment not found", "failed", "", ""
    elif intent.status == "succeeded":
        text, outcome, detail, intent_id = "Payment succeeded", "succeeded", "", intent.id
    elif intent.status == "processing":
        text, outcome, detail, intent_id = "Payment processing", "", "", intent.id
    else:
        error = intent.last_payment_error
        detail = (error.message if error else None) or "The payment was not completed."
        text, outcome, intent_id = "Payment failed", "failed", intent.id
    body = f"""<main>
<h1>Demo shop</h1>
<div class="order"><span>{escape(ITEM)}</span><strong>{escape(price())}</strong></div>
<p id="message" class="{outcome}" role="status"
   data-payment-intent="{escape(intent_id)}">{escape(text)}</p>
<p id="detail">{escape(detail)}</p>
<p><a href="/">Back to the shop</a></p>
</main>"""
    return _page("Demo shop: payment", body, nonce)


class _Handler(BaseHTTPRequestHandler):
    server: DemoShop
    protocol_version = "HTTP/1.1"

    def log_request(self, status: int | str = "", size: int | str = "") -> None:
        # The path only: /complete's query carries the intent's client secret.
        path = urlsplit(self.path).path
        sys.stderr.write(f"demo shop: {self.command} {path[:100]} {status}\n")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # request lines are logged above, and nothing else

    def _send(self, status: int, content_type: str, body: str, csp: str = "") -> None:
        raw = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        # /complete's URL holds the client secret: no page of the shop gives it away.
        self.send_header("Referrer-Policy", "no-referrer")
        if csp:
            self.send_header("Content-Security-Policy", csp)
        self.end_headers()
        self.wfile.write(raw)

    def _json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, "application/json", json.dumps(body))

    def _html(self, page: str, csp: str, status: int = 200) -> None:
        self._send(status, "text/html; charset=utf-8", page, csp)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/":
            self._checkout()
        elif url.path == "/checkout.js":
            self._send(200, "application/javascript; charset=utf-8", CHECKOUT_JS)
        elif url.path == "/complete":
            self._complete(parse_qs(url.query))
        else:
            self._send(404, "text/plain; charset=utf-8", "Not found\n")

    def do_POST(self) -> None:
        if urlsplit(self.path).path == "/create-payment-intent":
            self._create_payment_intent()
        else:
            self._send(404, "text/plain; charset=utf-8", "Not found\n")

    def _checkout(self) -> None:
        shop, nonce = self.server, secrets.token_urlsafe(18)
        vault, api = origin_of(shop.vault_url), origin_of(shop.api_url)
        csp = (
            f"default-src 'none'; script-src 'self' {vault}; frame-src {vault}; "
            f"connect-src 'self' {api}; style-src 'nonce-{nonce}'; img-src 'self' data:; "
            "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
        )
        page = checkout_page(shop.publishable_key, shop.api_url, shop.vault_url, nonce)
        self._html(page, csp)

    def _create_payment_intent(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type != "application/json" or not 0 < length <= MAX_BODY_BYTES:
            # JSON only: another site's form cannot post it without the browser asking first.
            self.close_connection = True
            self._json(400, {"error": "Send a small JSON body."})
            return
        text = self.rfile.read(length).decode("utf-8", "replace")
        if contains_card_number(text):
            # Never expected: the card lives in the vault's iframe. Said loudly, never echoed.
            sys.stderr.write("demo shop: WARNING a card number reached the shop's server\n")
            self._json(400, {"error": "Card numbers are never sent to the shop."})
            return
        try:
            checkout = json.loads(text).get("checkout")
        except (ValueError, AttributeError):
            checkout = None
        if not isinstance(checkout, str) or not _CHECKOUT_ID.fullmatch(checkout):
            self._json(400, {"error": "Name the checkout attempt."})
            return
        try:
            intent = self.server.sdk.v1.payment_intents.create(
                params={
                    "amount": AMOUNT,
                    "currency": CURRENCY,
                    "description": f"Demo shop: {ITEM}",
                    "metadata": {"checkout": checkout},
                },
                options={"idempotency_key": f"demo-checkout-{checkout}"},
            )
        except stripe.StripeError as exc:
            self._json(502, {"error": exc.user_message or "Clearline refused the payment."})
            return
        self._json(200, {"clientSecret": intent.client_secret})

    def _complete(self, query: dict[str, list[str]]) -> None:
        intent_id = (query.get("payment_intent") or [""])[0]
        client_secret = (query.get("payment_intent_client_secret") or [""])[0]
        intent = None
        if _INTENT_ID.fullmatch(intent_id):
            try:
                intent = self.server.sdk.v1.payment_intents.retrieve(intent_id)
            except stripe.StripeError:
                intent = None
        # Only the browser that confirmed the intent holds its client secret.
        if intent is not None and not hmac.compare_digest(
            str(intent.client_secret or ""), client_secret
        ):
            intent = None
        nonce = secrets.token_urlsafe(18)
        csp = (
            f"default-src 'none'; style-src 'nonce-{nonce}'; img-src data:; "
            "form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
        )
        self._html(complete_page(intent, nonce), csp, 200 if intent else 404)


class DemoShop(ThreadingHTTPServer):
    """The shop's web server: bound when made, serving once started."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        host: str,
        port: int,
        *,
        api_url: str,
        vault_url: str,
        secret_key: str,
        publishable_key: str,
    ) -> None:
        super().__init__((host, port), _Handler)
        self.api_url = api_url
        self.vault_url = vault_url
        self.publishable_key = publishable_key
        self.sdk = stripe.StripeClient(
            secret_key, base_addresses={"api": api_url}, max_network_retries=2
        )
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.server_address[0]!s}:{self.port}"

    def start(self) -> DemoShop:
        self._thread = threading.Thread(target=self.serve_forever, name="demo-shop", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() waits for a loop that never started
            self.shutdown()
        self.server_close()
