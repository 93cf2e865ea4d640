"""The card vault, driven through its Lambda handler with API Gateway proxy events.

moto stands in for DynamoDB (the vault's table and Clearline's main table) and KMS (the
sealing key and the fingerprint HMAC key); a small HTTP server on loopback stands in for
the card processor where a test needs one.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import logging
import os
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import boto3
import pytest
from moto import mock_aws

from clearline.merchants import NewMerchant, create_merchant
from clearline.store import Store
from clearline.topology import (
    MAIN_TABLE,
    PROCESSOR_URL_ENV,
    VAULT_FINGERPRINT_KEY_ENV,
    VAULT_FUNCTION,
    VAULT_KEY_ENV,
    VAULT_PUBLIC_URL_ENV,
    VAULT_RATE_PER_IP_ENV,
    VAULT_RATE_PER_KEY_ENV,
    VAULT_TABLE,
    VAULT_TOPOLOGY,
    ApiSpec,
    Topology,
    table_env_var,
)
from clearline_local.frontdoor import build_event
from clearline_local.lambda_runtime import LocalLambdaContext, load_handler
from clearline_local.provision import provision_tables

REGION = "us-east-1"
VAULT_URL = "https://vault.example.test"
API_URL = "https://api.example.test"
CALLER_ARN = "arn:aws:sts::123456789012:assumed-role/clearline-api/api"
VISA = "4242424242424242"
# The vault's clock, mid-year, so that "earlier this year" and "later this year" both exist.
NOW = dt.datetime(2030, 6, 15, 12, 0, tzinfo=dt.UTC).timestamp()
LAMBDA_ENV = {
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_SERVICE_NAME": "clearline-vault",
}

for _name, _value in {
    **LAMBDA_ENV,
    table_env_var(VAULT_TABLE.key): VAULT_TABLE.name,
    table_env_var(MAIN_TABLE.key): MAIN_TABLE.name,
}.items():
    os.environ.setdefault(_name, _value)  # as the function's environment sets them first
handler = load_handler(VAULT_FUNCTION)
import vault_routes  # noqa: E402  (on the path once the handler is loaded)

# ---- a processor on loopback ------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeProcessor:
    """Answers every POST with `status` and `answer`, and keeps what it received."""

    status: int = 200
    answer: dict[str, Any] = field(
        default_factory=lambda: {"id": "auth_1", "object": "authorization", "status": "approved"}
    )
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        processor = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                processor.received.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                raw = json.dumps(processor.answer).encode()
                self.send_response(processor.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- the world --------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str

    @property
    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.text))

    @property
    def error(self) -> dict[str, Any]:
        return dict(self.json["error"])


@dataclass
class Vault:
    dynamodb: Any
    shop: NewMerchant
    other: NewMerchant

    def call(
        self,
        method: str,
        path: str,
        *,
        form: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        ip: str = "203.0.113.7",
        caller: str | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        data = raw or b""
        if form is not None:
            data = urlencode(form).encode()
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        event = build_event(method, path, list(sent.items()), data, ip, "prod")
        if caller is not None:
            event["requestContext"]["identity"]["userArn"] = caller
        context = LocalLambdaContext("vault", 512, 29, str(uuid.uuid4()))
        response = handler(event, context)
        flat = {k: v for k, v in (response.get("headers") or {}).items()}
        for name, values in (response.get("multiValueHeaders") or {}).items():
            flat[name] = values[-1]
        text = response.get("body") or ""
        if response.get("isBase64Encoded"):
            text = base64.b64decode(text).decode()
        return Reply(response["statusCode"], flat, text)

    def internal(self, method: str, path: str, **kwargs: Any) -> Reply:
        return self.call(method, path, caller=CALLER_ARN, **kwargs)

    def tokenize(
        self, number: str = VISA, key: str | None = None, ip: str = "203.0.113.7", **card: str
    ) -> Reply:
        form = {
            "key": key or self.shop.publishable_key,
            "type": "card",
            "card[number]": number,
            "card[exp_month]": "12",
            "card[exp_year]": "2031",
            **{f"card[{name}]": value for name, value in card.items()},
        }
        return self.call("POST", "/v1/payment_methods", form=form, ip=ip)

    def token(self, number: str = VISA, **card: str) -> Reply:
        form = {
            "key": self.shop.publishable_key,
            "card[number]": number,
            "card[exp_month]": "12",
            "card[exp_year]": "2031",
            **{f"card[{name}]": value for name, value in card.items()},
        }
        return self.call("POST", "/v1/tokens", form=form)

    def raw_items(self) -> list[dict[str, Any]]:
        paginator = self.dynamodb.get_paginator("scan")
        return [
            item
            for page in paginator.paginate(TableName=VAULT_TABLE.name)
            for item in page["Items"]
        ]

    def items(self, prefix: str) -> list[dict[str, Any]]:
        return [item for item in self.raw_items() if item["pk"]["S"].startswith(prefix)]


def configure(**env: str) -> None:
    """Sets the function's environment and builds its services afresh, as a cold start."""
    os.environ.update(env)
    vault_routes.services.cache_clear()
    services = vault_routes.services()
    services.cards.clock = lambda: NOW
    services.limiter.clock = lambda: NOW
    services.authentications.clock = lambda: NOW


