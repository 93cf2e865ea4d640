"""Rate limits: the token buckets, the failed-authentication lockout (fake clocks), the
authorizer's answers (moto in-process), the front door's gate, and the usage keys."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from clearline.merchants import create_merchant
from clearline.rate_limits import (
    AUTH_FAILURES,
    CONTEXT_MERCHANT,
    FAILED_AUTH_LIMIT,
    GLOBAL_RATE,
    LOCKOUT_SECONDS,
    LOCKOUT_USAGE_KEY,
    FailedAuthentications,
    KeyAuthorizer,
    MemoryCounters,
    TokenBuckets,
    UsageKeys,
    is_keyless,
    key_from_authorization,
    merchant_of_context,
    plan_for,
    plan_name,
    usage_key,
)
from clearline.store import Store
from clearline.topology import AUTHORIZER_FUNCTION, COUNTERS_TABLE, MAIN_TABLE, table_env_var
from clearline_local.frontdoor import KeyGate, build_event
from clearline_local.lambda_runtime import LocalLambdaContext, load_handler

EVENTS = Path(__file__).resolve().parents[2] / "events" / "authorizer"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ---- token buckets ---------------------------------------------------------------------------


def test_a_bucket_lets_a_burst_through_then_refills_at_its_rate() -> None:
    clock = Clock()
    buckets = TokenBuckets(clock)
    taken = [buckets.take("key", 25, 25) for _ in range(40)]
    assert taken.count(True) == 25 and taken[25:] == [False] * 15
    clock.now += 0.21  # five tokens and a quarter
    assert [buckets.take("key", 25, 25) for _ in range(6)] == [True] * 5 + [False]
    clock.now += 10  # never more than the burst
    assert sum(buckets.take("key", 25, 25) for _ in range(40)) == 25


def test_each_usage_identifier_has_a_bucket_of_its_own() -> None:
    buckets = TokenBuckets(Clock())
    assert sum(buckets.take("a", 2, 2) for _ in range(5)) == 2
    assert sum(buckets.take("b", 2, 2) for _ in range(5)) == 2


# ---- failed authentications --------------------------------------------------------------------


def test_an_address_failing_too_often_is_locked_out_for_a_while_then_forgiven() -> None:
    clock = Clock(1_000_020.0)
    failures = FailedAuthentications(MemoryCounters(clock), clock=clock)
    assert [failures.record("203.0.113.7") for _ in range(FAILED_AUTH_LIMIT)] == [False] * 10
    assert failures.record("203.0.113.7") is True
    assert failures.locked_out("203.0.113.7")
    assert not failures.locked_out("198.51.100.1")  # other addresses are unaffected
    assert failures.record("198.51.100.1") is False
    clock.now += LOCKOUT_SECONDS - 1
    assert failures.record("203.0.113.7") is True
    clock.now += 2
    assert not failures.locked_out("203.0.113.7")
    assert failures.record("203.0.113.7") is False


def test_failures_spread_over_windows_are_not_a_lockout() -> None:
    clock = Clock(1_000_020.0)
    failures = FailedAuthentications(MemoryCounters(clock), clock=clock)
    for _ in range(5):
        assert [failures.record("203.0.113.7") for _ in range(FAILED_AUTH_LIMIT)] == [False] * 10
        clock.now += 60


# ---- keys, plans, routes ---------------------------------------------------------------------


def test_keys_come_as_bearer_or_as_the_user_of_basic_auth() -> None:
    basic = "Basic " + base64.b64encode(b"sk_test_abc:").decode()
    assert key_from_authorization(basic) == "sk_test_abc"
    assert key_from_authorization("Bearer sk_test_abc") == "sk_test_abc"
    assert key_from_authorization("bearer  pk_test_abc ") == "pk_test_abc"
    for nothing in (None, "", "Bearer", "Basic !!!", "Digest x", "Basic " + "Og=="):
        assert key_from_authorization(nothing) is None


def test_routes_without_keys() -> None:
    assert is_keyless("GET", "/v1/payment_intents/pi_1")
    assert is_keyless("POST", "/v1/payment_intents/pi_1/confirm")
    assert is_keyless("GET", "/v1/payment_intents/pi_1/authentication_return/tok")
    assert is_keyless("GET", "/receipts/ch_1/abc") and is_keyless("GET", "/errors/rate_limit")
    assert is_keyless("GET", "/openapi.json") and is_keyless("GET", "/docs")
    assert not is_keyless("POST", "/v1/payment_intents/pi_1")
    assert not is_keyless("POST", "/v1/payment_intents/pi_1/capture")
    assert not is_keyless("GET", "/v1/charges")
    # The dashboard authenticates its own sessions; its home with or without the slash.
    assert is_keyless("GET", "/dashboard") and is_keyless("GET", "/dashboard/")
    assert is_keyless("GET", "/dashboard/payments/ch_1") and is_keyless(
        "POST", "/dashboard/sign-out"
    )
    assert not is_keyless("GET", "/dashboards") and not is_keyless("GET", "/v1/charges/")


def test_plans_follow_the_mode_unless_the_merchant_has_its_own(store: Store) -> None:
    test = create_merchant(store, "Test shop").merchant
    live = create_merchant(store, "Live shop", livemode=True).merchant
    own = create_merchant(store, "Own limit", rate_limit_per_second=7).merchant
    assert (plan_for(test).rate_per_second, plan_for(test).burst) == (25, 25)
    assert plan_for(live).rate_per_second == 100
    assert (plan_for(own).name, plan_for(own).rate_per_second) == ("custom-7", 7)
    assert plan_for(test, default_rate=500).rate_per_second == 500
    assert plan_for(own, default_rate=500).rate_per_second == 7


# ---- the authorizer ------------------------------------------------------------------------------


@pytest.fixture
def authorizer(aws: Any) -> Iterator[Any]:
    os.environ.update(
        {
            table_env_var(MAIN_TABLE.key): MAIN_TABLE.name,
            table_env_var(COUNTERS_TABLE.key): COUNTERS_TABLE.name,
            "POWERTOOLS_SERVICE_NAME": "clearline",
        }
    )
    import sys

    sys.modules.pop("authorizer_handler", None)  # a fresh module: its clients meet moto
    handler = load_handler(AUTHORIZER_FUNCTION)
    yield handler
    sys.modules.pop("authorizer_handler", None)


def _ask(handler: Any, authorization: str | None, source_ip: str = "203.0.113.7") -> Any:
    event = json.loads((EVENTS / "request.json").read_text())
    event["headers"].pop("Authorization")
    if authorization is not None:
        event["headers"]["Authorization"] = authorization
    event["requestContext"]["identity"]["sourceIp"] = source_ip
    return handler(event, LocalLambdaContext("authorizer", 512, 5, "req-1"))


def test_a_valid_key_is_allowed_everywhere_with_its_merchant_and_usage_key(
    authorizer: Any, store: Store
) -> None:
    shop = create_merchant(store, "Shop", rate_limit_per_second=40)
    answer = _ask(authorizer, f"Bearer {shop.secret_key}")
    (statement,) = answer["policyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    # Cached per key, so it must cover every route of the stage.
    assert statement["Resource"] == "arn:aws:execute-api:us-east-1:123456789012:abcdef1234/prod/*"
    assert answer["usageIdentifierKey"] == usage_key(shop.merchant.id)
    assert answer["context"]["rate_limit_per_second"] == 40
    merchant, kind = merchant_of_context(answer["context"]) or (None, None)
    assert (merchant, kind) == (shop.merchant, "secret")
    basic = "Basic " + base64.b64encode(f"{shop.publishable_key}:".encode()).decode()
    assert _ask(authorizer, basic)["context"]["key_kind"] == "publishable"
    assert all(isinstance(v, str | int) for v in answer["context"].values())


def test_an_invalid_key_is_denied_with_stripes_code_then_the_address_is_locked_out(
    authorizer: Any, store: Store
) -> None:
    shop = create_merchant(store, "Shop")
    for attempt in range(FAILED_AUTH_LIMIT):
        denied = _ask(authorizer, f"Bearer sk_test_guess{attempt:024d}")
        assert denied["policyDocument"]["Statement"][0]["Effect"] == "Deny"
        assert denied["context"]["code"] == "api_key_invalid"
        assert json.loads(denied["context"]["message_json"]).startswith("Invalid API Key")
        assert CONTEXT_MERCHANT not in denied["context"]
    locked = _ask(authorizer, "Bearer sk_test_guess_again_0000000000000")
    assert locked["usageIdentifierKey"] == LOCKOUT_USAGE_KEY
    assert locked["context"]["refusal"] == AUTH_FAILURES
    assert merchant_of_context(locked["context"]) is None
    # A valid key is never refused for it, from that address or another.
    assert _ask(authorizer, f"Bearer {shop.secret_key}")["context"]["key_kind"] == "secret"
    other = _ask(authorizer, "Bearer sk_test_wrong", source_ip="198.51.100.9")
    assert other["policyDocument"]["Statement"][0]["Effect"] == "Deny"


# ---- the front door's gate ------------------------------------------------------------------


def _event(path: str, authorization: str | None, method: str = "GET") -> dict[str, Any]:
    headers = [("Host", "127.0.0.1")]
    if authorization is not None:
        headers.append(("Authorization", authorization))
    return build_event(method, path, headers, b"", "127.0.0.1", "prod")


def _allow(rate: int, usage: str = "clearline-usage-acct_1") -> dict[str, Any]:
    return {
        "principalId": "acct_1",
        "policyDocument": {"Statement": [{"Effect": "Allow"}]},
        "context": {"rate_limit_per_second": rate, "rate_plan": "test", "merchant": "{}"},
        "usageIdentifierKey": usage,
    }


def test_the_gate_caches_the_authorizers_answer_and_throttles_per_usage_key() -> None:
    clock = Clock()
    asked: list[dict[str, Any]] = []

    def authorizer(event: dict[str, Any]) -> dict[str, Any]:
        asked.append(event)
        return _allow(3)

    gate = KeyGate(authorizer, clock=clock, buckets=TokenBuckets(clock))
    answers = [gate.admit(_event("/v1/charges", "Bearer sk_test_a"), "req_1") for _ in range(5)]
    assert answers[:3] == [None] * 3
    assert len(asked) == 1 and asked[0]["type"] == "REQUEST"
    assert asked[0]["methodArn"].endswith(":local/prod/GET/v1/charges")
    status, headers, body = answers[3] or (0, {}, b"")
    assert status == 429
    assert headers["Stripe-Rate-Limited-Reason"] == [GLOBAL_RATE]
    assert headers["Stripe-Should-Retry"] == ["false"]
    assert json.loads(body)["error"]["code"] == "rate_limit"
    clock.now += 61  # past the cache's TTL: asked again
    assert gate.admit(_event("/v1/charges", "Bearer sk_test_a"), "req_2") is None
    assert len(asked) == 2


def test_the_gate_sets_the_authorizer_context_and_nothing_else_can() -> None:
    gate = KeyGate(lambda _: _allow(10), clock=Clock())
    forged_claim = {"merchant": '{"id": "acct_someone_else"}', "key_kind": "secret"}
    keyed = _event("/v1/charges", "Bearer sk_test_a")
    keyed["requestContext"]["authorizer"] = dict(forged_claim)
    assert gate.admit(keyed, "req_1") is None
    assert keyed["requestContext"]["authorizer"]["principalId"] == "acct_1"
    assert keyed["requestContext"]["authorizer"].get("merchant") != forged_claim["merchant"]
    keyless = _event("/receipts/ch_1/token", None)
    keyless["requestContext"]["authorizer"] = dict(forged_claim)
    assert gate.admit(keyless, "req_2") is None
    assert "authorizer" not in keyless["requestContext"]


def test_the_gate_answers_missing_invalid_and_locked_out_keys_itself() -> None:
    def authorizer(event: dict[str, Any]) -> dict[str, Any]:
        if "locked" in event["headers"]["Authorization"]:
            return {**_allow(10, LOCKOUT_USAGE_KEY), "context": {"refusal": AUTH_FAILURES}}
        return {
            "principalId": "anonymous",
            "policyDocument": {"Statement": [{"Effect": "Deny"}]},
            "context": {"code": "api_key_invalid", "message": "Invalid API Key provided: x"},
        }

    gate = KeyGate(authorizer, clock=Clock())
    missing = gate.admit(_event("/v1/charges", None), "req_1")
    assert missing is not None and missing[0] == 401
    assert json.loads(missing[2])["error"]["code"] == "api_key_missing"
    invalid = gate.admit(_event("/v1/charges", "Bearer sk_test_x"), "req_2")
    assert invalid is not None and invalid[0] == 401
    assert json.loads(invalid[2])["error"]["code"] == "api_key_invalid"
    locked = gate.admit(_event("/v1/charges", "Bearer sk_test_locked"), "req_3")
    assert locked is not None and locked[0] == 429
    assert locked[1]["Stripe-Rate-Limited-Reason"] == [AUTH_FAILURES]


# ---- API Gateway keys ------------------------------------------------------------------------


def test_each_merchant_gets_a_key_in_the_plan_of_its_rate(store: Store) -> None:
    apigateway = boto3.client("apigateway", region_name="us-east-1")
    api_id = apigateway.create_rest_api(name="clearline")["id"]
    root = apigateway.get_resources(restApiId=api_id)["items"][0]["id"]
    apigateway.put_method(
        restApiId=api_id, resourceId=root, httpMethod="ANY", authorizationType="NONE"
    )
    apigateway.put_integration(restApiId=api_id, resourceId=root, httpMethod="ANY", type="MOCK")
    apigateway.create_deployment(restApiId=api_id, stageName="prod")
    stage = [{"apiId": api_id, "stage": "prod"}]
    test_plan = apigateway.create_usage_plan(name=plan_name("test"), apiStages=stage)["id"]
    keys = UsageKeys(apigateway, api_id, "prod")

    shop = create_merchant(store, "Shop").merchant
    key_id = keys.register(shop)
    assert keys.register(shop) == key_id  # again, harmlessly
    in_plan = apigateway.get_usage_plan_keys(usagePlanId=test_plan)["items"]
    assert [k["id"] for k in in_plan] == [key_id]
    assert apigateway.get_api_key(apiKey=key_id, includeValue=True)["value"] == usage_key(shop.id)

    own = create_merchant(store, "Own", rate_limit_per_second=7).merchant
    keys.register(own)
    plans = {p["name"]: p for p in apigateway.get_usage_plans()["items"]}
    assert plans[plan_name("custom-7")]["throttle"] == {"rateLimit": 7.0, "burstLimit": 7}


def test_the_authorizer_gives_a_merchant_its_key_on_first_sight_and_then_only_remembers(
    store: Store,
) -> None:
    """In AWS nothing else needs to know about usage plans: the first request of a merchant
    (at its rate) registers its key; later ones, in any environment, cost no API Gateway
    call."""
    apigateway = boto3.client("apigateway", region_name="us-east-1")
    api_id = apigateway.create_rest_api(name="clearline")["id"]
    root = apigateway.get_resources(restApiId=api_id)["items"][0]["id"]
    apigateway.put_method(
        restApiId=api_id, resourceId=root, httpMethod="ANY", authorizationType="NONE"
    )
    apigateway.put_integration(restApiId=api_id, resourceId=root, httpMethod="ANY", type="MOCK")
    apigateway.create_deployment(restApiId=api_id, stageName="prod")
    stage = [{"apiId": api_id, "stage": "prod"}]
    test_plan = apigateway.create_usage_plan(name=plan_name("test"), apiStages=stage)["id"]

    registered: list[str] = []

    class Counting(UsageKeys):
        def register(self, merchant: Any) -> str:
            registered.append(merchant.id)
            return super().register(merchant)

    shared = MemoryCounters()
    new = create_merchant(store, "Newcomer")

    def environment() -> KeyAuthorizer:
        failures = FailedAuthentications(MemoryCounters())
        usage = Counting(apigateway, api_id, "prod")
        return KeyAuthorizer(store, failures, usage_keys=usage, registrations=shared)

    first = environment()
    for _ in range(3):
        assert first.decide(f"Bearer {new.secret_key}", "198.51.100.1").outcome == "allow"
    assert environment().decide(f"Bearer {new.secret_key}", "198.51.100.2").outcome == "allow"
    assert registered == [new.merchant.id]
    members = apigateway.get_usage_plan_keys(usagePlanId=test_plan)["items"]
    assert [k["value"] for k in members] == [usage_key(new.merchant.id)]
    refused = first.decide("Bearer sk_test_nobody", "198.51.100.1")
    assert refused.outcome == "invalid" and registered == [new.merchant.id]


def test_keys_on_keyless_routes_are_limited_per_second_and_failures_lock_out(
    store: Store,
) -> None:
    from clearline.errors import RateLimitedError
    from clearline.rate_limits import KeylessRouteLimits

    now = [1_800_000_000.2]
    counters = MemoryCounters(lambda: now[0])
    failures = FailedAuthentications(counters, limit=2, clock=lambda: now[0])
    limits = KeylessRouteLimits(counters, failures, clock=lambda: now[0])
    shop = create_merchant(store, "Three a second", rate_limit_per_second=3).merchant
    for _ in range(3):
        limits.admit(shop)
    with pytest.raises(RateLimitedError) as refused:
        limits.admit(shop)
    assert (refused.value.reason, refused.value.code) == ("global-rate", "rate_limit")
    now[0] += 1  # the next second has room again
    limits.admit(shop)
    limits.failed("203.0.113.9")
    limits.failed("203.0.113.9")
    with pytest.raises(RateLimitedError) as locked:
        limits.failed("203.0.113.9")
    assert locked.value.reason == "auth-failures"
    limits.failed("203.0.113.10")  # another address is not locked out
