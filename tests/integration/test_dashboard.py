"""The dashboard on the local stack: over HTTP as a browser speaks it (cookies, redirects,
forms), and in a real browser (Debian's Chromium, driven by Selenium) for the journeys.

The journeys keep a screenshot of their last page under build/screenshots/.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import pytest
import stripe
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.dashboard_routes import DASHBOARD_ROUTES
from tests.polling import eventually

from .conftest import WEBHOOK_MAX_ATTEMPTS, Stack
from .receivers import Receiver
from .test_checkout_browser import browser

pytestmark = pytest.mark.integration
__all__ = ["browser"]  # the fixture, shared with the checkout's browser tests

SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"


def key() -> str:
    return str(uuid.uuid4())


@dataclass
class Shop:
    merchant: dict[str, Any]
    sdk: stripe.StripeClient


@pytest.fixture(scope="module")
def shop(stack: Stack) -> Shop:
    merchant = stack.create_merchant("Dashboard Shop", fee_percent=3, fee_fixed=0)
    return Shop(
        merchant, stripe.StripeClient(merchant["secret_key"], base_addresses={"api": stack.url})
    )


def sign_in_link(stack: Stack, merchant_id: str) -> str:
    done = stack.clearline("dashboard", "link", merchant_id)
    assert done.returncode == 0, done.stderr
    link = done.stdout.strip().splitlines()[-1]
    assert link.startswith(f"{stack.url}/dashboard/sign-in?token=")
    return link


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_: Any, **__: Any) -> None:
        return None


class Browserless:
    """A client that keeps cookies and shows redirects instead of following them."""

    def __init__(self) -> None:
        self.cookies = CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies), NoRedirects()
        )

    def get(self, url: str) -> tuple[int, dict[str, str], str]:
        return self._send(urllib.request.Request(url))

    def post(self, url: str, form: dict[str, str]) -> tuple[int, dict[str, str], str]:
        body = urllib.parse.urlencode(form).encode()
        return self._send(urllib.request.Request(url, data=body, method="POST"))

    def _send(self, request: urllib.request.Request) -> tuple[int, dict[str, str], str]:
        try:
            with self.opener.open(request, timeout=30) as answer:
                return answer.status, dict(answer.headers), answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read().decode()


def signed_in(stack: Stack, merchant_id: str) -> Browserless:
    client = Browserless()
    status, headers, _ = client.get(sign_in_link(stack, merchant_id))
    assert status == 303 and headers["Location"].endswith("/dashboard/payments")
    return client


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


# ---- over HTTP ------------------------------------------------------------------------------


def test_signing_in_sets_a_session_cookie_the_page_cannot_read(stack: Stack, shop: Shop) -> None:
    client = Browserless()
    link = sign_in_link(stack, shop.merchant["id"])
    status, headers, _ = client.get(link)
    assert status == 303
    cookie = headers["Set-Cookie"]
    assert cookie.startswith("clearline_session=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/dashboard" in cookie
    assert "Secure" not in cookie  # the local stack is plain http; deployed, it is https
    status, headers, page = client.get(f"{stack.url}/dashboard/payments")
    assert status == 200 and "Dashboard Shop" in page
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert shop.merchant["secret_key"] not in page

    # The link is used up: following it again opens nothing.
    status, _, page = Browserless().get(link)
    assert status == 400 and "used up or has expired" in page


def test_without_a_session_every_page_sends_you_to_sign_in(stack: Stack, shop: Shop) -> None:
    charge = shop.sdk.v1.charges.create(
        params={"amount": 1200, "currency": "usd", "source": "tok_visa"},
        options={"idempotency_key": key()},
    )
    for path in ("/dashboard/payments", f"/dashboard/payments/{charge.id}"):
        status, headers, _ = Browserless().get(f"{stack.url}{path}")
        assert status == 303 and headers["Location"] == "/dashboard"
    for home in ("/dashboard", "/dashboard/"):
        status, _, page = Browserless().get(f"{stack.url}{home}")
        assert status == 200 and "clearline dashboard link" in page
    # Cognito's sign-in is the deployed dashboard's; the local stack signs in with links.
    for path in ("/dashboard/sign-in/start", "/dashboard/callback?code=c&state=s"):
        status, _, page = Browserless().get(f"{stack.url}{path}")
        assert status == 404 and "one-time link" in page
    # A made-up session id is no session.
    request = urllib.request.Request(
        f"{stack.url}/dashboard/payments", headers={"Cookie": "clearline_session=made-up"}
    )
    assert Browserless()._send(request)[0] == 303


def test_a_merchant_sees_only_its_own_payments(stack: Stack, shop: Shop) -> None:
    other = stack.create_merchant("Someone Else")
    theirs = stripe.StripeClient(other["secret_key"], base_addresses={"api": stack.url})
    their_charge = theirs.v1.charges.create(
        params={"amount": 4321, "currency": "usd", "source": "tok_visa"},
        options={"idempotency_key": key()},
    )
    client = signed_in(stack, shop.merchant["id"])
    status, _, page = client.get(f"{stack.url}/dashboard/payments/{their_charge.id}")
    assert status == 404 and their_charge.id in page and "43.21" not in page
    status, _, page = client.get(f"{stack.url}/dashboard/payments?amount_min=4321&amount_max=4321")
    assert status == 200 and their_charge.id not in page
    # Their own dashboard shows it.
    status, _, page = signed_in(stack, other["id"]).get(
        f"{stack.url}/dashboard/payments/{their_charge.id}"
    )
    assert status == 200 and "43.21 USD" in page


def test_signing_out_needs_the_sessions_csrf_token(stack: Stack, shop: Shop) -> None:
    client = signed_in(stack, shop.merchant["id"])
    _, _, page = client.get(f"{stack.url}/dashboard/payments")
    status, _, refused = client.post(f"{stack.url}/dashboard/sign-out", {"csrf_token": "forged"})
    assert status == 403 and "CSRF" in refused
    assert client.get(f"{stack.url}/dashboard/payments")[0] == 200  # still signed in
    status, headers, _ = client.post(
        f"{stack.url}/dashboard/sign-out", {"csrf_token": csrf_of(page)}
    )
    assert status == 303 and "Max-Age=0" in headers["Set-Cookie"]
    assert client.get(f"{stack.url}/dashboard/payments")[0] == 303


def test_a_bad_filter_is_explained_and_nothing_is_listed(stack: Stack, shop: Shop) -> None:
    client = signed_in(stack, shop.merchant["id"])
    status, _, page = client.get(f"{stack.url}/dashboard/payments?query=amount%3E%3E1")
    assert status == 400 and "Invalid search query" in page
    status, _, page = client.get(f"{stack.url}/dashboard/payments?created_from=yesterday")
    assert status == 400 and "Invalid filter" in page


def form_of(page: str, form_id: str) -> dict[str, str]:
    """The hidden fields of the form `form_id` on the page (its CSRF token, its key)."""
    found = re.search(rf'<form[^>]*id="{form_id}".*?</form>', page, re.S)
    assert found is not None, f"no form {form_id}"
    return dict(re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', found.group(0)))


def test_a_refund_from_the_payment_page_is_sent_once_and_audited(stack: Stack, shop: Shop) -> None:
    charge = shop.sdk.v1.charges.create(
        params={"amount": 2000, "currency": "usd", "source": "tok_visa"},
        options={"idempotency_key": key()},
    )
    client = signed_in(stack, shop.merchant["id"])
    page_url = f"{stack.url}/dashboard/payments/{charge.id}"
    _, _, page = client.get(page_url)
    form = {**form_of(page, "refund-form"), "amount": "10.00", "reason": "requested_by_customer"}
    assert form["idempotency_key"].startswith("dashboard-")
    status, headers, _ = client.post(f"{page_url}/refund", form)
    assert status == 303
    done = urllib.parse.parse_qs(urllib.parse.urlsplit(headers["Location"]).query)["done"][0]
    refund = shop.sdk.v1.refunds.retrieve(done)
    assert (refund.charge, refund.amount) == (charge.id, 1000)
    assert refund.reason == "requested_by_customer"
    _, _, page = client.get(f"{stack.url}{headers['Location']}")
    assert f"Refund {refund.id} of 10.00 USD: succeeded." in page
    # The same form sent again (a double click, a reload) refunds nothing more.
    status, headers, _ = client.post(f"{page_url}/refund", form)
    assert status == 303 and "replayed=true" in headers["Location"]
    assert shop.sdk.v1.charges.retrieve(charge.id).amount_refunded == 1000
    # The audit trail names the session that acted, not only the merchant.
    assert re.search(r"by dashboard session_[0-9a-f]{16}", page)


def test_a_refused_action_is_shown_and_changes_nothing(stack: Stack, shop: Shop) -> None:
    charge = shop.sdk.v1.charges.create(
        params={"amount": 2000, "currency": "usd", "source": "tok_visa"},
        options={"idempotency_key": key()},
    )
    client = signed_in(stack, shop.merchant["id"])
    page_url = f"{stack.url}/dashboard/payments/{charge.id}"
    hidden = form_of(client.get(page_url)[2], "refund-form")
    for amount, status, says in (
        ("50.00", 400, "greater than"),  # more than the charge
        ("12.345", 400, "at most 2 decimal places"),
        ("ten", 400, "Invalid amount"),
        ("-1", 400, "Invalid amount"),
    ):
        sent, _, page = client.post(f"{page_url}/refund", {**hidden, "amount": amount})
        assert (sent, says in page) == (status, True), (amount, page[-2000:])
    sent, _, page = client.post(f"{page_url}/refund", {**hidden, "reason": "bored"})
    assert sent == 400 and "reason" in page
    sent, _, page = client.post(f"{page_url}/refund", {**hidden, "csrf_token": "forged"})
    assert sent == 403 and "CSRF" in page
    sent, _, page = client.post(f"{page_url}/refund", {**hidden, "idempotency_key": ""})
    assert sent == 400 and "Idempotency-Key" in page
    assert shop.sdk.v1.charges.retrieve(charge.id).amount_refunded == 0
    # Someone else's charge is not found, and is not refunded.
    other = stack.create_merchant("Not Yours")
    theirs = stripe.StripeClient(other["secret_key"], base_addresses={"api": stack.url})
    their_charge = theirs.v1.charges.create(
        params={"amount": 900, "currency": "usd", "source": "tok_visa"},
        options={"idempotency_key": key()},
    )
    for action in ("refund", "capture"):
        sent, _, _ = client.post(
            f"{stack.url}/dashboard/payments/{their_charge.id}/{action}", hidden
        )
        assert sent == 404
    assert theirs.v1.charges.retrieve(their_charge.id).amount_refunded == 0


def test_capturing_part_of_an_authorization_from_its_page(stack: Stack, shop: Shop) -> None:
    held = shop.sdk.v1.charges.create(
        params={"amount": 2000, "currency": "usd", "source": "tok_visa", "capture": False},
        options={"idempotency_key": key()},
    )
    client = signed_in(stack, shop.merchant["id"])
    page_url = f"{stack.url}/dashboard/payments/{held.id}"
    _, _, page = client.get(page_url)
    assert 'id="refund-form"' not in page  # nothing captured: nothing to refund yet
    status, headers, _ = client.post(
        f"{page_url}/capture", {**form_of(page, "capture-form"), "amount": "12"}
    )
    assert status == 303
    _, _, page = client.get(f"{stack.url}{headers['Location']}")
    assert "Captured 12.00 USD." in page and 'id="capture-form"' not in page
    captured = shop.sdk.v1.charges.retrieve(held.id)
    assert (captured.captured, captured.amount_captured, captured.amount_refunded) == (
        True,
        1200,
        800,
    )


def test_the_balance_page_shows_each_currency_and_its_last_30_days(
    stack: Stack, shop: Shop
) -> None:
    merchant = stack.create_merchant("Balance Shop", fee_percent=0, fee_fixed=0)
    sdk = stripe.StripeClient(merchant["secret_key"], base_addresses={"api": stack.url})
    for amount in (1000, 2500):
        sdk.v1.charges.create(
            params={"amount": amount, "currency": "usd", "source": "tok_visa"},
            options={"idempotency_key": key()},
        )
    client = signed_in(stack, merchant["id"])
    status, _, page = client.get(f"{stack.url}/dashboard/balance")
    assert status == 200
    assert re.search(r'class="pending" data-currency="usd">35.00 USD<', page)
    assert re.search(r'class="available" data-currency="usd">0.00 USD<', page)
    days = re.findall(r"<tr><td>(\d{4}-\d\d-\d\d)</td><td class=\"amount\">([^<]+)</td>", page)
    assert len(days) == 30 and days[-1][1] == "35.00 USD" and days[0][1] == "0.00 USD"
    assert "No payouts yet." in page
    # The chart is an image inlined in the page, drawn from the same figures.
    inlined = re.findall(r'<img src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(inlined) == 1
    chart = base64.b64decode(inlined[0]).decode()
    assert chart.lstrip().startswith("<?xml") and "<svg" in chart and "35.00 USD" in chart
    assert "<script" not in chart
    assert Browserless().get(f"{stack.url}/dashboard/balance")[0] == 303
    # Another merchant's payout is not found.
    status, _, page = client.get(f"{stack.url}/dashboard/payouts/po_not_yours")
    assert status == 404


def test_an_endpoint_added_from_the_developers_page_shows_its_secret_once(
    stack: Stack, shop: Shop
) -> None:
    client = signed_in(stack, shop.merchant["id"])
    developers = f"{stack.url}/dashboard/developers"
    hidden = form_of(client.get(developers)[2], "endpoint-form")
    form = {**hidden, "url": "https://hooks.example/clearline", "enabled_events": "charge.refunded"}
    status, _, page = client.post(f"{developers}/endpoints", form)
    assert status == 201
    secret = re.search(r"<code>(whsec_\w+)</code>", page)
    assert secret is not None
    endpoints = shop.sdk.v1.webhook_endpoints.list().data
    (endpoint,) = [e for e in endpoints if e.url == "https://hooks.example/clearline"]
    assert endpoint.enabled_events == ["charge.refunded"] and "secret" not in endpoint
    # Sent twice, it adds one endpoint; the page never shows the secret again.
    client.post(f"{developers}/endpoints", form)
    assert len([e for e in shop.sdk.v1.webhook_endpoints.list().data if e.url == form["url"]]) == 1
    assert secret.group(1) not in client.get(developers)[2]

    # Disabled, then enabled again; each form once.
    page = client.get(developers)[2]
    toggle = form_of(page, f"toggle-{endpoint.id}")
    status, headers, _ = client.post(f"{developers}/endpoints/{endpoint.id}/disable", toggle)
    assert (
        status == 303 and shop.sdk.v1.webhook_endpoints.retrieve(endpoint.id).status == "disabled"
    )
    page = client.get(f"{stack.url}{headers['Location']}")[2]
    assert "nothing is delivered to it" in page
    toggle = form_of(page, f"toggle-{endpoint.id}")
    client.post(f"{developers}/endpoints/{endpoint.id}/enable", toggle)
    assert shop.sdk.v1.webhook_endpoints.retrieve(endpoint.id).status == "enabled"

    # Rolled: a new secret, shown once.
    roll = form_of(page, f"roll-{endpoint.id}")
    status, _, page = client.post(f"{developers}/endpoints/{endpoint.id}/roll-secret", roll)
    rolled = re.search(r"<code>(whsec_\w+)</code>", page)
    assert status == 200 and rolled is not None and rolled.group(1) != secret.group(1)


def test_a_test_event_reaches_the_endpoint_and_its_answer_is_shown(
    stack: Stack, shop: Shop
) -> None:
    receiver = Receiver()
    endpoint = shop.sdk.v1.webhook_endpoints.create(
        params={"url": receiver.url, "enabled_events": ["charge.refunded", "payout.paid"]},
        options={"idempotency_key": key()},
    )
    receiver.secret = str(endpoint.secret)
    client = signed_in(stack, shop.merchant["id"])
    developers = f"{stack.url}/dashboard/developers"
    page = client.get(developers)[2]
    form = {**form_of(page, f"test-{endpoint.id}"), "type": "payout.paid"}
    assert "<option>charge.refunded</option><option>payout.paid</option>" in page
    status, _, page = client.post(f"{developers}/endpoints/{endpoint.id}/test", form)
    assert status == 200 and "Test payout.paid to" in page and "HTTP 200" in page
    (event,) = receiver.accepted  # signed with the endpoint's secret: the SDK verified it
    assert event.type == "payout.paid" and event.id.startswith("evt_test_")
    assert event.data.object["test"] is True
    assert event.id not in [e.id for e in shop.sdk.v1.events.list(params={"limit": 100}).data]
    status, _, page = client.post(
        f"{developers}/endpoints/{endpoint.id}/test", {**form, "type": "x; drop"}
    )
    assert status == 400 and "Not an event type" in page and len(receiver.accepted) == 1


def test_bad_developer_forms_are_refused_and_change_nothing(stack: Stack, shop: Shop) -> None:
    client = signed_in(stack, shop.merchant["id"])
    developers = f"{stack.url}/dashboard/developers"
    hidden = form_of(client.get(developers)[2], "endpoint-form")
    before = len(shop.sdk.v1.webhook_endpoints.list().data)
    for url in ("not a url", "https://10.0.0.8/hooks", ""):
        status, _, page = client.post(f"{developers}/endpoints", {**hidden, "url": url})
        assert status == 400 and 'role="alert"' in page, url
    status, _, page = client.post(
        f"{developers}/endpoints", {**hidden, "url": "https://a.example/h", "csrf_token": "x"}
    )
    assert status == 403
    assert len(shop.sdk.v1.webhook_endpoints.list().data) == before
    status, _, _ = client.post(f"{developers}/endpoints/we_1/explode", hidden)
    assert status == 400


def test_another_merchants_developer_objects_are_not_found(stack: Stack, shop: Shop) -> None:
    other = stack.create_merchant("Other Developer")
    theirs = stripe.StripeClient(other["secret_key"], base_addresses={"api": stack.url})
    their_endpoint = theirs.v1.webhook_endpoints.create(
        params={"url": "https://theirs.example/h", "enabled_events": ["*"]},
        options={"idempotency_key": key()},
    )
    theirs.v1.charges.create(
        params={"amount": 300, "currency": "usd", "source": "tok_visa"},
        options={"idempotency_key": key()},
    )
    (their_event, *_) = theirs.v1.events.list().data
    client = signed_in(stack, shop.merchant["id"])
    developers = f"{stack.url}/dashboard/developers"
    hidden = form_of(client.get(developers)[2], "endpoint-form")
    assert client.get(f"{developers}/events/{their_event.id}")[0] == 404
    assert client.post(f"{developers}/events/{their_event.id}/redeliver", hidden)[0] == 404
    for action in ("disable", "roll-secret"):
        status, _, _ = client.post(f"{developers}/endpoints/{their_endpoint.id}/{action}", hidden)
        assert status == 404, action
    assert theirs.v1.webhook_endpoints.retrieve(their_endpoint.id).status == "enabled"
    assert their_event.id not in client.get(developers)[2]


def disputed(sdk: stripe.StripeClient, **params: Any) -> tuple[Any, Any]:
    """A charge the processor disputes, and its dispute once the notice has opened it."""
    paid = sdk.v1.charges.create(
        params={"amount": 3000, "currency": "usd", "source": "tok_createDispute", **params},
        options={"idempotency_key": key()},
    )
    return paid, eventually(
        lambda: next(iter(sdk.v1.disputes.list(params={"charge": paid.id}).data), None),
        message="the dispute",
    )


def test_a_dispute_is_listed_with_its_due_date_and_its_evidence_prefilled(
    stack: Stack, shop: Shop
) -> None:
    paid, dispute = disputed(shop.sdk, description="Walnut desk", receipt_email="a@b.co")
    assert dispute.charge == paid.id
    client = signed_in(stack, shop.merchant["id"])
    status, _, page = client.get(f"{stack.url}/dashboard/disputes")
    needing = page.split('id="needing-response"', 1)[1].split("</table>", 1)[0]
    assert status == 200 and dispute.id in needing and "30.00 USD" in needing
    assert str(dispute.evidence_details.due_by * 1000) in needing  # its due date, for the viewer
    status, _, page = client.get(f"{stack.url}/dashboard/disputes/{dispute.id}")
    assert status == 200
    assert re.search(r'id="evidence-product_description"[^>]*>Walnut desk</textarea>', page)
    assert re.search(r'id="evidence-customer_email_address"[^>]*value="a@b.co"', page)

    # Saved, not submitted: the dispute still waits for a response.
    form = {**form_of(page, "evidence-form"), "product_description": "Walnut desk, oiled"}
    status, headers, _ = client.post(
        f"{stack.url}/dashboard/disputes/{dispute.id}/evidence", {**form, "submit": "false"}
    )
    assert status == 303 and headers["Location"].endswith("done=saved")
    staged = shop.sdk.v1.disputes.retrieve(dispute.id)
    assert staged.status == "needs_response"
    # The payment's timeline has the dispute: its changes and the money it took back.
    page = client.get(f"{stack.url}/dashboard/payments/{paid.id}")[2]
    assert dispute.id in page and "balance transaction adjustment" in page
    assert staged.evidence.product_description == "Walnut desk, oiled"
    assert staged.evidence_details.submission_count == 0


def test_bad_evidence_is_refused_and_what_was_typed_stays(stack: Stack, shop: Shop) -> None:
    _, dispute = disputed(shop.sdk)
    client = signed_in(stack, shop.merchant["id"])
    page = client.get(f"{stack.url}/dashboard/disputes/{dispute.id}")[2]
    form = {**form_of(page, "evidence-form"), "uncategorized_text": "x" * 20_001}
    status, _, page = client.post(f"{stack.url}/dashboard/disputes/{dispute.id}/evidence", form)
    assert status == 400 and 'role="alert"' in page and "x" * 20_001 in page
    assert shop.sdk.v1.disputes.retrieve(dispute.id).status == "needs_response"
    forged = {**form, "csrf_token": "forged", "uncategorized_text": "fine"}
    status, _, _ = client.post(f"{stack.url}/dashboard/disputes/{dispute.id}/evidence", forged)
    assert status == 403
    assert shop.sdk.v1.disputes.retrieve(dispute.id).evidence_details.submission_count == 0
    # Another merchant's dispute: not found, and not answered.
    other = stack.create_merchant("Not Your Dispute")
    theirs = stripe.StripeClient(other["secret_key"], base_addresses={"api": stack.url})
    _, their_dispute = disputed(theirs)
    hidden = form_of(page, "evidence-form")
    for path, sent in (("", None), ("/evidence", hidden), ("/accept", hidden)):
        url = f"{stack.url}/dashboard/disputes/{their_dispute.id}{path}"
        assert (client.get(url) if sent is None else client.post(url, sent))[0] == 404, path
    assert theirs.v1.disputes.retrieve(their_dispute.id).status == "needs_response"


def test_accepting_a_dispute_closes_it_as_lost(stack: Stack, shop: Shop) -> None:
    _, dispute = disputed(shop.sdk)
    client = signed_in(stack, shop.merchant["id"])
    page = client.get(f"{stack.url}/dashboard/disputes/{dispute.id}")[2]
    accept = form_of(page, "accept-form")
    status, headers, _ = client.post(f"{stack.url}/dashboard/disputes/{dispute.id}/accept", accept)
    assert status == 303 and shop.sdk.v1.disputes.retrieve(dispute.id).status == "lost"
    page = client.get(f"{stack.url}{headers['Location']}")[2]
    assert "closed as lost" in page and 'id="evidence-form"' not in page
    # Sent again, the same form changes nothing more; a new one is refused: it is closed.
    assert client.post(f"{stack.url}/dashboard/disputes/{dispute.id}/accept", accept)[0] == 303
    again = {**accept, "idempotency_key": key()}
    status, _, page = client.post(f"{stack.url}/dashboard/disputes/{dispute.id}/accept", again)
    assert status == 400 and "already closed" in page


def test_reviews_are_approved_or_refunded_from_the_reviews_page(stack: Stack) -> None:
    merchant = stack.create_merchant("Review Shop")
    sdk = stripe.StripeClient(merchant["secret_key"], base_addresses={"api": stack.url})
    held = [
        sdk.v1.charges.create(
            params={"amount": 1500, "currency": "usd", "source": "tok_riskLevelElevated"},
            options={"idempotency_key": key()},
        )
        for _ in range(2)
    ]
    client = signed_in(stack, merchant["id"])
    reviews = eventually(lambda: len(sdk.v1.reviews.list().data) == 2 and sdk.v1.reviews.list())
    by_charge = {r.charge: r.id for r in reviews.data}
    page = client.get(f"{stack.url}/dashboard/reviews")[2]
    approve = form_of(page, f"approve-{by_charge[held[0].id]}")
    status, headers, _ = client.post(
        f"{stack.url}/dashboard/reviews/{by_charge[held[0].id]}/approve", approve
    )
    assert status == 303 and headers["Location"].endswith("done=approved")
    refund = form_of(page, f"refund-{by_charge[held[1].id]}")
    status, _, _ = client.post(
        f"{stack.url}/dashboard/reviews/{by_charge[held[1].id]}/refund", refund
    )
    assert status == 303
    assert sdk.v1.reviews.retrieve(by_charge[held[0].id]).closed_reason == "approved"
    refunded = sdk.v1.charges.retrieve(held[1].id)
    assert refunded.refunded and refunded.refunds.data[0].reason == "fraudulent"
    closed = sdk.v1.reviews.retrieve(by_charge[held[1].id])
    assert closed.closed_reason == "refunded_as_fraud"
    page = client.get(f"{stack.url}/dashboard/reviews")[2]
    assert "No open reviews." in page
    # Approving one already closed is refused, and says why.
    again = {**approve, "idempotency_key": key()}
    status, _, page = client.post(
        f"{stack.url}/dashboard/reviews/{by_charge[held[0].id]}/approve", again
    )
    assert status == 400 and "already closed" in page
    # Another merchant's review is not found.
    outsider = signed_in(stack, stack.create_merchant("Outsider")["id"])
    status, _, _ = outsider.post(
        f"{stack.url}/dashboard/reviews/{by_charge[held[0].id]}/approve",
        {**form_of(outsider.get(f"{stack.url}/dashboard/developers")[2], "endpoint-form")},
    )
    assert status == 404


def operator_signed_in(stack: Stack, merchant_id: str) -> Browserless:
    done = stack.clearline("dashboard", "link", "--operations", merchant_id)
    assert done.returncode == 0, done.stderr
    client = Browserless()
    assert client.get(done.stdout.strip().splitlines()[-1])[0] == 303
    return client


def test_the_operations_page_is_an_operators_only(stack: Stack, shop: Shop) -> None:
    operations = f"{stack.url}/dashboard/operations"
    merchant = signed_in(stack, shop.merchant["id"])
    page = merchant.get(f"{stack.url}/dashboard/payments")[2]
    assert 'href="/dashboard/operations"' not in page
    merchant_csrf = {"csrf_token": csrf_of(page)}
    assert merchant.get(operations)[0] == 404
    assert merchant.post(f"{operations}/ledger-verify", merchant_csrf)[0] == 404
    resolve = {**merchant_csrf, "note": "x"}
    assert merchant.post(f"{operations}/mismatches/recm_1/resolve", resolve)[0] == 404

    operator = operator_signed_in(stack, shop.merchant["id"])
    status, _, page = operator.get(operations)
    assert status == 200 and 'href="/dashboard/operations"' in page
    csrf = {"csrf_token": csrf_of(page)}
    assert operator.post(f"{operations}/ledger-verify", {"csrf_token": "forged"})[0] == 403
    status, headers, _ = operator.post(f"{operations}/ledger-verify", csrf)
    assert status == 303
    page = operator.get(f"{stack.url}{headers['Location']}")[2]
    ran = re.search(r"by <code>dashboard (session_[0-9a-f]{16})</code>", page)
    assert ran is not None and re.search(r"\(\d+ journals, \d+ accounts, \d+ charges\)", page)
    # Resolving needs a note, and a mismatch that exists.
    status, _, page = operator.post(f"{operations}/mismatches/recm_1/resolve", csrf)
    assert status == 400 and "the note is kept with it" in page
    status, _, _ = operator.post(
        f"{operations}/mismatches/recm_made_up/resolve", {**csrf, "note": "why"}
    )
    assert status == 404

    # An operator views another merchant's dashboard; a merchant's session cannot.
    other = stack.create_merchant("Viewed Shop")
    theirs = stripe.StripeClient(other["secret_key"], base_addresses={"api": stack.url})
    their_charge = theirs.v1.charges.create(
        params={"amount": 1717, "currency": "usd", "source": "tok_visa"},
        options={"idempotency_key": key()},
    )
    view = {**merchant_csrf, "merchant": other["id"]}
    assert merchant.post(f"{operations}/view-as", view)[0] == 404
    status, _, page = operator.post(f"{operations}/view-as", {**csrf, "merchant": "acct_none"})
    assert status == 404 and "No merchant acct_none" in page
    status, headers, _ = operator.post(f"{operations}/view-as", {**csrf, "merchant": other["id"]})
    assert status == 303 and headers["Location"] == "/dashboard/payments"
    page = operator.get(f"{stack.url}/dashboard/payments")[2]
    assert "Viewed Shop" in page and "17.17 USD" in page
    assert operator.get(f"{stack.url}/dashboard/payments/{their_charge.id}")[0] == 200


def test_a_refusals_request_log_url_opens_that_request_for_its_merchant_only(
    stack: Stack, shop: Shop
) -> None:
    charge = shop.sdk.v1.charges.create(
        params={"amount": 500, "currency": "usd", "source": "tok_visa"},
        options={"idempotency_key": "logged-charge-" + key()},
    )
    with pytest.raises(stripe.InvalidRequestError) as refused:
        shop.sdk.v1.refunds.create(
            params={"charge": charge.id, "amount": 900}, options={"idempotency_key": key()}
        )
    url = refused.value.error.request_log_url
    request_id = refused.value.request_id
    assert url == f"{stack.url}/dashboard/logs/{request_id}"
    client = signed_in(stack, shop.merchant["id"])
    status, _, page = client.get(url)
    assert status == 200 and "POST /v1/refunds" in page and refused.value.user_message in page
    assert refused.value.code in page and ">400<" in page
    # The lookup form finds it too; and the charge's POST is kept, with its key.
    status, headers, _ = client.get(f"{stack.url}/dashboard/logs?request_id={request_id}")
    assert status == 303 and headers["Location"] == f"/dashboard/logs/{request_id}"
    page = client.get(f"{stack.url}/dashboard/developers")[2]
    assert "POST /v1/charges" in page and "POST /v1/refunds" in page
    # A read that succeeded is not kept; another merchant's request is not found.
    read = shop.sdk.v1.charges.retrieve(charge.id)
    assert client.get(f"{stack.url}/dashboard/logs/{read.last_response.request_id}")[0] == 404
    other = signed_in(stack, stack.create_merchant("Someone Curious")["id"])
    status, _, page = other.get(url)
    assert status == 404 and refused.value.user_message not in page


def test_a_replayed_decline_is_the_first_answer_again_naming_the_first_request(
    stack: Stack, shop: Shop
) -> None:
    declined = {"amount": 700, "currency": "usd", "source": "tok_chargeDeclinedInsufficientFunds"}
    charge_key = key()
    with pytest.raises(stripe.CardError) as first:
        shop.sdk.v1.charges.create(params=declined, options={"idempotency_key": charge_key})
    with pytest.raises(stripe.CardError) as again:
        shop.sdk.v1.charges.create(params=declined, options={"idempotency_key": charge_key})
    assert again.value.headers["Idempotent-Replayed"] == "true"
    assert again.value.headers["Original-Request"] == first.value.request_id
    assert again.value.request_id != first.value.request_id
    assert json.loads(again.value.http_body) == json.loads(first.value.http_body)
    assert first.value.error.request_log_url.endswith(f"/dashboard/logs/{first.value.request_id}")


def test_rolling_the_secret_key_shows_the_new_one_once_and_keeps_the_old_for_its_overlap(
    stack: Stack,
) -> None:
    merchant = stack.create_merchant("Key Roll Shop")
    client = signed_in(stack, merchant["id"])
    developers = f"{stack.url}/dashboard/developers"
    page = client.get(developers)[2]
    assert merchant["secret_key"] not in page and merchant["secret_key"][-4:] in page  # a hint
    hidden = form_of(page, "roll-key-form")
    assert client.post(f"{developers}/keys/roll", {**hidden, "overlap": "forever"})[0] == 400
    assert client.post(f"{developers}/keys/roll", {"csrf_token": "x", "overlap": "1h"})[0] == 403
    status, _, page = client.post(f"{developers}/keys/roll", {**hidden, "overlap": "1h"})
    found = re.search(r'id="new-key".*?<code>(sk_test_\w+)</code>', page, re.S)
    assert status == 200 and found is not None
    new_key = found.group(1)
    for key in (merchant["secret_key"], new_key):  # both work for the hour
        sdk = stripe.StripeClient(key, base_addresses={"api": stack.url})
        assert sdk.v1.balance.retrieve().object == "balance"
    assert new_key not in client.get(developers)[2]  # shown once
    # Rolled again, to stop now: only the newest key works (within the key cache's minute).
    status, _, page = client.post(f"{developers}/keys/roll", {**hidden, "overlap": "now"})
    newest = re.search(r'id="new-key".*?<code>(sk_test_\w+)</code>', page, re.S)
    assert status == 200 and newest is not None
    sdk = stripe.StripeClient(newest.group(1), base_addresses={"api": stack.url})
    assert sdk.v1.balance.retrieve().object == "balance"
    hints = re.findall(r"<td>secret</td><td><code>([^<]+)</code>", client.get(developers)[2])
    assert hints == [newest.group(1)[:8] + "..." + newest.group(1)[-4:]]


def test_every_view_and_action_answers_404_for_another_merchants_ids(
    stack: Stack, shop: Shop
) -> None:
    """Each route of the dashboard that names an object, asked by a merchant's session (an
    operator's for the operations routes) with another merchant's object: not found, and
    nothing of theirs changes."""
    other = stack.create_merchant("The Other Shop")
    theirs = stripe.StripeClient(other["secret_key"], base_addresses={"api": stack.url})
    charge = theirs.v1.charges.create(
        params={"amount": 2100, "currency": "usd", "source": "tok_visa"},
        options={"idempotency_key": key()},
    )
    endpoint = theirs.v1.webhook_endpoints.create(
        params={"url": "https://other.example/hooks", "enabled_events": ["*"]},
        options={"idempotency_key": key()},
    )
    _, dispute = disputed(theirs)
    reviewed = theirs.v1.charges.create(
        params={"amount": 1500, "currency": "usd", "source": "tok_riskLevelElevated"},
        options={"idempotency_key": key()},
    )
    review = eventually(lambda: next(iter(theirs.v1.reviews.list().data), None))
    event = theirs.v1.events.list().data[0]
    refused = None
    try:
        theirs.v1.refunds.create(
            params={"charge": charge.id, "amount": 99_999}, options={"idempotency_key": key()}
        )
    except stripe.InvalidRequestError as error:
        refused = error.request_id
    theirs_by_name = {
        "charge_id": charge.id,
        "payout_id": "po_" + charge.id[3:],  # no payout of theirs here; test_money_out has one
        "endpoint_id": endpoint.id,
        "event_id": event.id,
        "dispute_id": dispute.id,
        "review_id": review.id,
        "request_id": refused,
        "action": None,  # filled per route below
    }
    actions = {
        "/dashboard/developers/endpoints/{endpoint_id}/{action}": [
            "disable",
            "roll-secret",
            "test",
        ],
        "/dashboard/reviews/{review_id}/{action}": ["approve", "refund"],
    }
    client = operator_signed_in(stack, shop.merchant["id"])
    page = client.get(f"{stack.url}/dashboard/payments")[2]
    form = {"csrf_token": csrf_of(page), "idempotency_key": key(), "note": "n", "amount": "1"}
    tried = 0
    for method, route in sorted(DASHBOARD_ROUTES):
        names = re.findall(r"{(\w+)}", route)
        if not names or names == ["name"] or "operations" in route:
            continue  # names no merchant's object (static files; the platform's own)
        for action in actions.get(route, [None]):
            values = {**theirs_by_name, "action": action}
            path = route.format(**{n: values[n] for n in names})
            status, _, answer = (
                client.get(f"{stack.url}{path}")
                if method == "GET"
                else client.post(f"{stack.url}{path}", form)
            )
            assert status == 404, f"{method} {path}: {status}"
            assert "2,100" not in answer and "21.00" not in answer
            tried += 1
    assert tried >= 15
    # Nothing of theirs moved.
    assert theirs.v1.charges.retrieve(charge.id).amount_refunded == 0
    assert theirs.v1.charges.retrieve(reviewed.id).amount_refunded == 0
    assert theirs.v1.webhook_endpoints.retrieve(endpoint.id).status == "enabled"
    assert theirs.v1.disputes.retrieve(dispute.id).status == "needs_response"
    assert theirs.v1.reviews.retrieve(review.id).open


# ---- in a browser ---------------------------------------------------------------------------


def wait(driver: WebDriver) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, 30)


def keep_screenshot(driver: WebDriver, journey: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOTS / f"dashboard-{journey}.png"))


def printed_sign_in(stack: Stack) -> tuple[str, str]:
    """The test merchant's secret key and dashboard link, as `clearline up` printed them."""
    log = stack.log_path.read_text()
    secret = re.search(r"Secret key\s+(sk_test_\S+)", log)
    link = re.search(r"(http://\S+/dashboard/sign-in\?token=\S+)", log)
    assert secret and link, "the stack prints the test merchant's key and dashboard link"
    return secret.group(1), link.group(1)


