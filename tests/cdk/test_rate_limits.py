"""The CDK app's API keys and rate limits: the key authorizer, the usage plans, which
methods need a key, and the gateway's own answers in Stripe's shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template
from cdk_nag import AwsSolutionsChecks

from clearline.rate_limits import (
    AUTH_FAILURES_MESSAGE,
    AUTHORIZER_CACHE_TTL_SECONDS,
    LOCKOUT_USAGE_KEY,
    MISSING_KEY_MESSAGE,
    RATE_LIMIT_MESSAGE,
    USAGE_API_ENV,
    USAGE_STAGE_ENV,
    plan_name,
)
from clearline.topology import AUTHORIZER_FUNCTION
from infra_cdk.clearline_stack import ClearlineStack

from .conftest import logical_id

pytestmark = pytest.mark.cdk


def _methods(template: Template) -> dict[str, dict[str, Any]]:
    return {
        m_id: m["Properties"]
        for m_id, m in template.find_resources("AWS::ApiGateway::Method").items()
    }


def _paths(template: Template) -> dict[str, str]:
    """Resource logical id -> its full path on the main API."""
    resources = {
        r_id: r["Properties"]
        for r_id, r in template.find_resources("AWS::ApiGateway::Resource").items()
    }

    def path(r_id: str) -> str:
        props = resources[r_id]
        parent = props["ParentId"]
        above = path(parent["Ref"]) if isinstance(parent, dict) and "Ref" in parent else ""
        return f"{above}/{props['PathPart']}"

    return {r_id: path(r_id) for r_id in resources}


def test_the_authorizer_is_a_cached_request_authorizer_on_the_authorization_header(
    stack: ClearlineStack, template: Template
) -> None:
    (authorizer,) = template.find_resources("AWS::ApiGateway::Authorizer").values()
    props = authorizer["Properties"]
    assert props["Type"] == "REQUEST"
    assert props["IdentitySource"] == "method.request.header.Authorization"
    assert props["AuthorizerResultTtlInSeconds"] == AUTHORIZER_CACHE_TTL_SECONDS
    function_id = logical_id(stack, stack.authorizer_function)
    assert function_id in json.dumps(props["AuthorizerUri"])
    function = template.find_resources("AWS::Lambda::Function")[function_id]["Properties"]
    assert function["Handler"] == AUTHORIZER_FUNCTION.handler
    assert function["Timeout"] == AUTHORIZER_FUNCTION.timeout_seconds


def test_the_api_takes_usage_keys_from_the_authorizer(template: Template) -> None:
    apis = template.find_resources("AWS::ApiGateway::RestApi")
    main = [a["Properties"] for a in apis.values() if a["Properties"].get("ApiKeySourceType")]
    assert [a["ApiKeySourceType"] for a in main] == ["AUTHORIZER"]


def test_usage_plans_throttle_each_tier_at_stripes_numbers(template: Template) -> None:
    plans = {
        p["Properties"]["UsagePlanName"]: p["Properties"]
        for p in template.find_resources("AWS::ApiGateway::UsagePlan").values()
    }
    assert plans[plan_name("test")]["Throttle"] == {"RateLimit": 25, "BurstLimit": 25}
    assert plans[plan_name("live")]["Throttle"] == {"RateLimit": 100, "BurstLimit": 100}
    assert plans[plan_name("lockout")]["Quota"] == {"Limit": 1, "Period": "DAY"}
    assert all(len(p["ApiStages"]) == 1 for p in plans.values())
    (key,) = template.find_resources("AWS::ApiGateway::ApiKey").values()
    assert key["Properties"]["Value"] == LOCKOUT_USAGE_KEY
    template.resource_count_is("AWS::ApiGateway::UsagePlanKey", 1)


def test_merchant_routes_need_the_authorizer_and_only_keyless_ones_go_without(
    stack: ClearlineStack, template: Template
) -> None:
    paths = _paths(template)
    methods = _methods(template)
    api_id = logical_id(stack, stack.api)
    main = {m_id: m for m_id, m in methods.items() if m["RestApiId"] == {"Ref": api_id}}
    keyless = {
        (m["HttpMethod"], paths[m["ResourceId"]["Ref"]])
        for m in main.values()
        if m["AuthorizationType"] == "NONE"
    }
    assert keyless == {
        ("GET", "/v1/payment_intents/{intent}"),
        ("POST", "/v1/payment_intents/{intent}/confirm"),
        ("ANY", "/v1/payment_intents/{intent}/authentication_return/{proxy+}"),
        ("ANY", "/receipts/{proxy+}"),
        ("ANY", "/errors"),
        ("ANY", "/errors/{proxy+}"),
        ("ANY", "/openapi.json"),
        ("ANY", "/docs"),
        ("ANY", "/dashboard"),
        ("ANY", "/dashboard/{proxy+}"),
    }
    keyed = [m for m in main.values() if m["AuthorizationType"] == "CUSTOM"]
    assert all(m["ApiKeyRequired"] is True and "AuthorizerId" in m for m in keyed)
    keyed_paths = {paths.get(m["ResourceId"].get("Ref", ""), "/") for m in keyed}
    # The root and everything not keyless; every resource made for a keyless route still
    # answers its other methods, and what lies below it, with the authorizer.
    assert {"/", "/{proxy+}", "/v1/{proxy+}", "/v1/payment_intents/{intent}"} <= keyed_paths
    assert "/v1/payment_intents/{intent}/{proxy+}" in keyed_paths  # capture, cancel
    assert "/v1/payment_intents/{intent}/confirm" in keyed_paths  # other methods
    admin = [m for m in main.values() if m["AuthorizationType"] == "AWS_IAM"]
    assert len(admin) == 1
    assert len(keyed) + len(keyless) + len(admin) == len(main)


def _responses(template: Template) -> dict[str, dict[str, Any]]:
    return {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in template.find_resources("AWS::ApiGateway::GatewayResponse").values()
        if r["Properties"]["ResponseType"]
        in ("THROTTLED", "QUOTA_EXCEEDED", "UNAUTHORIZED", "ACCESS_DENIED")
    }


def test_a_throttled_request_is_stripes_rate_limit_error(template: Template) -> None:
    responses = _responses(template)
    throttled = responses["THROTTLED"]
    headers = throttled["ResponseParameters"]
    assert headers["gatewayresponse.header.Stripe-Rate-Limited-Reason"] == "'global-rate'"
    assert headers["gatewayresponse.header.Stripe-Should-Retry"] == "'false'"
    assert json.loads(throttled["ResponseTemplates"]["application/json"]) == {
        "error": {
            "type": "invalid_request_error",
            "code": "rate_limit",
            "message": RATE_LIMIT_MESSAGE,
        }
    }
    locked = responses["QUOTA_EXCEEDED"]
    assert locked["StatusCode"] == "429"
    assert (
        locked["ResponseParameters"]["gatewayresponse.header.Stripe-Rate-Limited-Reason"]
        == "'auth-failures'"
    )
    body = json.loads(locked["ResponseTemplates"]["application/json"])
    assert body["error"] == {
        "type": "invalid_request_error",
        "code": "rate_limit",
        "message": AUTH_FAILURES_MESSAGE,
    }


def test_missing_and_invalid_keys_are_stripes_401s(template: Template) -> None:
    responses = _responses(template)
    missing = responses["UNAUTHORIZED"]
    assert missing["StatusCode"] == "401"
    assert json.loads(missing["ResponseTemplates"]["application/json"])["error"] == {
        "type": "invalid_request_error",
        "code": "api_key_missing",
        "message": MISSING_KEY_MESSAGE,
    }
    denied = responses["ACCESS_DENIED"]
    assert denied["StatusCode"] == "401"
    template_text = denied["ResponseTemplates"]["application/json"]
    # The authorizer's Deny, rendered with its context as API Gateway fills it in.
    chosen = template_text.split("\n")[1]
    filled = chosen.replace("$context.authorizer.code", "api_key_invalid").replace(
        "$context.authorizer.message_json", json.dumps('Invalid API Key provided: sk_"x')
    )
    assert json.loads(filled)["error"] == {
        "type": "invalid_request_error",
        "code": "api_key_invalid",
        "message": 'Invalid API Key provided: sk_"x',
    }
    for response in responses.values():
        assert "'$context.requestId'" in response["ResponseParameters"].values()


def test_cdk_nag_stays_clean(stack: ClearlineStack, tmp_path: Path) -> None:
    direct = AwsSolutionsChecks().validate_scope(stack.node.root)
    assert direct.violations == [], [v.rule_name for v in direct.violations]


def test_the_authorizer_may_register_usage_keys_and_nothing_more(
    stack: ClearlineStack, template: Template
) -> None:
    function_id = logical_id(stack, stack.authorizer_function)
    function = template.find_resources("AWS::Lambda::Function")[function_id]["Properties"]
    env = function["Environment"]["Variables"]
    assert env[USAGE_API_ENV] == {"Ref": logical_id(stack, stack.api)}
    assert env[USAGE_STAGE_ENV] == "prod"
    policies = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in template.find_resources("AWS::IAM::Policy").values()
        if any(
            r.get("Ref") == logical_id(stack, stack.authorizer_function.role)
            for r in p["Properties"].get("Roles", [])
        )
    ]
    statements = [s for doc in policies for s in doc]
    granted = {
        (action, json.dumps(resource))
        for s in statements
        if "apigateway" in json.dumps(s["Action"])
        for action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
        for resource in ([s["Resource"]] if not isinstance(s["Resource"], list) else s["Resource"])
    }
    paths = {(action, resource.split("::")[-1].rstrip('"]}')) for action, resource in granted}
    assert paths == {
        ("apigateway:GET", "/apikeys"),
        ("apigateway:POST", "/apikeys"),
        ("apigateway:GET", "/usageplans"),
        ("apigateway:POST", "/usageplans"),
        ("apigateway:GET", "/usageplans/*/keys"),
        ("apigateway:POST", "/usageplans/*/keys"),
        ("apigateway:DELETE", "/usageplans/*/keys/*"),
    }
