"""Every sample event in events/ through the real api handler (moto in-process)."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clearline.merchants import create_merchant
from clearline.store import Store
from clearline.topology import (
    IDEMPOTENCY_TABLE,
    MAIN_TABLE,
    PROCESSOR_URL_ENV,
    TOPOLOGY,
    VAULT_TOPOLOGY,
    table_env_var,
)
from clearline_local.lambda_runtime import LocalLambdaContext, load_handler
from clearline_local.sandbox_processor import SandboxProcessor

EVENTS = Path(__file__).resolve().parents[2] / "events" / "api"


@pytest.fixture
def api(aws: Any, store: Store, processor: SandboxProcessor) -> Iterator[tuple[Any, str]]:
    os.environ.update(
        {
            table_env_var(MAIN_TABLE.key): MAIN_TABLE.name,
            table_env_var(IDEMPOTENCY_TABLE.key): IDEMPOTENCY_TABLE.name,
            PROCESSOR_URL_ENV: processor.url,
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_NAMESPACE": "Clearline",
            "POWERTOOLS_SERVICE_NAME": "clearline",
        }
    )
    handler = load_handler(TOPOLOGY.function("api"))
    import api_routes  # on the path once load_handler has run

    api_routes.services.cache_clear()  # rebuild clients inside this test's moto account
    secret = create_merchant(store, "Events Shop").secret_key
    yield handler, secret
    api_routes.services.cache_clear()


def invoke(handler: Any, name: str, secret: str, **replace: str) -> dict[str, Any]:
    text = (EVENTS / f"{name}.json").read_text().replace("sk_test_sample", secret)
    for old, new in replace.items():
        text = text.replace(old, new)
    context = LocalLambdaContext("api", 1024, 29, str(uuid.uuid4()))
    return handler(json.loads(text), context)


def _routes() -> set[tuple[str, str]]:
    """Every (method, path template) the api serves, from its OpenAPI document."""
    load_handler(TOPOLOGY.function("api"))
    import api_routes

    schema = api_routes.app.get_openapi_json_schema()
    return {
        (method.upper(), path)
        for path, ops in json.loads(schema)["paths"].items()
        for method in ops
    }


def _route_of(event: dict[str, Any]) -> tuple[str, str]:
    # A literal segment wins over a placeholder (/v1/charges/search is not a charge id).
    for method, template in sorted(_routes(), key=lambda route: route[1].count("{")):
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if event["httpMethod"] == method and re.match(pattern, event["path"]):
            return method, template
    raise AssertionError(f"no route serves {event['httpMethod']} {event['path']}")


def test_every_route_has_a_sample_event(api: tuple[Any, str]) -> None:
    covered = {_route_of(json.loads(p.read_text())) for p in EVENTS.glob("*.json")}
    assert covered == _routes()


def test_every_function_has_a_sample_event() -> None:
    """events/<function>/ for every function of the topology; the integration tests run each
    through its handler with objects of their own to work on."""
    samples = {path.parent.name for path in EVENTS.parent.glob("*/*.json")}
    functions = (*TOPOLOGY.functions, *VAULT_TOPOLOGY.functions)
    assert samples == {function.key for function in functions}


def test_sample_events_through_the_handler(api: tuple[Any, str], store: Store) -> None:
    handler, secret = api
    created = invoke(handler, "create_charge", secret)
    assert created["statusCode"] == 200, created["body"]
    charge = json.loads(created["body"])
    assert charge["metadata"] == {"order_id": "6735"}
    headers = created.get("multiValueHeaders") or {}
    assert headers.get("Request-Id") == ["req_c6af9ac6-7b61-11e6-9a41-93e8deadbe00"]

    replayed = invoke(handler, "create_charge", secret, **{"deadbe00": "deadbeff"})
    assert json.loads(replayed["body"])["id"] == charge["id"]
    assert replayed["multiValueHeaders"]["Idempotent-Replayed"] == ["true"]

    ch = charge["id"]
    fetched = invoke(handler, "retrieve_charge", secret, ch_sample=ch)
    assert json.loads(fetched["body"])["id"] == ch
    listed = invoke(handler, "list_charges", secret)
    assert [c["id"] for c in json.loads(listed["body"])["data"]] == [ch]
    found = body_of(invoke(handler, "search_charges", secret))
    assert (found["object"], [c["id"] for c in found["data"]]) == ("search_result", [ch])

    refund = body_of(invoke(handler, "create_refund", secret, ch_sample=ch))
    assert (refund["amount"], refund["status"], refund["reason"]) == (
        1000,
        "succeeded",
        "requested_by_customer",
    )
    assert (
        body_of(invoke(handler, "retrieve_refund", secret, re_sample=refund["id"]))["id"]
        == refund["id"]
    )
    for name in ("list_refunds", "list_charge_refunds"):
        assert [r["id"] for r in body_of(invoke(handler, name, secret, ch_sample=ch))["data"]] == [
            refund["id"]
        ]

    described = body_of(invoke(handler, "update_charge", secret, ch_sample=ch))
    assert described["description"] == "Order 6735 shipped"
    assert described["metadata"] == {"carrier": "ups"}  # "" deleted order_id
    annotated = body_of(invoke(handler, "update_refund", secret, re_sample=refund["id"]))
    assert annotated["metadata"] == {"reason_detail": "damaged"}
    settled = invoke(handler, "cancel_refund", secret, re_sample=refund["id"])
    assert settled["statusCode"] == 400  # made already: only a pending refund can be canceled
    assert json.loads(settled["body"])["error"]["code"] == "refund_not_cancelable"

    txns = body_of(invoke(handler, "list_balance_transactions", secret))["data"]
    assert [t["type"] for t in txns] == ["refund", "charge"]
    txn = body_of(invoke(handler, "retrieve_balance_transaction", secret, txn_sample=txns[1]["id"]))
    assert (txn["amount"], txn["source"]) == (5000, ch)
    balance = body_of(invoke(handler, "retrieve_balance", secret))
    assert balance["pending"][0]["amount"] == 5000 - txn["fee"] - 1000

    events = body_of(invoke(handler, "list_events", secret))["data"]
    assert [e["data"]["object"]["id"] for e in events] == [ch]  # the sample asks for one type
    event = body_of(invoke(handler, "retrieve_event", secret, evt_sample=events[0]["id"]))
    assert event["type"] == "charge.succeeded"

    customer = body_of(invoke(handler, "create_customer", secret))
    assert (customer["email"], customer["metadata"]) == ("jenny@example.com", {"crm_id": "C-42"})
    cus = customer["id"]
    assert body_of(invoke(handler, "retrieve_customer", secret, cus_sample=cus))["id"] == cus
    changed = body_of(invoke(handler, "update_customer", secret, cus_sample=cus))
    assert (changed["phone"], changed["metadata"]) == ("+15555550100", {})
    listed_customers = body_of(invoke(handler, "list_customers", secret))["data"]
    assert [c["id"] for c in listed_customers] == [cus]
    found_customers = body_of(invoke(handler, "search_customers", secret))["data"]
    assert [c["id"] for c in found_customers] == [cus]
    assert body_of(invoke(handler, "delete_customer", secret, cus_sample=cus))["deleted"] is True
    assert body_of(invoke(handler, "list_customers", secret))["data"] == []

    intent = body_of(invoke(handler, "create_payment_intent", secret))
    assert (intent["status"], intent["capture_method"]) == ("requires_payment_method", "manual")
    pi = intent["id"]
    described_intent = body_of(invoke(handler, "update_payment_intent", secret, pi_sample=pi))
    assert described_intent["status"] == "requires_confirmation"
    held_intent = body_of(invoke(handler, "confirm_payment_intent", secret, pi_sample=pi))
    assert (held_intent["status"], held_intent["amount_capturable"]) == ("requires_capture", 4200)
    paid = body_of(invoke(handler, "capture_payment_intent", secret, pi_sample=pi))
    assert (paid["status"], paid["amount_received"]) == ("succeeded", 4000)
    assert body_of(invoke(handler, "retrieve_payment_intent", secret, pi_sample=pi))["id"] == pi
    listed_intents = body_of(invoke(handler, "list_payment_intents", secret))["data"]
    assert [i["id"] for i in listed_intents] == [pi]
    too_late = invoke(handler, "cancel_payment_intent", secret, pi_sample=pi)
    assert json.loads(too_late["body"])["error"]["code"] == "payment_intent_unexpected_state"

    endpoint = body_of(invoke(handler, "create_webhook_endpoint", secret))
    assert endpoint["secret"].startswith("whsec_")
    assert endpoint["enabled_events"] == ["charge.succeeded", "charge.refunded"]
    we = endpoint["id"]
    assert "secret" not in body_of(
        invoke(handler, "retrieve_webhook_endpoint", secret, we_sample=we)
    )
    updated = body_of(invoke(handler, "update_webhook_endpoint", secret, we_sample=we))
    assert updated["description"] == "Orders service"
    assert [
        e["id"] for e in body_of(invoke(handler, "list_webhook_endpoints", secret))["data"]
    ] == [we]
    assert (
        body_of(invoke(handler, "delete_webhook_endpoint", secret, we_sample=we))["deleted"] is True
    )
    assert body_of(invoke(handler, "list_webhook_endpoints", secret))["data"] == []

    uncaptured = invoke(
        handler,
        "create_charge",
        secret,
        **{
            "deadbe00": "deadbe77",
            "8c1f4a5e": "11111111",
            "source=tok_visa": "source=tok_visa&capture=false",
        },
    )
    held = body_of(uncaptured)
    captured = body_of(invoke(handler, "capture_charge", secret, ch_sample=held["id"]))
    assert (captured["amount_captured"], captured["amount_refunded"]) == (4000, 1000)


def body_of(response: dict[str, Any]) -> dict[str, Any]:
    assert response["statusCode"] == 200, response["body"]
    return dict(json.loads(response["body"]))


def test_context_counts_down() -> None:
    context = LocalLambdaContext("api", 1024, 29, "id")
    assert 28_000 < context.get_remaining_time_in_millis() <= 29_000
