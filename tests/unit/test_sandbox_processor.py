"""The sandbox processor driven over HTTP through the API's processor client."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import pytest
from vault import card_data

from clearline.processor import (
    Authorization,
    ProcessorClient,
    ProcessorError,
    ProcessorRejected,
    ProcessorUnavailable,
    UnknownToken,
)
from clearline_local.sandbox_processor import (
    DISPUTE_FEE,
    LOST,
    NEEDS_RESPONSE,
    TEST_CARD_NUMBERS,
    TEST_TOKENS,
    UNDER_REVIEW,
    WARNING_CLOSED,
    WARNING_NEEDS_RESPONSE,
    WARNING_UNDER_REVIEW,
    WON,
    SandboxProcessor,
    card_brand,
    sign_notification,
)

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


# ---------------------------------------------------------------------- card numbers

# Comfortably in the future, whenever the tests run.
EXP_YEAR = dt.datetime.now(dt.UTC).year + 3


def authorize_card(
    processor: SandboxProcessor,
    number: str,
    *,
    exp_month: int = 12,
    exp_year: int = EXP_YEAR,
    cvc: str | None = "123",
    three_d_secure: dict[str, Any] | None = None,
    amount: int = 2000,
    capture: bool = True,
    idempotency_key: str | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """An authorization by card number, as the card vault sends it (the client sends
    tokens only)."""
    card: dict[str, Any] = {"number": number, "exp_month": exp_month, "exp_year": exp_year}
    if cvc is not None:
        card["cvc"] = cvc
    body: dict[str, Any] = {
        "card": card,
        "amount": amount,
        "currency": "usd",
        "capture": capture,
        "reference": "ch_test",
    }
    if three_d_secure is not None:
        body["three_d_secure"] = three_d_secure
    return raw(
        processor,
        "POST",
        "/v1/authorizations",
        body,
        {"Idempotency-Key": idempotency_key or key()},
    )


def card_authorization(processor: SandboxProcessor, number: str, **kwargs: Any) -> Authorization:
    status, body, _ = authorize_card(processor, number, **kwargs)
    assert status == 200, body
    assert number not in json.dumps(body)
    return Authorization.model_validate(body)


@pytest.mark.parametrize(
    ("number", "brand", "funding"),
    [
        ("4242424242424242", "visa", "credit"),
        ("4000056655665556", "visa", "debit"),
        ("5555555555554444", "mastercard", "credit"),
        ("378282246310005", "amex", "credit"),
        # Not in the table: approved, branded by prefix.
        ("5105105105105100", "mastercard", "credit"),
        ("2223003122003222", "mastercard", "credit"),
        ("6011111111111117", "discover", "credit"),
        ("6555900000604105", "discover", "credit"),
        ("3056930009020004", "unknown", "credit"),
        ("3566002020360505", "unknown", "credit"),
    ],
)
def test_card_numbers_are_approved_with_their_brand(
    processor: SandboxProcessor, number: str, brand: str, funding: str
) -> None:
    auth = card_authorization(processor, number, exp_month=7, amount=1234)

    assert auth.approved and auth.id.startswith("pa_")
    assert (auth.amount, auth.currency, auth.reference) == (1234, "usd", "ch_test")
    assert auth.captured and auth.amount_captured == 1234
    assert (auth.card.brand, auth.card.last4, auth.card.funding) == (brand, number[-4:], funding)
    assert (auth.card.exp_month, auth.card.exp_year) == (7, EXP_YEAR)
    assert auth.card.country == "US" and auth.card.network == brand
    assert auth.card.cvc_check == "pass"
    assert auth.card.fingerprint is not None and len(auth.card.fingerprint) == 16
    assert auth.code is None and auth.decline_code is None and auth.message is None
    assert auth.network_transaction_id


def test_brands_by_prefix() -> None:
    assert card_brand("4000000000000000") == "visa"
    assert [card_brand(f"{p}00000000000000") for p in ("50", "51", "55", "56")] == [
        "unknown",
        "mastercard",
        "mastercard",
        "unknown",
    ]
    assert [card_brand(f"{p}000000000000") for p in ("2220", "2221", "2720", "2721")] == [
        "unknown",
        "mastercard",
        "mastercard",
        "unknown",
    ]
    assert [card_brand(f"{p}0000000000000") for p in ("34", "37", "35")] == [
        "amex",
        "amex",
        "unknown",
    ]
    assert [card_brand(f"{p}000000000000") for p in ("6011", "6500", "6012")] == [
        "discover",
        "discover",
        "unknown",
    ]


def test_a_card_without_a_cvc_is_not_checked(processor: SandboxProcessor) -> None:
    auth = card_authorization(processor, "4242424242424242", cvc=None)

    assert auth.approved and auth.card.cvc_check is None


@pytest.mark.parametrize(
    ("number", "code", "decline_code", "message"),
    [
        ("4000000000000002", "card_declined", "generic_decline", "Your card was declined."),
        (
            "4000000000009995",
            "card_declined",
            "insufficient_funds",
            "Your card has insufficient funds.",
        ),
        ("4000000000000069", "expired_card", "expired_card", "Your card has expired."),
        (
            "4000000000000127",
            "incorrect_cvc",
            "incorrect_cvc",
            "Your card's security code is incorrect.",
        ),
        (
            "4000000000000119",
            "processing_error",
            "processing_error",
            "An error occurred while processing your card. Try again in a little bit.",
        ),
        ("4100000000000019", "card_declined", "fraudulent", "Your card was declined."),
        ("4000000000009987", "card_declined", "lost_card", "Your card was declined."),
        ("4000000000009979", "card_declined", "stolen_card", "Your card was declined."),
    ],
)
def test_decline_card_numbers_carry_the_codes_of_their_tokens(
    processor: SandboxProcessor, number: str, code: str, decline_code: str, message: str
) -> None:
    auth = card_authorization(processor, number)

    assert not auth.approved and auth.status == "declined"
    assert (auth.code, auth.decline_code, auth.message) == (code, decline_code, message)
    assert not auth.captured and auth.amount_captured == 0
    assert auth.network_transaction_id is None
    assert (auth.card.brand, auth.card.last4) == ("visa", number[-4:])
    assert auth.card.cvc_check == ("fail" if decline_code == "incorrect_cvc" else "pass")


THREE_D_SECURE_NUMBERS = ("4000002500003155", "4000002760003184", "4000000000003220")


@pytest.mark.parametrize("number", THREE_D_SECURE_NUMBERS)
@pytest.mark.parametrize(
    "three_d_secure",
    [None, {"authenticated": False}, {"authenticated": False, "authentication": "3ds_failed"}],
    ids=["absent", "not_authenticated", "failed"],
)
def test_three_d_secure_cards_decline_without_authentication(
    processor: SandboxProcessor, number: str, three_d_secure: dict[str, Any] | None
) -> None:
    auth = card_authorization(processor, number, three_d_secure=three_d_secure)

    assert not auth.approved and not auth.captured
    assert (auth.code, auth.decline_code) == ("card_declined", "authentication_required")
    assert auth.message == "Your card was declined. This transaction requires authentication."


@pytest.mark.parametrize("number", THREE_D_SECURE_NUMBERS)
def test_three_d_secure_cards_approve_once_authenticated(
    processor: SandboxProcessor, number: str
) -> None:
    three_d_secure = {"authenticated": True, "authentication": "3ds_1AbC"}
    status, body, _ = authorize_card(processor, number, three_d_secure=three_d_secure)

    assert status == 200 and body["status"] == "approved" and body["captured"]
    assert body["decline_code"] is None
    assert body["card"]["three_d_secure"] == three_d_secure


def test_an_authentication_is_no_override_for_another_decline(
    processor: SandboxProcessor,
) -> None:
    auth = card_authorization(processor, "4000000000009995", three_d_secure={"authenticated": True})

    assert auth.decline_code == "insufficient_funds"


@pytest.mark.parametrize(
    "number",
    [
        "4242424242424241",  # fails the Luhn check
        "4242 4242 4242 4242",
        "4242-4242-4242-4242",
        "42424242424",  # 11 digits
        "42424242424242424242",  # 20 digits
        "",
        4242424242424242,  # a number, not a string
        None,
    ],
)
def test_an_incorrect_card_number_is_refused_and_not_echoed(
    processor: SandboxProcessor, client: ProcessorClient, number: Any
) -> None:
    k = key()
    status, body, _ = authorize_card(processor, number, idempotency_key=k)

    assert status == 400
    assert body["error"]["code"] == "incorrect_number"
    assert body["error"]["message"] == "Your card number is incorrect."
    assert "4242" not in json.dumps(body)
    # A refusal commits nothing, so the key stays free.
    assert client.lookup(k) is None


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"exp_month": 13}, "invalid_expiry_month"),
        ({"exp_month": 0}, "invalid_expiry_month"),
        ({"exp_month": "12"}, "invalid_expiry_month"),
        ({"exp_year": 2100}, "invalid_expiry_year"),
        ({"exp_year": True}, "invalid_expiry_year"),
        ({"cvc": "12"}, "invalid_cvc"),
        ({"cvc": "12a"}, "invalid_cvc"),
        ({"cvc": 123}, "invalid_cvc"),
        ({"three_d_secure": {"authenticated": "yes"}}, "parameter_invalid"),
        ({"three_d_secure": True}, "parameter_invalid"),
        # An authentication id is echoed, so it may not carry a card number.
        (
            {"three_d_secure": {"authenticated": True, "authentication": "4242424242424242"}},
            "parameter_invalid",
        ),
    ],
)
def test_an_invalid_expiry_cvc_or_authentication_is_refused(
    processor: SandboxProcessor, change: dict[str, Any], code: str
) -> None:
    status, body, _ = authorize_card(processor, "4242424242424242", **change)

    assert status == 400 and body["error"]["code"] == code
    assert "4242424242424242" not in json.dumps(body)


VISA_CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": EXP_YEAR}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"token": "tok_visa", "card": VISA_CARD}, "parameters_exclusive"),
        ({"card": "4242424242424242"}, "parameter_invalid"),
        ({"card": None}, "parameter_invalid"),
        ({}, "parameter_missing"),  # neither: the token is asked for, as before
    ],
    ids=["both", "not_an_object", "null", "neither"],
)
def test_token_and_card_together_or_a_malformed_card_are_refused(
    processor: SandboxProcessor, body: dict[str, Any], code: str
) -> None:
    status, answer, _ = raw(
        processor,
        "POST",
        "/v1/authorizations",
        {**body, "amount": 100, "currency": "usd"},
        {"Idempotency-Key": key()},
    )

    assert status == 400 and answer["error"]["code"] == code, answer
    assert "4242424242424242" not in json.dumps(answer)


def test_a_two_digit_expiry_year_is_read_as_this_century(processor: SandboxProcessor) -> None:
    auth = card_authorization(processor, "4242424242424242", exp_year=EXP_YEAR % 100)

    assert auth.approved and auth.card.exp_year == EXP_YEAR


def test_an_expired_card_is_declined(processor: SandboxProcessor) -> None:
    today = dt.datetime.now(dt.UTC)
    last_month = (today.replace(day=1) - dt.timedelta(days=1)).date()

    for exp_month, exp_year in [(last_month.month, last_month.year), (12, today.year - 1)]:
        auth = card_authorization(
            processor, "4242424242424242", exp_month=exp_month, exp_year=exp_year
        )
        assert not auth.approved and not auth.captured
        assert (auth.code, auth.decline_code) == ("expired_card", "expired_card")
        assert auth.message == "Your card has expired."
        assert (auth.card.exp_month, auth.card.exp_year) == (exp_month, exp_year)

    # A card is good through its expiry month.
    this_month = card_authorization(
        processor, "4242424242424242", exp_month=today.month, exp_year=today.year
    )
    assert this_month.approved


def test_one_card_number_has_one_fingerprint(processor: SandboxProcessor) -> None:
    first = card_authorization(processor, "4242424242424242")
    again = card_authorization(processor, "4242424242424242", exp_month=3, cvc=None)
    other = card_authorization(processor, "5555555555554444")
    # Same brand and last four, another number.
    lookalike = card_authorization(processor, "4000000000024242")

    assert first.card.fingerprint == again.card.fingerprint
    assert first.card.fingerprint != other.card.fingerprint
    assert (lookalike.card.brand, lookalike.card.last4) == ("visa", "4242")
    assert first.card.fingerprint != lookalike.card.fingerprint


def test_the_card_number_is_never_kept_echoed_or_logged(
    processor: SandboxProcessor, client: ProcessorClient, caplog: pytest.LogCaptureFixture
) -> None:
    number = "4000002760003184"
    caplog.set_level(logging.DEBUG)
    k = key()
    processor.inject_fault("error_500")  # fault paths log too
    status, _, _ = authorize_card(processor, number, idempotency_key=k)
    assert status == 500
    status, body, _ = authorize_card(
        processor, number, idempotency_key=k, three_d_secure={"authenticated": True}
    )
    assert status == 200 and body["card"]["last4"] == "3184"
    authorization_id = body["id"]

    assert number not in json.dumps(body)
    assert number not in json.dumps(client.lookup(k))
    assert number not in json.dumps(client.get_authorization(authorization_id).model_dump())
    assert number not in json.dumps(processor.authorizations())
    assert number not in json.dumps(raw(processor, "GET", "/_sandbox/authorizations")[1])
    # What the processor holds in memory: the authorization and the stored response, with
    # the request's fingerprint (its card a keyed digest: neither the number nor the CVC).
    assert number not in repr(processor._authorizations[authorization_id])
    stored = processor._idempotency[k]
    assert number not in repr(stored)
    assert '"cvc"' not in stored.fingerprint and '"number"' not in stored.fingerprint
    assert caplog.records, "requests and faults are logged"
    assert number not in caplog.text


def test_the_same_key_and_card_replay_the_first_response(
    processor: SandboxProcessor, client: ProcessorClient
) -> None:
    k = key()
    status, first, _ = authorize_card(processor, "4242424242424242", idempotency_key=k)
    assert status == 200

    status, replayed, headers = authorize_card(processor, "4242424242424242", idempotency_key=k)

    assert status == 200 and replayed == first
    assert headers.get("Idempotent-Replayed") == "true"
    assert len([a for a in processor.authorizations() if a["id"] == first["id"]]) == 1
    committed = client.lookup(k)
    assert committed is not None and committed["id"] == first["id"]


@pytest.mark.parametrize(
    "change",
    [
        {"number": "5555555555554444"},
        {"exp_month": 11},
        {"exp_year": EXP_YEAR + 1},
        {"amount": 2001},
    ],
    ids=["number", "expiry_month", "expiry_year", "amount"],
)
def test_the_same_key_with_another_card_is_rejected(
    processor: SandboxProcessor, change: dict[str, Any]
) -> None:
    k = key()
    status, _, _ = authorize_card(processor, "4242424242424242", idempotency_key=k)
    assert status == 200

    status, body, _ = authorize_card(
        processor, **{"number": "4242424242424242", **change}, idempotency_key=k
    )

    assert status == 422 and body["error"]["code"] == "idempotency_mismatch"


def test_a_retry_without_the_cvc_replays_the_first_response(processor: SandboxProcessor) -> None:
    # The vault discards a CVC once the processor has answered, so a retry of the same
    # request (its answer lost on the way back to Clearline) comes without it.
    k = key()
    status, first, _ = authorize_card(processor, "4242424242424242", cvc="123", idempotency_key=k)
    assert status == 200

    status, replayed, headers = authorize_card(
        processor, "4242424242424242", cvc=None, idempotency_key=k
    )

    assert status == 200 and replayed == first
    assert headers.get("Idempotent-Replayed") == "true"


def test_a_card_after_a_timeout_is_committed_once(
    processor: SandboxProcessor, client: ProcessorClient
) -> None:
    processor.inject_fault("timeout_after")
    k = key()

    with pytest.raises((urllib.error.URLError, ConnectionError)):
        authorize_card(processor, "4242424242424242", idempotency_key=k)

    committed = client.lookup(k)
    assert committed is not None and committed["status"] == "approved"
    status, retried, headers = authorize_card(processor, "4242424242424242", idempotency_key=k)
    assert status == 200 and retried["id"] == committed["id"]
    assert headers.get("Idempotent-Replayed") == "true"


def test_a_card_authorization_captures_and_refunds_like_a_tokens(
    processor: SandboxProcessor, client: ProcessorClient
) -> None:
    auth = card_authorization(processor, "378282246310005", capture=False)
    assert auth.approved and not auth.captured

    captured = client.capture(idempotency_key=key(), authorization_id=auth.id, amount=1500)
    assert captured.captured and captured.amount_captured == 1500
    assert captured.card == auth.card

    refund = client.refund(idempotency_key=key(), authorization_id=auth.id, amount=1500)
    assert refund.amount == 1500


def test_token_authorizations_are_unchanged_by_cards(client: ProcessorClient) -> None:
    auth = authorize(client, "tok_chargeDeclinedIncorrectCvc")

    assert auth.card.cvc_check == "fail"
    assert authorize(client).card.cvc_check == "pass"
    # The same card as a token keeps its own fingerprint, stable across calls.
    assert authorize(client).card.fingerprint == authorize(client).card.fingerprint


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
    assert status == 200 and body["latency_ms"] == 20
    assert processor.latency_ms == 20
    assert raw(processor, "GET", "/_sandbox/config")[1]["latency_ms"] == 20
    assert authorize(client).approved  # still well inside the client timeout

    status, body, _ = raw(processor, "POST", "/_sandbox/config", {"latency_ms": -1})
    assert status == 400 and processor.latency_ms == 20


def test_latency_from_the_constructor() -> None:
    with SandboxProcessor(latency_ms=5) as sandbox:
        assert raw(sandbox, "GET", "/_sandbox/config")[1] == {
            "latency_ms": 5,
            "dispute_delay_seconds": 0.5,
            "decision_delay_seconds": 1.0,
        }


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


# ----------------------------------------------------------------------------- disputes

SECRET = "whsec_sandbox_disputes"
SHORT = 0.05  # seconds: how soon disputes open and decisions come in these tests
EIGHT_DAYS = 8 * 24 * 3600

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 5.0) -> T:
    """The first truthy answer of `check`, asked until `timeout` runs out."""
    deadline = time.monotonic() + timeout
    while not (answer := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
    return answer


class Receiver:
    """The platform's end of the notifications: keeps each delivery (header names as sent,
    the raw body) and answers with the next scripted status, then 200."""

    def __init__(self) -> None:
        self.answers: deque[int] = deque()
        self._deliveries: list[tuple[dict[str, str], bytes]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    receiver._deliveries.append((dict(self.headers.items()), body))
                    status = receiver.answers.popleft() if receiver.answers else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        serve = {"poll_interval": 0.01}  # shutdown() waits for the next poll
        threading.Thread(target=self._server.serve_forever, kwargs=serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/processor/notifications"

    def deliveries(self) -> list[tuple[dict[str, str], bytes]]:
        with self._lock:
            return list(self._deliveries)

    def notifications(self, dispute_id: str) -> list[dict[str, Any]]:
        """What arrived about one dispute, in order."""
        parsed = [json.loads(body) for _, body in self.deliveries()]
        return [n for n in parsed if n["dispute"]["id"] == dispute_id]

    def types(self, dispute_id: str) -> list[str]:
        return [n["type"] for n in self.notifications(dispute_id)]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    try:
        yield receiver
    finally:
        receiver.close()


@pytest.fixture
def disputing(receiver: Receiver) -> Iterator[SandboxProcessor]:
    """A processor of the test's own, so that only its notifications reach the receiver."""
    with SandboxProcessor(
        fault_delay_seconds=0.1,
        dispute_delay_seconds=SHORT,
        decision_delay_seconds=SHORT,
        notification_url=receiver.url,
        notification_secret=SECRET,
    ) as sandbox:
        yield sandbox


