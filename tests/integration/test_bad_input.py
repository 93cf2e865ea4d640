"""Bad input, as a table: each case gets a Stripe-shaped 4xx and writes nothing."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from clearline.cards import contains_card_number
from clearline.ids import derived_id

from .conftest import Stack

pytestmark = pytest.mark.integration

CARD = "4242424242424242"
GOOD = "amount=5000&currency=usd&source=tok_visa"
FORM = "application/x-www-form-urlencoded"


@dataclass
class Case:
    name: str
    body: str | bytes
    status: int
    param: str | None = None
    content_type: str = FORM
    auth: str | None = "secret"  # secret | publishable | unknown | None
    headers: dict[str, str] = field(default_factory=dict)
    code: str | None = None


JSON = "application/json"


def charge_json(**extra: Any) -> str:
    """A good charge as JSON with `extra` fields; escapes such as \\ud800 stay as written."""
    fields = ['"amount": 5000', '"currency": "usd"', '"source": "tok_visa"']
    fields += [f'"{name}": {raw}' for name, raw in extra.items()]
    return "{" + ", ".join(fields) + "}"


def metadata_form(count: int, key_length: int = 5, value_length: int = 5) -> str:
    pairs = [
        f"metadata[{str(i).rjust(key_length, 'k')}]={'v' * value_length}" for i in range(count)
    ]
    return GOOD + "&" + "&".join(pairs)


CASES = [
    Case("malformed JSON", '{"amount": 5000,', 400, content_type="application/json"),
    Case("JSON that is not an object", "[1, 2]", 400, content_type="application/json"),
    Case("malformed form", "amount=5000&currency", 400),
    Case("malformed bracket", "amount=5000&currency=usd&source=tok_visa&metadata[a=1", 400),
    Case("amount is text", "amount=fifty&currency=usd&source=tok_visa", 400, "amount"),
    Case("amount is a decimal", "amount=50.5&currency=usd&source=tok_visa", 400, "amount"),
    Case(
        "amount is a JSON boolean",
        '{"amount": true, "currency": "usd", "source": "tok_visa"}',
        400,
        "amount",
        content_type="application/json",
    ),
    Case(
        "amount is a JSON string of text",
        '{"amount": "x", "currency": "usd", "source": "tok_visa"}',
        400,
        "amount",
        content_type="application/json",
    ),
    Case("metadata is not a hash", GOOD + "&metadata=nope", 400, "metadata"),
    Case("capture is not a boolean", GOOD + "&capture=maybe", 400, "capture"),
    Case("unknown parameter", GOOD + "&colour=blue", 400, "colour", code="parameter_unknown"),
    Case(
        "negative amount",
        "amount=-100&currency=usd&source=tok_visa",
        400,
        "amount",
        code="amount_too_small",
    ),
    Case(
        "zero amount",
        "amount=0&currency=usd&source=tok_visa",
        400,
        "amount",
        code="amount_too_small",
    ),
    Case(
        "below the minimum",
        "amount=49&currency=usd&source=tok_visa",
        400,
        "amount",
        code="amount_too_small",
    ),
    Case(
        "huge amount",
        "amount=100000000&currency=usd&source=tok_visa",
        400,
        "amount",
        code="amount_too_large",
    ),
    Case(
        "absurd amount",
        "amount=99999999999999999999999&currency=usd&source=tok_visa",
        400,
        "amount",
    ),
    Case("missing amount", "currency=usd&source=tok_visa", 400, "amount", code="parameter_missing"),
    Case("unknown currency", "amount=5000&currency=xyz&source=tok_visa", 400, "currency"),
    Case("no source", "amount=5000&currency=usd", 400, "source"),
    # What storage cannot hold is refused before the processor is called.
    Case("a lone surrogate", charge_json(description='"\\ud800"'), 400, "description", JSON),
    Case("a NUL in JSON", charge_json(description='"a\\u0000b"'), 400, "description", JSON),
    Case("a NUL in a form", GOOD + "&description=a%00b", 400, "description"),
    Case("an empty metadata key", charge_json(metadata='{"": "x"}'), 400, "metadata", JSON),
    Case("a blank metadata key", charge_json(metadata='{"  ": "x"}'), 400, "metadata", JSON),
    Case(
        "a lone surrogate in a metadata key",
        charge_json(metadata='{"\\udc00": "x"}'),
        400,
        "metadata",
        JSON,
    ),
    Case(
        "a lone surrogate in a metadata value",
        charge_json(metadata='{"k": "\\ud800"}'),
        400,
        "metadata[k]",
        JSON,
    ),
    Case("51 metadata keys", metadata_form(51), 400, "metadata"),
    Case("a 41-character metadata key", metadata_form(1, key_length=41), 400, "metadata"),
    Case("a 501-character metadata value", metadata_form(1, value_length=501), 400, "metadata"),
    Case(
        "long statement descriptor",
        GOOD + "&statement_descriptor=" + "X" * 23,
        400,
        "statement_descriptor",
    ),
    Case(
        "too many metadata keys",
        GOOD + "".join(f"&metadata[k{i}]=v" for i in range(51)),
        400,
        "metadata",
    ),
    Case("oversized body", GOOD + "&description=" + "x" * 70_000, 413, code="request_too_large"),
    Case(
        "card number as source",
        f"amount=5000&currency=usd&source={CARD}",
        400,
        "source",
        code="card_number_in_request",
    ),
    Case(
        "card number with spaces in metadata",
        GOOD + "&metadata[note]=4242 4242 4242 4242",
        400,
        "metadata",
        code="card_number_in_request",
    ),
    Case(
        "card number in JSON",
        json.dumps(
            {"amount": 5000, "currency": "usd", "source": "tok_visa", "card": {"number": CARD}}
        ),
        400,
        "card",
        content_type="application/json",
        code="card_number_in_request",
    ),
    *(
        Case(f"card number {how}", body, 400, param, code="card_number_in_request")
        for how, body, param in [
            ("with dots", GOOD + "&description=4242.4242.4242.4242", "description"),
            ("with slashes", GOOD + "&metadata[n]=4242/4242/4242/4242", "metadata"),
            ("with its CVC glued on", GOOD + f"&description={CARD}123", "description"),
            ("as a metadata key", GOOD + f"&metadata[{CARD}]=x", "metadata"),
            ("as a parameter name", GOOD + f"&{CARD}=x", "body"),
            ("in a list", GOOD + "&expand[]=x&expand[]=5555-5555-5555-4444", "expand"),
        ]
    ),
    Case(
        "card number as Idempotency-Key",
        GOOD,
        400,
        "header:idempotency-key",
        headers={"Idempotency-Key": CARD},
        code="card_number_in_request",
    ),
    # Malformed bodies: a clean 400, never a crash.
    Case("JSON nested 30,000 deep", "[" * 30_000 + "]" * 30_000, 400, content_type=JSON),
    Case(
        "JSON nested deeper than any parameter",
        charge_json(metadata='{"a": {"b": {"c": {"d": {"e": 1}}}}}'),
        400,
        content_type=JSON,
    ),
    Case("a form nested deeper than any parameter", GOOD + "&a[b][c][d][e][f]=1", 400),
    Case("a form body that is not UTF-8", GOOD.encode() + b"&description=caf\xe9", 400),
    Case("a JSON body that is not UTF-8", b'{"amount": "\xff"}', 400, content_type=JSON),
    Case(
        "a form sent as multipart",
        GOOD,
        400,
        content_type="multipart/form-data; boundary=x",
        code="parameter_invalid",
    ),
    Case("a form sent as text", GOOD, 400, content_type="text/plain"),
    Case("a NUL in a form key", GOOD + "&metadata[a%00]=b", 400, "metadata"),
    Case("a raw NUL in a form", GOOD.encode() + b"&description=a\x00b", 400, "description"),
    Case("no API key", GOOD, 401, auth=None, code="api_key_missing"),
    Case("unknown API key", GOOD, 401, auth="unknown", code="api_key_invalid"),
    Case("publishable key", GOOD, 401, auth="publishable", code="secret_key_required"),
    Case(
        "no Idempotency-Key",
        GOOD,
        400,
        "Idempotency-Key",
        code="idempotency_key_required",
        headers={"Idempotency-Key": ""},
    ),
    Case(
        "Idempotency-Key too long",
        GOOD,
        400,
        "Idempotency-Key",
        headers={"Idempotency-Key": "k" * 256},
    ),
]


def _auth(case: Case, merchant: dict[str, Any]) -> dict[str, str]:
    keys = {
        "secret": merchant["secret_key"],
        "publishable": merchant["publishable_key"],
        "unknown": "sk_test_" + "0" * 32,
    }
    return {"Authorization": f"Bearer {keys[case.auth]}"} if case.auth else {}


def form_headers(merchant: dict[str, Any], idempotency_key: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {merchant['secret_key']}",
        "Content-Type": FORM,
        "Idempotency-Key": idempotency_key,
    }


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_and_writes_nothing(
    stack: Stack, merchant: dict[str, Any], case: Case
) -> None:
    before = stack.item_counts()
    headers = {
        "Content-Type": case.content_type,
        "Idempotency-Key": str(uuid.uuid4()),
        **_auth(case, merchant),
        **case.headers,
    }
    authorizations = len(stack.processor_authorizations())
    response = requests.post(f"{stack.url}/v1/charges", data=case.body, headers=headers, timeout=30)

    assert response.status_code == case.status, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    assert response.headers["Request-Id"].startswith("req_")
    if case.param:
        assert error["param"] == case.param
    if case.code:
        assert error["code"] == case.code
    assert stack.item_counts() == before
    assert len(stack.processor_authorizations()) == authorizations  # never reached it
    if case.code == "card_number_in_request":  # named by where it was, never echoed
        assert not contains_card_number(response.text), response.text


def test_metadata_at_its_limits_is_accepted(stack: Stack, merchant: dict[str, Any]) -> None:
    """The limits are Stripe's: 50 keys, 40-character keys, 500-character values."""
    for body in (metadata_form(50), metadata_form(1, key_length=40, value_length=500)):
        response = requests.post(
            f"{stack.url}/v1/charges",
            data=body,
            headers=form_headers(merchant, str(uuid.uuid4())),
            timeout=30,
        )
        assert response.status_code == 200, response.text


