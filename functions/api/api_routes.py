"""The /v1 REST routes: authenticate, parse, call the clearline library, shape the reply.

Routes hold no business rules; those live in the library. Everything a caller can get
wrong ends as a Stripe-shaped error through `on_api_error`.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.parse
from collections.abc import Callable
from contextvars import ContextVar
from functools import cache, cached_property, partial
from typing import TYPE_CHECKING, Annotated, Any, Literal

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.shared.json_encoder import Encoder
from dashboard_developers import router as dashboard_developers_router
from dashboard_disputes import router as dashboard_disputes_router
from dashboard_operations import router as dashboard_operations_router
from dashboard_routes import router as dashboard_router
from telemetry import logger, metrics

import screening
from clearline import listing
from clearline.audit import Caller
from clearline.cards import card_number_location, card_number_refusal
from clearline.config import Settings
from clearline.errors import (
    ApiError,
    AuthenticationError,
    CardError,
    InvalidRequestError,
    PermissionDeniedError,
    RateLimitedError,
    ResourceMissingError,
    ServiceUnavailableError,
    UnknownUrlError,
)
from clearline.forms import body_bytes, decode, parse_body
from clearline.idempotency import IdempotentRequests, Reply, StoredResponse, check_key
from clearline.ledger import ShardPolicy
from clearline.merchants import KeyCache, KeyKind, Merchant, get_merchant
from clearline.models import BalanceTransaction, Charge, Event, Model, Page, PaymentIntent
from clearline.params import (
    BankAccountParams,
    Boolean,
    ChargeCaptureParams,
    ChargeCreateParams,
    ChargeUpdateParams,
    CustomerCreateParams,
    CustomerUpdateParams,
    DisputeCloseParams,
    DisputeUpdateParams,
    FxQuoteCreateParams,
    P,
    Params,
    PaymentIntentCancelParams,
    PaymentIntentCaptureParams,
    PaymentIntentConfirmParams,
    PaymentIntentCreateParams,
    PaymentIntentUpdateParams,
    PaymentMethodAttachParams,
    PaymentMethodDetachParams,
    PaymentMethodUpdateParams,
    PayoutCancelParams,
    PayoutCreateParams,
    PayoutUpdateParams,
    RadarRuleParams,
    RefundCancelParams,
    RefundCreateParams,
    RefundUpdateParams,
    ReviewApproveParams,
    ValueListCreateParams,
    ValueListItemCreateParams,
    ValueListUpdateParams,
    parse_params,
)
from clearline.processor import ProcessorBusy, ProcessorClient
from clearline.rate_limits import (
    CONTEXT_MESSAGE,
    CONTEXT_REFUSAL,
    DEFAULT_RATE_ENV,
    FAILED_AUTH_LIMIT,
    FAILED_AUTH_LIMIT_ENV,
    MISSING_KEY_MESSAGE,
    RATE_LIMITED_REASON_HEADER,
    DynamoCounters,
    FailedAuthentications,
    KeylessRouteLimits,
    default_rate_from,
    is_keyless,
    key_from_authorization,
    merchant_of_context,
)
from clearline.store import Store, StoreUnavailable
from clearline.topology import (
    BANK_ACCOUNTS_KEY_ENV,
    CAPTURE_QUEUE,
    COUNTERS_TABLE,
    PAYOUT_QUEUE,
    queue_env_var,
    table_env_var,
)
from clearline.versions import CURRENT_VERSION
from presentation.errors import error_body, error_status
from presentation.events import render_event
from presentation.expand import check_paths, expand
from presentation.links import Links
from presentation.lists import list_object, search_result
from presentation.objects import render
from presentation.payouts import render_bank_account

# The modules of rare routes, and each domain service's, load on first use: a cold start
# loads what its request needs.
if TYPE_CHECKING:
    from clearline import search
    from clearline.charges import ChargeService
    from clearline.customers import CustomerService
    from clearline.disputes import DisputeService
    from clearline.early_fraud_warnings import EarlyFraudWarnings
    from clearline.fx import FxQuoteService
    from clearline.payment_intents import PaymentIntentService
    from clearline.payment_methods import PaymentMethodService
    from clearline.payouts import PayoutService
    from clearline.refunds import RefundService
    from clearline.reviews import ReviewService
    from clearline.value_lists import ValueListService
    from clearline.webhooks import WebhookEndpoints

MAX_EVENT_TYPES = 20
MAX_BODY_BYTES = 64 * 1024  # Stripe requests are small; anything larger is a mistake or abuse

# Indented as Stripe's responses are, so that a response read by a person reads alike.
serialize = partial(json.dumps, indent=2, cls=Encoder)
app = APIGatewayRestResolver(enable_validation=True, serializer=serialize)


def _keyless_limits(store: Store, counters_table: str | None) -> KeylessRouteLimits | None:
    """Limits for keys on the routes served without the authorizer (in the counters table,
    where the authorizer keeps its own)."""
    if not counters_table:
        return None
    counters = DynamoCounters(store.client, counters_table)
    limit = int(os.environ.get(FAILED_AUTH_LIMIT_ENV) or FAILED_AUTH_LIMIT)
    return KeylessRouteLimits(
        counters,
        FailedAuthentications(counters, limit=limit),
        default_rate=default_rate_from(os.environ.get(DEFAULT_RATE_ENV)),
    )


class Services:
    """What the routes call, from the function's settings. The clients, and what every
    request uses, are built with it; each domain service (and its module) on the first
    request that calls it."""

    def __init__(self, settings: Settings) -> None:
        from clearline.secrets import SealedFields, SecretBox
        from clearline.vault_client import VaultClient

        self.settings = settings
        self.store = Store(settings.main_table)
        self.processor = ProcessorClient(
            settings.processor_url,
            settings.processor_timeout_seconds,
            vault=VaultClient.from_env(settings.processor_timeout_seconds),
        )
        # Webhook signing secrets are sealed under KMS, in endpoint items and in the stored
        # response to their create alike.
        self.secret_box = SecretBox(settings.webhook_secrets_key)
        # One DynamoDB client for both tables: one connection pool, one client to build at
        # cold start.
        self.idempotency = IdempotentRequests(
            settings.idempotency_table, self.store.client, sealer=SealedFields(self.secret_box)
        )
        self.shards = ShardPolicy.from_env()
        counters_table = os.environ.get(table_env_var(COUNTERS_TABLE.key))
        self.counters = Store(counters_table, self.store.client) if counters_table else None
        self.keyless_limits = _keyless_limits(self.store, counters_table)
        self.keys = KeyCache()
        # Read now with the rest of the environment, for the services built later.
        self.public_url = Links.from_env().base_url
        self.bank_accounts_key = os.environ.get(BANK_ACCOUNTS_KEY_ENV, "")

    @cached_property
    def charges(self) -> ChargeService:
        from clearline.charges import ChargeService

        return ChargeService(self.store, self.processor, self.shards, counters=self.counters)

    @cached_property
    def refunds(self) -> RefundService:
        from clearline.refunds import RefundService

        return RefundService(self.store, self.processor, self.shards)

    @cached_property
    def customers(self) -> CustomerService:
        from clearline.customers import CustomerService

        return CustomerService(self.store)

    @cached_property
    def payment_intents(self) -> PaymentIntentService:
        from clearline.payment_intents import PaymentIntentService

        return PaymentIntentService(
            self.store, self.charges, self.refunds, public_url=self.public_url
        )

    @cached_property
    def payment_methods(self) -> PaymentMethodService:
        from clearline.payment_methods import PaymentMethodService

        return PaymentMethodService(self.store, self.processor.vault)

    @cached_property
    def disputes(self) -> DisputeService:
        from clearline.disputes import DisputeService

        return DisputeService(self.store, self.processor, self.shards)

    @cached_property
    def payouts(self) -> PayoutService:
        from clearline.bank_accounts import BankAccounts
        from clearline.payouts import PayoutService
        from clearline.secrets import SecretBox

        # The api creates payouts and sets bank accounts; only the payout worker sends them.
        accounts = BankAccounts(self.store, SecretBox(self.bank_accounts_key))
        return PayoutService(self.store, accounts, None, self.shards)

    @cached_property
    def fx_quotes(self) -> FxQuoteService:
        from clearline.fx import FxQuoteService, RateBook

        return FxQuoteService(self.store, RateBook(self.store))

    @cached_property
    def value_lists(self) -> ValueListService:
        from clearline.value_lists import ValueListService

        return ValueListService(self.store)

    @cached_property
    def reviews(self) -> ReviewService:
        from clearline.reviews import ReviewService

        return ReviewService(self.store)

    @cached_property
    def early_fraud_warnings(self) -> EarlyFraudWarnings:
        from clearline.early_fraud_warnings import EarlyFraudWarnings

        return EarlyFraudWarnings(self.store)

    @cached_property
    def webhook_endpoints(self) -> WebhookEndpoints:
        from clearline.egress import EgressPolicy
        from clearline.webhooks import WebhookEndpoints

        egress = EgressPolicy.from_settings(self.settings)
        return WebhookEndpoints(self.store, secrets=self.secret_box, egress=egress)


@cache
def services() -> Services:
    """Built once per execution environment, on first use, from the function's settings."""
    return Services(Settings.from_env())


