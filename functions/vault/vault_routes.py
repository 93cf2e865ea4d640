"""The card vault's routes: browsers tokenize cards with a publishable key; Clearline's
functions (IAM-signed) read payment methods and have authorizations forwarded.

Routes parse and shape; the `vault` package holds the rules. Nothing logged here may
carry a request body, and whatever is logged goes through `redact_value` besides the
logger's own redaction: this is the one function that receives card numbers.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from vault import pages, rendering
from vault.authentications import OUTCOMES, AuthenticationRequest, Authentications
from vault.config import VaultSettings
from vault.forwarding import (
    AuthorizationRequest,
    Forwarder,
    ProcessorUnreachable,
    check_idempotency_key,
)
from vault.rate_limits import RateLimited, RateLimiter, Scope
from vault.requests import (
    AuthenticationParams,
    AuthorizationParams,
    RedeemParams,
    TestCardParams,
    parse_payment_method,
    parse_token,
)
from vault.sealing import CardSealer, Fingerprinter
from vault.service import CardVault
from vault.storage import VaultStore

from clearline.cards import redact, redact_value
from clearline.errors import (
    ApiError,
    AuthenticationError,
    CardError,
    IdempotencyError,
    InvalidRequestError,
    PermissionDeniedError,
    ResourceMissingError,
    ServiceUnavailableError,
    UnknownUrlError,
)
from clearline.forms import body_bytes, decode, parse_body
from clearline.logs import new_logger
from clearline.merchants import KeyCache, Merchant
from clearline.params import parse_params
from clearline.secrets import SecretUnavailable
from clearline.store import Store, StoreUnavailable

MAX_BODY_BYTES = 64 * 1024
STATIC = Path(__file__).parent / "static"
PUBLIC_PREFIX = "/v1/"  # browsers' routes: CORS open to every origin
INTERNAL_PREFIX = "/internal/"

logger = new_logger()
app = APIGatewayRestResolver()


@dataclass(frozen=True)
class Services:
    settings: VaultSettings
    main: Store
    keys: KeyCache
    cards: CardVault
    authentications: Authentications
    forwarder: Forwarder
    limiter: RateLimiter


@cache
def services() -> Services:
    """Built once per execution environment, on first use, from the function's settings."""
    import boto3
    from botocore.config import Config

    from clearline.secrets import SecretBox

    settings = VaultSettings.from_env()
    store = VaultStore(settings.vault_table)
    kms = boto3.client(
        "kms",
        config=Config(
            retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=2, read_timeout=5
        ),
    )
    cards = CardVault(
        store,
        CardSealer(SecretBox(settings.card_key_id, kms)),
        Fingerprinter(settings.fingerprint_key_id, kms),
    )
    authentications = Authentications(store, cards)
    return Services(
        settings=settings,
        # Only the API key items are read (the function's role allows no more).
        main=Store(settings.main_table, store.client),
        keys=KeyCache(),
        cards=cards,
        authentications=authentications,
        forwarder=Forwarder(
            cards, authentications, settings.processor_url, settings.processor_timeout_seconds
        ),
        limiter=RateLimiter(store),
    )


# ---- responses ---------------------------------------------------------------------------------


