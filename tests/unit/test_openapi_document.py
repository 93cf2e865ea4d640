"""The OpenAPI document: valid OpenAPI 3.1, complete, and true to what the API sends.

The last tests drive the real api handler (moto in-process, the sandbox processor) through
every kind of object and refusal, and validate each response against the document.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import boto3
import pytest
import requests
import schemathesis
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from pydantic import BaseModel, ValidationError
from schemathesis.core.result import Ok

from clearline.config import WEBHOOK_SECRETS_KEY_ENV
from clearline.merchants import create_merchant
from clearline.params import ChargeCreateParams
from clearline.processor import ProcessorDispute
from clearline.reconciliation import COLUMNS, Reconciler
from clearline.store import Store
from clearline.topology import (
    BANK_ACCOUNTS_KEY_ENV,
    IDEMPOTENCY_TABLE,
    MAIN_TABLE,
    PROCESSOR_URL_ENV,
    TOPOLOGY,
    VAULT_URL_ENV,
    table_env_var,
)
from clearline_local.frontdoor import build_event
from clearline_local.lambda_runtime import LocalLambdaContext, load_handler
from clearline_local.provision import (
    provision_bank_accounts_key,
    provision_webhook_secrets_key,
)
from clearline_local.sandbox_bank import SUCCEEDING_ACCOUNT
from clearline_local.sandbox_processor import SandboxProcessor
from presentation.links import PUBLIC_URL_ENV
from tests.dashboard_routes import DASHBOARD_ROUTES
from tests.unit.conftest import record_rates
from tests.unit.in_process_vault import in_process_vault

POST_ERRORS = {"400", "401", "402", "404", "409", "413", "429", "503"}
EVERY_ERROR = {"400", "401", "404", "429", "503"}
DOCUMENTATION_ROUTES = {("GET", "/openapi.json"), ("GET", "/docs")}
# Public HTML pages (a customer's receipt, the error code reference): not API operations.
PAGE_ROUTES = {
    ("GET", "/receipts/{charge_id}/{token}"),
    ("GET", "/errors"),
    ("GET", "/errors/{code}"),
    ("GET", "/v1/payment_intents/{intent_id}/authentication_return/{token}"),
}
PAGE_ROUTES |= DASHBOARD_ROUTES
# Operators' routes, authorized by the gateway with IAM (the CLI signs them): not the public API.
OPERATOR_ROUTES = {
    ("POST", "/admin/merchants/{merchant_id}/bank_accounts"),
    ("GET", "/admin/merchants/{merchant_id}/radar_rules"),
    ("POST", "/admin/merchants/{merchant_id}/radar_rules"),
    ("DELETE", "/admin/merchants/{merchant_id}/radar_rules/{rule_id}"),
    ("POST", "/admin/merchants/{merchant_id}/radar_rules/defaults/{rule_id}"),
}


LAMBDA_ENV = {
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "Clearline",
    "POWERTOOLS_SERVICE_NAME": "clearline",
}


def _api_module() -> Any:
    # As the function's environment sets them before its first import (Metrics reads them then).
    for name, value in {table_env_var(MAIN_TABLE.key): "unused", **LAMBDA_ENV}.items():
        os.environ.setdefault(name, value)
    load_handler(TOPOLOGY.function("api"))  # puts functions/api on the path
    import api_routes

    return api_routes


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    app = _api_module().app
    import openapi_document

    return openapi_document.document(app)


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            yield method, path, op


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """Validates against `schema`, with the document's components in reach of its $refs."""
    return Draft202012Validator({**schema, "components": doc["components"]})


def component(doc: dict[str, Any], name: str) -> Draft202012Validator:
    return validator(doc, {"$ref": f"#/components/schemas/{name}"})


# ---- the document ----------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.1")
    validate_openapi(doc)
    refs = re.findall(r'"\$ref": "([^"]*)"', json.dumps(doc))
    assert refs and all(ref.startswith("#/") for ref in refs)  # nothing to fetch from elsewhere
    # ... and loads in the fuzzer the integration tests run, with every operation.
    schema = schemathesis.openapi.from_dict(doc)
    loaded = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in loaded)  # no operation failed to load
    labels = {result.ok().label for result in loaded if isinstance(result, Ok)}
    assert labels == {f"{method.upper()} {path}" for method, path, _ in operations(doc)}


def test_every_route_of_the_app_is_documented_but_the_documentation_itself(
    doc: dict[str, Any],
) -> None:
    app = _api_module().app
    routes = [*app._static_routes, *app._dynamic_routes]
    served = {(route.method, route.openapi_path) for route in routes}
    documented = {(method.upper(), path) for method, path, _ in operations(doc)}
    assert served >= DOCUMENTATION_ROUTES | PAGE_ROUTES | OPERATOR_ROUTES
    assert documented == served - DOCUMENTATION_ROUTES - PAGE_ROUTES - OPERATOR_ROUTES
    assert not any(path in doc["paths"] for _, path in DOCUMENTATION_ROUTES | OPERATOR_ROUTES)
    assert not any(path.startswith("/admin") for path in doc["paths"])


