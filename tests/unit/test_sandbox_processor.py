"""The sandbox processor driven over HTTP through the API's processor client."""

from __future__ import annotations

import datetime as dt
import json
import logging
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
from clearline_local.sandbox_processor import SandboxProcessor, card_brand

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