def test_journey_sign_in_with_the_printed_link_find_a_charge_and_read_its_timeline(
    stack: Stack, browser: WebDriver
) -> None:
    secret, link = printed_sign_in(stack)
    sdk = stripe.StripeClient(secret, base_addresses={"api": stack.url})
    order = uuid.uuid4().hex[:8]
    wanted = sdk.v1.charges.create(
        params={
            "amount": 2599,
            "currency": "usd",
            "source": "tok_visa",
            "description": "Blue scarf",
            "metadata": {"order": order},
        },
        options={"idempotency_key": key()},
    )
    for amount in (1000, 1500):  # others, so that the search has something to leave out
        sdk.v1.charges.create(
            params={"amount": amount, "currency": "usd", "source": "tok_visa"},
            options={"idempotency_key": key()},
        )
    sdk.v1.refunds.create(
        params={"charge": wanted.id, "amount": 599}, options={"idempotency_key": key()}
    )

    browser.get(link)
    wait(browser).until(expected_conditions.title_contains("Payments"))
    assert "Test merchant" in browser.page_source
    cookies = {c["name"]: c for c in browser.get_cookies()}
    assert cookies["clearline_session"]["httpOnly"] is True
    assert browser.execute_script("return document.cookie") == ""  # not readable by scripts

    browser.find_element(By.CSS_SELECTOR, "details.more summary").click()
    browser.find_element(By.ID, "metadata_key").send_keys("order")
    browser.find_element(By.ID, "metadata_value").send_keys(order)
    browser.find_element(By.ID, "status").send_keys("succeeded")
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "searched-query")))
    searched = browser.find_element(By.ID, "searched-query").text
    assert searched == f"status:'succeeded' AND metadata['order']:'{order}'"
    rows = browser.find_elements(By.CSS_SELECTOR, "table.payments tbody tr")
    assert len(rows) == 1 and "25.99 USD" in rows[0].text and "Partially refunded" in rows[0].text
    assert "Visa ···· 4242" in rows[0].text

    rows[0].find_element(By.TAG_NAME, "a").click()
    wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "timeline")))
    assert browser.find_element(By.ID, "charge-id").text == wanted.id
    assert browser.find_element(By.ID, "card").text == "Visa ···· 4242"
    assert browser.find_element(By.ID, "refunded").text == "5.99 USD"
    titles = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#timeline > li strong")]
    text = "\n".join(titles)
    # In order: each change, then what it posted to the ledger and the merchant's balance,
    # then what announced it.
    expected = [
        "create: new → pending",
        "authorize: pending → captured",
        "journal charge.capture",
        "balance transaction charge",
        "charge.succeeded",
        "refund.created",
        "journal refund",
        "balance transaction refund",
        "charge.refunded",
    ]
    positions = [titles.index(title) for title in expected if title in titles]
    assert len(positions) == len(expected) and positions == sorted(positions), text
    # The journals, with their lines: the capture's debit to the processor, and the refund.
    journals = browser.find_elements(By.CSS_SELECTOR, "#timeline table.journal")
    assert len(journals) >= 2, text
    assert "processor_receivable" in journals[0].text and "25.99 USD" in journals[0].text
    assert any("5.99 USD" in j.text for j in journals[1:])
    # Times are shown in the viewer's zone, with UTC on hover.
    first_time = browser.find_element(By.CSS_SELECTOR, "#timeline time")
    assert str(first_time.get_attribute("title")).endswith("UTC")
    assert not first_time.text.endswith("UTC")
    assert secret not in browser.page_source
    keep_screenshot(browser, "payment-timeline")