def request_id() -> str:
    return f"req_{app.current_event.request_context.request_id}"


# The merchant the request authenticated as, once it has: whose request log keeps it.
_asking_merchant: ContextVar[str | None] = ContextVar("asking_merchant", default=None)

# The Stripe-Version the request asked for, checked before routing (None: it asked none).
_asked_version: ContextVar[str | None] = ContextVar("asked_version", default=None)


def _api_version() -> str:
    """The version this request is answered in: the one it asked for, else its merchant's
    pinned one, else the current one."""
    return _asked_version.get() or app.context.get("api_version", CURRENT_VERSION)


# Set when a publishable key (a browser) is answered: it sees a PaymentIntent's browser view.
_for_browser: ContextVar[bool] = ContextVar("for_browser", default=False)


def _json(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response[dict[str, Any]]:
    if _for_browser.get():
        body = browser_view(body)
    return Response(
        status_code=status,
        content_type="application/json",
        body=body,
        headers={**(headers or {}), "Stripe-Version": _api_version()},
    )


# ---- errors -------------------------------------------------------------------------------


@app.exception_handler(ApiError)
def on_api_error(error: ApiError) -> Response[dict[str, Any]]:
    headers = {}
    if error.should_retry is not None:
        headers["Stripe-Should-Retry"] = "true" if error.should_retry else "false"
    if isinstance(error, RateLimitedError):
        headers[RATE_LIMITED_REASON_HEADER] = error.reason
    logger.info(
        "request refused",
        extra={
            "status": error_status(error),
            "error_type": error.type,
            "error_code": error.code,
            "param": error.param,
            "cause": repr(error.__cause__) if error.__cause__ else None,
        },
    )
    return _json(error_status(error), error_body(error, links()), headers)


@app.exception_handler(RequestValidationError)
def on_validation_error(error: RequestValidationError) -> Response[dict[str, Any]]:
    first = error.errors()[0]
    param = str(first["loc"][-1])
    if first["type"] in ("int_parsing", "int_type"):
        message = f"Invalid integer: {first.get('input')}"
    else:
        message = f"Invalid {param}: {first['msg']}"
    return on_api_error(InvalidRequestError(message, param=param, code="parameter_invalid"))


@app.exception_handler(StoreUnavailable)
def on_store_unavailable(error: StoreUnavailable) -> Response[dict[str, Any]]:
    logger.warning("store unavailable", extra={"detail": str(error)})
    return _json(
        503,
        {
            "error": {
                "type": "api_error",
                "code": "service_unavailable",
                "message": "Clearline could not reach its data store; retry.",
            }
        },
        {"Stripe-Should-Retry": "true"},
    )


@app.exception_handler(ProcessorBusy)
def on_processor_busy(error: ProcessorBusy) -> Response[dict[str, Any]]:
    """No processor capacity (its rate limit): the call was never sent, whatever it was
    (a charge stays pending, a capture or void locked, each under its key), so the same
    request is retried with the same key."""
    refused = ServiceUnavailableError(
        "The card processor is at its rate limit; nothing was sent to it. Retry with the same "
        "Idempotency-Key.",
        code="processor_busy",
    )
    refused.__cause__ = error
    return on_api_error(refused)


@app.exception_handler(Exception)
def on_unexpected(error: Exception) -> Response[dict[str, Any]]:
    logger.exception("unhandled error")
    return _json(
        500,
        {
            "error": {
                "type": "api_error",
                "message": (
                    f"An unexpected error occurred; the request {request_id()} was logged."
                ),
            }
        },
    )


def _methods_for(path: str) -> set[str]:
    """The methods the routes answer for `path`; empty when no route matches it."""
    # Powertools keeps its compiled routes privately; the 405 needs to see them.
    routes = [*getattr(app, "_static_routes", []), *getattr(app, "_dynamic_routes", [])]
    return {route.method for route in routes if route.rule.match(path)}


@app.not_found
def on_not_found(_: Exception) -> Response[dict[str, Any]]:
    event = app.current_event
    method = event.http_method.upper()
    allowed = _methods_for(event.path)
    if allowed or method not in {"GET", "POST", "DELETE"}:
        allowed_text = ", ".join(sorted(allowed)) or "none"
        response = on_api_error(
            InvalidRequestError(
                f"The {method[:20]} method is not allowed on this URL (allowed: {allowed_text}).",
                code="method_not_allowed",
            )
        )
        if allowed:
            response.headers["Allow"] = ", ".join(sorted(allowed))
        return response
    return on_api_error(UnknownUrlError(f"Unrecognized request URL ({method}: {event.path})."))


def _proxy_response(response: Response[dict[str, Any]]) -> dict[str, Any]:
    headers = {**response.headers, "Content-Type": "application/json"}
    return {
        "statusCode": response.status_code,
        "headers": headers,
        "body": serialize(response.body),
        "isBase64Encoded": False,
    }


# ---- request parts --------------------------------------------------------------------------


# The publishable key a browser sent as a parameter (`key=pk_...`), as Stripe.js does: it
# sends no Authorization header, so that its requests need no CORS preflight.
_browser_key: ContextVar[str | None] = ContextVar("browser_key", default=None)


def _key_parameter(params: dict[str, Any]) -> None:
    """Takes a publishable `key` out of the parameters (it is not one of the operation's).
    A secret key is never taken from a parameter: it would end up in URLs and logs."""
    key = params.pop("key", None)
    if isinstance(key, str) and key.startswith("pk_"):
        _browser_key.set(key)


def _api_key() -> str:
    if _browser_key.get() is not None and not app.current_event.headers.get("authorization"):
        return str(_browser_key.get())
    key = key_from_authorization(app.current_event.headers.get("authorization"))
    if key is None:
        raise AuthenticationError(MISSING_KEY_MESSAGE, code="api_key_missing")
    return key


def _authenticated() -> tuple[Merchant, KeyKind]:
    """The request's merchant and key kind: as the API Gateway authorizer vouched for them
    (requestContext.authorizer, which only API Gateway sets: nothing a client sends lands
    there), else (invoked directly, or a route served without the authorizer) from the key.
    A browser's publishable key in a parameter is always checked here: the authorizer
    never sees it."""
    context = app.current_event.raw_event.get("requestContext", {}).get("authorizer") or {}
    if context.get(CONTEXT_REFUSAL):
        # A locked-out address's failed attempt that the gateway let through: still invalid.
        raise AuthenticationError(str(context.get(CONTEXT_MESSAGE, "")), code="api_key_invalid")
    vouched = merchant_of_context(context)
    if vouched is not None and _browser_key.get() is None:
        _asking_merchant.set(vouched[0].id)
        return vouched
    found = _authenticated_by_key()
    _asking_merchant.set(found[0].id)
    return found


def _authenticated_by_key() -> tuple[Merchant, KeyKind]:
    event = app.current_event
    limits = services().keyless_limits
    if limits is None or not event.headers.get("authorization"):
        return services().keys.authenticate(services().store, _api_key())
    if not is_keyless(event.http_method, event.path):
        return services().keys.authenticate(services().store, _api_key())
    # A key on a route the gateway serves without the authorizer: limited here instead.
    try:
        merchant, kind = services().keys.authenticate(services().store, _api_key())
    except AuthenticationError:
        limits.failed(str(event.request_context.identity.source_ip or ""))
        raise
    limits.admit(merchant)
    return merchant, kind


def browser_view(body: dict[str, Any]) -> dict[str, Any]:
    """What a browser holding the publishable key may see of a PaymentIntent (in a response
    or in a decline's error): its payment, never the merchant's notes about it."""
    if body.get("object") == "payment_intent":
        return {k: v for k, v in body.items() if k in BROWSER_FIELDS}
    error = body.get("error")
    if isinstance(error, dict) and isinstance(error.get("payment_intent"), dict):
        return {"error": {**error, "payment_intent": browser_view(error["payment_intent"])}}
    return body


BROWSER_FIELDS = frozenset(
    {
        "id", "object", "amount", "amount_details", "canceled_at", "cancellation_reason",
        "capture_method", "client_secret", "confirmation_method", "created", "currency",
        "description", "last_payment_error", "livemode", "next_action", "payment_method",
        "payment_method_types", "processing", "receipt_email", "setup_future_usage",
        "shipping", "status",
    }
)  # fmt: skip


def intent_merchant(intent_id: str, client_secret: str | None, *, expands: bool) -> Merchant:
    """A secret key's merchant; or, for a publishable key (a browser running a checkout),
    the merchant whose intent this is, shown by the intent's client_secret."""
    merchant, kind = _authenticated()
    app.append_context(api_version=merchant.api_version)
    if kind == "secret":
        return merchant
    if expands:
        # Expanding would show a browser the charge and customer behind the intent.
        raise InvalidRequestError("expand is not available with a publishable key.", param="expand")
    if not client_secret:
        raise AuthenticationError(
            "A publishable key can only retrieve or confirm a PaymentIntent, with its "
            "client_secret.",
            code="secret_key_required",
        )
    services().payment_intents.check_client_secret(merchant, intent_id, client_secret)
    _for_browser.set(True)
    return merchant


def secret_key_merchant() -> Merchant:
    merchant, kind = _authenticated()
    app.append_context(api_version=merchant.api_version)
    if kind != "secret":
        raise AuthenticationError(
            "This API call cannot be made with a publishable API key. Please use a secret API key.",
            code="secret_key_required",
        )
    return merchant


def body_params() -> dict[str, Any]:
    """The parameters of the body; refuses oversized or malformed bodies and any card number."""
    event = app.current_event
    raw = body_bytes(event.body, bool(event.is_base64_encoded), MAX_BODY_BYTES)
    params = parse_body(decode(raw), app.current_event.headers.get("content-type"))
    location = card_number_location(params)
    if location is not None:
        raise card_number_refusal(location)
    return params


def links() -> Links:
    """Where this API's public pages are: its configured URL, else the one it was called at."""
    context = app.current_event.request_context
    called_at = f"https://{context.domain_name}/{context.stage}" if context.domain_name else ""
    return Links.from_env(fallback=called_at)


def array_query(name: str) -> list[str]:
    """An array parameter from the query string, as the SDKs send it (`expand[0]=...`),
    or as `expand[]=...` or `expand=...` by hand."""
    params = app.current_event.multi_value_query_string_parameters or {}
    found: list[str] = []
    for given, values in sorted(params.items()):
        index = given.removeprefix(name)
        if given.startswith(name) and (
            index in ("", "[]")
            or (index[:1] == "[" and index[-1:] == "]" and index[1:-1].isdigit())
        ):
            found += values
    return found


def expand_query() -> list[str]:
    return array_query("expand")


def _facets(**asked: str | list[str] | None) -> dict[str, list[str]]:
    """The list filters asked for, as facets of the list's index (most selective first)."""
    return {
        name: value if isinstance(value, list) else [value]
        for name, value in asked.items()
        if value
    }


def _fetcher(merchant: Merchant) -> Callable[[str], dict[str, Any] | None]:
    """Renders an object an id names, if the merchant owns it (for expansion)."""

    def fetch(object_id: str) -> dict[str, Any] | None:
        try:
            if object_id.startswith("ch_"):
                return render(services().charges.retrieve(merchant, object_id), links())
            if object_id.startswith("re_"):
                return render(services().refunds.retrieve(merchant, object_id), links())
            if object_id.startswith("pi_"):
                return render(services().payment_intents.retrieve(merchant, object_id), links())
            if object_id.startswith("cus_"):
                return render(services().customers.retrieve(merchant, object_id), links())
            if object_id.startswith("po_"):
                return render(services().payouts.retrieve(merchant, object_id), links())
            if object_id.startswith("du_"):
                return render(services().disputes.retrieve(merchant, object_id), links())
            if object_id.startswith("txn_"):
                item = listing.get_owned(services().store, merchant.id, object_id, "txn")
                return render(BalanceTransaction.from_item(item), links())
        except ResourceMissingError:
            return None
        return None

    return fetch


def shown(
    merchant: Merchant, result: Model | Page[Any], paths: list[str], *, url: str = ""
) -> dict[str, Any]:
    """A result rendered in Stripe's shape, with `paths` expanded."""
    if isinstance(result, Page):
        body = list_object(url, [render(m, links()) for m in result.items], result.has_more)
    else:
        body = render(result, links())
    return expand(body, paths, _fetcher(merchant)) if paths else body


def respond(
    merchant: Merchant, result: Model | Page[Any], root: str, *, url: str = ""
) -> Response[dict[str, Any]]:
    """A GET's answer: `expand[]` checked first, then the result rendered."""
    paths = check_paths(root, expand_query())
    return _json(200, shown(merchant, result, paths, url=url))


def idempotent_post(
    model: type[P],
    operation: Callable[[Caller, P, str], Model],
    root: str,
    metric: str | None = None,
    *,
    authenticate: Callable[[dict[str, Any]], Merchant] | None = None,
    rides: bool = False,
) -> Response[dict[str, Any]]:
    """Every POST: refuse card numbers, authenticate (a secret key, unless `authenticate`
    allows more), validate `model` (and its `expand`), require an Idempotency-Key, then run
    the operation once per key and replay its first response. With `rides`, the key's
    record is written by the operation's own transactions (its write-ahead claims the key,
    and the transaction that commits its answer stores it)."""
    params = body_params()
    _key_parameter(params)
    merchant = authenticate(params) if authenticate else secret_key_merchant()
    key_header = app.current_event.headers.get("idempotency-key")
    if not key_header and _for_browser.get():
        # A browser confirming an intent sends no key, as Stripe.js does not; the intent's
        # own state machine keeps a repeated confirmation from paying twice.
        key_header = f"browser-{request_id()}"
    stored = run_once(
        Caller(merchant, request_id()),
        model,
        params,
        operation,
        root,
        key_header=key_header,
        path=app.current_event.path,
        metric=metric,
        rides=rides,
    )
    headers = {}
    if stored.request_id != request_id():
        headers = {"Idempotent-Replayed": "true", "Original-Request": stored.request_id}
    return _json(stored.status, stored.body, headers)


def run_once(
    who: Caller,
    model: type[P],
    params: dict[str, Any],
    operation: Callable[[Caller, P, str], Model],
    root: str,
    *,
    key_header: str | None,
    path: str,
    metric: str | None = None,
    rides: bool = False,
) -> StoredResponse:
    """Validate `params` as `model` (and its `expand`), check the Idempotency-Key, then run
    the operation once per key and return its first answer. The API's POSTs and the
    dashboard's forms both write this way."""
    merchant = who.merchant
    parsed = parse_params(model, params)
    paths = check_paths(root, getattr(parsed, "expand", []))
    key = check_key(key_header)

    def reply(result: Model) -> Reply:
        # A charge (or an intent's) the processor has not answered for is not final: a
        # retry settles it.
        final = not (
            (isinstance(result, Charge) and result.state == "pending")
            or (isinstance(result, PaymentIntent) and result.state == "processing")
        )
        return Reply(200, shown(merchant, result, paths), final=final)

    def run() -> Reply:
        try:
            result = operation(who, parsed, key)
        except CardError as decline:  # a decline is a result, replayed like a success
            return Reply(error_status(decline), error_body(decline, links()))
        if metric:
            metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
        return reply(result)

    return services().idempotency.run(
        merchant_id=merchant.id,
        key=key,
        method="POST",
        path=path,
        params=params,
        request_id=who.request_id,
        operation=run,
        # An expanded answer reads other objects: stored once they are read, not before.
        answer=reply if rides and not paths else None,
    )


# ---- routes ---------------------------------------------------------------------------------

ListLimit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=255)]
# Stripe's created[gt|gte|lt|lte] (Unix seconds), declared per route so it is documented.
CreatedGt = Annotated[int | None, Query(alias="created[gt]")]
CreatedGte = Annotated[int | None, Query(alias="created[gte]")]
CreatedLt = Annotated[int | None, Query(alias="created[lt]")]
CreatedLte = Annotated[int | None, Query(alias="created[lte]")]
IdFilter = Annotated[str | None, Query(max_length=255)]
# Declared so it is documented; read from every spelling the SDKs use (expand_query).
Expand = Annotated[list[str] | None, Query(alias="expand[]")]


