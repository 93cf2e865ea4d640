from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from typing import Any

import boto3
import pytest
import stripe

from clearline import egress
from clearline.audit import Caller
from clearline.egress import EgressPolicy, IPAddress
from clearline.errors import InvalidRequestError, ResourceMissingError, ServiceUnavailableError
from clearline.idempotency import IdempotentRequests, Reply
from clearline.merchants import Merchant, create_merchant
from clearline.secrets import SealedFields, SecretBox
from clearline.store import Store
from clearline.topology import IDEMPOTENCY_TABLE, MAIN_TABLE
from clearline.webhooks import (
    CLAIM_SECONDS,
    ROLL_OVERLAP_SECONDS,
    Attempt,
    Dispatcher,
    Redeliveries,
    WebhookEndpointCreateParams,
    WebhookEndpoints,
    WebhookEndpointUpdateParams,
    attempts_for,
    check_url,
    endpoint_secret,
    retry_delay,
    signature_header,
)
from clearline_local.lambda_runtime import LocalLambdaContext
from presentation.errors import error_status
from presentation.webhook_endpoints import render_webhook_endpoint

STRICT = EgressPolicy()  # what every deployment runs with
LOCAL = EgressPolicy(loopback_for_test_mode=True)  # the local stack's allowance


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:3000/hooks", "http://localhost/hooks", "https://shop.example/hooks"]
)
def test_test_mode_urls_that_are_allowed_on_the_local_stack(url: str) -> None:
    # shop.example has no DNS: a test-mode https endpoint may be registered before its
    # name resolves; every delivery resolves and judges it again.
    check_url(LOCAL, url, livemode=False)


@pytest.mark.parametrize(
    ("policy", "url", "livemode"),
    [
        (LOCAL, "http://shop.example/hooks", False),  # plain http only on loopback
        (LOCAL, "ftp://shop.example/hooks", False),
        (LOCAL, "/hooks", False),
        (LOCAL, "https://10.0.0.8/hooks", False),  # loopback allowed, private is not
        (LOCAL, "http://127.0.0.1/hooks", True),  # live mode: https only
        (LOCAL, "https://127.0.0.1/hooks", True),  # ... and never loopback
        (LOCAL, "https://10.0.0.8/hooks", True),  # ... private
        (LOCAL, "https://169.254.169.254/latest", True),  # ... or link-local (metadata)
        (LOCAL, "https://shop.example/hooks", True),  # ... and it must resolve now
        (STRICT, "http://127.0.0.1:3000/hooks", False),  # deployed: loopback for nobody
        (STRICT, "https://localhost/hooks", False),
    ],
)
def test_urls_that_are_refused(policy: EgressPolicy, url: str, livemode: bool) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        check_url(policy, url, livemode=livemode)
    assert raised.value.param == "url"
    assert error_status(raised.value) == 400


def test_live_mode_accepts_a_public_https_address() -> None:
    check_url(LOCAL, "https://93.184.216.34/hooks", livemode=True)


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
                answer = f"received {event.id}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/webhooks"


@pytest.fixture
def box(aws: Any) -> SecretBox:
    kms = boto3.client("kms", region_name="us-east-1")
    return SecretBox(kms.create_key()["KeyMetadata"]["Arn"], kms)


@pytest.fixture
def subscribed(store: Store, box: SecretBox) -> Iterator[tuple[Merchant, str, Endpoint]]:
    """A merchant with one endpoint subscribed to every event: (merchant, endpoint id, endpoint)."""
    merchant = create_merchant(store, "Hooks Shop").merchant
    endpoint = Endpoint()
    created = WebhookEndpoints(store, secrets=box, egress=LOCAL).create(
        Caller(merchant, "req_test"),
        WebhookEndpointCreateParams(url=endpoint.url, enabled_events=["*"]),
    )
    endpoint.secret = created.secret
    yield merchant, created.id, endpoint
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

    def _post(self, merchant_id: str, endpoint: dict[str, Any], event: dict[str, Any]) -> Attempt:
        raise Died