@pytest.fixture
def vault() -> Iterator[Vault]:
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
        }
    )
    os.environ.pop("AWS_ENDPOINT_URL", None)
    saved = dict(os.environ)
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        provision_tables(VAULT_TOPOLOGY, dynamodb)
        provision_tables(Topology(tables=(MAIN_TABLE,), functions=(), api=ApiSpec("api")), dynamodb)
        kms = boto3.client("kms", region_name=REGION)
        card_key = kms.create_key(KeySpec="SYMMETRIC_DEFAULT", KeyUsage="ENCRYPT_DECRYPT")
        mac_key = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
        main = Store(MAIN_TABLE.name, dynamodb)
        shop, other = create_merchant(main, "Shop"), create_merchant(main, "Other shop")
        for name in (VAULT_RATE_PER_KEY_ENV, VAULT_RATE_PER_IP_ENV):
            os.environ.pop(name, None)
        configure(
            **{
                VAULT_KEY_ENV: card_key["KeyMetadata"]["Arn"],
                VAULT_FINGERPRINT_KEY_ENV: mac_key["KeyMetadata"]["Arn"],
                VAULT_PUBLIC_URL_ENV: VAULT_URL,
                "CLEARLINE_PUBLIC_URL": API_URL,
                PROCESSOR_URL_ENV: f"http://127.0.0.1:{unused_port()}",
            }
        )
        yield Vault(dynamodb, shop, other)
    os.environ.clear()
    os.environ.update(saved)
    vault_routes.services.cache_clear()


# ---- tokenizing cards -------------------------------------------------------------------------


def test_a_card_becomes_a_payment_method_in_stripes_shape(vault: Vault) -> None:
    reply = vault.tokenize("4242 4242-4242 4242", cvc="123")
    assert reply.status == 200, reply.text
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    assert reply.headers["Request-Id"].startswith("req_")
    pm = reply.json
    assert pm["id"].startswith("pm_") and pm["object"] == "payment_method"
    assert pm["type"] == "card" and pm["customer"] is None and pm["livemode"] is False
    assert pm["allow_redisplay"] == "unspecified" and pm["metadata"] == {}
    card = pm["card"]
    assert (card["brand"], card["last4"], card["exp_month"], card["exp_year"]) == (
        "visa",
        "4242",
        12,
        2031,
    )
    assert card["display_brand"] == "visa" and card["funding"] == "credit"
    assert card["country"] == "US"
    assert card["networks"] == {"available": ["visa"], "preferred": None}
    assert card["checks"] == {
        "address_line1_check": None,
        "address_postal_code_check": None,
        "cvc_check": "unchecked",
    }
    assert card["three_d_secure_usage"] == {"supported": True}
    assert card["generated_from"] is None and card["wallet"] is None
    assert re.fullmatch(r"[0-9A-Za-z]{16}", card["fingerprint"])
    assert pm["billing_details"] == {
        "address": dict.fromkeys(["city", "country", "line1", "line2", "postal_code", "state"]),
        "email": None,
        "name": None,
        "phone": None,
    }
    assert VISA not in reply.text


def test_billing_details_and_metadata_are_kept(vault: Vault) -> None:
    reply = vault.call(
        "POST",
        "/v1/payment_methods",
        form={
            "key": vault.shop.publishable_key,
            "type": "card",
            "card[number]": "5555555555554444",
            "card[exp_month]": "1",
            "card[exp_year]": "31",
            "billing_details[name]": "Jenny Rosen",
            "billing_details[email]": "jenny@example.com",
            "billing_details[address][line1]": "1 Main St",
            "billing_details[address][postal_code]": "94107",
            "metadata[order]": "6735",
            "payment_user_agent": "stripe.js/abc",  # telemetry, accepted and dropped
        },
    )
    assert reply.status == 200, reply.text
    pm = reply.json
    assert pm["card"]["brand"] == "mastercard" and pm["card"]["exp_year"] == 2031
    assert pm["billing_details"]["name"] == "Jenny Rosen"
    assert pm["billing_details"]["address"]["postal_code"] == "94107"
    assert pm["card"]["checks"]["address_line1_check"] == "unchecked"
    assert pm["metadata"] == {"order": "6735"}


@pytest.mark.parametrize(
    ("number", "brand", "funding"),
    [
        ("4000056655665556", "visa", "debit"),
        ("378282246310005", "amex", "credit"),
        ("6011111111111117", "discover", "credit"),
        ("3056930009020004", "diners", "credit"),
        ("3566002020360505", "jcb", "credit"),
        ("6200000000000005", "unionpay", "credit"),
        ("2223003122003222", "mastercard", "credit"),
    ],
)
def test_brand_and_funding_come_from_the_number(
    vault: Vault, number: str, brand: str, funding: str
) -> None:
    reply = vault.tokenize(number)
    assert reply.status == 200, reply.text
    assert (reply.json["card"]["brand"], reply.json["card"]["funding"]) == (brand, funding)
    assert reply.json["card"]["last4"] == number[-4:]


def test_the_same_number_has_the_same_fingerprint_for_every_merchant(vault: Vault) -> None:
    first = vault.tokenize(VISA).json["card"]["fingerprint"]
    again = vault.tokenize("4242 4242 4242 4242").json["card"]["fingerprint"]
    elsewhere = vault.tokenize(VISA, key=vault.other.publishable_key).json["card"]["fingerprint"]
    different = vault.tokenize("5555555555554444").json["card"]["fingerprint"]
    assert first == again == elsewhere
    assert different != first