@app.post("/v1/charges")
def create_charge() -> Response[dict[str, Any]]:
    return idempotent_post(
        ChargeCreateParams,
        lambda who, charge, key: services().charges.create(who, charge, idempotency_key=key),
        "charge",
        "ChargeCreated",
        rides=True,
    )


@app.get("/v1/charges/search")
def search_charges(
    query: Annotated[str, Query(max_length=2000)],
    limit: ListLimit = 10,
    page: Annotated[str | None, Query(max_length=500)] = None,
    expand_: Expand = None,
) -> Response[dict[str, Any]]:
    from clearline import search

    return searched(search.CHARGES, "charge", query, limit, page)


def searched(
    searchable: search.Searchable[Any], kind: str, query: str, limit: int, page: str | None
) -> Response[dict[str, Any]]:
    """A search route's answer: the query parsed, then a bounded walk of the list."""
    from clearline import search

    merchant = secret_key_merchant()
    url = f"/v1/{kind}s/search"
    paths = check_paths(f"list:{kind}", expand_query())
    parsed = search.parse_query(query, searchable)
    found = search.search(services().store, merchant.id, searchable, parsed, limit=limit, page=page)
    rendered = [render(model, links()) for model in found.found]
    body = search_result(url, rendered, found.next_page)
    return _json(200, expand(body, paths, _fetcher(merchant)) if paths else body)