def test_every_post_documents_its_body_form_and_json_and_the_idempotency_key(
    doc: dict[str, Any],
) -> None:
    posts = [(path, op) for method, path, op in operations(doc) if method == "post"]
    assert len(posts) == 28
    for path, op in posts:
        content = op["requestBody"]["content"]
        form = content["application/x-www-form-urlencoded"]
        assert form["schema"] == content["application/json"]["schema"], path
        body = resolve(doc, form["schema"])
        assert body["type"] == "object" and body["additionalProperties"] is False, path
        nested = {n for n, p in body["properties"].items() if p.get("type") in ("object", "array")}
        assert nested, path  # every body takes metadata or expand
        assert form["encoding"] == {
            name: {"style": "deepObject", "explode": True} for name in nested
        }, path
        headers = [resolve(doc, p) for p in op["parameters"] if resolve(doc, p)["in"] == "header"]
        assert [(h["name"], h["required"], h["schema"].get("maxLength")) for h in headers] == [
            ("Idempotency-Key", True, 255),
            ("Stripe-Version", False, None),
        ], path
    for method, path, op in operations(doc):
        if method != "post":
            assert "requestBody" not in op, f"{method} {path}"


def test_every_operation_takes_and_answers_a_stripe_version(doc: dict[str, Any]) -> None:
    for method, path, op in operations(doc):
        names = [resolve(doc, p)["name"] for p in op["parameters"]]
        assert "Stripe-Version" in names, f"{method} {path}"
        for status, response in op["responses"].items():
            headers = resolve(doc, response)["headers"]
            assert resolve(doc, headers["Stripe-Version"])["required"], f"{path} {status}"


def test_body_schemas_follow_the_parameter_models(doc: dict[str, Any]) -> None:
    _api_module()
    import openapi_document

    bodies = {
        (path, spec.body)
        for (method, path), spec in openapi_document.OPERATIONS.items()
        if method == "post"
    }
    for path, model in bodies:
        assert model is not None
        schema = resolve(
            doc, doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        )
        assert set(schema["properties"]) == set(model.model_fields), path
        required = {name for name, field in model.model_fields.items() if field.is_required()}
        assert set(schema.get("required", [])) == required, path
        assert doc["paths"][path]["post"]["requestBody"]["required"] is bool(required), path


CHARGE = {"amount": 5000, "currency": "usd", "source": "tok_visa"}


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        (CHARGE, True),
        ({**CHARGE, "metadata": {"order": "6735"}, "expand": ["balance_transaction"]}, True),
        ({**CHARGE, "statement_descriptor": "CORNER SHOP"}, True),
        ({**CHARGE, "capture": False, "capture_at": 1_900_000_000}, True),
        ({"amount": 5000, "source": "tok_visa"}, False),  # currency is required
        ({**CHARGE, "amount": 50.5}, False),
        ({**CHARGE, "surprise": 1}, False),
        ({**CHARGE, "description": "x" * 1001}, False),
        ({**CHARGE, "statement_descriptor": "ABC"}, False),
        ({**CHARGE, "statement_descriptor": "12345"}, False),  # no letter
        ({**CHARGE, "metadata": {"k": "v" * 501}}, False),
        ({**CHARGE, "metadata": {"k" * 41: "v"}}, False),
        ({**CHARGE, "metadata": {f"k{i}": "v" for i in range(51)}}, False),
        ({**CHARGE, "metadata": {" ": "v"}}, False),
    ],
)
def test_the_charge_body_schema_agrees_with_the_model(
    doc: dict[str, Any], body: dict[str, Any], valid: bool
) -> None:
    assert component(doc, "ChargeCreateParams").is_valid(body) is valid
    assert _model_accepts(ChargeCreateParams, body) is valid


@pytest.mark.parametrize(
    "body",
    [
        {**CHARGE, "source": ""},
        {**CHARGE, "capture_at": 1_900_000_000},  # a scheduled capture of a captured charge
    ],
)
def test_the_charge_body_schema_states_the_services_rules(
    doc: dict[str, Any], body: dict[str, Any]
) -> None:
    """Valid for the model, refused by the charge service: the schema refuses them too."""
    assert _model_accepts(ChargeCreateParams, body)
    assert not component(doc, "ChargeCreateParams").is_valid(body)


def _model_accepts(model: type[BaseModel], body: dict[str, Any]) -> bool:
    try:
        model.model_validate(body)
    except ValidationError:
        return False
    return True


def test_every_v1_operation_requires_a_secret_key(doc: dict[str, Any]) -> None:
    schemes = doc["components"]["securitySchemes"]
    assert {name: (s["type"], s["scheme"]) for name, s in schemes.items()} == {
        "bearerAuth": ("http", "bearer"),
        "basicAuth": ("http", "basic"),
    }
    for method, path, op in operations(doc):
        assert path.startswith("/v1/")
        assert op["security"] == [{"bearerAuth": []}, {"basicAuth": []}], f"{method} {path}"


