from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stripe

from clearline.audit import Caller
from clearline.errors import InvalidRequestError
from clearline.merchants import Merchant, create_merchant
from clearline.store import Store
from clearline.webhooks import (
    CLAIM_SECONDS,
    Attempt,
    Dispatcher,
    WebhookEndpointCreateParams,
    WebhookEndpoints,
    WebhookEndpointUpdateParams,
    attempts_for,
    check_url,
    retry_delay,
    signature_header,
)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:3000/hooks", "http://localhost/hooks", "https://shop.example/hooks"]
)
def test_test_mode_urls_that_are_allowed(url: str) -> None:
    check_url(url, livemode=False)


@pytest.mark.parametrize(
    ("url", "livemode"),
    [
        ("http://shop.example/hooks", False),  # plain http only on loopback, in test mode
        ("ftp://shop.example/hooks", False),
        ("/hooks", False),
        ("http://127.0.0.1/hooks", True),  # live mode: https only
        ("https://127.0.0.1/hooks", True),  # ... and never loopback
        ("https://10.0.0.8/hooks", True),  # ... private
        ("https://169.254.169.254/latest", True),  # ... or link-local (instance metadata)
    ],
)
def test_urls_that_are_refused(url: str, livemode: bool) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        check_url(url, livemode=livemode)
    assert raised.value.param == "url"


def test_live_mode_accepts_a_public_https_address() -> None:
    check_url("https://93.184.216.34/hooks", livemode=True)


def test_signatures_verify_with_the_stripe_sdk() -> None:
    payload = json.dumps(
        {
            "id": "evt_1",
            "object": "event",
            "type": "charge.succeeded",
            "data": {"object": {"id": "ch_1"}},
        }
    )
    header = signature_header(payload, "whsec_test", int(time.time()))
    event = stripe.Webhook.construct_event(payload, header, "whsec_test")
    assert event.id == "evt_1"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, header, "whsec_other")


def test_retries_back_off_exponentially_over_about_three_days() -> None:
    # 16 attempts (the queue's maxReceiveCount): 15 waits between them.
    delays = [retry_delay(attempt, 60) for attempt in range(1, 16)]
    assert delays[:4] == [60, 120, 240, 480]
    assert max(delays) == 12 * 60 * 60
    assert 2.5 * 86400 < sum(delays) < 3.5 * 86400


# ---- delivery under faults (moto in-process, the dispatcher's clock driven by the test) ----


class Endpoint:
    """A merchant's webhook endpoint on loopback: records each verified delivery, then
    answers 200."""

    def __init__(self) -> None:
        self.secret = ""
        self.received: list[str] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                payload = self.rfile.read(int(self.headers["Content-Length"])).decode()
                event = stripe.Webhook.construct_event(
                    payload, self.headers["Stripe-Signature"], endpoint.secret
                )
                endpoint.received.append(event.id)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/webhooks"


@pytest.fixture
def subscribed(store: Store) -> Iterator[tuple[Merchant, str, Endpoint]]:
    """A merchant with one endpoint subscribed to every event: (merchant, endpoint id, endpoint)."""
    merchant = create_merchant(store, "Hooks Shop").merchant
    endpoint = Endpoint()
    created = WebhookEndpoints(store).create(
        Caller(merchant, "req_test"),
        WebhookEndpointCreateParams(url=endpoint.url, enabled_events=["*"]),
    )
    endpoint.secret = created["secret"]
    yield merchant, created["id"], endpoint
    endpoint.server.shutdown()


def an_event() -> dict[str, Any]:
    return {
        "id": f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "type": "charge.succeeded",
        "created": int(time.time()),
        "data": {"object": {"id": "ch_1", "object": "charge", "amount": 5000}},
    }


def at(moment: int) -> Callable[[], float]:
    """A dispatcher clock stopped at `moment`."""
    return lambda: moment


class Died(Exception):
    pass