@app.get("/v1/charges/<charge_id>")
def retrieve_charge(charge_id: str, expand_: Expand = None) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    return respond(merchant, services().charges.retrieve(merchant, charge_id), "charge")


@app.post("/v1/charges/<charge_id>")
def update_charge(charge_id: str) -> Response[dict[str, Any]]:
    return idempotent_post(
        ChargeUpdateParams,
        lambda who, update, _: services().charges.update(who, charge_id, update),
        "charge",
    )


@app.get("/v1/charges")
def list_charges(
    limit: ListLimit = 10,
    starting_after: Cursor = None,
    ending_before: Cursor = None,
    created_gt: CreatedGt = None,
    created_gte: CreatedGte = None,
    created_lt: CreatedLt = None,
    created_lte: CreatedLte = None,
    customer: IdFilter = None,
    payment_intent: IdFilter = None,
    expand_: Expand = None,
) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    page = services().charges.list(
        merchant,
        limit=limit,
        starting_after=starting_after,
        ending_before=ending_before,
        created=listing.Created(created_gt, created_gte, created_lt, created_lte),
        facets=_facets(customer=customer, payment_intent=payment_intent),
    )
    return respond(merchant, page, "list:charge", url="/v1/charges")


@app.post("/v1/charges/<charge_id>/capture")
def capture_charge(charge_id: str) -> Response[dict[str, Any]]:
    return idempotent_post(
        ChargeCaptureParams,
        lambda who, capture, _: services().charges.capture(who, charge_id, capture),
        "charge",
        "ChargeCaptured",
        rides=True,
    )


@app.post("/v1/refunds")
def create_refund() -> Response[dict[str, Any]]:
    return idempotent_post(
        RefundCreateParams, create_refund_and_queue, "refund", "RefundCreated", rides=True
    )


def create_refund_and_queue(who: Caller, params: RefundCreateParams, key: str) -> Model:
    refund = services().refunds.create(who, params, idempotency_key=key)
    if refund.status == "pending":
        queue_waiting_refund(refund.id)
    return refund


def queue_waiting_refund(refund_id: str) -> None:
    """A refund answered pending waits for processor capacity on the capture queue, whose
    few workers send it when there is room; if the message is lost, the resolver sends it."""
    from clearline.scheduling import WAITING_REFUND, Job

    try:
        _sqs().send_message(
            QueueUrl=os.environ[queue_env_var(CAPTURE_QUEUE.key)],
            MessageBody=json.dumps(Job(refund_id, WAITING_REFUND, int(time.time())).as_message()),
        )
    except Exception:
        logger.warning("refund not queued; the resolver will send it", extra={"refund": refund_id})


@app.get("/v1/refunds/<refund_id>")
def retrieve_refund(refund_id: str, expand_: Expand = None) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    return respond(merchant, services().refunds.retrieve(merchant, refund_id), "refund")


@app.post("/v1/refunds/<refund_id>")
def update_refund(refund_id: str) -> Response[dict[str, Any]]:
    return idempotent_post(
        RefundUpdateParams,
        lambda who, update, _: services().refunds.update(who, refund_id, update),
        "refund",
    )


@app.post("/v1/refunds/<refund_id>/cancel")
def cancel_refund(refund_id: str) -> Response[dict[str, Any]]:
    return idempotent_post(
        RefundCancelParams,
        lambda who, _, __: services().refunds.cancel(who, refund_id),
        "refund",
    )


@app.get("/v1/refunds")
def list_refunds(
    charge: Annotated[str | None, Query(max_length=255)] = None,
    payment_intent: IdFilter = None,
    limit: ListLimit = 10,
    starting_after: Cursor = None,
    ending_before: Cursor = None,
    created_gt: CreatedGt = None,
    created_gte: CreatedGte = None,
    created_lt: CreatedLt = None,
    created_lte: CreatedLte = None,
    expand_: Expand = None,
) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    if payment_intent and not charge:  # an intent's refunds are those of its latest charge
        charge = services().payment_intents.retrieve(merchant, payment_intent).latest_charge
        if charge is None:
            return respond(
                merchant, Page(items=(), has_more=False), "list:refund", url="/v1/refunds"
            )
    page = services().refunds.list(
        merchant,
        charge_id=charge,
        limit=limit,
        starting_after=starting_after,
        ending_before=ending_before,
        created=listing.Created(created_gt, created_gte, created_lt, created_lte),
    )
    url = f"/v1/charges/{charge}/refunds" if charge else "/v1/refunds"
    return respond(merchant, page, "list:refund", url=url)


@app.get("/v1/charges/<charge_id>/refunds")
def list_charge_refunds(
    charge_id: str,
    limit: ListLimit = 10,
    starting_after: Cursor = None,
    ending_before: Cursor = None,
    created_gt: CreatedGt = None,
    created_gte: CreatedGte = None,
    created_lt: CreatedLt = None,
    created_lte: CreatedLte = None,
    expand_: Expand = None,
) -> Response[dict[str, Any]]:
    # The nested form of GET /v1/refunds?charge=...
    return list_refunds(
        charge_id,
        None,
        limit,
        starting_after,
        ending_before,
        created_gt,
        created_gte,
        created_lt,
        created_lte,
    )


@app.get("/v1/balance")
def retrieve_balance() -> Response[dict[str, Any]]:
    from clearline import balance

    merchant = secret_key_merchant()
    found = balance.merchant_balance(
        services().store, merchant.id, services().shards, merchant.settlement_currencies
    )
    return respond(merchant, found, "balance")


@app.get("/v1/balance_transactions/<txn_id>")
def retrieve_balance_transaction(txn_id: str, expand_: Expand = None) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    item = listing.get_owned(services().store, merchant.id, txn_id, "txn")
    return respond(merchant, BalanceTransaction.from_item(item), "balance_transaction")


@app.get("/v1/balance_transactions")
def list_balance_transactions(
    limit: ListLimit = 10,
    starting_after: Cursor = None,
    ending_before: Cursor = None,
    created_gt: CreatedGt = None,
    created_gte: CreatedGte = None,
    created_lt: CreatedLt = None,
    created_lte: CreatedLte = None,
    type: Annotated[str | None, Query(max_length=100)] = None,
    source: IdFilter = None,
    payout: IdFilter = None,
    currency: Annotated[str | None, Query(max_length=3)] = None,
    expand_: Expand = None,
) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    page = listing.page(
        services().store,
        merchant.id,
        "txn",
        limit=limit,
        starting_after=starting_after,
        ending_before=ending_before,
        created=listing.Created(created_gt, created_gte, created_lt, created_lte),
        facets=_facets(
            source=source,
            payout=payout,
            type=type,
            currency=currency.lower() if currency else None,
        ),
    ).of(BalanceTransaction.from_item)
    return respond(merchant, page, "list:balance_transaction", url="/v1/balance_transactions")