def test_a_claim_left_by_a_dispatcher_that_died_is_taken_over_after_claim_seconds(
    store: Store, box: SecretBox, subscribed: tuple[Merchant, str, Endpoint]
) -> None:
    merchant, endpoint_id, endpoint = subscribed
    event = an_event()
    t0 = int(time.time())
    with pytest.raises(Died):
        DiesAfterClaiming(store, secrets=box, egress=LOCAL, clock=at(t0)).deliver(
            merchant.id, event
        )
    claim = store.get(f"EVENT#{event['id']}", f"CLAIM#{endpoint_id}")
    assert claim is not None and claim["until"] == t0 + CLAIM_SECONDS

    # Until the claim runs out it may still be its owner's: a redelivery leaves it alone.
    assert (
        Dispatcher(store, secrets=box, egress=LOCAL, clock=at(t0 + CLAIM_SECONDS)).deliver(
            merchant.id, event
        )
        == []
    )
    assert endpoint.received == []
    assert attempts_for(store, event["id"]) == []

    # The next delivery after it takes the claim over and delivers.
    (attempt,) = Dispatcher(
        store, secrets=box, egress=LOCAL, clock=at(t0 + CLAIM_SECONDS + 1)
    ).deliver(merchant.id, event)
    assert (attempt.endpoint, attempt.status) == (endpoint_id, 200)
    assert endpoint.received == [event["id"]]
    assert store.get(f"EVENT#{event['id']}", f"DELIVERED#{endpoint_id}") is not None
    assert store.get(f"EVENT#{event['id']}", f"CLAIM#{endpoint_id}") is None

    # Exactly once: later redeliveries of the same event find it delivered.
    for later in (CLAIM_SECONDS + 2, 2 * CLAIM_SECONDS):
        assert (
            Dispatcher(store, secrets=box, egress=LOCAL, clock=at(t0 + later)).deliver(
                merchant.id, event
            )
            == []
        )
    assert endpoint.received == [event["id"]]
    assert [a["status"] for a in attempts_for(store, event["id"])] == [200]


def test_a_failed_attempt_frees_its_claim_for_the_retry(
    store: Store, box: SecretBox, subscribed: tuple[Merchant, str, Endpoint]
) -> None:
    merchant, endpoint_id, endpoint = subscribed
    event = an_event()
    t0 = int(time.time())
    endpoint.server.shutdown()  # the merchant's server is down: the attempt fails
    endpoint.server.server_close()
    (failed,) = Dispatcher(
        store, secrets=box, egress=LOCAL, timeout_seconds=2, clock=at(t0)
    ).deliver(merchant.id, event)
    assert not failed.ok and failed.error
    assert store.get(f"EVENT#{event['id']}", f"CLAIM#{endpoint_id}") is None

    back = Endpoint()  # the same endpoint, answering again
    back.secret = endpoint.secret
    WebhookEndpoints(store, secrets=box, egress=LOCAL).update(
        Caller(merchant, "req_test"), endpoint_id, WebhookEndpointUpdateParams(url=back.url)
    )
    (retried,) = Dispatcher(store, secrets=box, egress=LOCAL, clock=at(t0 + 60)).deliver(
        merchant.id, event
    )
    assert retried.ok and back.received == [event["id"]]
    assert [a.get("status") for a in attempts_for(store, event["id"])] == [None, 200]
    back.server.shutdown()


def test_a_delivery_finished_between_anothers_check_and_claim_is_not_repeated(
    store: Store, box: SecretBox, subscribed: tuple[Merchant, str, Endpoint]
) -> None:
    merchant, _, endpoint = subscribed
    event = an_event()
    first = Dispatcher(store, secrets=box, egress=LOCAL)

    class ReadsJustBeforeTheFirstFinishes(Store):
        def get(self, pk: str, sk: str) -> dict[str, Any] | None:
            item = super().get(pk, sk)
            if sk.startswith("DELIVERED#") and not endpoint.received:
                first.deliver(merchant.id, event)  # a duplicate message, handled concurrently
            return item

    second = Dispatcher(
        ReadsJustBeforeTheFirstFinishes(store.table_name, store.client), secrets=box, egress=LOCAL
    )
    second.deliver(merchant.id, event)
    assert endpoint.received == [event["id"]]