def test_the_table_never_holds_a_card_number_or_cvc(vault: Vault) -> None:
    pm = vault.tokenize(VISA, cvc="987").json
    token = vault.token("378282246310005", cvc="7531").json
    redeemed = vault.internal(
        "POST",
        f"/internal/tokens/{token['id']}/redeem",
        body={"merchant": vault.shop.merchant.id, "reference": "ch_1"},
    )
    assert redeemed.status == 200
    raw = json.dumps(vault.raw_items())
    for number in (VISA, "378282246310005"):
        assert number not in raw
        assert " ".join(re.findall("....", number)) not in raw
    cvc_items = [i for i in vault.items("PM#") + vault.items("TOKEN#") if i["sk"]["S"] == "CVC"]
    assert len(cvc_items) == 2  # the payment method's, and the redeemed token's (moved)
    for item in cvc_items:
        assert set(item) == {"pk", "sk", "sealed", "expires_at"}
        assert int(item["expires_at"]["N"]) == NOW + 3600
    stored = next(i for i in vault.items(f"PM#{pm['id']}") if i["sk"]["S"] == "PM")
    assert stored["sealed"]["M"]["alg"]["S"] == "AES-256-GCM"
    assert "number" not in stored and "cvc" not in stored
    # Once redeemed, the token keeps only what it showed: its payment method holds the card.
    (token_item,) = vault.items(f"TOKEN#{token['id']}")
    assert "sealed" not in token_item and token_item["used_by"]["S"] == "ch_1"


def test_card_numbers_never_reach_the_logs(vault: Vault) -> None:
    handler = vault_routes.logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    lines = io.StringIO()
    previous = handler.setStream(lines)
    try:
        vault.tokenize(VISA, cvc="123")
        vault.tokenize("4242424242424241")  # refused: Luhn
        vault.call("GET", f"/v1/nothing/{VISA}")
        vault.call("GET", f"/internal/payment_methods/{VISA}?merchant=x", caller=CALLER_ARN)
    finally:
        handler.setStream(previous)
    logged = lines.getvalue()
    assert '"request"' in logged  # the request log was written ...
    assert VISA not in logged and "4242424242424241" not in logged  # ... without the number


# ---- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("card", "status", "code", "param", "message"),
    [
        ({"number": "4242424242424241"}, 402, "incorrect_number", "card[number]", "incorrect"),
        ({"number": "4242abcd42424242"}, 402, "invalid_number", "card[number]", "invalid"),
        ({"number": "42424242"}, 402, "invalid_number", "card[number]", "invalid"),
        ({"number": "4" * 20}, 402, "invalid_number", "card[number]", "invalid"),
        (
            {"exp_year": "2029"},
            402,
            "invalid_expiry_year",
            "card[exp_year]",
            "Your card's expiration year is in the past.",
        ),
        (
            {"exp_year": "30", "exp_month": "5"},
            402,
            "invalid_expiry_month",
            "card[exp_month]",
            "Your card's expiration date is in the past.",
        ),
        ({"exp_month": "13"}, 402, "invalid_expiry_month", "card[exp_month]", "month"),
        ({"exp_month": "0"}, 402, "invalid_expiry_month", "card[exp_month]", "month"),
        ({"exp_year": "203"}, 402, "invalid_expiry_year", "card[exp_year]", "invalid"),
        ({"cvc": "12"}, 402, "invalid_cvc", "card[cvc]", "security code"),
        ({"cvc": "1234"}, 402, "invalid_cvc", "card[cvc]", "security code"),
        ({"cvc": "12a"}, 402, "invalid_cvc", "card[cvc]", "security code"),
        (
            {"number": "378282246310005", "cvc": "123"},
            402,
            "invalid_cvc",
            "card[cvc]",
            "security code",
        ),
        ({"number": ""}, 400, "parameter_missing", "card[number]", "card[number]"),
        ({"exp_month": ""}, 400, "parameter_missing", "card[exp_month]", "card[exp_month]"),
    ],
)
def test_card_details_are_validated_as_stripe_does(
    vault: Vault, card: dict[str, str], status: int, code: str, param: str, message: str
) -> None:
    given = {"number": VISA, "exp_month": "12", "exp_year": "2031", **card}
    form = {"key": vault.shop.publishable_key, "type": "card"}
    form.update({f"card[{name}]": value for name, value in given.items() if value})
    reply = vault.call("POST", "/v1/payment_methods", form=form)
    assert reply.status == status, reply.text
    error = reply.error
    assert (error["type"], error["code"], error["param"]) == (
        "card_error" if status == 402 else "invalid_request_error",
        code,
        param,
    )
    assert message in error["message"]
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    assert vault.items("PM#") == []


def test_an_amex_takes_a_four_digit_cvc(vault: Vault) -> None:
    reply = vault.tokenize("378282246310005", cvc="1234")
    assert reply.status == 200, reply.text
    assert reply.json["card"]["checks"]["cvc_check"] == "unchecked"


def test_missing_type_or_card_is_a_400(vault: Vault) -> None:
    key = vault.shop.publishable_key
    no_type = vault.call(
        "POST",
        "/v1/payment_methods",
        form={"key": key, "card[number]": VISA, "card[exp_month]": "1", "card[exp_year]": "31"},
    )
    assert (no_type.status, no_type.error["code"], no_type.error["param"]) == (
        400,
        "parameter_missing",
        "type",
    )
    no_card = vault.call("POST", "/v1/payment_methods", form={"key": key, "type": "card"})
    assert (no_card.status, no_card.error["param"]) == (400, "card")


def test_a_card_number_outside_card_number_is_refused(vault: Vault) -> None:
    stray = vault.call(
        "POST",
        "/v1/payment_methods",
        form={
            "key": vault.shop.publishable_key,
            "type": "card",
            "card[number]": VISA,
            "card[exp_month]": "12",
            "card[exp_year]": "2031",
            "metadata[note]": "5555 5555 5555 4444",
        },
    )
    assert (stray.status, stray.error["param"]) == (400, "metadata")
    assert "5555" not in stray.text