def test_the_payments_page_works_from_the_keyboard(
    stack: Stack, shop: Shop, browser: WebDriver
) -> None:
    shop.sdk.v1.charges.create(
        params={"amount": 777, "currency": "usd", "source": "tok_visa", "description": "Tea"},
        options={"idempotency_key": key()},
    )
    browser.get(sign_in_link(stack, shop.merchant["id"]))
    wait(browser).until(expected_conditions.title_contains("Payments"))
    sections = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "nav a")]
    assert sections[:2] == ["Payments", "Balance"]
    focused = []
    for _ in range(len(sections) + 5):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        active = browser.switch_to.active_element
        focused.append(active.get_attribute("id") or active.text or active.tag_name)
    # First the skip link, then the navigation, then the page's tabs and its search: the
    # page's reading order.
    expected = ["Skip to content", *sections, "Sign out", "Payment intents", "query", "status"]
    assert focused == expected, focused
    browser.switch_to.active_element.send_keys(Keys.SHIFT, Keys.TAB)  # back to the search
    browser.switch_to.active_element.send_keys("amount:777", Keys.ENTER)
    wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "searched-query")))
    rows = browser.find_elements(By.CSS_SELECTOR, "table.payments tbody tr")
    assert [r.text.split()[0] for r in rows] == ["7.77"]
    # Every field has a label.
    for field in browser.find_elements(By.CSS_SELECTOR, "form.filters input, form.filters select"):
        labels = browser.find_elements(By.CSS_SELECTOR, f"label[for='{field.get_attribute('id')}']")
        assert len(labels) == 1, field.get_attribute("id")
    keep_screenshot(browser, "keyboard-search")