@app.get("/v1/events/<event_id>")
def retrieve_event(event_id: str) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    item = listing.get_owned(services().store, merchant.id, event_id, "evt")
    check_paths("event", expand_query())
    return _json(200, render_event(Event.from_item(item), links()))


@app.get("/v1/events")
def list_events(
    type: Annotated[str | None, Query(max_length=100)] = None,
    types_: Annotated[list[str] | None, Query(alias="types[]")] = None,
    delivery_success: Annotated[bool | None, Query()] = None,
    created_gt: CreatedGt = None,
    created_gte: CreatedGte = None,
    created_lt: CreatedLt = None,
    created_lte: CreatedLte = None,
    limit: ListLimit = 10,
    starting_after: Cursor = None,
    ending_before: Cursor = None,
) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    check_paths("list:event", expand_query())
    types = array_query("types")
    if type and types:
        raise InvalidRequestError("Send type or types, not both.", param="types")
    if len(types) > MAX_EVENT_TYPES:
        raise InvalidRequestError(
            f"types may name at most {MAX_EVENT_TYPES} event types.", param="types"
        )
    page = listing.page(
        services().store,
        merchant.id,
        "evt",
        limit=limit,
        starting_after=starting_after,
        ending_before=ending_before,
        created=listing.Created(created_gt, created_gte, created_lt, created_lte),
        facets=_facets(
            type=type or types,
            delivery_success=None if delivery_success is None else str(delivery_success).lower(),
        ),
    ).of(Event.from_item)
    rendered = [render_event(event, links()) for event in page.items]
    return _json(200, list_object("/v1/events", rendered, page.has_more))


@app.post("/v1/customers")
def create_customer() -> Response[dict[str, Any]]:
    return idempotent_post(
        CustomerCreateParams,
        lambda who, customer, key: services().customers.create(
            who, customer, idempotency_key=key, cards=services().payment_methods
        ),
        "customer",
    )


@app.get("/v1/customers/search")
def search_customers(
    query: Annotated[str, Query(max_length=2000)],
    limit: ListLimit = 10,
    page: Annotated[str | None, Query(max_length=500)] = None,
) -> Response[dict[str, Any]]:
    from clearline import search

    return searched(search.CUSTOMERS, "customer", query, limit, page)


@app.get("/v1/customers/<customer_id>")
def retrieve_customer(customer_id: str, expand_: Expand = None) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    return respond(merchant, services().customers.retrieve(merchant, customer_id), "customer")


@app.post("/v1/customers/<customer_id>")
def update_customer(customer_id: str) -> Response[dict[str, Any]]:
    return idempotent_post(
        CustomerUpdateParams,
        lambda who, update, _: services().customers.update(
            who, customer_id, update, cards=services().payment_methods
        ),
        "customer",
    )


@app.delete("/v1/customers/<customer_id>")
def delete_customer(customer_id: str) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    who = Caller(merchant, request_id())
    return respond(merchant, services().customers.delete(who, customer_id), "customer")


@app.get("/v1/customers")
def list_customers(
    limit: ListLimit = 10,
    starting_after: Cursor = None,
    ending_before: Cursor = None,
    created_gt: CreatedGt = None,
    created_gte: CreatedGte = None,
    created_lt: CreatedLt = None,
    created_lte: CreatedLte = None,
    email: Annotated[str | None, Query(max_length=512)] = None,
    expand_: Expand = None,
) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    page = services().customers.list(
        merchant,
        limit=limit,
        starting_after=starting_after,
        ending_before=ending_before,
        created=listing.Created(created_gt, created_gte, created_lt, created_lte),
        email=email,
    )
    return respond(merchant, page, "list:customer", url="/v1/customers")


@app.post("/v1/payment_intents")
def create_payment_intent() -> Response[dict[str, Any]]:
    return idempotent_post(
        PaymentIntentCreateParams,
        lambda who, intent, key: services().payment_intents.create(
            who, intent, idempotency_key=key
        ),
        "payment_intent",
        "PaymentIntentCreated",
    )


@app.get("/v1/payment_intents/<intent_id>")
def retrieve_payment_intent(
    intent_id: str,
    client_secret: Annotated[str | None, Query(max_length=255)] = None,
    expand_: Expand = None,
) -> Response[dict[str, Any]]:
    _key_parameter(dict(app.current_event.query_string_parameters or {}))
    merchant = intent_merchant(intent_id, client_secret, expands=bool(expand_query()))
    found = services().payment_intents.retrieve(merchant, intent_id)
    return respond(merchant, found, "payment_intent")


@app.post("/v1/payment_intents/<intent_id>")
def update_payment_intent(intent_id: str) -> Response[dict[str, Any]]:
    return idempotent_post(
        PaymentIntentUpdateParams,
        lambda who, update, _: services().payment_intents.update(who, intent_id, update),
        "payment_intent",
    )