def test_stripe_error_responses_and_no_422(doc: dict[str, Any]) -> None:
    assert "422" not in json.dumps(doc)
    assert "HTTPValidationError" not in json.dumps(doc)
    error = doc["components"]["schemas"]["error"]["properties"]["error"]
    assert error["properties"]["type"]["enum"] == [
        "api_error",
        "card_error",
        "idempotency_error",
        "invalid_request_error",
    ]
    assert set(error["required"]) == {"type", "message"}
    for method, path, op in operations(doc):
        statuses = set(op["responses"]) - {"200"}
        expected = POST_ERRORS if method == "post" else EVERY_ERROR
        if method == "delete":
            expected = EVERY_ERROR | {"409"}
        assert statuses == expected, f"{method} {path}"
        for status in statuses:
            response = resolve(doc, op["responses"][status])
            assert response["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/error"
            }
            assert "Request-Id" in response["headers"]


def test_every_200_names_an_object_schema(doc: dict[str, Any]) -> None:
    returned = set()
    for method, path, op in operations(doc):
        schema = op["responses"]["200"]["content"]["application/json"]["schema"]
        name = schema["$ref"].rsplit("/", 1)[-1]
        assert name in doc["components"]["schemas"], f"{method} {path}"
        returned.add(name)
    assert returned == {
        "charge",
        "refund",
        "balance",
        "balance_transaction",
        "event",
        "webhook_endpoint",
        "deleted_webhook_endpoint",
        "charge_list",
        "charge_search_result",
        "customer",
        "customer_list",
        "customer_search_result",
        "payment_intent",
        "payment_intent_list",
        "payment_method",
        "payment_method_list",
        "dispute",
        "dispute_list",
        "payout",
        "payout_list",
        "fx_quote",
        "fx_quote_list",
        "value_list",
        "value_list_list",
        "deleted_value_list",
        "value_list_item",
        "value_list_item_list",
        "deleted_value_list_item",
        "review",
        "review_list",
        "early_fraud_warning",
        "early_fraud_warning_list",
        "refund_list",
        "balance_transaction_list",
        "event_list",
        "webhook_endpoint_list",
    }


def test_links_lead_to_operations_that_take_what_they_carry(doc: dict[str, Any]) -> None:
    by_id = {op["operationId"]: op for _, _, op in operations(doc)}
    links = [
        (f"{method} {path} {name}", link)
        for method, path, op in operations(doc)
        for name, link in op["responses"]["200"].get("links", {}).items()
    ]
    assert len(links) >= 10
    for label, link in links:
        target = by_id[link["operationId"]]
        names = {resolve(doc, p)["name"] for p in target.get("parameters", [])}
        assert set(link.get("parameters", {})) <= names, label
        if "requestBody" in link:
            body = target["requestBody"]["content"]["application/json"]["schema"]
            assert set(link["requestBody"]) <= set(resolve(doc, body)["properties"]), label


def test_object_schemas_are_not_vacuous(doc: dict[str, Any]) -> None:
    charge = component(doc, "charge")
    assert not charge.is_valid({"id": "ch_1", "object": "charge"})  # fields missing
    listed = component(doc, "charge_list")
    assert not listed.is_valid({"object": "list", "data": [{}], "has_more": False, "url": "/"})
    assert not component(doc, "dispute").is_valid({"id": "du_1", "object": "dispute"})
    assert not component(doc, "payout").is_valid({"id": "po_1", "object": "payout"})
    assert component(doc, "error").is_valid({"error": {"type": "api_error", "message": "x"}})
    assert not component(doc, "error").is_valid({"error": {"type": "rate_limit", "message": "x"}})


def test_the_document_is_built_once() -> None:
    app = _api_module().app
    import openapi_document

    assert openapi_document.document_json(app) is openapi_document.document_json(app)
    first = openapi_document.document(app)
    first["paths"].clear()  # a caller's copy: the served document is untouched
    assert openapi_document.document(app)["paths"]


# ---- through the handler ---------------------------------------------------------------------