def money_text(amount: int) -> str:
    return f"{amount / 100:,.2f} USD"


def test_journey_refund_half_and_see_the_timeline_and_the_balance_change(
    stack: Stack, browser: WebDriver
) -> None:
    merchant = stack.create_merchant("Half Refund Shop", fee_percent=3, fee_fixed=0)
    sdk = stripe.StripeClient(merchant["secret_key"], base_addresses={"api": stack.url})
    charge = sdk.v1.charges.create(
        params={"amount": 4000, "currency": "usd", "source": "tok_visa", "description": "Boots"},
        options={"idempotency_key": key()},
    )
    pending_before = sdk.v1.balance.retrieve().pending[0].amount

    browser.get(sign_in_link(stack, merchant["id"]))
    wait(browser).until(expected_conditions.title_contains("Payments"))
    browser.find_element(By.LINK_TEXT, "40.00 USD").click()
    wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "refund-form")))
    assert browser.find_element(By.ID, "charge-id").text == charge.id
    browser.find_element(By.ID, "refund-amount").send_keys("20.00")
    browser.find_element(By.ID, "refund-reason").send_keys("Requested by customer")
    browser.find_element(By.CSS_SELECTOR, "#refund-form button[type=submit]").click()
    wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "result")))
    result = browser.find_element(By.ID, "result").text
    assert re.fullmatch(r"Refund re_\w+ of 20\.00 USD: succeeded\.", result), result
    assert browser.find_element(By.ID, "refunded").text == "20.00 USD"
    assert "Partially refunded" in browser.find_element(By.TAG_NAME, "h1").text

    # The timeline gained the refund: who made it, what it posted, what announced it.
    entries = browser.find_elements(By.CSS_SELECTOR, "#timeline > li")
    titles = [e.find_element(By.TAG_NAME, "strong").text for e in entries]
    refund_at = titles.index("refund.created")
    assert "charge.refunded" in titles[refund_at:], titles
    refund_id = result.split()[1]
    made = [e.text for e in entries if "transition" in str(e.get_attribute("class"))]
    assert any(refund_id in t and "by dashboard session_" in t for t in made), made
    journal = entries[titles.index("journal refund")]
    assert "20.00 USD" in journal.text

    # The balance went down by the refund, as the API says too.
    browser.find_element(By.LINK_TEXT, "Balance").click()
    wait(browser).until(expected_conditions.title_contains("Balance"))
    pending_after = sdk.v1.balance.retrieve().pending[0].amount
    assert pending_before - pending_after == 2000
    shown = browser.find_element(By.CSS_SELECTOR, "strong.pending[data-currency=usd]").text
    assert shown == money_text(pending_after)
    browser.find_element(By.CSS_SELECTOR, "figure.chart summary").click()
    last_day = browser.find_elements(By.CSS_SELECTOR, "table.history tbody tr")[-1]
    assert last_day.text.endswith(money_text(pending_after))
    chart = browser.find_element(By.CSS_SELECTOR, "figure.chart img")
    assert browser.execute_script("return arguments[0].naturalWidth", chart) > 0  # it drew
    keep_screenshot(browser, "refund-half")