@pytest.fixture
def dclient(disputing: SandboxProcessor) -> ProcessorClient:
    return ProcessorClient(disputing.url, timeout_seconds=CLIENT_TIMEOUT_SECONDS)


def dispute_of(processor: SandboxProcessor, authorization_id: str) -> dict[str, Any]:
    """The dispute opened on an authorization, once it is."""
    return eventually(
        lambda: next(
            (d for d in processor.disputes() if d["authorization"] == authorization_id), None
        )
    )


def disputed(
    processor: SandboxProcessor,
    client: ProcessorClient,
    token: str = "tok_createDispute",
    *,
    amount: int = 2000,
) -> dict[str, Any]:
    return dispute_of(processor, authorize(client, token, amount=amount).id)


def status_becomes(processor: SandboxProcessor, dispute_id: str, status: str) -> dict[str, Any]:
    return eventually(
        lambda: next(
            (d for d in processor.disputes() if d["id"] == dispute_id and d["status"] == status),
            None,
        )
    )


def current(processor: SandboxProcessor, dispute_id: str) -> dict[str, Any]:
    status, body, _ = raw(processor, "GET", f"/v1/disputes/{dispute_id}")
    assert status == 200, body
    return body


def respond(
    processor: SandboxProcessor,
    dispute_id: str,
    action: str,
    body: dict[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    return raw(
        processor,
        "POST",
        f"/v1/disputes/{dispute_id}/{action}",
        body or {},
        {"Idempotency-Key": idempotency_key or key()},
    )


def submit(
    processor: SandboxProcessor, dispute_id: str, text: str, *, idempotency_key: str | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    evidence = {"evidence": {"product_description": "A lamp", "uncategorized_text": text}}
    return respond(processor, dispute_id, "evidence", evidence, idempotency_key=idempotency_key)


def decide(
    processor: SandboxProcessor, dispute_id: str, status: Any
) -> tuple[int, dict[str, Any], dict[str, str]]:
    return raw(processor, "POST", f"/_sandbox/disputes/{dispute_id}/decide", {"status": status})


def committed(processor: SandboxProcessor, idempotency_key: str) -> bool:
    return raw(processor, "GET", f"/v1/idempotency/{idempotency_key}")[0] == 200


DISPUTE_CARDS = [
    # (token or card number, reason, network reason code, status when opened)
    ("tok_createDispute", "fraudulent", "10.4", NEEDS_RESPONSE),
    ("tok_visa_createDispute", "fraudulent", "10.4", NEEDS_RESPONSE),
    ("tok_createDisputeProductNotReceived", "product_not_received", "13.1", NEEDS_RESPONSE),
    ("tok_createDisputeInquiry", "general", None, WARNING_NEEDS_RESPONSE),
    ("4000000000000259", "fraudulent", "10.4", NEEDS_RESPONSE),
    ("4000000000002685", "product_not_received", "13.1", NEEDS_RESPONSE),
    ("4000000000001976", "general", None, WARNING_NEEDS_RESPONSE),
]
LAST4 = {"fraudulent": "0259", "product_not_received": "2685", "general": "1976"}


@pytest.mark.parametrize(("card", "reason", "network_reason_code", "status"), DISPUTE_CARDS)
def test_a_capture_on_a_dispute_card_is_disputed(
    disputing: SandboxProcessor,
    dclient: ProcessorClient,
    receiver: Receiver,
    card: str,
    reason: str,
    network_reason_code: str | None,
    status: str,
) -> None:
    if card.startswith("tok_"):
        auth = authorize(dclient, card, amount=1234)
    else:
        auth = card_authorization(disputing, card, amount=1234)
    # The cards approve as any Visa does: the dispute comes after.
    assert auth.approved and auth.captured and auth.decline_code is None
    assert (auth.card.brand, auth.card.last4) == ("visa", LAST4[reason])

    dispute = dispute_of(disputing, auth.id)

    assert dispute["id"].startswith("dp_") and dispute["object"] == "dispute"
    assert (dispute["authorization"], dispute["reference"]) == (auth.id, "ch_test")
    assert (dispute["amount"], dispute["currency"]) == (1234, "usd")
    assert (dispute["reason"], dispute["network_reason_code"]) == (reason, network_reason_code)
    assert dispute["status"] == status
    assert dispute["evidence_due_by"] == dispute["created"] + EIGHT_DAYS
    assert (dispute["evidence_submissions"], dispute["evidence"]) == (0, None)
    assert current(disputing, dispute["id"]) == dispute
    assert raw(disputing, "GET", "/_sandbox/disputes")[1] == {"data": [dispute]}
    created = eventually(lambda: receiver.notifications(dispute["id"]))
    assert [n["type"] for n in created] == ["dispute.created"]
    assert created[0]["dispute"] == dispute


def test_a_later_capture_is_disputed_for_the_amount_captured(
    disputing: SandboxProcessor, dclient: ProcessorClient
) -> None:
    auth = authorize(dclient, "tok_createDisputeProductNotReceived", capture=False)
    dclient.capture(idempotency_key=key(), authorization_id=auth.id, amount=1500)

    dispute = dispute_of(disputing, auth.id)

    assert (dispute["amount"], dispute["reason"]) == (1500, "product_not_received")


def test_holds_and_other_cards_are_never_disputed(
    disputing: SandboxProcessor, dclient: ProcessorClient
) -> None:
    authorize(dclient, "tok_createDispute", capture=False)
    voided = authorize(dclient, "tok_createDisputeInquiry", capture=False)
    dclient.void(idempotency_key=key(), authorization_id=voided.id)
    authorize(dclient, "tok_visa")
    card_authorization(disputing, "4242424242424242")

    # Captured after all of them and disputed after the same delay: theirs would be by now.
    last = authorize(dclient, "tok_createDispute")
    dispute_of(disputing, last.id)

    assert [d["authorization"] for d in disputing.disputes()] == [last.id]


def test_an_unknown_dispute(disputing: SandboxProcessor) -> None:
    status, body, _ = raw(disputing, "GET", "/v1/disputes/dp_missing")
    assert status == 404 and body["error"]["code"] == "resource_missing"

    status, body, _ = submit(disputing, "dp_missing", "winning_evidence")
    assert status == 404 and body["error"]["code"] == "resource_missing"


# -------------------------------------------------------------------- notifications


def test_a_notification_is_signed_with_the_secret(
    disputing: SandboxProcessor, dclient: ProcessorClient, receiver: Receiver
) -> None:
    dispute = disputed(disputing, dclient)

    headers, body = eventually(receiver.deliveries)[0]

    assert headers["Content-Type"] == "application/json"
    signature = headers["Processor-Signature"]
    fields = dict(part.split("=", 1) for part in signature.split(","))
    assert set(fields) == {"t", "v1"}
    assert abs(int(fields["t"]) - time.time()) < 60
    expected = hmac.new(SECRET.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256)
    assert hmac.compare_digest(fields["v1"], expected.hexdigest())
    assert sign_notification(SECRET, body, int(fields["t"])) == signature
    assert sign_notification("whsec_other", body, int(fields["t"])) != signature

    notification = json.loads(body)
    assert notification["id"].startswith("ntf_") and notification["type"] == "dispute.created"
    assert abs(notification["created"] - time.time()) < 60
    assert notification["dispute"] == dispute


def test_a_refused_delivery_is_retried_until_answered(
    disputing: SandboxProcessor, dclient: ProcessorClient, receiver: Receiver
) -> None:
    receiver.answers.extend([500, 503])

    dispute = disputed(disputing, dclient)

    notifications = eventually(lambda: len(receiver.deliveries()) == 3 and receiver.deliveries())
    assert len({json.loads(body)["id"] for _, body in notifications}) == 1
    assert receiver.types(dispute["id"]) == ["dispute.created"] * 3
    assert eventually(
        lambda: (
            raw(disputing, "GET", "/_sandbox/notifications")[1] == {"pending": [], "delivered": 1}
        )
    )


def test_a_delivery_refused_every_time_is_dropped(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.answers.extend([500] * 10)
    with SandboxProcessor(
        dispute_delay_seconds=SHORT,
        notification_url=receiver.url,
        notification_secret=SECRET,
        notification_attempts=2,
    ) as sandbox:
        client = ProcessorClient(sandbox.url, timeout_seconds=CLIENT_TIMEOUT_SECONDS)
        disputed(sandbox, client, "tok_createDisputeInquiry")

        eventually(lambda: "dropped after 2 attempts" in caplog.text)
        assert eventually(
            lambda: (
                raw(sandbox, "GET", "/_sandbox/notifications")[1] == {"pending": [], "delivered": 0}
            )
        )
        assert len(receiver.deliveries()) == 2


def test_notifications_wait_for_a_receiver(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clearline_local.sandbox_processor")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with SandboxProcessor(dispute_delay_seconds=SHORT) as sandbox:
        client = ProcessorClient(sandbox.url, timeout_seconds=CLIENT_TIMEOUT_SECONDS)
        dispute = disputed(sandbox, client)

        pending = eventually(sandbox.notifications_pending)
        assert [n["type"] for n in pending] == ["dispute.created"]
        assert raw(sandbox, "GET", "/_sandbox/notifications")[1] == {
            "pending": pending,
            "delivered": 0,
        }

        # Nobody listening yet: the connection is refused and the attempt retried.
        sandbox.configure_notifications(f"http://127.0.0.1:{closed_port}/", SECRET)
        eventually(lambda: "sandbox notification to 127.0.0.1 failed" in caplog.text)
        sandbox.configure_notifications(receiver.url, SECRET)

        delivered = eventually(lambda: receiver.notifications(dispute["id"]))
        assert [n["id"] for n in delivered] == [pending[0]["id"]]
        assert eventually(lambda: sandbox.notifications_pending() == [])


def test_a_dispute_is_notified_again_on_request(
    disputing: SandboxProcessor, dclient: ProcessorClient, receiver: Receiver
) -> None:
    dispute = disputed(disputing, dclient)

    status, again, _ = raw(disputing, "POST", f"/_sandbox/disputes/{dispute['id']}/notify")
    assert status == 200 and again["type"] == "dispute.updated" and again["dispute"] == dispute
    assert decide(disputing, dispute["id"], WON)[0] == 200
    closed_again = disputing.redeliver(dispute["id"])
    assert closed_again["type"] == "dispute.closed" and closed_again["dispute"]["status"] == WON

    types = ["dispute.created", "dispute.updated", "dispute.closed", "dispute.closed"]
    assert eventually(lambda: receiver.types(dispute["id"]) == types)
    assert len({n["id"] for n in receiver.notifications(dispute["id"])}) == 4
    status, body, _ = raw(disputing, "POST", "/_sandbox/disputes/dp_missing/notify")
    assert status == 404 and body["error"]["code"] == "resource_missing"
    with pytest.raises(KeyError):
        disputing.redeliver("dp_missing")


def test_notifications_are_configured_with_a_url_and_a_secret() -> None:
    with pytest.raises(ValueError):
        SandboxProcessor(notification_url="http://127.0.0.1:9/")
    with pytest.raises(ValueError):
        SandboxProcessor(notification_attempts=0)
    sandbox = SandboxProcessor()
    with pytest.raises(ValueError):
        sandbox.configure_notifications("ftp://127.0.0.1/", SECRET)
    with pytest.raises(ValueError):
        sandbox.configure_notifications("http://127.0.0.1:9/", "")


# ------------------------------------------------------------ evidence and decisions


@pytest.mark.parametrize(
    ("token", "text", "decided"),
    [
        ("tok_createDispute", "winning_evidence", WON),
        ("tok_createDispute", "losing_evidence", LOST),
        ("tok_createDisputeInquiry", "winning_evidence", WARNING_CLOSED),
        ("tok_createDisputeInquiry", "losing_evidence", WARNING_CLOSED),
    ],
)
def test_the_network_decides_on_the_evidence(
    disputing: SandboxProcessor,
    dclient: ProcessorClient,
    receiver: Receiver,
    token: str,
    text: str,
    decided: str,
) -> None:
    dispute = disputed(disputing, dclient, token)
    inquiry = dispute["status"] == WARNING_NEEDS_RESPONSE

    status, body, _ = submit(disputing, dispute["id"], f"Signed for at the door. {text}")

    assert status == 200
    assert body["status"] == (WARNING_UNDER_REVIEW if inquiry else UNDER_REVIEW)
    assert body["evidence"] == {
        "product_description": "A lamp",
        "uncategorized_text": f"Signed for at the door. {text}",
    }
    assert body["evidence_submissions"] == 1
    closed = status_becomes(disputing, dispute["id"], decided)
    assert closed["evidence_submissions"] == 1
    types = ["dispute.created", "dispute.updated", "dispute.closed"]
    assert eventually(lambda: receiver.types(dispute["id"]) == types)
    updated, final = receiver.notifications(dispute["id"])[1:]
    assert updated["dispute"] == body
    assert final["dispute"] == closed


def test_evidence_without_a_decision_stays_under_review(
    disputing: SandboxProcessor, dclient: ProcessorClient, receiver: Receiver
) -> None:
    undecided = disputed(disputing, dclient)
    chargeback = disputed(disputing, dclient)  # no inquiry: nothing to escalate
    decided = disputed(disputing, dclient)

    assert submit(disputing, undecided["id"], "Here is our side.")[0] == 200
    assert submit(disputing, chargeback["id"], "escalate_inquiry_evidence")[0] == 200
    assert submit(disputing, decided["id"], "winning_evidence")[0] == 200

    # Reviewed before the last one, which is decided by now.
    status_becomes(disputing, decided["id"], WON)
    for dispute in (undecided, chargeback):
        assert current(disputing, dispute["id"])["status"] == UNDER_REVIEW
    assert eventually(lambda: receiver.types(decided["id"])[-1:] == ["dispute.closed"])
    assert receiver.types(undecided["id"]) == ["dispute.created", "dispute.updated"]


def test_an_inquiry_escalates_into_a_chargeback(
    disputing: SandboxProcessor, dclient: ProcessorClient, receiver: Receiver
) -> None:
    inquiry = disputed(disputing, dclient, "tok_createDisputeInquiry")

    assert submit(disputing, inquiry["id"], "escalate_inquiry_evidence")[0] == 200
    chargeback = status_becomes(disputing, inquiry["id"], NEEDS_RESPONSE)

    assert chargeback["reason"] == "general" and chargeback["evidence_submissions"] == 1
    assert chargeback["evidence_due_by"] >= inquiry["evidence_due_by"]
    assert abs(chargeback["evidence_due_by"] - (time.time() + EIGHT_DAYS)) < 60
    types = ["dispute.created", "dispute.updated", "dispute.updated"]
    assert eventually(lambda: receiver.types(inquiry["id"]) == types)
    assert receiver.notifications(inquiry["id"])[-1]["dispute"] == chargeback

    # Now a chargeback: answered again, it can be won.
    status, body, _ = submit(disputing, inquiry["id"], "winning_evidence")
    assert status == 200 and body["status"] == UNDER_REVIEW and body["evidence_submissions"] == 2
    status_becomes(disputing, inquiry["id"], WON)


@pytest.mark.parametrize(
    ("token", "closed"), [("tok_createDispute", LOST), ("tok_createDisputeInquiry", WARNING_CLOSED)]
)
def test_closing_accepts_the_dispute(
    disputing: SandboxProcessor,
    dclient: ProcessorClient,
    receiver: Receiver,
    token: str,
    closed: str,
) -> None:
    dispute = disputed(disputing, dclient, token)

    status, body, _ = respond(disputing, dispute["id"], "close")

    assert status == 200 and body["status"] == closed
    assert current(disputing, dispute["id"]) == body
    assert eventually(
        lambda: receiver.types(dispute["id"]) == ["dispute.created", "dispute.closed"]
    )
    k = key()
    status, body, _ = respond(disputing, dispute["id"], "close", idempotency_key=k)
    assert status == 409 and body["error"]["code"] == "dispute_closed"
    assert not committed(disputing, k)


def test_closing_under_review_forestalls_the_decision(
    disputing: SandboxProcessor, dclient: ProcessorClient, receiver: Receiver
) -> None:
    disputing.decision_delay_seconds = 0.3  # ample time to close before the network decides
    closed = disputed(disputing, dclient)
    later = disputed(disputing, dclient)

    assert submit(disputing, closed["id"], "winning_evidence")[0] == 200
    status, body, _ = respond(disputing, closed["id"], "close")
    assert status == 200 and body["status"] == LOST
    assert submit(disputing, later["id"], "winning_evidence")[0] == 200

    status_becomes(disputing, later["id"], WON)
    assert current(disputing, closed["id"])["status"] == LOST
    assert eventually(lambda: receiver.types(later["id"])[-1:] == ["dispute.closed"])
    assert receiver.types(closed["id"]) == ["dispute.created", "dispute.updated", "dispute.closed"]


def test_evidence_is_refused_under_review_and_once_closed(
    disputing: SandboxProcessor, dclient: ProcessorClient
) -> None:
    dispute = disputed(disputing, dclient)
    assert submit(disputing, dispute["id"], "Here is our side.")[0] == 200

    k = key()
    status, body, _ = submit(disputing, dispute["id"], "And more.", idempotency_key=k)
    assert status == 409 and body["error"]["code"] == "dispute_under_review"
    # A refusal commits nothing, so the key stays free.
    assert not committed(disputing, k)

    assert respond(disputing, dispute["id"], "close")[0] == 200
    status, body, _ = submit(disputing, dispute["id"], "winning_evidence", idempotency_key=k)
    assert status == 409 and body["error"]["code"] == "dispute_closed"
    assert current(disputing, dispute["id"])["evidence_submissions"] == 1


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"evidence": None},
        {"evidence": "winning_evidence"},
        {"evidence": ["winning_evidence"]},
        {"evidence": {"uncategorized_text": 1}},
        {"evidence": {"uncategorized_text": "winning_evidence", "receipt": None}},
        {"evidence": {"uncategorized_text": {"text": "winning_evidence"}}},
    ],
    ids=["missing", "null", "string", "list", "number", "null_field", "object_field"],
)
def test_evidence_must_be_an_object_of_strings(
    disputing: SandboxProcessor, dclient: ProcessorClient, body: dict[str, Any]
) -> None:
    dispute = disputed(disputing, dclient)
    k = key()

    status, answer, _ = respond(disputing, dispute["id"], "evidence", body, idempotency_key=k)

    assert status == 400 and answer["error"]["code"] == "parameter_invalid"
    assert answer["error"]["param"] == "evidence"
    assert not committed(disputing, k)
    assert current(disputing, dispute["id"]) == dispute


def test_evidence_posts_are_idempotent(
    disputing: SandboxProcessor, dclient: ProcessorClient
) -> None:
    dispute = disputed(disputing, dclient)
    k = key()
    status, first, _ = submit(disputing, dispute["id"], "winning_evidence", idempotency_key=k)
    assert status == 200

    status, replayed, headers = submit(
        disputing, dispute["id"], "winning_evidence", idempotency_key=k
    )
    assert status == 200 and replayed == first
    assert headers.get("Idempotent-Replayed") == "true"
    status, body, _ = submit(disputing, dispute["id"], "losing_evidence", idempotency_key=k)
    assert status == 422 and body["error"]["code"] == "idempotency_mismatch"

    assert status_becomes(disputing, dispute["id"], WON)["evidence_submissions"] == 1


def test_evidence_whose_answer_was_lost_is_submitted_once(
    disputing: SandboxProcessor, dclient: ProcessorClient
) -> None:
    dispute = disputed(disputing, dclient)
    k = key()
    disputing.inject_fault("timeout_after")

    with pytest.raises((urllib.error.URLError, ConnectionError)):
        submit(disputing, dispute["id"], "winning_evidence", idempotency_key=k)

    assert committed(disputing, k)
    status, retried, headers = submit(
        disputing, dispute["id"], "winning_evidence", idempotency_key=k
    )
    assert status == 200 and headers.get("Idempotent-Replayed") == "true"
    assert retried["evidence_submissions"] == 1


def test_sandbox_decisions(
    disputing: SandboxProcessor, dclient: ProcessorClient, receiver: Receiver
) -> None:
    chargeback = disputed(disputing, dclient)
    inquiry = disputed(disputing, dclient, "tok_createDisputeInquiry")

    for dispute_id, status in [
        (chargeback["id"], WARNING_CLOSED),
        (chargeback["id"], "maybe"),
        (chargeback["id"], None),
        (chargeback["id"], {"won": True}),
        (inquiry["id"], WON),
    ]:
        code, body, _ = decide(disputing, dispute_id, status)
        assert code == 400 and body["error"]["param"] == "status", status
    assert decide(disputing, "dp_missing", WON)[0] == 404

    code, body, _ = decide(disputing, chargeback["id"], WON)
    assert code == 200 and body["status"] == WON
    code, body, _ = decide(disputing, inquiry["id"], WARNING_CLOSED)
    assert code == 200 and body["status"] == WARNING_CLOSED
    code, body, _ = decide(disputing, chargeback["id"], LOST)
    assert code == 409 and body["error"]["code"] == "dispute_closed"
    assert current(disputing, chargeback["id"])["status"] == WON
    assert eventually(lambda: receiver.types(inquiry["id"])[-1:] == ["dispute.closed"])


# ------------------------------------------------------------------------- settlement


def test_chargebacks_settle_with_the_dispute_fee(
    disputing: SandboxProcessor, dclient: ProcessorClient
) -> None:
    won = disputed(disputing, dclient, amount=2000)
    lost = disputed(disputing, dclient, "tok_createDisputeProductNotReceived", amount=1000)
    closed_inquiry = disputed(disputing, dclient, "tok_createDisputeInquiry", amount=700)
    escalated = disputed(disputing, dclient, "tok_createDisputeInquiry", amount=500)
    refunded = authorize(dclient, amount=400)
    dclient.refund(idempotency_key=key(), authorization_id=refunded.id, amount=400)

    assert decide(disputing, won["id"], WON)[0] == 200
    assert decide(disputing, lost["id"], LOST)[0] == 200
    assert decide(disputing, closed_inquiry["id"], WARNING_CLOSED)[0] == 200
    assert submit(disputing, escalated["id"], "escalate_inquiry_evidence")[0] == 200
    status_becomes(disputing, escalated["id"], NEEDS_RESPONSE)

    settlement_date = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=2)
    rows = disputing.settlement_rows(settlement_date)

    columns = ("type", "processor_reference", "amount", "fee", "net", "charge_id", "refund_id")
    moved = [tuple(row[c] for c in columns) for row in rows if row["type"] != "capture"]
    assert moved == [
        ("dispute", won["id"], 2000, DISPUTE_FEE, -2000 - DISPUTE_FEE, "ch_test", ""),
        ("dispute", lost["id"], 1000, DISPUTE_FEE, -1000 - DISPUTE_FEE, "ch_test", ""),
        ("refund", moved[2][1], 400, 0, -400, "ch_test", ""),
        ("dispute_reversal", won["id"], 2000, 0, 2000, "ch_test", ""),
        ("dispute", escalated["id"], 500, DISPUTE_FEE, -500 - DISPUTE_FEE, "ch_test", ""),
    ]
    assert moved[2][1].startswith("pr_")
    # Captures are as before: the amount in, less 1.5%.
    captures = [(row["amount"], row["fee"], row["net"]) for row in rows if row["type"] == "capture"]
    assert captures == [
        (2000, 30, 1970),
        (1000, 15, 985),
        (700, 11, 689),
        (500, 8, 492),
        (400, 6, 394),
    ]
    assert {row["batch_id"] for row in rows} == {f"batch_{settlement_date:%Y%m%d}_1"}
    # Each movement settles once.
    assert disputing.settlement_rows(settlement_date) == []


def test_inquiries_move_no_money(disputing: SandboxProcessor, dclient: ProcessorClient) -> None:
    won = disputed(disputing, dclient, "tok_createDisputeInquiry")
    lost = disputed(disputing, dclient, "tok_createDisputeInquiry")
    closed = disputed(disputing, dclient, "tok_createDisputeInquiry")
    assert submit(disputing, won["id"], "winning_evidence")[0] == 200
    assert submit(disputing, lost["id"], "losing_evidence")[0] == 200
    assert respond(disputing, closed["id"], "close")[0] == 200
    for dispute in (won, lost):
        status_becomes(disputing, dispute["id"], WARNING_CLOSED)

    rows = disputing.settlement_rows(dt.datetime.now(dt.UTC).date() + dt.timedelta(days=2))

    assert [row["type"] for row in rows] == ["capture"] * 3


# ------------------------------------------------------------------ configuration


def test_dispute_delays_are_configurable_over_http() -> None:
    with SandboxProcessor() as sandbox:
        status, body, _ = raw(
            sandbox,
            "POST",
            "/_sandbox/config",
            {"dispute_delay_seconds": 0.25, "decision_delay_seconds": 2},
        )
        assert status == 200
        assert body == {"latency_ms": 0, "dispute_delay_seconds": 0.25, "decision_delay_seconds": 2}
        assert (sandbox.dispute_delay_seconds, sandbox.decision_delay_seconds) == (0.25, 2)

        for refused in (
            {"dispute_delay_seconds": -1},
            {"decision_delay_seconds": "1"},
            {"latency_ms": 7, "dispute_delay_seconds": True},
            {"latency_ms": 7, "decision_delay_seconds": float("inf")},
        ):
            status, body, _ = raw(sandbox, "POST", "/_sandbox/config", refused)
            assert status == 400 and body["error"]["code"] == "invalid_config", refused
        # A refused request changes nothing.
        assert raw(sandbox, "GET", "/_sandbox/config")[1] == {
            "latency_ms": 0,
            "dispute_delay_seconds": 0.25,
            "decision_delay_seconds": 2,
        }


def test_the_vault_knows_the_dispute_cards_by_their_aliases() -> None:
    for name in ("createDispute", "createDisputeProductNotReceived", "createDisputeInquiry"):
        number = card_data.TEST_CARD_ALIASES[f"tok_{name}"]
        assert card_data.TEST_CARD_ALIASES[f"pm_card_{name}"] == number
        assert TEST_CARD_NUMBERS[number] == TEST_TOKENS[f"tok_{name}"]