def test_keys_missing_secret_or_unknown_are_refused(vault: Vault) -> None:
    card = {"type": "card", "card[number]": VISA, "card[exp_month]": "12", "card[exp_year]": "31"}
    missing = vault.call("POST", "/v1/payment_methods", form=card)
    assert (missing.status, missing.error["code"]) == (401, "api_key_missing")
    secret = vault.call("POST", "/v1/payment_methods", form={**card, "key": vault.shop.secret_key})
    assert secret.status == 401
    assert "never be sent from a browser" in secret.error["message"]
    assert "publishable" in secret.error["message"]
    bearer_secret = vault.call(
        "POST",
        "/v1/payment_methods",
        form=card,
        headers={"Authorization": f"Bearer {vault.shop.secret_key}"},
    )
    assert bearer_secret.status == 401
    unknown = vault.call("POST", "/v1/tokens", form={**card, "key": "pk_test_nobodyhasthiskey"})
    assert (unknown.status, unknown.error["code"]) == (401, "api_key_invalid")
    assert vault.items("PM#") == [] and vault.items("TOKEN#") == []
    bearer = vault.call(
        "POST",
        "/v1/payment_methods",
        form=card,
        headers={"Authorization": f"Bearer {vault.shop.publishable_key}"},
    )
    assert bearer.status == 200, bearer.text


def test_too_many_requests_for_one_key_are_refused_and_nothing_is_stored(vault: Vault) -> None:
    configure(**{VAULT_RATE_PER_KEY_ENV: "3", VAULT_RATE_PER_IP_ENV: "100"})
    statuses = [vault.tokenize(VISA).status for _ in range(2)]
    statuses.append(vault.tokenize("4242424242424241").status)  # a refusal counts too
    limited = vault.tokenize(VISA)
    assert statuses == [200, 200, 402]
    assert limited.status == 429
    assert limited.error == {
        "type": "invalid_request_error",
        "code": "rate_limit",
        "message": limited.error["message"],
    }
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert len([i for i in vault.items("PM#") if i["sk"]["S"] == "PM"]) == 2
    # Another key, from the same address, is not limited by this one's count.
    assert vault.tokenize(VISA, key=vault.other.publishable_key).status == 200
    # The next window starts afresh.
    vault_routes.services().limiter.clock = lambda: NOW + 60
    assert vault.tokenize(VISA).status == 200


def test_too_many_requests_from_one_address_are_refused(vault: Vault) -> None:
    configure(**{VAULT_RATE_PER_KEY_ENV: "100", VAULT_RATE_PER_IP_ENV: "2"})
    first = vault.tokenize(VISA, ip="198.51.100.1")
    second = vault.call("POST", "/v1/tokens", form={"key": "pk_test_unknown"}, ip="198.51.100.1")
    third = vault.tokenize(VISA, key=vault.other.publishable_key, ip="198.51.100.1")
    assert (first.status, second.status, third.status) == (200, 401, 429)
    assert "Retry-After" in third.headers and third.error["code"] == "rate_limit"
    assert vault.tokenize(VISA, ip="198.51.100.2").status == 200
    assert len([i for i in vault.items("PM#") if i["sk"]["S"] == "PM"]) == 2


def test_refusals_and_cors(vault: Vault) -> None:
    preflight = vault.call("OPTIONS", "/v1/payment_methods")
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Content-Type" in preflight.headers["Access-Control-Allow-Headers"]
    assert vault.call("OPTIONS", "/v1/tokens").status == 204
    big = vault.call(
        "POST",
        "/v1/payment_methods",
        form={"key": vault.shop.publishable_key, "metadata[x]": "y" * (65 * 1024)},
    )
    assert (big.status, big.error["code"]) == (413, "request_too_large")
    unknown = vault.call("GET", "/v1/charges")
    assert unknown.status == 404 and unknown.error["type"] == "invalid_request_error"
    assert vault.call("POST", "/nowhere", form={}).status == 404


# ---- tokens -----------------------------------------------------------------------------------


def test_a_token_has_stripes_shape(vault: Vault) -> None:
    reply = vault.token(VISA, cvc="123", name="Jenny Rosen", address_zip="94107")
    assert reply.status == 200, reply.text
    token = reply.json
    assert token["id"].startswith("tok_") and token["object"] == "token"
    assert (token["type"], token["used"], token["livemode"]) == ("card", False, False)
    assert token["client_ip"] == "203.0.113.7"
    card = token["card"]
    assert card["id"].startswith("card_") and card["object"] == "card"
    assert (card["brand"], card["last4"], card["funding"], card["country"]) == (
        "Visa",
        "4242",
        "credit",
        "US",
    )
    assert (card["exp_month"], card["exp_year"], card["cvc_check"]) == (12, 2031, "unchecked")
    assert card["name"] == "Jenny Rosen" and card["address_zip_check"] == "unchecked"
    assert card["fingerprint"] == vault.tokenize(VISA).json["card"]["fingerprint"]
    assert card["networks"] == {"preferred": None} and card["dynamic_last4"] is None