def test_journey_redeliver_a_failed_webhook_and_see_the_new_attempt(
    stack: Stack, browser: WebDriver
) -> None:
    merchant = stack.create_merchant("Redelivery Shop")
    sdk = stripe.StripeClient(merchant["secret_key"], base_addresses={"api": stack.url})
    receiver = Receiver(["500"] * WEBHOOK_MAX_ATTEMPTS)  # down for every automatic attempt
    browser.get(sign_in_link(stack, merchant["id"]))
    wait(browser).until(expected_conditions.title_contains("Payments"))
    browser.find_element(By.LINK_TEXT, "Developers").click()
    wait(browser).until(expected_conditions.title_contains("Developers"))
    browser.find_element(By.ID, "endpoint-url").send_keys(receiver.url)
    events = browser.find_element(By.ID, "endpoint-events")
    events.clear()
    events.send_keys("charge.succeeded")
    browser.find_element(By.CSS_SELECTOR, "#endpoint-form button[type=submit]").click()
    wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "signing-secret")))
    receiver.secret = browser.find_element(By.CSS_SELECTOR, "#signing-secret code").text

    charge = sdk.v1.charges.create(
        params={"amount": 1500, "currency": "usd", "source": "tok_visa"},
        options={"idempotency_key": key()},
    )
    (event,) = sdk.v1.events.list(params={"type": "charge.succeeded"}).data
    assert event.data.object["id"] == charge.id
    eventually(
        lambda: receiver.refused == WEBHOOK_MAX_ATTEMPTS, message="every automatic attempt fails"
    )
    browser.get(f"{stack.url}/dashboard/developers/events/{event.id}")

    def statuses() -> list[str]:
        browser.refresh()
        return [s.text for s in browser.find_elements(By.CSS_SELECTOR, "#attempts strong.status")]

    eventually(lambda: statuses() == ["HTTP 500"] * WEBHOOK_MAX_ATTEMPTS, message="the failures")
    browser.find_element(By.CSS_SELECTOR, "#redeliver-form button[type=submit]").click()
    wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "result")))
    assert browser.find_element(By.ID, "result").text == "Queued for delivery again."
    eventually(lambda: statuses()[-1:] == ["HTTP 200"], message="the redelivery's attempt")
    assert [e.id for e in receiver.accepted] == [event.id]
    assert statuses() == ["HTTP 500"] * WEBHOOK_MAX_ATTEMPTS + ["HTTP 200"]
    assert receiver.secret not in browser.page_source  # shown once, on creation
    keep_screenshot(browser, "redeliver-webhook")


