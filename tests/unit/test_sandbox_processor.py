"""The sandbox processor driven over HTTP through the API's processor client."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from clearline.processor import (
    Authorization,
    ProcessorClient,
    ProcessorError,
    ProcessorRejected,
    ProcessorUnavailable,
    UnknownToken,
)
from clearline_local.sandbox_processor import SandboxProcessor

FAULT_DELAY_SECONDS = 1.5
CLIENT_TIMEOUT_SECONDS = 0.5  # well under the fault delay, so a fault reads as a timeout


@pytest.fixture(scope="module")
def processor() -> Iterator[SandboxProcessor]:
    sandbox = SandboxProcessor(fault_delay_seconds=FAULT_DELAY_SECONDS).start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture(autouse=True)
def _reset(processor: SandboxProcessor) -> Iterator[None]:
    yield
    processor.clear_faults()
    processor.latency_ms = 0


@pytest.fixture
def client(processor: SandboxProcessor) -> ProcessorClient:
    return ProcessorClient(processor.url, timeout_seconds=CLIENT_TIMEOUT_SECONDS)


def key() -> str:
    return f"test-{uuid.uuid4()}"


def authorize(
    client: ProcessorClient,
    token: str = "tok_visa",
    *,
    amount: int = 2000,
    capture: bool = True,
    idempotency_key: str | None = None,
) -> Authorization:
    return client.authorize(
        idempotency_key=idempotency_key or key(),
        token=token,
        amount=amount,
        currency="usd",
        capture=capture,
        reference="ch_test",
    )


def raw(
    processor: SandboxProcessor,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One request with urllib, for what the client deliberately does not expose."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        processor.url + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


# ---------------------------------------------------------------------------- tokens


@pytest.mark.parametrize(
    ("token", "brand", "last4", "funding"),
    [
        ("tok_visa", "visa", "4242", "credit"),
        ("tok_visa_debit", "visa", "5556", "debit"),
        ("tok_mastercard", "mastercard", "4444", "credit"),
        ("tok_amex", "amex", "8431", "credit"),
        ("pm_card_visa", "visa", "4242", "credit"),
        ("pm_card_mastercard", "mastercard", "4444", "credit"),
    ],
)
def test_success_tokens_are_approved(
    client: ProcessorClient, token: str, brand: str, last4: str, funding: str
) -> None:
    auth = authorize(client, token, amount=1234)

    assert auth.approved
    assert auth.id.startswith("pa_")
    assert (auth.amount, auth.currency, auth.reference) == (1234, "usd", "ch_test")
    assert auth.captured and auth.amount_captured == 1234 and auth.amount_refunded == 0
    assert (auth.card.brand, auth.card.last4, auth.card.funding) == (brand, last4, funding)
    assert auth.card.country == "US" and 1 <= auth.card.exp_month <= 12
    assert auth.code is None and auth.decline_code is None and auth.message is None
    assert auth.network_transaction_id


@pytest.mark.parametrize(
    ("token", "code", "decline_code", "message"),
    [
        ("tok_chargeDeclined", "card_declined", "generic_decline", "Your card was declined."),
        (
            "tok_chargeDeclinedInsufficientFunds",
            "card_declined",
            "insufficient_funds",
            "Your card has insufficient funds.",
        ),
        ("tok_chargeDeclinedExpiredCard", "expired_card", "expired_card", "Your card has expired."),
        (
            "tok_chargeDeclinedIncorrectCvc",
            "incorrect_cvc",
            "incorrect_cvc",
            "Your card's security code is incorrect.",
        ),
        (
            "tok_chargeDeclinedProcessingError",
            "processing_error",
            "processing_error",
            "An error occurred while processing your card. Try again in a little bit.",
        ),
        ("tok_chargeDeclinedFraudulent", "card_declined", "fraudulent", "Your card was declined."),
        ("tok_chargeDeclinedLostCard", "card_declined", "lost_card", "Your card was declined."),
        ("tok_chargeDeclinedStolenCard", "card_declined", "stolen_card", "Your card was declined."),
    ],
)
def test_decline_tokens_carry_stripe_codes(
    client: ProcessorClient, token: str, code: str, decline_code: str, message: str
) -> None:
    auth = authorize(client, token)

    assert not auth.approved and auth.status == "declined"
    assert (auth.code, auth.decline_code, auth.message) == (code, decline_code, message)
    assert not auth.captured and auth.amount_captured == 0
    assert auth.network_transaction_id is None


def test_unknown_token(client: ProcessorClient) -> None:
    k = key()
    with pytest.raises(UnknownToken) as info:
        authorize(client, "tok_nope", idempotency_key=k)

    assert info.value.token == "tok_nope"
    assert "No such token: 'tok_nope'" in str(info.value)
    # A refusal commits nothing, so the key stays free.
    assert client.lookup(k) is None


def test_a_card_number_sent_as_a_token_is_not_echoed(processor: SandboxProcessor) -> None:
    status, body, _ = raw(
        processor,
        "POST",
        "/v1/authorizations",
        {"token": "4242 4242 4242 4242", "amount": 100, "currency": "usd"},
        {"Idempotency-Key": key()},
    )

    assert status == 404 and body["error"]["code"] == "unknown_token"
    assert "4242" not in json.dumps(body)


# ----------------------------------------------------------------------- idempotency


def test_same_key_and_body_replays_the_first_response(
    processor: SandboxProcessor, client: ProcessorClient
) -> None:
    k = key()
    first = authorize(client, idempotency_key=k)
    second = authorize(client, idempotency_key=k)

    assert second == first

    body = {
        "token": "tok_visa",
        "amount": 2000,
        "currency": "usd",
        "capture": True,
        "reference": "ch_test",
    }
    status, replayed, headers = raw(
        processor, "POST", "/v1/authorizations", body, {"Idempotency-Key": k}
    )
    assert status == 200 and replayed["id"] == first.id
    assert headers.get("Idempotent-Replayed") == "true"


def test_same_key_with_a_different_body_is_rejected(client: ProcessorClient) -> None:
    k = key()
    authorize(client, amount=2000, idempotency_key=k)

    with pytest.raises(ProcessorRejected) as info:
        authorize(client, amount=2001, idempotency_key=k)

    assert info.value.status == 422 and info.value.code == "idempotency_mismatch"


def test_concurrent_requests_with_one_key_authorize_once(
    processor: SandboxProcessor,
) -> None:
    client = ProcessorClient(processor.url, timeout_seconds=5)
    k = key()
    ids: list[str] = []

    def call() -> None:
        ids.append(authorize(client, idempotency_key=k).id)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(ids) == 8 and len(set(ids)) == 1


def test_posts_require_an_idempotency_key(processor: SandboxProcessor) -> None:
    status, body, _ = raw(
        processor,
        "POST",
        "/v1/authorizations",
        {"token": "tok_visa", "amount": 100, "currency": "usd"},
    )

    assert status == 400 and body["error"]["code"] == "idempotency_key_missing"


# ------------------------------------------------------------- capture, void, refund


def test_capture_in_full_and_a_second_capture_is_refused(client: ProcessorClient) -> None:
    auth = authorize(client, capture=False)
    assert auth.approved and not auth.captured and auth.amount_captured == 0

    captured = client.capture(idempotency_key=key(), authorization_id=auth.id, amount=2000)
    assert captured.id == auth.id and captured.captured and captured.amount_captured == 2000

    with pytest.raises(ProcessorRejected) as info:
        client.capture(idempotency_key=key(), authorization_id=auth.id, amount=2000)
    assert info.value.status == 409 and info.value.code == "already_captured"


def test_capture_replay_with_the_same_key_is_not_a_second_capture(
    client: ProcessorClient,
) -> None:
    auth = authorize(client, capture=False)
    k = key()
    first = client.capture(idempotency_key=k, authorization_id=auth.id, amount=2000)

    assert client.capture(idempotency_key=k, authorization_id=auth.id, amount=2000) == first


def test_partial_capture(client: ProcessorClient) -> None:
    auth = authorize(client, capture=False)

    captured = client.capture(idempotency_key=key(), authorization_id=auth.id, amount=1500)

    assert captured.captured and captured.amount == 2000 and captured.amount_captured == 1500
    assert client.get_authorization(auth.id) == captured


def test_capture_more_than_authorized_is_refused(client: ProcessorClient) -> None:
    auth = authorize(client, capture=False)

    with pytest.raises(ProcessorRejected) as info:
        client.capture(idempotency_key=key(), authorization_id=auth.id, amount=2001)

    assert info.value.status == 400 and info.value.code == "amount_too_large"
    assert not client.get_authorization(auth.id).captured


def test_void(client: ProcessorClient) -> None:
    auth = authorize(client, capture=False)

    voided = client.void(idempotency_key=key(), authorization_id=auth.id)

    assert voided.voided and not voided.captured
    with pytest.raises(ProcessorRejected) as info:
        client.capture(idempotency_key=key(), authorization_id=auth.id, amount=2000)
    assert info.value.code == "authorization_voided"


def test_void_after_capture_is_refused(client: ProcessorClient) -> None:
    auth = authorize(client, capture=True)

    with pytest.raises(ProcessorRejected) as info:
        client.void(idempotency_key=key(), authorization_id=auth.id)

    assert info.value.code == "already_captured"


def test_unknown_authorization(client: ProcessorClient) -> None:
    with pytest.raises(ProcessorRejected) as info:
        client.capture(idempotency_key=key(), authorization_id="pa_missing", amount=100)

    assert info.value.status == 404 and info.value.code == "resource_missing"


def test_refunds_up_to_the_captured_amount(client: ProcessorClient) -> None:
    auth = authorize(client, capture=False)
    client.capture(idempotency_key=key(), authorization_id=auth.id, amount=1500)

    first = client.refund(idempotency_key=key(), authorization_id=auth.id, amount=1000)
    assert first.id.startswith("pr_") and first.status == "succeeded"
    assert (first.amount, first.authorization) == (1000, auth.id)

    with pytest.raises(ProcessorRejected) as info:
        client.refund(idempotency_key=key(), authorization_id=auth.id, amount=501)
    assert info.value.status == 400 and info.value.code == "amount_too_large"

    client.refund(idempotency_key=key(), authorization_id=auth.id, amount=500)
    assert client.get_authorization(auth.id).amount_refunded == 1500


def test_refund_of_an_uncaptured_authorization_is_refused(client: ProcessorClient) -> None:
    auth = authorize(client, capture=False)

    with pytest.raises(ProcessorRejected) as info:
        client.refund(idempotency_key=key(), authorization_id=auth.id, amount=100)

    assert info.value.status == 400 and info.value.code == "not_captured"


# ----------------------------------------------------------------------------- faults


def test_timeout_before_commits_nothing_and_a_retry_succeeds_once(
    processor: SandboxProcessor, client: ProcessorClient
) -> None:
    processor.inject_fault("timeout_before")
    k = key()

    with pytest.raises(ProcessorUnavailable):
        authorize(client, idempotency_key=k)
    assert client.lookup(k) is None

    retried = authorize(client, idempotency_key=k)
    assert retried.approved
    committed = client.lookup(k)
    assert committed is not None and committed["id"] == retried.id
    assert authorize(client, idempotency_key=k).id == retried.id


def test_timeout_after_commits_and_lookup_finds_the_result(
    processor: SandboxProcessor, client: ProcessorClient
) -> None:
    processor.inject_fault("timeout_after")
    k = key()

    with pytest.raises(ProcessorUnavailable):
        authorize(client, idempotency_key=k)

    committed = client.lookup(k)
    assert committed is not None and committed["status"] == "approved"
    retried = authorize(client, idempotency_key=k)
    assert retried.id == committed["id"]


def test_error_500_commits_nothing(processor: SandboxProcessor, client: ProcessorClient) -> None:
    processor.inject_fault("error_500")
    k = key()

    with pytest.raises(ProcessorUnavailable) as info:
        authorize(client, idempotency_key=k)

    assert info.value.status == 500
    assert client.lookup(k) is None
    assert authorize(client, idempotency_key=k).approved


def test_faults_apply_to_the_next_count_posts_only(
    processor: SandboxProcessor, client: ProcessorClient
) -> None:
    processor.inject_fault("error_500", count=2)
    k = key()

    for _ in range(2):
        with pytest.raises(ProcessorUnavailable):
            authorize(client, idempotency_key=k)
    assert authorize(client, idempotency_key=k).approved


def test_faults_over_http(processor: SandboxProcessor, client: ProcessorClient) -> None:
    status, body, _ = raw(processor, "POST", "/_sandbox/faults", {"mode": "error_500", "count": 3})
    assert status == 200 and body["faults"] == ["error_500"] * 3

    with pytest.raises(ProcessorUnavailable):
        authorize(client)

    status, body, _ = raw(processor, "DELETE", "/_sandbox/faults")
    assert status == 200 and processor.pending_faults() == []
    assert authorize(client).approved

    status, body, _ = raw(processor, "POST", "/_sandbox/faults", {"mode": "meltdown"})
    assert status == 400


def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = ProcessorClient(f"http://127.0.0.1:{port}", timeout_seconds=CLIENT_TIMEOUT_SECONDS)

    with pytest.raises(ProcessorUnavailable):
        authorize(client)


def test_every_processor_failure_is_a_processor_error() -> None:
    for cls in (ProcessorUnavailable, UnknownToken, ProcessorRejected):
        assert issubclass(cls, ProcessorError)


# ---------------------------------------------------------------- config and health


def test_latency_is_configurable_over_http(
    processor: SandboxProcessor, client: ProcessorClient
) -> None:
    status, body, _ = raw(processor, "POST", "/_sandbox/config", {"latency_ms": 20})
    assert status == 200 and body == {"latency_ms": 20}
    assert processor.latency_ms == 20
    assert raw(processor, "GET", "/_sandbox/config")[1] == {"latency_ms": 20}
    assert authorize(client).approved  # still well inside the client timeout

    status, body, _ = raw(processor, "POST", "/_sandbox/config", {"latency_ms": -1})
    assert status == 400 and processor.latency_ms == 20


def test_latency_from_the_constructor() -> None:
    with SandboxProcessor(latency_ms=5) as sandbox:
        assert raw(sandbox, "GET", "/_sandbox/config")[1] == {"latency_ms": 5}


def test_health(processor: SandboxProcessor) -> None:
    status, body, _ = raw(processor, "GET", "/_sandbox/health")

    assert status == 200 and body == {"status": "ok"}


def test_url(processor: SandboxProcessor) -> None:
    assert processor.url == f"http://127.0.0.1:{processor.port}"


def test_lookup_handles_keys_that_need_quoting(client: ProcessorClient) -> None:
    k = f"acct_1/charge {uuid.uuid4()}?x=1"
    auth = authorize(client, idempotency_key=k)

    committed = client.lookup(k)
    assert committed is not None and committed["id"] == auth.id