def test_an_unknown_token_withdraws_its_intent(stack: Stack, merchant: dict[str, Any]) -> None:
    """The processor alone knows its tokens, so the intent is recorded before it is asked;
    when it refuses the token, the intent is withdrawn: no charge, event or journal stays,
    only the audit trail of what was tried. A retry is refused the same way."""
    idem = str(uuid.uuid4())
    headers = form_headers(merchant, idem)
    body = "amount=5000&currency=usd&source=tok_nonexistent"
    for _ in range(2):
        response = requests.post(f"{stack.url}/v1/charges", data=body, headers=headers, timeout=30)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["param"], error["code"]) == ("source", "resource_missing")
    charge_id = derived_id("ch", merchant["id"], idem)
    left = stack.store().query_partition(f"CHARGE#{charge_id}")
    assert left, "the attempt is audited"
    assert all(item["sk"].startswith("AUDIT#") for item in left), left
    assert [(a.get("from_state"), a["to_state"]) for a in left] == [
        (None, "pending"),
        ("pending", "rejected"),
    ] * 2
    assert not any(a["reference"] == charge_id for a in stack.processor_authorizations())


def test_a_card_number_is_never_stored_or_logged(stack: Stack, merchant: dict[str, Any]) -> None:
    number = "5555555555554444"
    for body in (f"amount=5000&currency=usd&source={number}", GOOD + f"&description=card {number}"):
        response = requests.post(
            f"{stack.url}/v1/charges",
            data=body,
            timeout=30,
            auth=(merchant["secret_key"], ""),
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        assert response.status_code == 400
        assert number not in response.text
    client = stack.dynamodb()
    for table in (stack.info.main_table, stack.info.idempotency_table):
        assert number not in json.dumps(client.scan(TableName=table)["Items"])
    assert number not in stack.log_text()


def test_unknown_route_and_unknown_charge(stack: Stack, merchant: dict[str, Any]) -> None:
    auth = (merchant["secret_key"], "")
    missing = requests.get(f"{stack.url}/v1/charges/ch_doesnotexist", auth=auth, timeout=30)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "resource_missing"
    unknown = requests.get(f"{stack.url}/v1/nothing-here", auth=auth, timeout=30)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=ten"])
def test_bad_list_parameters(stack: Stack, merchant: dict[str, Any], query: str) -> None:
    response = requests.get(
        f"{stack.url}/v1/charges?{query}", auth=(merchant["secret_key"], ""), timeout=30
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "limit"


def test_publishable_key_cannot_read_charges(stack: Stack, merchant: dict[str, Any]) -> None:
    response = requests.get(
        f"{stack.url}/v1/charges",
        timeout=30,
        headers={"Authorization": f"Bearer {merchant['publishable_key']}"},
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "secret_key_required"


@pytest.mark.parametrize(
    ("path", "param"),
    [
        (f"/v1/charges/{CARD}", "path"),
        ("/v1/charges/4242-4242-4242-4242/refunds", "path"),
        (f"/v1/no-such-route/{CARD}", "path"),
        (f"/v1/events?type={CARD}", "type"),
        ("/v1/charges?limit=4242.4242.4242.4242", "limit"),
        (f"/v1/refunds?charge=ch_1&metadata[{CARD}]=1", "query"),
    ],
)
def test_a_card_number_in_the_url_is_refused_unechoed(
    stack: Stack, merchant: dict[str, Any], path: str, param: str
) -> None:
    response = requests.get(f"{stack.url}{path}", auth=(merchant["secret_key"], ""), timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("card_number_in_request", param)
    assert not contains_card_number(response.text), response.text


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/charges", "GET, POST"),
        ("PATCH", "/v1/charges/ch_123", "GET, POST"),
        ("DELETE", "/v1/refunds/re_123", "GET, POST"),
        ("GET", "/v1/charges/ch_123/capture", "POST"),
        ("TRACE", "/v1/charges", "GET, POST"),
        ("OPTIONS", "/v1/balance", "GET"),
        ("TRACE", "/anywhere", None),
        ("QUERY", "/v1/balance", "GET"),  # a method no server in the path knows
    ],
)
def test_an_unsupported_method_is_a_stripe_shaped_405(
    stack: Stack, merchant: dict[str, Any], method: str, path: str, allow: str | None
) -> None:
    before = stack.item_counts()
    response = requests.request(
        method, f"{stack.url}{path}", auth=(merchant["secret_key"], ""), timeout=30
    )
    assert response.status_code == 405, response.text
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "method_not_allowed")
    assert response.headers.get("Allow") == allow
    assert response.headers["Request-Id"].startswith("req_")
    assert stack.item_counts() == before


def test_head_answers_headers_only(stack: Stack, merchant: dict[str, Any]) -> None:
    response = requests.head(f"{stack.url}/v1/charges", auth=(merchant["secret_key"], ""))
    assert response.status_code == 405
    assert response.content == b""