def _json(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response[str]:
    return Response(
        status_code=status,
        content_type="application/json",
        body=json.dumps(body, indent=2),
        headers=headers or {},
    )


def _error_status(error: ApiError) -> int:
    if error.code == "request_too_large":
        return 413
    statuses: tuple[tuple[type[ApiError], int], ...] = (
        (RateLimited, 429),
        (ProcessorUnreachable, 502),
        (UnknownUrlError, 404),
        (ResourceMissingError, 404),
        (CardError, 402),
        (AuthenticationError, 401),
        (PermissionDeniedError, 403),
        (ServiceUnavailableError, 503),
        (IdempotencyError, 400),
        (InvalidRequestError, 400),
    )
    return next((status for kind, status in statuses if isinstance(error, kind)), 500)


def _error_body(error: ApiError) -> dict[str, Any]:
    body: dict[str, Any] = {"type": error.type, "message": redact(error.message)}
    for name in ("code", "param", "decline_code"):
        value = getattr(error, name)
        if value is not None:
            body[name] = redact(value)
    return {"error": body}


@app.exception_handler(ApiError)
def on_api_error(error: ApiError) -> Response[str]:
    status = _error_status(error)
    logger.info(
        "request refused",
        extra=redact_value(
            {"status": status, "error_type": error.type, "error_code": error.code,
             "param": error.param}
        ),
    )  # fmt: skip
    headers = {}
    if isinstance(error, RateLimited):
        headers["Retry-After"] = str(error.retry_after)
    if error.should_retry is not None:
        headers["Stripe-Should-Retry"] = "true" if error.should_retry else "false"
    return _json(status, _error_body(error), headers)


@app.exception_handler([StoreUnavailable, SecretUnavailable])
def on_dependency_failure(error: Exception) -> Response[str]:
    # Fail closed: without the table or KMS nothing can be stored or opened safely.
    logger.warning("dependency unavailable", extra={"detail": redact(str(error))})
    return on_api_error(
        ServiceUnavailableError("The card vault could not reach its storage or keys; retry.")
    )


@app.exception_handler(Exception)
def on_unexpected(error: Exception) -> Response[str]:
    # Not logger.exception: a traceback can quote locals and arguments, card numbers among them.
    logger.error("unhandled error", extra=redact_value({"error_type": type(error).__name__}))
    return _json(
        500,
        {
            "error": {
                "type": "api_error",
                "message": f"An unexpected error occurred ({request_id()}).",
            }
        },
    )


@app.not_found
def on_not_found(_: Exception) -> Response[str]:
    event = app.current_event
    return on_api_error(
        UnknownUrlError(
            f"Unrecognized request URL ({event.http_method[:10]}: {redact(event.path[:200])})."
        )
    )


# ---- request parts -----------------------------------------------------------------------------


def request_id() -> str:
    return f"req_{app.current_event.request_context.request_id}"


def body_params() -> dict[str, Any]:
    event = app.current_event
    raw = body_bytes(event.body, bool(event.is_base64_encoded), MAX_BODY_BYTES)
    return parse_body(decode(raw), app.current_event.headers.get("content-type"))


def _client_ip() -> str:
    return app.current_event.request_context.identity.source_ip or "unknown"


def _bearer_key() -> str | None:
    scheme, _, credentials = (app.current_event.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip() or None


def publishable_request() -> tuple[Merchant, dict[str, Any]]:
    """The merchant of the publishable key a browser sent (as Stripe.js does, in the body;
    or as a Bearer token), and the request's parameters. Every call counts against the
    client's address, and then its key, before anything else is checked: card testing is
    made of refused requests."""
    limiter, settings = services().limiter, services().settings
    limiter.hit(Scope("ip", _client_ip(), settings.limit_per_ip))
    params = body_params()
    given = params.pop("key", None)
    key = given if isinstance(given, str) and given else _bearer_key()
    if not key:
        raise AuthenticationError(
            "You did not provide an API key. Send your publishable key as the `key` parameter.",
            code="api_key_missing",
        )
    limiter.hit(Scope("key", key, settings.limit_per_key))
    merchant, kind = services().keys.authenticate(services().main, key)
    if kind != "publishable":
        raise AuthenticationError(
            "Secret keys must never be sent from a browser: use your publishable key "
            "(pk_...) here, and roll the secret key that was sent."
        )
    return merchant, params


def internal_caller() -> str:
    """The IAM principal API Gateway verified for an /internal route; 403 without one."""
    identity = app.current_event.request_context.identity
    caller = identity.user_arn
    if not caller:
        raise PermissionDeniedError(
            "Internal routes are only for Clearline's own functions, signed with their role.",
        )
    return caller


def internal_params() -> dict[str, Any]:
    internal_caller()
    return body_params()


def merchant_query() -> str:
    merchant = app.current_event.get_query_string_value("merchant") or ""
    if not merchant:
        raise InvalidRequestError(
            "Missing required param: merchant.", code="parameter_missing", param="merchant"
        )
    return merchant


def vault_url() -> str:
    """The vault's origin as browsers reach it: configured, else where it was called."""
    configured = services().settings.vault_public_url
    if configured:
        return configured
    context = app.current_event.request_context
    return f"https://{context.domain_name}/{context.stage}" if context.domain_name else ""


# ---- public: browsers with a publishable key --------------------------------------------------

PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
}


@app.route("/v1/payment_methods", method="OPTIONS")
@app.route("/v1/tokens", method="OPTIONS")
def preflight() -> Response[str]:
    return Response(status_code=204, body="", headers=PREFLIGHT_HEADERS)


@app.post("/v1/payment_methods")
def create_payment_method() -> Response[str]:
    merchant, params = publishable_request()
    new = parse_payment_method(params, services().cards.today())
    payment_method = services().cards.create_payment_method(merchant, new, _client_ip())
    return _json(200, rendering.payment_method_object(payment_method))


@app.post("/v1/tokens")
def create_token() -> Response[str]:
    merchant, params = publishable_request()
    new = parse_token(params, services().cards.today())
    token = services().cards.create_token(merchant, new, _client_ip())
    return _json(200, rendering.token_object(token))


# ---- public: the browser library, the hosted card field, the challenge page -------------------


@cache
def _static(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def _nonce() -> str:
    return secrets.token_urlsafe(18)


def _html(status: int, page: str, csp: str, **headers: str) -> Response[str]:
    return Response(
        status_code=status,
        content_type="text/html; charset=utf-8",
        body=page,
        headers={
            "Content-Security-Policy": csp,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            **headers,
        },
    )


def _page_csp(nonce: str, *, form_action: str = "'none'") -> str:
    return (
        f"default-src 'none'; style-src 'nonce-{nonce}'; form-action {form_action}; "
        "frame-ancestors 'none'; base-uri 'none'"
    )


@app.get("/clearline.js")
def clearline_js() -> Response[str]:
    script = _static("clearline.js")
    script = script.replace(
        '"__CLEARLINE_API_URL__"', json.dumps(services().settings.api_public_url)
    )
    script = script.replace('"__CLEARLINE_VAULT_URL__"', json.dumps(vault_url()))
    return Response(
        status_code=200,
        content_type="application/javascript; charset=utf-8",
        body=script,
        headers={
            "Access-Control-Allow-Origin": "*",  # loadable with crossorigin/SRI
            "Cache-Control": "public, max-age=300",
            "X-Content-Type-Options": "nosniff",
        },
    )


@app.get("/card-field.js")
def card_field_js() -> Response[str]:
    return Response(
        status_code=200,
        content_type="application/javascript; charset=utf-8",
        body=_static("card-field.js"),
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


def _valid_origin(origin: str) -> bool:
    parts = urlsplit(origin)
    return (
        parts.scheme in ("http", "https")
        and bool(parts.netloc)
        and not parts.path
        and not parts.query
        and not parts.fragment
        and "@" not in parts.netloc
        and origin == f"{parts.scheme}://{parts.netloc}"
    )


@app.get("/card-field")
def card_field() -> Response[str]:
    key = app.current_event.get_query_string_value("key") or ""
    origin = app.current_event.get_query_string_value("origin") or ""
    nonce = _nonce()
    if (
        not key.startswith("pk_")
        or not key.isascii()
        or len(key) > 200
        or not _valid_origin(origin)
    ):
        page = pages.notice_page(
            "Card field unavailable", "The card field needs a publishable key and an origin.", nonce
        )
        return _html(400, page, _page_csp(nonce))
    # Merchant origins are not registered yet, so any page may frame the field. Once they
    # are, frame-ancestors lists the key's origins (and `origin` must be one of them).
    csp = (
        "default-src 'self'; script-src 'self'; "
        f"style-src 'self' 'nonce-{nonce}'; connect-src 'self'; img-src 'self' data:; "
        "form-action 'none'; base-uri 'none'; object-src 'none'; frame-ancestors *"
    )
    return _html(200, _static("card-field.html").replace("__NONCE__", nonce), csp)


@app.get("/3ds/<authentication_id>")
def challenge(authentication_id: str) -> Response[str]:
    nonce = _nonce()
    try:
        authentication = services().authentications.get(authentication_id)
    except ResourceMissingError:
        return _html(404, pages.not_found_page(nonce), _page_csp(nonce))
    # The answer comes back to this origin (the return page), so forms go nowhere else.
    csp = _page_csp(nonce, form_action="'self'")
    return _html(200, pages.challenge_page(authentication, nonce), csp)


@app.post("/3ds/<authentication_id>")
def answer_challenge(authentication_id: str) -> Response[str]:
    nonce = _nonce()
    outcome = body_params().get("outcome")
    if outcome not in OUTCOMES:
        page = pages.notice_page("Invalid answer", "Choose to complete or fail the test.", nonce)
        return _html(400, page, _page_csp(nonce))
    try:
        authentication = services().authentications.record_outcome(authentication_id, outcome)
    except ResourceMissingError:
        return _html(404, pages.not_found_page(nonce), _page_csp(nonce))
    logger.info(
        "challenge answered",
        extra=redact_value({"authentication": authentication.id, "status": authentication.status}),
    )
    # Post, redirect, get: to this origin's return page, which sends the browser on. A form's
    # redirects are held to its page's form-action, and the way on leaves this origin twice
    # (Clearline's API, then the merchant's return_url), neither of which the vault knows.
    return Response(
        status_code=303,
        body="",
        headers={"Location": f"{authentication.id}/return", "Cache-Control": "no-store"},
    )


@app.get("/3ds/<authentication_id>/return")
def leave_challenge(authentication_id: str) -> Response[str]:
    nonce = _nonce()
    try:
        authentication = services().authentications.get(authentication_id)
    except ResourceMissingError:
        return _html(404, pages.not_found_page(nonce), _page_csp(nonce))
    if authentication.status == "challenge_required":  # not answered yet: back to it
        return challenge(authentication_id)
    page = pages.return_page(authentication.complete_url, nonce)
    return _html(200, page, _page_csp(nonce))


# ---- internal: Clearline's functions, IAM-signed -------------------------------------------------


@app.get("/internal/payment_methods/<payment_method_id>")
def internal_payment_method(payment_method_id: str) -> Response[str]:
    internal_caller()
    payment_method = services().cards.payment_method(merchant_query(), payment_method_id)
    return _json(200, rendering.internal_payment_method_object(payment_method))


@app.post("/internal/payment_methods")
def internal_test_card() -> Response[str]:
    asked = parse_params(TestCardParams, internal_params())
    payment_method = services().cards.payment_method_from_test_card(
        asked.merchant, asked.test_card, asked.reference
    )
    return _json(200, rendering.internal_payment_method_object(payment_method))


@app.get("/internal/test_cards/<alias>")
def internal_test_card_facts(alias: str) -> Response[str]:
    internal_caller()
    facts = services().cards.test_card_facts(alias)
    return _json(
        200,
        {
            "alias": alias,
            "brand": facts.brand,
            "last4": facts.last4,
            "fingerprint": facts.fingerprint,
            "exp_month": facts.exp_month,
            "exp_year": facts.exp_year,
            "country": facts.country,
            "funding": facts.funding,
            "iin": facts.iin,
        },
    )


@app.post("/internal/tokens/<token_id>/redeem")
def internal_redeem_token(token_id: str) -> Response[str]:
    asked = parse_params(RedeemParams, internal_params())
    payment_method = services().cards.redeem_token(asked.merchant, token_id, asked.reference)
    return _json(200, rendering.internal_payment_method_object(payment_method))


@app.post("/internal/authorizations")
def internal_authorization() -> Response[str]:
    asked = parse_params(AuthorizationParams, internal_params())
    key = check_idempotency_key(app.current_event.headers.get("idempotency-key"))
    answer = services().forwarder.authorize(
        AuthorizationRequest(
            merchant=asked.merchant,
            payment_method=asked.payment_method,
            amount=asked.amount,
            currency=asked.currency,
            capture=asked.capture,
            reference=asked.reference,
            authentication=asked.authentication,
        ),
        key,
    )
    logger.info("authorization forwarded", extra=redact_value({"processor_status": answer.status}))
    return _json(answer.status, answer.body)


@app.post("/internal/authentications")
def internal_begin_authentication() -> Response[str]:
    asked = parse_params(AuthenticationParams, internal_params())
    key = check_idempotency_key(app.current_event.headers.get("idempotency-key"))
    decision = services().authentications.begin(
        AuthenticationRequest(
            merchant=asked.merchant,
            payment_method=asked.payment_method,
            amount=asked.amount,
            currency=asked.currency,
            reference=asked.reference,
            complete_url=asked.complete_url,
        ),
        key,
    )
    return _json(200, rendering.authentication_decision(decision, vault_url()))


@app.get("/internal/authentications/<authentication_id>")
def internal_authentication(authentication_id: str) -> Response[str]:
    internal_caller()
    authentication = services().authentications.get(authentication_id)
    return _json(200, rendering.authentication_object(authentication))


# ---- the entry point -------------------------------------------------------------------------


def _set_header(response: dict[str, Any], name: str, value: str) -> None:
    if response.get("multiValueHeaders") is not None:
        response["multiValueHeaders"][name] = [value]
    else:
        response.setdefault("headers", {})[name] = value


def _unsigned_internal(event: dict[str, Any]) -> bool:
    path = str(event.get("path") or "")
    identity = (event.get("requestContext") or {}).get("identity") or {}
    return path.lstrip("/").startswith(INTERNAL_PREFIX.strip("/")) and not identity.get("userArn")


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Resolve one API Gateway event. Internal paths without a verified caller are refused
    before routing (fail closed, unknown internal paths included)."""
    started = time.monotonic()
    rid = f"req_{(event.get('requestContext') or {}).get('requestId', '')}"
    logger.append_keys(request_id=rid)
    if _unsigned_internal(event):
        response = {
            "statusCode": 403,
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps(
                _error_body(
                    PermissionDeniedError(
                        "Internal routes are only for Clearline's own functions, signed with "
                        "their role.",
                    )
                ),
                indent=2,
            ),
            "isBase64Encoded": False,
        }
    else:
        response = app.resolve(event, context)
    _set_header(response, "Request-Id", rid)
    path = str(event.get("path") or "")
    if path.startswith(PUBLIC_PREFIX):
        # Any page may tokenize with a publishable key, and must be able to read refusals.
        _set_header(response, "Access-Control-Allow-Origin", "*")
        _set_header(response, "Access-Control-Expose-Headers", "Request-Id, Retry-After")
    identity = (event.get("requestContext") or {}).get("identity") or {}
    logger.info(
        "request",
        extra=redact_value(
            {
                "method": event.get("httpMethod"),
                "path": path[:200],
                "status": response.get("statusCode"),
                "caller": identity.get("userArn"),
                "ms": round((time.monotonic() - started) * 1000, 1),
            }
        ),
    )
    return response