def test_journey_submit_dispute_evidence(stack: Stack, shop: Shop, browser: WebDriver) -> None:
    paid, dispute = disputed(shop.sdk, description="Oak chair", receipt_email="buyer@shop.example")
    assert dispute.charge == paid.id
    browser.get(sign_in_link(stack, shop.merchant["id"]))
    wait(browser).until(expected_conditions.title_contains("Payments"))
    browser.find_element(By.LINK_TEXT, "Disputes").click()
    wait(browser).until(expected_conditions.title_contains("Disputes"))
    needing = browser.find_element(By.ID, "needing-response")
    needing.find_element(By.CSS_SELECTOR, f"a[href$='/disputes/{dispute.id}']").click()
    wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "evidence-form")))
    # Pre-filled from the charge; the rest typed in.
    described = browser.find_element(By.ID, "evidence-product_description")
    assert described.get_attribute("value") == "Oak chair"
    email = browser.find_element(By.ID, "evidence-customer_email_address")
    assert email.get_attribute("value") == "buyer@shop.example"
    browser.find_element(By.ID, "evidence-shipping_tracking_number").send_keys("1Z999AA10123456784")
    browser.find_element(By.ID, "evidence-uncategorized_text").send_keys(
        "Delivered and signed for."
    )
    browser.find_element(By.CSS_SELECTOR, "#evidence-form button[value=true]").click()
    wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "result")))
    assert browser.find_element(By.ID, "result").text.startswith("Evidence submitted.")
    assert browser.find_element(By.ID, "dispute-status").text == "under review"
    assert "1Z999AA10123456784" in browser.find_element(By.ID, "evidence").text
    answered = shop.sdk.v1.disputes.retrieve(dispute.id)
    assert answered.status == "under_review" and answered.evidence_details.submission_count == 1
    assert answered.evidence.shipping_tracking_number == "1Z999AA10123456784"
    assert answered.evidence.product_description == "Oak chair"
    keep_screenshot(browser, "dispute-evidence")