class Api:
    """The api handler behind a front door's event shape, checking every response against
    the document on the way back."""

    def __init__(
        self,
        handler: Any,
        secret: str,
        doc: dict[str, Any],
        publishable_key: str = "",
        merchant_id: str = "",
    ) -> None:
        self.handler = handler
        self.secret = secret
        self.doc = doc
        self.publishable_key = publishable_key
        self.merchant_id = merchant_id
        self.checked: set[tuple[str, str, int]] = set()

    def call(
        self,
        method: str,
        path: str,
        *,
        template: str | None = None,
        form: dict[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
        raw: bytes = b"",
        key: str | None = None,
        auth: bool = True,
    ) -> tuple[int, dict[str, str], Any]:
        headers = [("Host", "127.0.0.1")]
        if auth:
            basic = base64.b64encode(f"{self.secret}:".encode()).decode()
            headers.append(("Authorization", f"Basic {basic}"))
        body = raw
        if form is not None:
            body = urlencode(form).encode()
            headers.append(("Content-Type", "application/x-www-form-urlencoded"))
        elif json_body is not None:
            body = json.dumps(json_body).encode()
            headers.append(("Content-Type", "application/json"))
        if method == "POST":
            headers.append(("Idempotency-Key", key if key is not None else str(uuid.uuid4())))
        event = build_event(method, path, headers, body, "127.0.0.1", "test")
        result = self.handler(event, LocalLambdaContext("api", 1024, 29, str(uuid.uuid4())))
        response_headers = {k.lower(): v for k, v in (result.get("headers") or {}).items()}
        for name, values in (result.get("multiValueHeaders") or {}).items():
            response_headers[name.lower()] = values[-1]
        status = int(result["statusCode"])
        if template is not None:
            self._conforms(method.lower(), template, status, response_headers, result["body"])
        return status, response_headers, result["body"]

    def _conforms(
        self, method: str, template: str, status: int, headers: dict[str, str], body: str
    ) -> None:
        op = self.doc["paths"][template][method]
        assert str(status) in op["responses"], f"{method} {template}: undocumented {status}"
        response = resolve(self.doc, op["responses"][str(status)])
        media = headers["content-type"].split(";")[0]
        assert media in response["content"], f"{method} {template} {status}: {media}"
        for name, header in response["headers"].items():
            header = resolve(self.doc, header)
            if header.get("required"):
                assert name.lower() in headers, f"{method} {template} {status}: no {name}"
            if name.lower() in headers:
                assert validator(self.doc, header["schema"]).is_valid(headers[name.lower()])
        schema = response["content"][media]["schema"]
        errors = list(validator(self.doc, schema).iter_errors(json.loads(body)))
        assert not errors, f"{method} {template} {status}: {[e.message for e in errors[:3]]}"
        self.checked.add((method, template, status))

    def ok(self, method: str, path: str, template: str, **kwargs: Any) -> dict[str, Any]:
        status, _, body = self.call(method, path, template=template, **kwargs)
        assert status == 200, body
        return dict(json.loads(body))


@pytest.fixture
def api(
    aws: Any,
    store: Store,
    processor: SandboxProcessor,
    doc: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Api]:
    kms = boto3.client("kms", region_name="us-east-1")
    environment = {
        table_env_var(MAIN_TABLE.key): MAIN_TABLE.name,
        table_env_var(IDEMPOTENCY_TABLE.key): IDEMPOTENCY_TABLE.name,
        PROCESSOR_URL_ENV: processor.url,
        # Shorter than the sandbox's fault delay, so that an injected timeout is one.
        "CLEARLINE_PROCESSOR_TIMEOUT": "0.5",
        WEBHOOK_SECRETS_KEY_ENV: provision_webhook_secrets_key(kms),
        BANK_ACCOUNTS_KEY_ENV: provision_bank_accounts_key(kms),
        # Where customers come back to after a 3-D Secure challenge (the CDK app sets it).
        PUBLIC_URL_ENV: "https://api.example.test/prod",
        **LAMBDA_ENV,
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    handler = load_handler(TOPOLOGY.function("api"))
    api_routes = _api_module()
    with in_process_vault(processor.url):
        api_routes.services.cache_clear()  # rebuild clients inside this test's moto account
        merchant = create_merchant(store, "Schema Shop")
        record_rates(store)
        yield Api(handler, merchant.secret_key, doc, merchant.publishable_key, merchant.merchant.id)
    api_routes.services.cache_clear()


def test_the_document_and_the_swagger_page_are_served_without_a_key(
    api: Api, doc: dict[str, Any]
) -> None:
    status, headers, body = api.call("GET", "/openapi.json", auth=False)
    assert (status, headers["content-type"]) == (200, "application/json")
    assert json.loads(body) == doc
    status, headers, page = api.call("GET", "/docs", auth=False)
    assert (status, headers["content-type"]) == (200, "text/html; charset=utf-8")
    assert "SwaggerUIBundle({" in page and '"/openapi.json"' in page
    assert page.count("</script>") == 2  # the inlined bundle cannot close its tag early


def test_every_object_the_api_returns_matches_its_schema(
    api: Api, processor: SandboxProcessor
) -> None:
    charge = api.ok(
        "POST",
        "/v1/charges",
        "/v1/charges",
        form={
            "amount": "5000",
            "currency": "usd",
            "source": "tok_visa",
            "metadata[order]": "6735",
            "description": "Two mugs",
            "statement_descriptor": "CORNER SHOP",
        },
    )
    assert charge["balance_transaction"] and charge["payment_method_details"]["card"]
    ch = charge["id"]
    held = api.ok(
        "POST",
        "/v1/charges",
        "/v1/charges",
        json_body={
            "amount": 3000,
            "currency": "eur",
            "source": "tok_mastercard",
            "capture": False,
            "capture_at": int(time.time()) + 3600,
        },
    )
    assert held["captured"] is False and held["balance_transaction"] is None
    assert held["presentment_details"] == {
        "presentment_amount": 3000,
        "presentment_currency": "eur",
    }
    quote = api.ok(
        "POST",
        "/v1/fx_quotes",
        "/v1/fx_quotes",
        form={"from_currencies[0]": "jpy", "to_currency": "usd", "lock_duration": "hour"},
    )
    assert quote["lock_status"] == "active" and quote["rates"]["jpy"]["exchange_rate"] > 0
    api.ok("GET", f"/v1/fx_quotes/{quote['id']}", "/v1/fx_quotes/{quote_id}")
    api.ok("GET", "/v1/fx_quotes", "/v1/fx_quotes")
    quoted = api.ok(
        "POST",
        "/v1/charges",
        "/v1/charges",
        form={"amount": "5000", "currency": "jpy", "source": "tok_visa", "fx_quote": quote["id"]},
    )
    converted = api.ok(
        "GET",
        f"/v1/balance_transactions/{quoted['balance_transaction']}",
        "/v1/balance_transactions/{txn_id}",
    )
    assert converted["currency"] == "usd"
    assert converted["exchange_rate"] == quote["rates"]["jpy"]["exchange_rate"]

    # Radar value lists and their items.
    lists, items = "/v1/radar/value_lists", "/v1/radar/value_list_items"
    bins = api.ok(
        "POST",
        lists,
        lists,
        form={"alias": "blocked_bins", "name": "BINs", "item_type": "card_bin"},
    )
    rsl = bins["id"]
    item = api.ok("POST", items, items, form={"value_list": rsl, "value": "424242"})
    shown = api.ok("GET", f"{lists}/{rsl}", lists + "/{list_id}")
    assert [i["value"] for i in shown["list_items"]["data"]] == ["424242"]
    api.ok("POST", f"{lists}/{rsl}", lists + "/{list_id}", form={"metadata[team]": "risk"})
    assert [v["id"] for v in api.ok("GET", f"{lists}?alias=blocked_bins", lists)["data"]] == [rsl]
    assert api.ok("GET", f"{items}/{item['id']}", items + "/{item_id}")["value"] == "424242"
    assert len(api.ok("GET", f"{items}?value_list={rsl}", items)["data"]) == 1
    assert api.ok("DELETE", f"{items}/{item['id']}", items + "/{item_id}")["deleted"]
    assert api.ok("DELETE", f"{lists}/{rsl}", lists + "/{list_id}")["deleted"]

    # A payment the default rule sends to review, its review, and its approval.
    reviewed = api.ok(
        "POST",
        "/v1/charges",
        "/v1/charges",
        form={"amount": "2000", "currency": "usd", "source": "tok_riskLevelElevated"},
    )
    assert reviewed["outcome"]["type"] == "manual_review" and reviewed["review"]
    prv = reviewed["review"]
    assert [r["id"] for r in api.ok("GET", "/v1/reviews", "/v1/reviews")["data"]] == [prv]
    assert api.ok("GET", f"/v1/reviews/{prv}", "/v1/reviews/{review_id}")["open"] is True
    approved = api.ok("POST", f"/v1/reviews/{prv}/approve", "/v1/reviews/{review_id}/approve")
    assert (approved["open"], approved["closed_reason"]) == (False, "approved")

    # An issuer's early fraud warning, as the processor's notification leaves it.
    from clearline.early_fraud_warnings import EarlyFraudWarnings
    from clearline.processor import ProcessorFraudWarning

    warned = api.ok(
        "POST",
        "/v1/charges",
        "/v1/charges",
        form={"amount": "2000", "currency": "usd", "source": "tok_createIssuerFraudRecord"},
    )
    notice = ProcessorFraudWarning(
        id="efw_conformance",
        authorization=next(
            a["id"] for a in processor.authorizations() if a["reference"] == warned["id"]
        ),
        reference=warned["id"],
        fraud_type="made_with_stolen_card",
        created=int(time.time()),
    )
    warning = EarlyFraudWarnings(Store(MAIN_TABLE.name)).receive(notice)
    efw = "/v1/radar/early_fraud_warnings"
    listed = api.ok("GET", f"{efw}?charge={warned['id']}", efw)["data"]
    assert [w["id"] for w in listed] == [warning.id]
    shown = api.ok("GET", f"{efw}/{warning.id}", efw + "/{warning_id}")
    assert (shown["charge"], shown["actionable"]) == (warned["id"], True)
    to_void = api.ok(
        "POST",
        "/v1/charges",
        "/v1/charges",
        form={"amount": "2000", "currency": "usd", "source": "tok_visa", "capture": "false"},
    )
    status, _, declined = api.call(
        "POST",
        "/v1/charges",
        template="/v1/charges",
        form={"amount": "2000", "currency": "usd", "source": "tok_chargeDeclined"},
    )
    failed_id = json.loads(declined)["error"]["charge"]
    assert status == 402
    failed = api.ok("GET", f"/v1/charges/{failed_id}", "/v1/charges/{charge_id}")
    assert failed["status"] == "failed" and failed["failure_code"]

    captured = api.ok(
        "POST",
        f"/v1/charges/{held['id']}/capture",
        "/v1/charges/{charge_id}/capture",
        form={"amount": "2500"},
    )
    assert captured["amount_refunded"] == 500
    refund = api.ok(
        "POST",
        "/v1/refunds",
        "/v1/refunds",
        form={"charge": ch, "amount": "1000", "reason": "requested_by_customer"},
    )
    processor.inject_fault("timeout_before")  # the refund's processor call times out
    status, _, _ = api.call(
        "POST", "/v1/refunds", template="/v1/refunds", form={"charge": ch, "amount": "100"}
    )
    assert status == 503
    (pending,) = [
        r
        for r in api.ok("GET", f"/v1/refunds?charge={ch}", "/v1/refunds")["data"]
        if r["status"] == "pending"
    ]
    canceled = api.ok(
        "POST", f"/v1/refunds/{pending['id']}/cancel", "/v1/refunds/{refund_id}/cancel"
    )
    assert canceled["status"] == "canceled"
    void = api.ok("POST", "/v1/refunds", "/v1/refunds", json_body={"charge": to_void["id"]})
    assert void["amount"] == 2000
    refunded = api.ok("GET", f"/v1/charges/{ch}", "/v1/charges/{charge_id}")
    assert [r["id"] for r in refunded["refunds"]["data"]] == [pending["id"], refund["id"]]
    api.ok("GET", "/v1/refunds?limit=2", "/v1/refunds")
    api.ok("GET", f"/v1/refunds?charge={ch}", "/v1/refunds")
    api.ok("GET", f"/v1/charges/{ch}/refunds", "/v1/charges/{charge_id}/refunds")
    charges = api.ok("GET", "/v1/charges?limit=3", "/v1/charges")
    assert charges["has_more"] is True
    found = api.ok(
        "GET",
        "/v1/charges/search?query=metadata%5B%27order%27%5D%3A%276735%27",
        "/v1/charges/search",
    )
    assert [c["id"] for c in found["data"]] == [ch] and found["next_page"] is None
    described = api.ok(
        "POST",
        f"/v1/charges/{ch}",
        "/v1/charges/{charge_id}",
        form={"description": "Two mugs, shipped", "metadata[order]": ""},
    )
    assert described["metadata"] == {} and described["description"] == "Two mugs, shipped"
    expanded = api.ok(
        "GET",
        f"/v1/refunds/{refund['id']}?expand[]=charge.balance_transaction",
        "/v1/refunds/{refund_id}",
    )
    assert expanded["charge"]["balance_transaction"]["source"] == ch
    api.ok(
        "POST", f"/v1/refunds/{refund['id']}", "/v1/refunds/{refund_id}", form={"metadata[a]": "b"}
    )

    assert api.ok("GET", "/v1/balance", "/v1/balance")["pending"]
    txns = api.ok("GET", "/v1/balance_transactions", "/v1/balance_transactions")["data"]
    assert {t["type"] for t in txns} == {"charge", "refund"}
    assert any(t["exchange_rate"] for t in txns)
    assert any(t["fee_details"] for t in txns)
    api.ok("GET", f"/v1/balance_transactions/{txns[0]['id']}", "/v1/balance_transactions/{txn_id}")
    events = api.ok("GET", "/v1/events?limit=100", "/v1/events")["data"]
    assert {"charge.succeeded", "charge.failed", "charge.captured", "refund.created"} <= {
        e["type"] for e in events
    }
    for event in events:  # each event's object in full, in its own schema
        kind = event["data"]["object"]["object"].removeprefix("radar.")
        assert component(api.doc, kind).is_valid(event["data"]["object"]), event["type"]
    api.ok("GET", f"/v1/events/{events[0]['id']}", "/v1/events/{event_id}")

    customer = api.ok("POST", "/v1/customers", "/v1/customers", form={"email": "jenny@example.com"})
    cus = customer["id"]
    api.ok("GET", f"/v1/customers/{cus}", "/v1/customers/{customer_id}")
    api.ok("POST", f"/v1/customers/{cus}", "/v1/customers/{customer_id}", form={"name": "Jenny"})
    api.ok("GET", "/v1/customers?email=jenny%40example.com", "/v1/customers")
    found_customers = api.ok(
        "GET",
        "/v1/customers/search?query=email%3A%27jenny%40example.com%27",
        "/v1/customers/search",
    )
    assert [c["id"] for c in found_customers["data"]] == [cus]
    assert api.ok("DELETE", f"/v1/customers/{cus}", "/v1/customers/{customer_id}")["deleted"]

    template = "/v1/payment_intents/{intent_id}"
    intent = api.ok(
        "POST",
        "/v1/payment_intents",
        "/v1/payment_intents",
        form={"amount": "3000", "currency": "usd", "capture_method": "manual"},
    )
    pi = intent["id"]
    api.ok("POST", f"/v1/payment_intents/{pi}", template, form={"payment_method": "pm_card_visa"})
    api.ok("POST", f"/v1/payment_intents/{pi}/confirm", template + "/confirm")
    api.ok("POST", f"/v1/payment_intents/{pi}/capture", template + "/capture")
    api.ok("GET", f"/v1/payment_intents/{pi}?expand[]=latest_charge", template)
    api.ok("GET", "/v1/payment_intents", "/v1/payment_intents")
    other = api.ok(
        "POST",
        "/v1/payment_intents",
        "/v1/payment_intents",
        form={"amount": "100", "currency": "usd"},
    )
    api.ok("POST", f"/v1/payment_intents/{other['id']}/cancel", template + "/cancel")

    # A card tokenized at the vault with the publishable key, then used with the secret key.
    tokenized = requests.post(
        f"{os.environ[VAULT_URL_ENV]}/v1/payment_methods",
        data={
            "key": api.publishable_key,
            "type": "card",
            "card[number]": "4242424242424242",
            "card[exp_month]": "12",
            "card[exp_year]": "2031",
            "card[cvc]": "123",
        },
        timeout=10,
    )
    assert tokenized.status_code == 200, tokenized.text
    pm = tokenized.json()["id"]
    cus = api.ok("POST", "/v1/customers", "/v1/customers", form={"name": "Pat"})["id"]
    template = "/v1/payment_methods/{payment_method_id}"
    assert api.ok("GET", f"/v1/payment_methods/{pm}", template)["card"]["last4"] == "4242"
    api.ok("POST", f"/v1/payment_methods/{pm}", template, form={"metadata[kind]": "work"})
    attached = api.ok(
        "POST", f"/v1/payment_methods/{pm}/attach", template + "/attach", form={"customer": cus}
    )
    assert attached["customer"] == cus
    listed = "/v1/customers/{customer_id}/payment_methods"
    assert [
        m["id"] for m in api.ok("GET", f"/v1/customers/{cus}/payment_methods", listed)["data"]
    ] == [pm]
    api.ok("GET", f"/v1/payment_methods?customer={cus}", "/v1/payment_methods")
    api.ok("POST", f"/v1/payment_methods/{pm}/detach", template + "/detach")

    endpoint = api.ok(
        "POST",
        "/v1/webhook_endpoints",
        "/v1/webhook_endpoints",
        form={"url": "https://shop.example/hooks", "enabled_events[0]": "*"},
    )
    assert endpoint["secret"].startswith("whsec_")
    we = endpoint["id"]
    template = "/v1/webhook_endpoints/{endpoint_id}"
    api.ok("GET", f"/v1/webhook_endpoints/{we}", template)
    api.ok(
        "POST",
        f"/v1/webhook_endpoints/{we}",
        template,
        form={"disabled": "true", "metadata[team]": "payments"},
    )
    api.ok("GET", "/v1/webhook_endpoints", "/v1/webhook_endpoints")
    assert api.ok("DELETE", f"/v1/webhook_endpoints/{we}", template)["deleted"] is True

    # Payouts, of a charge the processor's settlement file has made available.
    api_routes = _api_module()
    settled = api.ok(
        "POST",
        "/v1/charges",
        "/v1/charges",
        form={"amount": "10000", "currency": "usd", "source": "tok_visa"},
    )
    _settle(api_routes, processor, settled)
    api_routes.services().payouts.accounts.set(
        api.merchant_id, "usd", routing_number="110000000", account_number=SUCCEEDING_ACCOUNT
    )
    available = api.ok("GET", "/v1/balance", "/v1/balance")["available"]
    usd = next(a for a in available if a["currency"] == "usd")
    assert usd["amount"] >= 1000
    template = "/v1/payouts/{payout_id}"
    payout = api.ok(
        "POST",
        "/v1/payouts",
        "/v1/payouts",
        form={"amount": "1000", "currency": "usd", "description": "November"},
    )
    assert (payout["status"], payout["automatic"]) == ("pending", False)
    po = payout["id"]
    fetched = api.ok("GET", f"/v1/payouts/{po}?expand[]=balance_transaction", template)
    assert (fetched["balance_transaction"]["type"], fetched["balance_transaction"]["amount"]) == (
        "payout",
        -1000,
    )
    api.ok("POST", f"/v1/payouts/{po}", template, form={"metadata[batch]": "11"})
    canceled_payout = api.ok(
        "POST",
        f"/v1/payouts/{po}/cancel",
        template + "/cancel",
        form={"expand[0]": "failure_balance_transaction"},
    )
    assert canceled_payout["status"] == "canceled"
    assert canceled_payout["failure_balance_transaction"]["type"] == "payout_cancel"
    listed_payouts = api.ok("GET", "/v1/payouts?status=canceled", "/v1/payouts")["data"]
    assert [p["id"] for p in listed_payouts] == [po]
    status, _, refused = api.call(
        "POST",
        "/v1/payouts",
        template="/v1/payouts",
        form={"amount": str(usd["amount"] + 1), "currency": "usd"},
    )
    assert (status, json.loads(refused)["error"]["code"]) == (400, "balance_insufficient")

    # Disputes, as the processor's notifications open them.
    template = "/v1/disputes/{dispute_id}"
    contested = api.ok(
        "POST",
        "/v1/charges",
        "/v1/charges",
        form={"amount": "3000", "currency": "usd", "source": "tok_createDispute"},
    )
    du = _opened_dispute(api_routes, processor, contested["id"])
    listed_disputes = api.ok("GET", f"/v1/disputes?charge={contested['id']}", "/v1/disputes")
    assert [d["id"] for d in listed_disputes["data"]] == [du]
    dispute = api.ok("GET", f"/v1/disputes/{du}?expand[]=charge", template)
    assert dispute["status"] == "needs_response" and dispute["charge"]["disputed"] is True
    assert [t["reporting_category"] for t in dispute["balance_transactions"]] == ["dispute"]
    staged = api.ok(
        "POST",
        f"/v1/disputes/{du}",
        template,
        form={"evidence[shipping_tracking_number]": "1Z999", "submit": "false"},
    )
    assert (staged["status"], staged["evidence_details"]["has_evidence"]) == (
        "needs_response",
        True,
    )
    submitted = api.ok(
        "POST",
        f"/v1/disputes/{du}",
        template,
        form={"evidence[uncategorized_text]": "winning_evidence", "metadata[case]": "7"},
    )
    assert submitted["status"] == "under_review"
    accepted = api.ok(
        "POST",
        "/v1/charges",
        "/v1/charges",
        form={"amount": "2000", "currency": "usd", "source": "tok_createDispute"},
    )
    closed = api.ok(
        "POST",
        f"/v1/disputes/{_opened_dispute(api_routes, processor, accepted['id'])}/close",
        template + "/close",
    )
    assert closed["status"] == "lost"
    events = api.ok("GET", "/v1/events?limit=100", "/v1/events")["data"]
    assert {"charge.dispute.created", "payout.created", "payout.canceled"} <= {
        e["type"] for e in events
    }
    for event in events:
        kind = event["data"]["object"]["object"].removeprefix("radar.")
        assert component(api.doc, kind).is_valid(event["data"]["object"]), event["type"]

    assert {template for _, template, status in api.checked if status == 200} == set(
        api.doc["paths"]
    )


def _settle(api_routes: Any, processor: SandboxProcessor, charge: dict[str, Any]) -> None:
    """The processor's settlement file, with the charge's capture, reconciled."""
    day = dt.datetime.fromtimestamp(charge["created"], dt.UTC).date() + dt.timedelta(days=2)
    rows = [r for r in processor.settlement_rows(day) if r["charge_id"] == charge["id"]]
    assert rows
    lines = [",".join(COLUMNS), *(",".join(str(r[c]) for c in COLUMNS) for r in rows)]
    reconciler = Reconciler(api_routes.services().store, api_routes.services().shards)
    reconciler.reconcile(lines, file=f"settlements/{uuid.uuid4()}", etag="e")


def _opened_dispute(api_routes: Any, processor: SandboxProcessor, charge_id: str) -> str:
    """The dispute the processor raises against the charge, received as its notification
    would be."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = requests.get(f"{processor.url}/_sandbox/disputes", timeout=5).json()["data"]
        for record in found:
            if record["reference"] == charge_id:
                notice = ProcessorDispute.model_validate(record)
                return str(api_routes.services().disputes.receive(notice).id)
        time.sleep(0.05)
    raise AssertionError(f"the processor raised no dispute of {charge_id}")


def test_refusals_match_the_error_schema(api: Api) -> None:
    cases: list[tuple[int, str, str, str, dict[str, Any]]] = [
        (401, "GET", "/v1/charges", "/v1/charges", {"auth": False}),
        (404, "GET", "/v1/charges/ch_missing", "/v1/charges/{charge_id}", {}),
        (400, "GET", "/v1/charges?limit=0", "/v1/charges", {}),
        (400, "POST", "/v1/charges", "/v1/charges", {"form": {"amount": "5000"}}),
        (400, "POST", "/v1/charges", "/v1/charges", {"form": {"amount": "1"}, "key": ""}),
        (413, "POST", "/v1/refunds", "/v1/refunds", {"raw": b"charge=" + b"x" * 70_000}),
        (
            400,
            "POST",
            "/v1/charges",
            "/v1/charges",
            {"form": {"amount": "50", "currency": "usd", "source": "4242424242424242"}},
        ),
    ]
    for status, method, path, template, options in cases:
        got, headers, body = api.call(method, path, template=template, **options)
        assert got == status, (method, path, body)
        assert headers["request-id"].startswith("req_")