def test_a_token_is_single_use(vault: Vault) -> None:
    token = vault.token(VISA, name="Jenny Rosen").json
    merchant = vault.shop.merchant.id
    path = f"/internal/tokens/{token['id']}/redeem"
    first = vault.internal("POST", path, body={"merchant": merchant, "reference": "ch_1"})
    assert first.status == 200, first.text
    pm = first.json
    assert pm["id"].startswith("pm_") and pm["merchant"] == merchant
    assert (pm["card"]["brand"], pm["card"]["last4"]) == ("visa", "4242")
    assert pm["billing_details"]["name"] == "Jenny Rosen"
    again = vault.internal("POST", path, body={"merchant": merchant, "reference": "ch_1"})
    assert (again.status, again.json["id"]) == (200, pm["id"])
    other = vault.internal("POST", path, body={"merchant": merchant, "reference": "ch_2"})
    assert other.status == 400
    assert other.error["code"] == "token_already_used"
    assert other.error["type"] == "invalid_request_error"
    assert other.error["message"].startswith("You cannot use a Clearline token more than once")
    fetched = vault.internal("GET", f"/internal/payment_methods/{pm['id']}?merchant={merchant}")
    assert fetched.json["id"] == pm["id"]


def test_clearline_learns_a_cards_bin_and_the_browsers_address_and_nobody_else_does(
    vault: Vault,
) -> None:
    """Fraud rules read `:card_bin:` and `:ip_country:`: the vault tells Clearline the first
    six digits and the address of the browser that gave the card (a token's carries over to
    its payment method), and shows a browser neither."""
    merchant = vault.shop.merchant.id
    typed = vault.tokenize("4000056655665556", ip="198.51.100.20")
    assert typed.status == 200, typed.text
    assert "iin" not in typed.json["card"] and "client_ip" not in typed.json
    assert "400005" not in typed.text  # nothing of the number but its last four
    inside = vault.internal(
        "GET", f"/internal/payment_methods/{typed.json['id']}?merchant={merchant}"
    )
    assert (inside.json["card"]["iin"], inside.json["client_ip"]) == ("400005", "198.51.100.20")

    token = vault.token(VISA).json
    redeemed = vault.internal(
        "POST",
        f"/internal/tokens/{token['id']}/redeem",
        body={"merchant": merchant, "reference": "ch_ip"},
    )
    assert (redeemed.json["card"]["iin"], redeemed.json["client_ip"]) == ("424242", "203.0.113.7")
    described = vault.internal("GET", "/internal/test_cards/tok_visa_debit").json
    assert (described["iin"], described["funding"]) == ("400005", "debit")


def test_another_merchants_or_an_unknown_token_is_not_found(vault: Vault) -> None:
    token = vault.token(VISA).json
    theirs = vault.internal(
        "POST",
        f"/internal/tokens/{token['id']}/redeem",
        body={"merchant": vault.other.merchant.id, "reference": "ch_1"},
    )
    assert (theirs.status, theirs.error["code"]) == (404, "resource_missing")
    unknown = vault.internal(
        "POST",
        "/internal/tokens/tok_visa/redeem",
        body={"merchant": vault.shop.merchant.id, "reference": "ch_1"},
    )
    assert unknown.status == 404
    # Neither attempt used it up.
    mine = vault.internal(
        "POST",
        f"/internal/tokens/{token['id']}/redeem",
        body={"merchant": vault.shop.merchant.id, "reference": "ch_1"},
    )
    assert mine.status == 200


# ---- internal routes --------------------------------------------------------------------------


def test_internal_routes_need_a_verified_caller(vault: Vault) -> None:
    pm = vault.tokenize(VISA).json
    merchant = vault.shop.merchant.id
    for method, path, body in [
        ("GET", f"/internal/payment_methods/{pm['id']}?merchant={merchant}", None),
        ("POST", "/internal/payment_methods", {"merchant": merchant, "test_card": "pm_card_visa"}),
        ("POST", "/internal/authorizations", {"merchant": merchant}),
        ("GET", "/internal/authentications/3ds_x", None),
        ("GET", "/internal/anything", None),
    ]:
        refused = vault.call(method, path, body=body)
        assert refused.status == 403, path
        assert refused.error["type"] == "invalid_request_error"
        empty = vault.call(method, path, body=body, caller="")
        assert empty.status == 403, path


def test_a_payment_method_is_only_its_merchants(vault: Vault) -> None:
    pm = vault.tokenize(VISA).json
    mine = vault.internal(
        "GET", f"/internal/payment_methods/{pm['id']}?merchant={vault.shop.merchant.id}"
    )
    assert mine.status == 200
    # What the browser was shown, whose it is, and what only Clearline's fraud rules read.
    assert mine.json == {
        **pm,
        "card": {**pm["card"], "iin": "424242"},
        "client_ip": "203.0.113.7",
        "merchant": vault.shop.merchant.id,
    }
    theirs = vault.internal(
        "GET", f"/internal/payment_methods/{pm['id']}?merchant={vault.other.merchant.id}"
    )
    assert (theirs.status, theirs.error["code"]) == (404, "resource_missing")
    unknown = vault.internal(
        "GET", f"/internal/payment_methods/pm_nothing?merchant={vault.shop.merchant.id}"
    )
    assert unknown.status == 404
    no_merchant = vault.internal("GET", f"/internal/payment_methods/{pm['id']}")
    assert (no_merchant.status, no_merchant.error["param"]) == (400, "merchant")