# ---- signing secrets at rest ----------------------------------------------------------------


def raw_items(aws: Any) -> str:
    """Every item of both tables, as stored, as one string to search."""
    items = [
        item
        for table in (MAIN_TABLE.name, IDEMPOTENCY_TABLE.name)
        for item in aws.scan(TableName=table)["Items"]
    ]
    return json.dumps(items, default=str)


def test_a_created_endpoint_keeps_its_secret_sealed_in_the_item_and_the_idempotency_record(
    aws: Any, store: Store, box: SecretBox
) -> None:
    merchant = create_merchant(store, "Sealed Shop").merchant
    endpoint = Endpoint()
    endpoints = WebhookEndpoints(store, secrets=box, egress=LOCAL)
    requests = IdempotentRequests(IDEMPOTENCY_TABLE.name, aws, sealer=SealedFields(box))
    requests.register_lambda_context(LocalLambdaContext("api", 1024, 29, "request-1"))
    params = {"url": endpoint.url, "enabled_events": ["*"]}

    def create(request_id: str) -> Any:
        return requests.run(
            merchant_id=merchant.id,
            key="create-endpoint-1",
            method="POST",
            path="/v1/webhook_endpoints",
            params=params,
            request_id=request_id,
            operation=lambda: Reply(
                200,
                render_webhook_endpoint(
                    endpoints.create(
                        Caller(merchant, request_id), WebhookEndpointCreateParams(**params)
                    )
                ),
            ),
        )

    created = create("req_first")
    secret = created.body["secret"]
    assert secret.startswith("whsec_")
    stored = raw_items(aws)
    assert "whsec_" not in stored
    assert secret.removeprefix("whsec_") not in stored
    item = store.get(f"MERCHANT#{merchant.id}", f"WE#{created.body['id']}")
    assert item is not None and "secret" not in item
    assert endpoint_secret(box, merchant.id, item) == secret

    replayed = create("req_retry")  # the same key: the first response, secret included
    assert replayed.request_id == "req_first"
    assert replayed.body == created.body

    endpoint.secret = secret  # the receiver verifies with what the create returned
    event = an_event()
    (attempt,) = Dispatcher(store, secrets=box, egress=LOCAL).deliver(merchant.id, event)
    assert attempt.ok
    assert endpoint.received == [event["id"]]
    endpoint.server.shutdown()


def test_an_idempotency_record_whose_seal_is_broken_is_not_replayed(
    aws: Any, store: Store, box: SecretBox
) -> None:
    merchant = create_merchant(store, "Broken Seal Shop").merchant
    requests = IdempotentRequests(IDEMPOTENCY_TABLE.name, aws, sealer=SealedFields(box))
    requests.register_lambda_context(LocalLambdaContext("api", 1024, 29, "request-1"))

    def run(request_id: str) -> Any:
        return requests.run(
            merchant_id=merchant.id,
            key="k1",
            method="POST",
            path="/v1/x",
            params={},
            request_id=request_id,
            operation=lambda: Reply(200, {"id": "we_1", "secret": "whsec_" + "cd" * 24}),
        )

    assert run("req_1").body["secret"] == "whsec_" + "cd" * 24
    (record,) = aws.scan(TableName=IDEMPOTENCY_TABLE.name)["Items"]
    data = json.loads(record["data"]["S"])
    sealed = data["body"]["secret"]["sealed"]
    first = "B" if sealed["ciphertext"][0] != "B" else "C"
    sealed["ciphertext"] = first + sealed["ciphertext"][1:]
    record["data"]["S"] = json.dumps(data)
    aws.put_item(TableName=IDEMPOTENCY_TABLE.name, Item=record)
    with pytest.raises(ServiceUnavailableError):
        run("req_2")