@app.post("/v1/payment_intents/<intent_id>/confirm")
def confirm_payment_intent(intent_id: str) -> Response[dict[str, Any]]:
    return idempotent_post(
        PaymentIntentConfirmParams,
        lambda who, confirm, _: services().payment_intents.confirm(who, intent_id, confirm),
        "payment_intent",
        authenticate=lambda body: intent_merchant(
            intent_id, _text(body.get("client_secret")), expands=bool(body.get("expand"))
        ),
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@app.post("/v1/payment_intents/<intent_id>/capture")
def capture_payment_intent(intent_id: str) -> Response[dict[str, Any]]:
    return idempotent_post(
        PaymentIntentCaptureParams,
        lambda who, capture, _: services().payment_intents.capture(who, intent_id, capture),
        "payment_intent",
    )


@app.post("/v1/payment_intents/<intent_id>/cancel")
def cancel_payment_intent(intent_id: str) -> Response[dict[str, Any]]:
    return idempotent_post(
        PaymentIntentCancelParams,
        lambda who, cancel, _: services().payment_intents.cancel(who, intent_id, cancel),
        "payment_intent",
    )


@app.get("/v1/payment_intents")
def list_payment_intents(
    limit: ListLimit = 10,
    starting_after: Cursor = None,
    ending_before: Cursor = None,
    created_gt: CreatedGt = None,
    created_gte: CreatedGte = None,
    created_lt: CreatedLt = None,
    created_lte: CreatedLte = None,
    customer: IdFilter = None,
    expand_: Expand = None,
) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    page = services().payment_intents.list(
        merchant,
        limit=limit,
        starting_after=starting_after,
        ending_before=ending_before,
        created=listing.Created(created_gt, created_gte, created_lt, created_lte),
        customer=customer,
    )
    return respond(merchant, page, "list:payment_intent", url="/v1/payment_intents")


@app.get("/v1/payment_intents/<intent_id>/authentication_return/<token>", include_in_schema=False)
def authentication_return(intent_id: str, token: str) -> Response[str]:
    """Where the vault sends a customer's browser after a 3-D Secure challenge: the intent
    goes on with the outcome, and the browser goes on to the merchant's return_url."""
    import pages

    intent = services().payment_intents.complete_authentication(intent_id, token)
    redirect_status = {"succeeded": "succeeded", "requires_capture": "succeeded"}.get(
        intent.state, "failed" if intent.state == "requires_payment_method" else "pending"
    )
    if not intent.return_url:
        return _html(200, pages.authentication_done_page(redirect_status))
    query = urllib.parse.urlencode(
        {
            "payment_intent": intent.id,
            "payment_intent_client_secret": intent.client_secret,
            "redirect_status": redirect_status,
        }
    )
    separator = "&" if "?" in intent.return_url else "?"
    return Response(
        status_code=303,
        content_type="text/plain",
        body="",
        headers={"Location": f"{intent.return_url}{separator}{query}", "Cache-Control": "no-store"},
    )


@app.get("/v1/payment_methods/<payment_method_id>")
def retrieve_payment_method(payment_method_id: str) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    found = services().payment_methods.owned(merchant, payment_method_id)
    return respond(merchant, found, "payment_method")


@app.post("/v1/payment_methods/<payment_method_id>")
def update_payment_method(payment_method_id: str) -> Response[dict[str, Any]]:
    return idempotent_post(
        PaymentMethodUpdateParams,
        lambda who, update, _: services().payment_methods.update(who, payment_method_id, update),
        "payment_method",
    )


@app.post("/v1/payment_methods/<payment_method_id>/attach")
def attach_payment_method(payment_method_id: str) -> Response[dict[str, Any]]:
    return idempotent_post(
        PaymentMethodAttachParams,
        lambda who, attach, key: services().payment_methods.attach(
            who, payment_method_id, attach.customer, request=key
        ),
        "payment_method",
    )


@app.post("/v1/payment_methods/<payment_method_id>/detach")
def detach_payment_method(payment_method_id: str) -> Response[dict[str, Any]]:
    return idempotent_post(
        PaymentMethodDetachParams,
        lambda who, _, __: services().payment_methods.detach(who, payment_method_id),
        "payment_method",
    )


@app.get("/v1/payment_methods")
def list_payment_methods(
    limit: ListLimit = 10,
    starting_after: Cursor = None,
    ending_before: Cursor = None,
    customer: IdFilter = None,
    type: Annotated[Literal["card"] | None, Query()] = None,
    expand_: Expand = None,
) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    page = services().payment_methods.list(
        merchant,
        limit=limit,
        starting_after=starting_after,
        ending_before=ending_before,
        customer=customer,
    )
    return respond(merchant, page, "list:payment_method", url="/v1/payment_methods")


@app.get("/v1/customers/<customer_id>/payment_methods")
def list_customer_payment_methods(
    customer_id: str,
    limit: ListLimit = 10,
    starting_after: Cursor = None,
    ending_before: Cursor = None,
    type: Annotated[Literal["card"] | None, Query()] = None,
    expand_: Expand = None,
) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    page = services().payment_methods.list(
        merchant,
        limit=limit,
        starting_after=starting_after,
        ending_before=ending_before,
        customer=customer_id,
    )
    url = f"/v1/customers/{customer_id}/payment_methods"
    return respond(merchant, page, "list:payment_method", url=url)


@app.get("/v1/disputes")
def list_disputes(
    charge: IdFilter = None,
    payment_intent: IdFilter = None,
    limit: ListLimit = 10,
    starting_after: Cursor = None,
    ending_before: Cursor = None,
    created_gt: CreatedGt = None,
    created_gte: CreatedGte = None,
    created_lt: CreatedLt = None,
    created_lte: CreatedLte = None,
    expand_: Expand = None,
) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    page = services().disputes.list(
        merchant,
        limit=limit,
        starting_after=starting_after,
        ending_before=ending_before,
        created=listing.Created(created_gt, created_gte, created_lt, created_lte),
        facets=_facets(charge=charge, payment_intent=payment_intent),
    )
    return respond(merchant, page, "list:dispute", url="/v1/disputes")


@app.get("/v1/disputes/<dispute_id>")
def retrieve_dispute(dispute_id: str, expand_: Expand = None) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    return respond(merchant, services().disputes.retrieve(merchant, dispute_id), "dispute")


@app.post("/v1/disputes/<dispute_id>")
def update_dispute(dispute_id: str) -> Response[dict[str, Any]]:
    return idempotent_post(
        DisputeUpdateParams,
        lambda who, update, _: services().disputes.update(who, dispute_id, update),
        "dispute",
    )


@app.post("/v1/disputes/<dispute_id>/close")
def close_dispute(dispute_id: str) -> Response[dict[str, Any]]:
    return idempotent_post(
        DisputeCloseParams,
        lambda who, _, __: services().disputes.close(who, dispute_id),
        "dispute",
    )


@cache
def _sqs() -> Any:
    import boto3

    return boto3.client("sqs")


def send_to_bank(payout_id: str) -> None:
    """Queue a new payout for the bank now; if the message is lost, the scheduler's sweep
    finds the payout pending and queues it again."""
    from clearline.payout_jobs import PayoutJob

    try:
        _sqs().send_message(
            QueueUrl=os.environ[queue_env_var(PAYOUT_QUEUE.key)],
            MessageBody=json.dumps(PayoutJob(payout_id, "send").as_message()),
        )
    except Exception:
        logger.warning("payout not queued; the sweep will send it", extra={"payout": payout_id})


def create_payout_and_send(who: Caller, params: PayoutCreateParams, key: str) -> Model:
    from clearline.payouts import PENDING as PAYOUT_PENDING

    payout = services().payouts.create(who, params, idempotency_key=key)
    if payout.status == PAYOUT_PENDING:
        send_to_bank(payout.id)
    return payout


@app.post("/v1/payouts")
def create_payout() -> Response[dict[str, Any]]:
    return idempotent_post(PayoutCreateParams, create_payout_and_send, "payout", "PayoutCreated")


@app.get("/v1/payouts/<payout_id>")
def retrieve_payout(payout_id: str, expand_: Expand = None) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    return respond(merchant, services().payouts.retrieve(merchant, payout_id), "payout")


@app.post("/v1/payouts/<payout_id>")
def update_payout(payout_id: str) -> Response[dict[str, Any]]:
    return idempotent_post(
        PayoutUpdateParams,
        lambda who, update, _: services().payouts.update(who, payout_id, update),
        "payout",
    )


@app.post("/v1/payouts/<payout_id>/cancel")
def cancel_payout(payout_id: str) -> Response[dict[str, Any]]:
    return idempotent_post(
        PayoutCancelParams,
        lambda who, _, __: services().payouts.cancel(who, payout_id),
        "payout",
    )


@app.get("/v1/payouts")
def list_payouts(
    status: Annotated[
        Literal["pending", "in_transit", "paid", "failed", "canceled"] | None, Query()
    ] = None,
    limit: ListLimit = 10,
    starting_after: Cursor = None,
    ending_before: Cursor = None,
    created_gt: CreatedGt = None,
    created_gte: CreatedGte = None,
    created_lt: CreatedLt = None,
    created_lte: CreatedLte = None,
    arrival_date_gt: Annotated[int | None, Query(alias="arrival_date[gt]")] = None,
    arrival_date_gte: Annotated[int | None, Query(alias="arrival_date[gte]")] = None,
    arrival_date_lt: Annotated[int | None, Query(alias="arrival_date[lt]")] = None,
    arrival_date_lte: Annotated[int | None, Query(alias="arrival_date[lte]")] = None,
    expand_: Expand = None,
) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    arrival = (arrival_date_gt, arrival_date_gte, arrival_date_lt, arrival_date_lte)
    page = services().payouts.list(
        merchant,
        limit=limit,
        starting_after=starting_after,
        ending_before=ending_before,
        created=listing.Created(created_gt, created_gte, created_lt, created_lte),
        status=status,
        arrival=listing.Created(*arrival) if any(v is not None for v in arrival) else None,
    )
    return respond(merchant, page, "list:payout", url="/v1/payouts")


@app.post("/v1/fx_quotes")
def create_fx_quote() -> Response[dict[str, Any]]:
    return idempotent_post(
        FxQuoteCreateParams,
        lambda who, params, _: services().fx_quotes.create(who.merchant, params),
        "fx_quote",
        "FxQuoteCreated",
    )


@app.get("/v1/fx_quotes/<quote_id>")
def retrieve_fx_quote(quote_id: str, expand_: Expand = None) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    return respond(merchant, services().fx_quotes.retrieve(merchant, quote_id), "fx_quote")


@app.get("/v1/fx_quotes")
def list_fx_quotes(
    limit: ListLimit = 10,
    starting_after: Cursor = None,
    ending_before: Cursor = None,
    expand_: Expand = None,
) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    page = services().fx_quotes.list(
        merchant, limit=limit, starting_after=starting_after, ending_before=ending_before
    )
    return respond(merchant, page, "list:fx_quote", url="/v1/fx_quotes")


# ---- Radar reviews: payments in the merchant's review queue -----------------------------------


@app.get("/v1/reviews")
def list_reviews(
    limit: ListLimit = 10,
    starting_after: Cursor = None,
    ending_before: Cursor = None,
    created_gt: CreatedGt = None,
    created_gte: CreatedGte = None,
    created_lt: CreatedLt = None,
    created_lte: CreatedLte = None,
    expand_: Expand = None,
) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    page = services().reviews.list(
        merchant,
        limit=limit,
        starting_after=starting_after,
        ending_before=ending_before,
        created=listing.Created(created_gt, created_gte, created_lt, created_lte),
    )
    return respond(merchant, page, "list:review", url="/v1/reviews")


@app.get("/v1/reviews/<review_id>")
def retrieve_review(review_id: str, expand_: Expand = None) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    return respond(merchant, services().reviews.retrieve(merchant, review_id), "review")


@app.post("/v1/reviews/<review_id>/approve")
def approve_review(review_id: str) -> Response[dict[str, Any]]:
    return idempotent_post(
        ReviewApproveParams,
        lambda who, _params, _key: services().reviews.approve(who, review_id),
        "review",
        "ReviewApproved",
    )


@app.get("/v1/radar/early_fraud_warnings")
def list_early_fraud_warnings(
    limit: ListLimit = 10,
    starting_after: Cursor = None,
    ending_before: Cursor = None,
    created_gt: CreatedGt = None,
    created_gte: CreatedGte = None,
    created_lt: CreatedLt = None,
    created_lte: CreatedLte = None,
    charge: IdFilter = None,
    payment_intent: IdFilter = None,
    expand_: Expand = None,
) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    page = services().early_fraud_warnings.list(
        merchant,
        limit=limit,
        starting_after=starting_after,
        ending_before=ending_before,
        created=listing.Created(created_gt, created_gte, created_lt, created_lte),
        facets=_facets(charge=charge, payment_intent=payment_intent),
    )
    return respond(
        merchant, page, "list:radar.early_fraud_warning", url="/v1/radar/early_fraud_warnings"
    )


@app.get("/v1/radar/early_fraud_warnings/<warning_id>")
def retrieve_early_fraud_warning(
    warning_id: str, expand_: Expand = None
) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    warning = services().early_fraud_warnings.retrieve(merchant, warning_id)
    return respond(merchant, warning, "radar.early_fraud_warning")


# ---- Radar value lists: the sets fraud rules name by alias -----------------------------------


@app.post("/v1/radar/value_lists")
def create_value_list() -> Response[dict[str, Any]]:
    return idempotent_post(
        ValueListCreateParams,
        lambda who, params, key: services().value_lists.create(who, params, idempotency_key=key),
        "radar.value_list",
    )


@app.get("/v1/radar/value_lists/<list_id>")
def retrieve_value_list(list_id: str, expand_: Expand = None) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    return respond(merchant, services().value_lists.retrieve(merchant, list_id), "radar.value_list")


@app.post("/v1/radar/value_lists/<list_id>")
def update_value_list(list_id: str) -> Response[dict[str, Any]]:
    return idempotent_post(
        ValueListUpdateParams,
        lambda who, params, _: services().value_lists.update(who, list_id, params),
        "radar.value_list",
    )


@app.delete("/v1/radar/value_lists/<list_id>")
def delete_value_list(list_id: str) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    deleted = services().value_lists.delete(Caller(merchant, request_id()), list_id)
    return respond(merchant, deleted, "radar.value_list")


@app.get("/v1/radar/value_lists")
def list_value_lists(
    alias: Annotated[str | None, Query(max_length=100)] = None,
    limit: ListLimit = 10,
    starting_after: Cursor = None,
    ending_before: Cursor = None,
    created_gt: CreatedGt = None,
    created_gte: CreatedGte = None,
    created_lt: CreatedLt = None,
    created_lte: CreatedLte = None,
    expand_: Expand = None,
) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    page = services().value_lists.list(
        merchant,
        limit=limit,
        starting_after=starting_after,
        ending_before=ending_before,
        alias=alias,
        created=listing.Created(created_gt, created_gte, created_lt, created_lte),
    )
    return respond(merchant, page, "list:radar.value_list", url="/v1/radar/value_lists")


@app.post("/v1/radar/value_list_items")
def create_value_list_item() -> Response[dict[str, Any]]:
    return idempotent_post(
        ValueListItemCreateParams,
        lambda who, params, key: services().value_lists.create_item(
            who, params, idempotency_key=key
        ),
        "radar.value_list_item",
    )


@app.get("/v1/radar/value_list_items/<item_id>")
def retrieve_value_list_item(item_id: str, expand_: Expand = None) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    item = services().value_lists.retrieve_item(merchant, item_id)
    return respond(merchant, item, "radar.value_list_item")


@app.delete("/v1/radar/value_list_items/<item_id>")
def delete_value_list_item(item_id: str) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    deleted = services().value_lists.delete_item(Caller(merchant, request_id()), item_id)
    return respond(merchant, deleted, "radar.value_list_item")


@app.get("/v1/radar/value_list_items")
def list_value_list_items(
    value_list: Annotated[str, Query(max_length=100)],
    value: Annotated[str | None, Query(max_length=800)] = None,
    limit: ListLimit = 10,
    starting_after: Cursor = None,
    ending_before: Cursor = None,
    expand_: Expand = None,
) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    page = services().value_lists.list_items(
        merchant,
        value_list,
        limit=limit,
        starting_after=starting_after,
        ending_before=ending_before,
        value=value,
    )
    url = "/v1/radar/value_list_items"
    return respond(merchant, page, "list:radar.value_list_item", url=url)


# ---- operators' routes (IAM-authorized by the gateway) ---------------------------------------


def operator() -> str:
    """The IAM principal the gateway verified for an /admin route; 403 without one."""
    caller = app.current_event.request_context.identity.user_arn
    if not caller:
        raise PermissionDeniedError("Admin routes are for operators, signed with their IAM role.")
    return caller


@app.post("/admin/merchants/<merchant_id>/bank_accounts", include_in_schema=False)
def set_bank_account(merchant_id: str) -> Response[dict[str, Any]]:
    who = operator()
    params = parse_params(BankAccountParams, body_params())
    if get_merchant(services().store, merchant_id) is None:
        raise ResourceMissingError("merchant", merchant_id, param="merchant")
    account = services().payouts.accounts.set(
        merchant_id,
        params.currency,
        routing_number=params.routing_number,
        account_number=params.account_number,
        account_holder_name=params.account_holder_name,
    )
    logger.info(
        "bank account set",
        extra={"merchant": merchant_id, "currency": account.currency, "by": who},
    )
    return _json(200, render_bank_account(account))


def _rules_of(merchant_id: str) -> dict[str, Any]:
    from clearline.fraud_rules import RuleBook
    from clearline.risk import DEFAULT_RULES

    ruleset = RuleBook(services().store).read(merchant_id)
    return {
        "object": "list",
        "data": [
            {"id": r.id, "object": "radar.rule", "action": r.action, "predicate": r.predicate}
            for r in ruleset.rules
        ],
        # Radar's own rules, which run after the merchant's: each on unless turned off.
        "defaults": [
            {
                "id": r.id,
                "object": "radar.rule",
                "action": r.action,
                "predicate": r.predicate,
                "enabled": r.id not in ruleset.disabled_defaults,
            }
            for r in DEFAULT_RULES
        ],
        "has_more": False,
        "url": f"/admin/merchants/{merchant_id}/radar_rules",
    }


def _operated_merchant(merchant_id: str) -> str:
    """The operator acting on a merchant that exists (404 otherwise)."""
    who = operator()
    if get_merchant(services().store, merchant_id) is None:
        raise ResourceMissingError("merchant", merchant_id, param="merchant")
    return who


@app.get("/admin/merchants/<merchant_id>/radar_rules", include_in_schema=False)
def list_radar_rules(merchant_id: str) -> Response[dict[str, Any]]:
    _operated_merchant(merchant_id)
    return _json(200, _rules_of(merchant_id))


@app.post("/admin/merchants/<merchant_id>/radar_rules", include_in_schema=False)
def add_radar_rule(merchant_id: str) -> Response[dict[str, Any]]:
    """Clearline's own: Stripe manages rules in its Dashboard and has no API for them."""
    from clearline.fraud_rules import RuleBook

    who = _operated_merchant(merchant_id)
    params = parse_params(RadarRuleParams, body_params())
    rule = RuleBook(services().store).add(merchant_id, params.rule)
    logger.info("radar rule added", extra={"merchant": merchant_id, "rule": rule.id, "by": who})
    return _json(200, _rules_of(merchant_id))


@app.delete("/admin/merchants/<merchant_id>/radar_rules/<rule_id>", include_in_schema=False)
def remove_radar_rule(merchant_id: str, rule_id: str) -> Response[dict[str, Any]]:
    from clearline.fraud_rules import RuleBook

    who = _operated_merchant(merchant_id)
    RuleBook(services().store).remove(merchant_id, rule_id)
    logger.info("radar rule removed", extra={"merchant": merchant_id, "rule": rule_id, "by": who})
    return _json(200, _rules_of(merchant_id))


class RadarDefaultRuleParams(Params):
    enabled: Boolean  # "true" or "false"


@app.post("/admin/merchants/<merchant_id>/radar_rules/defaults/<rule_id>", include_in_schema=False)
def set_radar_default_rule(merchant_id: str, rule_id: str) -> Response[dict[str, Any]]:
    """Turns one of Radar's default rules off for the merchant, or back on, as Stripe lets
    a merchant disable its default rules."""
    from clearline.fraud_rules import RuleBook

    who = _operated_merchant(merchant_id)
    params = parse_params(RadarDefaultRuleParams, body_params())
    RuleBook(services().store).set_default(merchant_id, rule_id, params.enabled)
    logger.info(
        "radar default rule set",
        extra={"merchant": merchant_id, "rule": rule_id, "enabled": params.enabled, "by": who},
    )
    return _json(200, _rules_of(merchant_id))


@app.post("/v1/webhook_endpoints")
def create_webhook_endpoint() -> Response[dict[str, Any]]:
    from clearline.webhooks import WebhookEndpointCreateParams

    return idempotent_post(
        WebhookEndpointCreateParams,
        lambda who, endpoint, _: services().webhook_endpoints.create(who, endpoint),
        "webhook_endpoint",
    )


@app.get("/v1/webhook_endpoints/<endpoint_id>")
def retrieve_webhook_endpoint(endpoint_id: str) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    found = services().webhook_endpoints.retrieve(merchant, endpoint_id)
    return respond(merchant, found, "webhook_endpoint")


@app.post("/v1/webhook_endpoints/<endpoint_id>")
def update_webhook_endpoint(endpoint_id: str) -> Response[dict[str, Any]]:
    from clearline.webhooks import WebhookEndpointUpdateParams

    return idempotent_post(
        WebhookEndpointUpdateParams,
        lambda who, update, _: services().webhook_endpoints.update(who, endpoint_id, update),
        "webhook_endpoint",
    )


@app.delete("/v1/webhook_endpoints/<endpoint_id>")
def delete_webhook_endpoint(endpoint_id: str) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    who = Caller(merchant, request_id())
    return respond(merchant, services().webhook_endpoints.delete(who, endpoint_id), "endpoint")


@app.get("/v1/webhook_endpoints")
def list_webhook_endpoints(
    limit: ListLimit = 10, starting_after: Cursor = None, ending_before: Cursor = None
) -> Response[dict[str, Any]]:
    merchant = secret_key_merchant()
    page = services().webhook_endpoints.list(
        merchant, limit=limit, starting_after=starting_after, ending_before=ending_before
    )
    return respond(merchant, page, "list:webhook_endpoint", url="/v1/webhook_endpoints")


# ---- public pages: a customer's receipt, and what each error code means ------------------------


def _html(status: int, page: str) -> Response[str]:
    return Response(
        status_code=status,
        content_type="text/html; charset=utf-8",
        body=page,
        # A receipt is the customer's: no caching by shared proxies, no framing elsewhere.
        headers={
            "Cache-Control": "private, no-store",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
        },
    )


@app.get("/receipts/<charge_id>/<token>", include_in_schema=False)
def receipt(charge_id: str, token: str) -> Response[str]:
    import pages

    charge, merchant = services().charges.receipt(charge_id, token)
    return _html(200, pages.receipt_page(render(charge, links()), merchant.name))


@app.get("/errors", include_in_schema=False)
def error_codes() -> Response[str]:
    import pages

    return _html(200, pages.error_codes_page(pages.ERROR_CODES))


@app.get("/errors/<code>", include_in_schema=False)
def error_code(code: str) -> Response[str]:
    import pages

    if code not in pages.ERROR_CODES:
        raise ResourceMissingError("error code", code[:100])
    return _html(200, pages.error_code_page(code, pages.ERROR_CODES[code]))


# ---- the API's own description: public, and not an operation of the document itself ----------


@app.get("/openapi.json", include_in_schema=False)
def openapi_json() -> Response[str]:
    from openapi_document import document_json  # built on first use, not at cold start

    return Response(status_code=200, content_type="application/json", body=document_json(app))


@app.get("/docs", include_in_schema=False)
def swagger_ui() -> Response[str]:
    from openapi_document import swagger_page

    return Response(status_code=200, content_type="text/html; charset=utf-8", body=swagger_page())


# What a browser holding a publishable key may call: retrieve and confirm an intent.
# ---- the dashboard: its pages are served here, on the same services --------------------------

app.include_router(dashboard_router)
app.include_router(dashboard_developers_router)
app.include_router(dashboard_disputes_router)
app.include_router(dashboard_operations_router)


BROWSER_ROUTE = re.compile(r"^/v1/payment_intents/pi_[A-Za-z0-9]+(/confirm)?$")


def _keep_in_request_log(
    event: dict[str, Any], response: dict[str, Any], rid: str, started: float
) -> None:
    """An API request that changed something or was refused, in its merchant's request log;
    a refusal's body names where support finds it (`request_log_url`). Never in the way of
    the answer: a log that cannot be written is a warning."""
    from clearline.request_log import LoggedRequest, RequestLog, worth_keeping

    merchant_id, path = _asking_merchant.get(), str(event.get("path") or "")
    method, status = str(event.get("httpMethod") or ""), int(response.get("statusCode") or 0)
    if merchant_id is None or not path.startswith("/v1/") or not worth_keeping(method, status):
        return
    error: dict[str, Any] = {}
    if status >= 400 and not response.get("isBase64Encoded"):
        try:
            body = json.loads(response.get("body") or "{}")
            error = body.get("error") or {}
            if error and links().base_url:
                # A replay is the first answer again, so it names the first request's log.
                logged = _response_header(response, "Original-Request") or rid
                error["request_log_url"] = f"{links().base_url}/dashboard/logs/{logged}"
                response["body"] = json.dumps(body)
        except ValueError:
            error = {}
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    try:
        RequestLog(services().store).record(
            LoggedRequest(
                rid,
                merchant_id,
                method,
                path,
                status,
                int(time.time() * 1000),
                int((time.monotonic() - started) * 1000),
                idempotency_key=(headers.get("idempotency-key") or "")[:255] or None,
                error_type=error.get("type"),
                error_code=error.get("code"),
                error_message=str(error["message"])[:1000] if error.get("message") else None,
            )
        )
    except Exception:
        logger.warning("request not kept in the request log", exc_info=True)


def _response_header(response: dict[str, Any], name: str) -> str | None:
    for key, values in (response.get("multiValueHeaders") or {}).items():
        if key.lower() == name.lower() and values:
            return str(values[0])
    for key, value in (response.get("headers") or {}).items():
        if key.lower() == name.lower():
            return str(value)
    return None


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Resolve one API Gateway event; every response carries the Request-Id."""
    started = time.monotonic()
    rid = f"req_{event.get('requestContext', {}).get('requestId', '')}"
    logger.append_keys(request_id=rid)
    services().idempotency.register_lambda_context(context)
    _asked_version.set(None)
    _for_browser.set(False)
    _browser_key.set(None)
    _asking_merchant.set(None)
    refused: ApiError | None = screening.refusal(event)
    routable = str(event.get("httpMethod", "")).upper() in _methods_for(event.get("path", ""))
    if refused is None and routable:  # a 404 or 405 says so first, whatever the version
        try:
            _asked_version.set(screening.asked_version(event))
        except ApiError as error:
            refused = error
    if refused is not None:  # before routing, which would echo what must not be echoed
        response = _proxy_response(on_api_error(refused))
    else:
        response = app.resolve(event, context)
    extra = {"Request-Id": rid}
    if BROWSER_ROUTE.match(str(event.get("path", ""))):
        # Checkout pages on any origin read these answers (the client_secret guards them).
        extra["Access-Control-Allow-Origin"] = "*"
    if response.get("multiValueHeaders") is not None:
        response["multiValueHeaders"].update({k: [v] for k, v in extra.items()})
    else:
        response.setdefault("headers", {}).update(extra)
    _keep_in_request_log(event, response, rid, started)
    logger.info(
        "request",
        extra={
            "method": event.get("httpMethod"),
            "path": event.get("path"),
            "status": response.get("statusCode"),
            "ms": round((time.monotonic() - started) * 1000, 1),
        },
    )
    return response