def test_test_card_aliases_become_payment_methods(vault: Vault) -> None:
    merchant = vault.shop.merchant.id
    first = vault.internal(
        "POST",
        "/internal/payment_methods",
        body={"merchant": merchant, "test_card": "pm_card_visa", "reference": "req_1"},
    )
    assert first.status == 200, first.text
    assert (first.json["card"]["brand"], first.json["card"]["last4"]) == ("visa", "4242")
    assert first.json["card"]["exp_year"] == 2031 and first.json["merchant"] == merchant
    retried = vault.internal(
        "POST",
        "/internal/payment_methods",
        body={"merchant": merchant, "test_card": "pm_card_visa", "reference": "req_1"},
    )
    assert retried.json["id"] == first.json["id"]
    other = vault.internal(
        "POST",
        "/internal/payment_methods",
        body={"merchant": merchant, "test_card": "tok_chargeDeclinedInsufficientFunds",
              "reference": "req_2"},
    )  # fmt: skip
    assert other.json["id"] != first.json["id"] and other.json["card"]["last4"] == "9995"
    debit = vault.internal(
        "POST",
        "/internal/payment_methods",
        body={"merchant": merchant, "test_card": "tok_visa_debit", "reference": "req_3"},
    )
    assert debit.json["card"]["funding"] == "debit"
    unknown = vault.internal(
        "POST",
        "/internal/payment_methods",
        body={"merchant": merchant, "test_card": "pm_card_bogus", "reference": "req_4"},
    )
    assert unknown.status == 404
    missing = vault.internal("POST", "/internal/payment_methods", body={"merchant": merchant})
    assert (missing.status, missing.error["code"]) == (400, "parameter_missing")


# ---- forwarding authorizations ----------------------------------------------------------------


@pytest.fixture
def processor(vault: Vault) -> Iterator[FakeProcessor]:
    fake = FakeProcessor()
    configure(**{PROCESSOR_URL_ENV: fake.url})
    yield fake
    fake.close()


def authorize(
    vault: Vault, pm_id: str, key: str, authentication: str | None = None, **extra: Any
) -> Reply:
    return vault.internal(
        "POST",
        "/internal/authorizations",
        body={
            "merchant": vault.shop.merchant.id,
            "payment_method": pm_id,
            "amount": 5000,
            "currency": "usd",
            "capture": True,
            "reference": "ch_123",
            "authentication": authentication,
            **extra,
        },
        headers={"Idempotency-Key": key},
    )


def test_a_test_alias_is_described_with_its_numbers_fingerprint(vault: Vault) -> None:
    typed = vault.tokenize(VISA).json
    stored = len(vault.raw_items())
    described = vault.internal("GET", "/internal/test_cards/tok_visa")
    assert described.status == 200
    assert described.json == {
        "alias": "tok_visa",
        "brand": "visa",
        "last4": "4242",
        "fingerprint": typed["card"]["fingerprint"],
        "exp_month": described.json["exp_month"],
        "exp_year": described.json["exp_year"],
        "country": "US",
        "funding": "credit",
        "iin": "424242",
    }
    assert (
        vault.internal("GET", "/internal/test_cards/pm_card_visa").json["fingerprint"]
        == (typed["card"]["fingerprint"])
    )
    assert vault.internal("GET", "/internal/test_cards/tok_bogus").status == 404
    assert vault.call("GET", "/internal/test_cards/tok_visa").status == 403
    assert len(vault.raw_items()) == stored  # describing a test card makes nothing
    tokens = [vault.token().json["id"] for _ in range(3)]
    assert all(t.startswith("tok_1") for t in tokens)  # never a test alias's name


def test_an_authorization_is_forwarded_with_the_card_and_relayed(
    vault: Vault, processor: FakeProcessor
) -> None:
    pm = vault.tokenize(VISA, cvc="321").json
    processor.answer = {"id": "auth_9", "status": "approved", "amount": 5000, "extra": [1, 2]}
    processor.status = 201
    reply = authorize(vault, pm["id"], "clearline:ch_123")
    assert (reply.status, reply.json) == (201, processor.answer)
    sent = processor.received[-1]
    assert sent.path == "/v1/authorizations"
    assert sent.headers["idempotency-key"] == "clearline:ch_123"
    assert sent.body == {
        "card": {"number": VISA, "exp_month": 12, "exp_year": 2031, "cvc": "321"},
        "amount": 5000,
        "currency": "usd",
        "capture": True,
        "reference": "ch_123",
    }
    # The CVC is gone after the first authorization; the card stays.
    assert [i for i in vault.items(f"PM#{pm['id']}") if i["sk"]["S"] == "CVC"] == []
    retry = authorize(vault, pm["id"], "clearline:ch_124")
    assert retry.status == 201
    assert processor.received[-1].body["card"] == {
        "number": VISA,
        "exp_month": 12,
        "exp_year": 2031,
    }


def test_a_decline_is_relayed_as_402_and_uses_up_the_cvc(
    vault: Vault, processor: FakeProcessor
) -> None:
    pm = vault.tokenize("4000000000000002", cvc="321").json
    processor.status = 402
    processor.answer = {"error": {"type": "card_error", "code": "card_declined"}}
    reply = authorize(vault, pm["id"], "key-1")
    assert (reply.status, reply.json) == (402, processor.answer)
    assert [i for i in vault.items(f"PM#{pm['id']}") if i["sk"]["S"] == "CVC"] == []


def test_a_processor_error_keeps_the_cvc_for_the_retry(
    vault: Vault, processor: FakeProcessor
) -> None:
    pm = vault.tokenize(VISA, cvc="321").json
    processor.status = 500
    processor.answer = {"error": {"type": "api_error", "message": "try again"}}
    assert authorize(vault, pm["id"], "key-1").status == 500
    processor.status = 200
    processor.answer = {"id": "auth_1", "status": "approved"}
    assert authorize(vault, pm["id"], "key-1").status == 200
    assert processor.received[-1].body["card"]["cvc"] == "321"