def test_creating_an_endpoint_without_a_key_is_refused_as_retryable(store: Store) -> None:
    merchant = create_merchant(store, "No Key Shop").merchant
    with pytest.raises(ServiceUnavailableError):
        WebhookEndpoints(store, secrets=SecretBox(""), egress=LOCAL).create(
            Caller(merchant, "req_test"),
            WebhookEndpointCreateParams(url="http://127.0.0.1:3000/hooks", enabled_events=["*"]),
        )
    assert store.query_partition(f"MERCHANT#{merchant.id}", "WE#") == []


def _deliver_once_failing(
    store: Store, box: SecretBox, merchant: Merchant, endpoint_id: str, endpoint: Endpoint
) -> Attempt:
    event = an_event()
    (attempt,) = Dispatcher(store, secrets=box, egress=LOCAL).deliver(merchant.id, event)
    assert not attempt.ok and attempt.status is None
    assert attempt.error is not None and attempt.error.startswith("signing secret unavailable")
    assert endpoint.received == [], "nothing signed with a secret that did not open"
    (recorded,) = attempts_for(store, event["id"])
    assert recorded["error"] == attempt.error
    assert store.get(f"EVENT#{event['id']}", f"CLAIM#{endpoint_id}") is None  # retried later
    return attempt


def test_a_tampered_ciphertext_fails_closed(
    store: Store, box: SecretBox, subscribed: tuple[Merchant, str, Endpoint]
) -> None:
    merchant, endpoint_id, endpoint = subscribed
    item = store.get(f"MERCHANT#{merchant.id}", f"WE#{endpoint_id}")
    assert item is not None
    sealed = item["sealed_secret"]
    first = "B" if sealed["ciphertext"][0] != "B" else "C"
    store.put({**item, "sealed_secret": {**sealed, "ciphertext": first + sealed["ciphertext"][1:]}})
    _deliver_once_failing(store, box, merchant, endpoint_id, endpoint)


def test_an_envelope_moved_to_another_endpoint_fails_closed(
    store: Store, box: SecretBox, subscribed: tuple[Merchant, str, Endpoint]
) -> None:
    merchant, endpoint_id, endpoint = subscribed
    other = Endpoint()
    other_id = (
        WebhookEndpoints(store, secrets=box, egress=LOCAL)
        .create(
            Caller(merchant, "req_test"),
            WebhookEndpointCreateParams(url=other.url, enabled_events=["*"]),
        )
        .id
    )
    mine = store.get(f"MERCHANT#{merchant.id}", f"WE#{endpoint_id}")
    theirs = store.get(f"MERCHANT#{merchant.id}", f"WE#{other_id}")
    assert mine is not None and theirs is not None
    # The other endpoint's envelope onto this one: its context names the other endpoint.
    store.put({**mine, "sealed_secret": theirs["sealed_secret"]})
    store.delete(f"MERCHANT#{merchant.id}", f"WE#{other_id}")
    _deliver_once_failing(store, box, merchant, endpoint_id, endpoint)
    other.server.shutdown()


def test_an_endpoint_copied_to_another_merchant_fails_closed(
    store: Store, box: SecretBox, subscribed: tuple[Merchant, str, Endpoint]
) -> None:
    merchant, endpoint_id, endpoint = subscribed
    thief = create_merchant(store, "Thief").merchant
    item = store.get(f"MERCHANT#{merchant.id}", f"WE#{endpoint_id}")
    assert item is not None
    store.put({**item, "pk": f"MERCHANT#{thief.id}"})
    _deliver_once_failing(store, box, thief, endpoint_id, endpoint)


# ---- where deliveries may go ----------------------------------------------------------------