class DiesAfterClaiming(Dispatcher):
    """A dispatcher whose execution environment dies between its claim and its POST."""

    def _post(self, endpoint: dict[str, Any], event: dict[str, Any]) -> Attempt:
        raise Died


def test_a_claim_left_by_a_dispatcher_that_died_is_taken_over_after_claim_seconds(
    store: Store, subscribed: tuple[Merchant, str, Endpoint]
) -> None:
    merchant, endpoint_id, endpoint = subscribed
    event = an_event()
    t0 = int(time.time())
    with pytest.raises(Died):
        DiesAfterClaiming(store, clock=at(t0)).deliver(merchant.id, event)
    claim = store.get(f"EVENT#{event['id']}", f"CLAIM#{endpoint_id}")
    assert claim is not None and claim["until"] == t0 + CLAIM_SECONDS

    # Until the claim runs out it may still be its owner's: a redelivery leaves it alone.
    assert Dispatcher(store, clock=at(t0 + CLAIM_SECONDS)).deliver(merchant.id, event) == []
    assert endpoint.received == []
    assert attempts_for(store, event["id"]) == []

    # The next delivery after it takes the claim over and delivers.
    (attempt,) = Dispatcher(store, clock=at(t0 + CLAIM_SECONDS + 1)).deliver(merchant.id, event)
    assert (attempt.endpoint, attempt.status) == (endpoint_id, 200)
    assert endpoint.received == [event["id"]]
    assert store.get(f"EVENT#{event['id']}", f"DELIVERED#{endpoint_id}") is not None
    assert store.get(f"EVENT#{event['id']}", f"CLAIM#{endpoint_id}") is None

    # Exactly once: later redeliveries of the same event find it delivered.
    for later in (CLAIM_SECONDS + 2, 2 * CLAIM_SECONDS):
        assert Dispatcher(store, clock=at(t0 + later)).deliver(merchant.id, event) == []
    assert endpoint.received == [event["id"]]
    assert [a["status"] for a in attempts_for(store, event["id"])] == [200]


def test_a_failed_attempt_frees_its_claim_for_the_retry(
    store: Store, subscribed: tuple[Merchant, str, Endpoint]
) -> None:
    merchant, endpoint_id, endpoint = subscribed
    event = an_event()
    t0 = int(time.time())
    endpoint.server.shutdown()  # the merchant's server is down: the attempt fails
    endpoint.server.server_close()
    (failed,) = Dispatcher(store, timeout_seconds=2, clock=at(t0)).deliver(merchant.id, event)
    assert not failed.ok and failed.error
    assert store.get(f"EVENT#{event['id']}", f"CLAIM#{endpoint_id}") is None

    back = Endpoint()  # the same endpoint, answering again
    back.secret = endpoint.secret
    WebhookEndpoints(store).update(
        Caller(merchant, "req_test"), endpoint_id, WebhookEndpointUpdateParams(url=back.url)
    )
    (retried,) = Dispatcher(store, clock=at(t0 + 60)).deliver(merchant.id, event)
    assert retried.ok and back.received == [event["id"]]
    assert [a.get("status") for a in attempts_for(store, event["id"])] == [None, 200]
    back.server.shutdown()


def test_a_delivery_finished_between_anothers_check_and_claim_is_not_repeated(
    store: Store, subscribed: tuple[Merchant, str, Endpoint]
) -> None:
    merchant, _, endpoint = subscribed
    event = an_event()
    first = Dispatcher(store)

    class ReadsJustBeforeTheFirstFinishes(Store):
        def get(self, pk: str, sk: str) -> dict[str, Any] | None:
            item = super().get(pk, sk)
            if sk.startswith("DELIVERED#") and not endpoint.received:
                first.deliver(merchant.id, event)  # a duplicate message, handled concurrently
            return item

    second = Dispatcher(ReadsJustBeforeTheFirstFinishes(store.table_name, store.client))
    second.deliver(merchant.id, event)
    assert endpoint.received == [event["id"]]