def test_an_unreachable_processor_is_a_502(vault: Vault) -> None:
    pm = vault.tokenize(VISA, cvc="321").json
    reply = authorize(vault, pm["id"], "key-1")  # the fixture's processor URL has no server
    assert reply.status == 502
    assert reply.error["type"] == "api_error" and reply.error["code"] == "processor_unavailable"
    assert len([i for i in vault.items(f"PM#{pm['id']}") if i["sk"]["S"] == "CVC"]) == 1


def test_an_authorization_needs_the_merchants_payment_method_and_a_key(
    vault: Vault, processor: FakeProcessor
) -> None:
    theirs = vault.tokenize(VISA, key=vault.other.publishable_key).json
    assert authorize(vault, theirs["id"], "key-1").status == 404
    assert authorize(vault, "pm_unknown", "key-1").status == 404
    mine = vault.tokenize(VISA).json
    no_key = vault.internal(
        "POST",
        "/internal/authorizations",
        body={"merchant": vault.shop.merchant.id, "payment_method": mine["id"], "amount": 1,
              "currency": "usd", "reference": "ch_1"},
    )  # fmt: skip
    assert (no_key.status, no_key.error["code"]) == (400, "idempotency_key_required")
    assert processor.received == []


# ---- 3-D Secure -------------------------------------------------------------------------------


def begin(vault: Vault, pm_id: str, key: str, amount: int = 5000) -> Reply:
    return vault.internal(
        "POST",
        "/internal/authentications",
        body={
            "merchant": vault.shop.merchant.id,
            "payment_method": pm_id,
            "amount": amount,
            "currency": "eur",
            "reference": "pi_123",
            "complete_url": f"{API_URL}/v1/payment_intents/pi_123/authenticated?token=abc",
        },
        headers={"Idempotency-Key": key},
    )


def test_most_cards_need_no_challenge(vault: Vault) -> None:
    pm = vault.tokenize(VISA).json
    reply = begin(vault, pm["id"], "key-1")
    assert reply.status == 200
    assert reply.json == {
        "id": None,
        "object": "authentication",
        "status": "not_required",
        "url": None,
    }


def test_a_challenge_is_answered_once_and_returns_to_clearline(
    vault: Vault, processor: FakeProcessor
) -> None:
    pm = vault.tokenize("4000002500003155").json
    started = begin(vault, pm["id"], "key-1")
    assert started.status == 200, started.text
    challenge = started.json
    assert challenge["id"].startswith("3ds_") and challenge["status"] == "challenge_required"
    assert challenge["url"] == f"{VAULT_URL}/3ds/{challenge['id']}"
    assert begin(vault, pm["id"], "key-1").json == challenge  # the same key, the same one
    assert begin(vault, pm["id"], "key-1", amount=1).status == 400  # ... for the same payment
    assert begin(vault, pm["id"], "key-2").json["id"] != challenge["id"]

    # Before the cardholder answers, an authorization cannot claim it.
    authorize(vault, pm["id"], "auth-1", challenge["id"])
    assert "three_d_secure" not in processor.received[-1].body

    page = vault.call("GET", f"/3ds/{challenge['id']}")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert '<button id="complete-authentication"' in page.text
    assert '<button id="fail-authentication"' in page.text
    assert "50.00 EUR" in page.text and "Shop" not in page.text
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]

    answered = vault.call("POST", f"/3ds/{challenge['id']}", form={"outcome": "succeeded"})
    assert answered.status == 303  # to this origin's return page, which sends the browser on
    assert answered.headers["Location"] == f"{challenge['id']}/return"
    leaving = vault.call("GET", f"/3ds/{challenge['id']}/return")
    complete_url = f"{API_URL}/v1/payment_intents/pi_123/authenticated?token=abc"
    assert leaving.status == 200
    assert f'content="0;url={complete_url}"' in leaving.text
    assert f'href="{complete_url}"' in leaving.text
    again = vault.call("POST", f"/3ds/{challenge['id']}", form={"outcome": "failed"})
    assert again.status == 303  # changes nothing
    odd = vault.call("POST", f"/3ds/{challenge['id']}", form={"outcome": "maybe"})
    assert odd.status == 400 and odd.headers["Content-Type"].startswith("text/html")
    recorded = vault.internal("GET", f"/internal/authentications/{challenge['id']}").json
    assert recorded == {
        "id": challenge["id"],
        "object": "authentication",
        "status": "succeeded",
        "payment_method": pm["id"],
        "reference": "pi_123",
        "merchant": vault.shop.merchant.id,
        "amount": 5000,
        "currency": "eur",
    }

    authorize(vault, pm["id"], "auth-2", challenge["id"])
    assert processor.received[-1].body["three_d_secure"] == {
        "authenticated": True,
        "authentication": challenge["id"],
    }
    # Another payment method cannot borrow it.
    other = vault.tokenize("4000002500003155").json
    authorize(vault, other["id"], "auth-3", challenge["id"])
    assert "three_d_secure" not in processor.received[-1].body


def test_a_failed_challenge_is_never_claimed(vault: Vault, processor: FakeProcessor) -> None:
    pm = vault.tokenize("4000000000003220").json
    challenge = begin(vault, pm["id"], "key-1").json
    assert challenge["status"] == "challenge_required"
    vault.call("POST", f"/3ds/{challenge['id']}", form={"outcome": "failed"})
    vault.call("POST", f"/3ds/{challenge['id']}", form={"outcome": "succeeded"})
    status = vault.internal("GET", f"/internal/authentications/{challenge['id']}").json["status"]
    assert status == "failed"
    authorize(vault, pm["id"], "auth-1", challenge["id"])
    assert "three_d_secure" not in processor.received[-1].body