class Listener:
    """A bare TCP listener on loopback that counts the connections it is offered."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.0)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def connections(self) -> int:
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1


class Rebinding:
    """A resolver that answers `first` for the first lookup, then `later`."""

    def __init__(self, first: str, later: str) -> None:
        self.answers = [first, later]
        self.asked = 0

    def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.asked += 1
        return [ip_address(self.answers[min(self.asked, 2) - 1])]


@pytest.mark.parametrize(
    ("later", "loopback_allowed", "named"),
    [
        ("127.0.0.1", False, "a loopback address"),
        ("169.254.169.254", False, "the instance metadata service"),
        ("169.254.169.254", True, "the instance metadata service"),
        ("10.0.0.1", True, "a private address"),
    ],
)
def test_a_host_that_turns_private_after_it_was_accepted_is_refused_at_delivery(
    store: Store, box: SecretBox, later: str, loopback_allowed: bool, named: str
) -> None:
    merchant = create_merchant(store, "Rebind Shop").merchant
    listener = Listener()
    resolver = Rebinding("93.184.216.34", later)
    policy = EgressPolicy(loopback_for_test_mode=loopback_allowed, resolver=resolver)
    WebhookEndpoints(store, secrets=box, egress=policy).create(
        Caller(merchant, "req_test"),
        WebhookEndpointCreateParams(
            url=f"https://rebind.test:{listener.port}/hooks", enabled_events=["*"]
        ),
    )
    assert resolver.asked == 1  # judged public when it was created

    event = an_event()
    (attempt,) = Dispatcher(store, secrets=box, egress=policy).deliver(merchant.id, event)
    assert resolver.asked == 2  # resolved again for the delivery
    assert not attempt.ok and attempt.status is None
    assert attempt.error is not None and attempt.error.startswith("refused: ")
    assert f"rebind.test resolves to {later}" in attempt.error and named in attempt.error
    assert listener.connections() == 0, "nothing was sent"
    (recorded,) = attempts_for(store, event["id"])
    assert (recorded.get("status"), recorded["error"]) == (None, attempt.error)
    assert store.get(f"EVENT#{event['id']}", f"CLAIM#{attempt.endpoint}") is None  # retried


def test_a_live_endpoint_gets_the_strict_rules_even_where_loopback_is_allowed(
    store: Store, box: SecretBox
) -> None:
    merchant = create_merchant(store, "Live Shop", livemode=True).merchant
    listener = Listener()
    policy = EgressPolicy(
        loopback_for_test_mode=True, resolver=Rebinding("93.184.216.34", "127.0.0.1")
    )
    created = WebhookEndpoints(store, secrets=box, egress=policy).create(
        Caller(merchant, "req_test"),
        WebhookEndpointCreateParams(
            url=f"https://live.test:{listener.port}/hooks", enabled_events=["*"]
        ),
    )
    assert created.livemode is True
    (attempt,) = Dispatcher(store, secrets=box, egress=policy).deliver(merchant.id, an_event())
    assert attempt.error is not None and "a loopback address" in attempt.error
    assert listener.connections() == 0


def test_the_delivery_connects_to_the_address_it_checked(
    store: Store,
    box: SecretBox,
    subscribed: tuple[Merchant, str, Endpoint],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    merchant, endpoint_id, endpoint = subscribed
    port = endpoint.server.server_address[1]
    asked: list[str] = []

    def resolve_once(host: str, port: int) -> list[IPAddress]:
        asked.append(host)
        return [ip_address("127.0.0.1")]

    policy = EgressPolicy(loopback_for_test_mode=True, resolver=resolve_once)
    WebhookEndpoints(store, secrets=box, egress=policy).update(
        Caller(merchant, "req_test"),
        endpoint_id,
        WebhookEndpointUpdateParams(url=f"http://hooks.test:{port}/webhooks"),
    )
    asked.clear()

    def no_more_lookups(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the POST must not resolve the host again")

    monkeypatch.setattr(egress.socket, "getaddrinfo", no_more_lookups)
    event = an_event()
    (attempt,) = Dispatcher(store, secrets=box, egress=policy).deliver(merchant.id, event)
    assert attempt.ok, attempt.error
    assert asked == ["hooks.test"]  # one lookup for the attempt, and the POST went there
    assert endpoint.received == [event["id"]]


def test_a_redirect_fails_the_attempt_with_its_status_and_is_not_followed(
    store: Store, box: SecretBox
) -> None:
    merchant = create_merchant(store, "Redirect Shop").merchant
    target = Endpoint()
    hits: list[str] = []

    class Redirects(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hits.append(self.path)
            self.send_response(302)
            self.send_header("Location", target.url)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    redirecting = ThreadingHTTPServer(("127.0.0.1", 0), Redirects)
    threading.Thread(target=redirecting.serve_forever, daemon=True).start()
    try:
        WebhookEndpoints(store, secrets=box, egress=LOCAL).create(
            Caller(merchant, "req_test"),
            WebhookEndpointCreateParams(
                url=f"http://127.0.0.1:{redirecting.server_address[1]}/hooks",
                enabled_events=["*"],
            ),
        )
        event = an_event()
        (attempt,) = Dispatcher(store, secrets=box, egress=LOCAL).deliver(merchant.id, event)
        assert (attempt.ok, attempt.status) == (False, 302)
        assert hits == ["/hooks"]
        assert target.received == [], "the redirect's target was never called"
        (recorded,) = attempts_for(store, event["id"])
        assert recorded["status"] == 302
        assert "redirects are not followed" in recorded["error"]
        assert store.get(f"EVENT#{event['id']}", f"DELIVERED#{attempt.endpoint}") is None
    finally:
        redirecting.shutdown()
        target.server.shutdown()


def test_a_refused_endpoint_does_not_hold_up_the_others(
    store: Store, box: SecretBox, subscribed: tuple[Merchant, str, Endpoint]
) -> None:
    merchant, endpoint_id, endpoint = subscribed
    resolver = Rebinding("93.184.216.34", "10.0.0.1")
    policy = EgressPolicy(loopback_for_test_mode=True, resolver=resolver)
    bad_id = (
        WebhookEndpoints(store, secrets=box, egress=policy)
        .create(
            Caller(merchant, "req_test"),
            WebhookEndpointCreateParams(
                url="https://turns-private.test/hooks", enabled_events=["*"]
            ),
        )
        .id
    )
    event = an_event()
    attempts = Dispatcher(store, secrets=box, egress=policy).deliver(merchant.id, event)
    by_endpoint = {a.endpoint: a for a in attempts}
    assert set(by_endpoint) == {endpoint_id, bad_id}
    assert by_endpoint[endpoint_id].ok
    assert not by_endpoint[bad_id].ok and "a private address" in str(by_endpoint[bad_id].error)
    assert endpoint.received == [event["id"]]


# ---- support's tools: rolling the secret, delivering again ----------------------------------


def test_after_a_roll_deliveries_verify_with_either_secret_for_a_day(
    store: Store, box: SecretBox, subscribed: tuple[Merchant, str, Endpoint]
) -> None:
    merchant, endpoint_id, endpoint = subscribed
    old_secret = endpoint.secret
    endpoints = WebhookEndpoints(store, secrets=box, egress=LOCAL)
    rolled = endpoints.roll_secret(Caller(merchant, "req_roll"), endpoint_id)
    assert rolled.secret and rolled.secret != old_secret
    assert endpoints.retrieve(merchant, endpoint_id).secret is None  # shown once
    t0 = int(time.time())
    # The receiver still on the old secret, then the one changed over: both verify.
    for secret in (old_secret, rolled.secret):
        endpoint.secret = secret
        event = an_event()
        (attempt,) = Dispatcher(store, secrets=box, egress=LOCAL, clock=at(t0)).deliver(
            merchant.id, event
        )
        assert attempt.ok and endpoint.received[-1] == event["id"]
        # The start of the receiver's answer is kept with the attempt, for support.
        (stored,) = attempts_for(store, event["id"])
        assert stored["response_body"] == attempt.response_body == f"received {event['id']}"
    # A day on, only the new secret signs.
    later = at(t0 + ROLL_OVERLAP_SECONDS + 1)
    endpoint.secret = old_secret
    unverified = an_event()
    (refused,) = Dispatcher(store, secrets=box, egress=LOCAL, clock=later).deliver(
        merchant.id, unverified
    )
    # The receiver's verification failed: it dropped the connection, and kept nothing.
    assert not refused.ok and unverified["id"] not in endpoint.received
    audit = store.query_partition(f"MERCHANT#{merchant.id}", "AUDIT#")
    assert "roll_secret" in [a["operation"] for a in audit]


def test_a_signature_header_carries_one_signature_per_secret() -> None:
    header = signature_header("{}", "whsec_new", 1_800_000_000, "whsec_old")
    parts = header.split(",")
    assert parts[0] == "t=1800000000" and len(parts) == 3
    assert all(part.startswith("v1=") for part in parts[1:])
    assert header.startswith(signature_header("{}", "whsec_new", 1_800_000_000))


class Queue:
    def __init__(self, fails: bool = False) -> None:
        self.sent: list[str] = []
        self.fails = fails

    def __call__(self, event: dict[str, Any]) -> None:
        if self.fails:
            raise ConnectionError("the queue did not answer")
        self.sent.append(event["id"])


def stored_event(store: Store, merchant: Merchant) -> str:
    event_id = f"evt_{uuid.uuid4().hex[:24]}"
    store.put({"pk": f"EVENT#{event_id}", "sk": "EVENT", "id": event_id, "merchant": merchant.id})
    return event_id


def test_a_redelivery_is_queued_once_per_key_even_after_a_crash_between(
    store: Store, subscribed: tuple[Merchant, str, Endpoint]
) -> None:
    merchant, _, _ = subscribed
    event_id = stored_event(store, merchant)
    caller = Caller(merchant, "req_support", actor="dashboard session_1")
    # Recorded, then the queue fails: nothing was queued, and the same key tries again.
    with pytest.raises(ConnectionError):
        Redeliveries(store, Queue(fails=True)).redeliver(caller, event_id, "key-1")
    queue = Queue()
    assert Redeliveries(store, queue).redeliver(caller, event_id, "key-1") is True
    assert Redeliveries(store, queue).redeliver(caller, event_id, "key-1") is False
    assert queue.sent == [event_id]
    assert Redeliveries(store, queue).redeliver(caller, event_id, "key-2") is True
    assert queue.sent == [event_id, event_id]
    audit = store.query_partition(f"EVENT#{event_id}", "AUDIT#")
    assert {a["actor"] for a in audit} == {"dashboard session_1"}
    assert sorted(a["to_state"] for a in audit) == ["queued", "queued", "requested", "requested"]


def test_another_merchants_event_is_not_found_and_not_queued(
    store: Store, subscribed: tuple[Merchant, str, Endpoint]
) -> None:
    merchant, _, _ = subscribed
    other = create_merchant(store, "Other Shop").merchant
    event_id = stored_event(store, other)
    queue = Queue()
    for asked in (event_id, "evt_missing"):
        with pytest.raises(ResourceMissingError):
            Redeliveries(store, queue).redeliver(Caller(merchant, "req_x"), asked, "key")
    assert queue.sent == [] and store.query_partition(f"EVENT#{event_id}", "REDELIVERY#") == []


def test_a_test_event_is_one_signed_post_to_one_endpoint_and_no_event_of_theirs(
    store: Store, box: SecretBox, subscribed: tuple[Merchant, str, Endpoint]
) -> None:
    merchant, endpoint_id, endpoint = subscribed
    dispatcher = Dispatcher(store, secrets=box, egress=LOCAL)
    attempt = dispatcher.send_test(merchant, endpoint_id, "payout.paid")
    assert attempt.ok and attempt.response_body.startswith("received evt_test_")
    (received,) = endpoint.received  # verified with the endpoint's secret by the stripe SDK
    assert received.startswith("evt_test_")
    assert [i for i in store.scan("EVENT#") if i["pk"] == f"EVENT#{received}"] == []
    with pytest.raises(InvalidRequestError):
        dispatcher.send_test(merchant, endpoint_id, "not an event type; drop table")
    with pytest.raises(ResourceMissingError):
        dispatcher.send_test(merchant, "we_missing", "charge.succeeded")
    other = create_merchant(store, "Other Hooks Shop").merchant
    with pytest.raises(ResourceMissingError):  # another merchant's endpoint
        dispatcher.send_test(other, endpoint_id, "charge.succeeded")
    assert len(endpoint.received) == 1
