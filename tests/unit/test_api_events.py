"""Every sample event in events/ through the real api handler (moto in-process)."""

from __future__ import annotations

import json
import os
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


def test_every_route_has_a_sample_event() -> None:
    assert sorted(p.stem for p in EVENTS.glob("*.json")) == [
        "create_charge",
        "list_charges",
        "retrieve_charge",
    ]


def test_sample_events_through_the_handler(api: tuple[Any, str]) -> None:
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

    fetched = invoke(handler, "retrieve_charge", secret, ch_sample=charge["id"])
    assert fetched["statusCode"] == 200
    assert json.loads(fetched["body"])["id"] == charge["id"]

    listed = invoke(handler, "list_charges", secret)
    assert listed["statusCode"] == 200
    assert [c["id"] for c in json.loads(listed["body"])["data"]] == [charge["id"]]


def test_context_counts_down() -> None:
    context = LocalLambdaContext("api", 1024, 29, "id")
    assert 28_000 < context.get_remaining_time_in_millis() <= 29_000