def test_a_challenge_returns_only_to_a_web_address(vault: Vault) -> None:
    pm = vault.tokenize("4000002500003155").json
    reply = vault.internal(
        "POST",
        "/internal/authentications",
        body={"merchant": vault.shop.merchant.id, "payment_method": pm["id"], "amount": 1,
              "currency": "usd", "reference": "pi_1", "complete_url": "javascript:alert(1)"},
        headers={"Idempotency-Key": "k"},
    )  # fmt: skip
    assert (reply.status, reply.error["param"]) == (400, "complete_url")
    assert vault.items("AUTH#") == []


def test_unknown_authentications_are_not_found(vault: Vault) -> None:
    page = vault.call("GET", "/3ds/3ds_nothing")
    assert page.status == 404 and page.headers["Content-Type"].startswith("text/html")
    answer = vault.call("POST", "/3ds/3ds_nothing", form={"outcome": "succeeded"})
    assert answer.status == 404
    assert vault.internal("GET", "/internal/authentications/3ds_nothing").status == 404
    pm = vault.tokenize(VISA).json
    theirs = vault.internal(
        "POST",
        "/internal/authentications",
        body={"merchant": vault.other.merchant.id, "payment_method": pm["id"], "amount": 1,
              "currency": "usd", "reference": "pi_1", "complete_url": API_URL},
        headers={"Idempotency-Key": "k"},
    )  # fmt: skip
    assert theirs.status == 404


# ---- the browser library and the hosted field -------------------------------------------------


def test_the_vault_reads_the_api_url_where_clearline_sets_it() -> None:
    from vault.config import API_PUBLIC_URL_ENV

    from presentation.links import PUBLIC_URL_ENV

    assert API_PUBLIC_URL_ENV == PUBLIC_URL_ENV


def test_clearline_js_is_served_with_its_urls(vault: Vault) -> None:
    reply = vault.call("GET", "/clearline.js")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/javascript")
    assert json.dumps(API_URL) in reply.text and json.dumps(VAULT_URL) in reply.text
    assert "__CLEARLINE_API_URL__" not in reply.text
    for name in ("createPaymentMethod", "confirmCardPayment", "retrievePaymentIntent", "elements"):
        assert name in reply.text
    assert "__clearlineFrame" in reply.text and "/card-field?key=" in reply.text


def test_the_card_field_is_framed_under_a_strict_policy(vault: Vault) -> None:
    query = urlencode({"key": vault.shop.publishable_key, "origin": "https://shop.example"})
    reply = vault.call("GET", f"/card-field?{query}")
    assert reply.status == 200, reply.text
    assert reply.headers["Content-Type"].startswith("text/html")
    csp = reply.headers["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["frame-ancestors"] == "*"
    assert directives["connect-src"] == "'self'"
    assert directives["script-src"] == "'self'"  # no inline script at all
    nonce = re.search(r"'nonce-([^']+)'", directives["style-src"])
    assert nonce and f'<style nonce="{nonce.group(1)}">' in reply.text
    for field_id in ("cardnumber", "exp-date", "cvc"):
        assert f'id="{field_id}"' in reply.text
    assert '<script src="card-field.js"></script>' in reply.text
    assert "<script>" not in reply.text
    other = vault.call("GET", f"/card-field?{query}")
    assert other.headers["Content-Security-Policy"] != csp  # a new nonce every time

    script = vault.call("GET", "/card-field.js")
    assert script.status == 200
    assert script.headers["Content-Type"].startswith("application/javascript")
    assert "postMessage" in script.text and "event.origin !== parentOrigin" in script.text

    for bad in (
        {"key": vault.shop.publishable_key, "origin": "javascript:alert(1)"},
        {"key": vault.shop.publishable_key, "origin": "https://shop.example/path"},
        {"key": vault.shop.publishable_key},
        {"key": vault.shop.secret_key, "origin": "https://shop.example"},
    ):
        assert vault.call("GET", f"/card-field?{urlencode(bad)}").status == 400, bad


# ---- the sample events ---------------------------------------------------------------------------

EVENTS = Path(__file__).resolve().parents[2] / "events" / "vault"


def sample(name: str, replacements: dict[str, str]) -> dict[str, Any]:
    text = (EVENTS / name).read_text()
    for placeholder, value in replacements.items():
        assert placeholder in text, f"{name} has no {placeholder}"
        text = text.replace(placeholder, value)
    return dict(json.loads(text))


def test_the_sample_events_run_through_the_handler(vault: Vault, processor: FakeProcessor) -> None:
    context = LocalLambdaContext("vault", 512, 29, str(uuid.uuid4()))
    browser = sample("create_payment_method.json", {"pk_test_sample": vault.shop.publishable_key})
    created = handler(browser, context)
    assert created["statusCode"] == 200, created["body"]
    pm_id = json.loads(created["body"])["id"]
    internal = sample(
        "forward_authorization.json", {"acct_sample": vault.shop.merchant.id, "pm_sample": pm_id}
    )
    forwarded = handler(internal, context)
    assert forwarded["statusCode"] == 200, forwarded["body"]
    assert processor.received[-1].headers["idempotency-key"] == "clearline:ch_sample:authorize"
    assert processor.received[-1].body["card"]["cvc"] == "123"
