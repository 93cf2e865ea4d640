"""The dashboard: server-rendered pages for a signed-in merchant, served by the api function.

It reads through the same services and store as the API, and each form runs its API
route's operation (`run_form`: the same validation, operation and idempotency record). A
session is a cookie (HttpOnly, SameSite=Lax, Secure where the public URL is https) naming a
session the store keeps (clearline.dashboard), opened by a one-time link or, deployed, by
Cognito (clearline.dashboard_identity). Handlers get theirs from `session_page` and
`session_form` (which also checks the form's CSRF token). A page for anything not the
merchant's answers 404, as the API does.

Here: what every page shares, sign-in, payments and a payment's actions, balance and
payouts. Beside it: dashboard_developers, dashboard_disputes, dashboard_operations.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import inspect
import re
import secrets
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from http.cookies import SimpleCookie
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.shared.cookies import Cookie, SameSite

from clearline.errors import ApiError, InvalidRequestError
from clearline.forms import parse_body
from presentation.errors import error_status

if TYPE_CHECKING:
    from jinja2 import Environment

    from clearline.audit import Caller
    from clearline.dashboard import BalanceHistory, DashboardSessions, Session
    from clearline.dashboard_identity import CognitoSignIn
    from clearline.idempotency import StoredResponse
    from clearline.merchants import Merchant
    from clearline.models import Balance, Charge, Model
    from clearline.models import Page as PageOf
    from clearline.params import Params

router = Router()

COOKIE = "clearline_session"
PAGE_SIZE = 20
STATUSES = ("succeeded", "pending", "failed", "refunded")
# The dashboard's own pages: no scripts but its own, no framing, forms only to itself.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
TEMPLATES = Path(__file__).parent / "templates" / "dashboard"
STATIC = Path(__file__).parent / "static" / "dashboard"


@cache
def templates() -> Environment:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    import pages

    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
    )
    environment.filters["money"] = pages.format_money
    environment.filters["utc"] = _utc
    environment.filters["iso"] = _iso
    return environment


def _utc(timestamp_ms: int) -> str:
    moment = dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(timestamp_ms: int) -> str:
    moment = dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def sessions() -> DashboardSessions:
    from api_routes import services
    from clearline.dashboard import DashboardSessions

    return DashboardSessions(services().store)


def root() -> str:
    """Where the dashboard is, as a path: under the stage's, when deployed."""
    from api_routes import links

    return urllib.parse.urlsplit(links().base_url).path.rstrip("/") + "/dashboard"


def _secure() -> bool:
    from api_routes import links

    return links().base_url.startswith("https://")


def render_page(status: int, template: str, **context: Any) -> Response[str]:
    body = templates().get_template(template).render(root=root(), **context)
    return Response(
        status_code=status,
        content_type="text/html; charset=utf-8",
        body=body,
        headers={
            "Cache-Control": "private, no-store",
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        },
    )


def redirect(to: str, cookies: list[Cookie] | None = None) -> Response[str]:
    return Response(
        status_code=303,
        content_type="text/plain",
        body="",
        headers={"Location": to, "Cache-Control": "no-store"},
        cookies=cookies or [],
    )


def session_cookie_value() -> str | None:
    """The session's id, as the browser sent it (its cookie)."""
    return _cookie(COOKIE)


def _cookie(name: str) -> str | None:
    header = router.current_event.headers.get("cookie") or ""
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except Exception:  # a malformed Cookie header carries nothing
        return None
    morsel = jar.get(name)
    return morsel.value if morsel else None


def current_session() -> tuple[Session, Merchant] | None:
    from api_routes import services
    from clearline.merchants import get_merchant

    session = sessions().session(session_cookie_value())
    if session is None:
        return None
    merchant = get_merchant(services().store, session.merchant_id)
    return (session, merchant) if merchant is not None else None


P = ParamSpec("P")
Page = Callable[Concatenate["Session", "Merchant", P], Response[str]]
Action = Callable[Concatenate["Session", "Merchant", dict[str, str], P], Response[str]]


def _takes_only(wrapper: Callable[..., Any], handler: Callable[..., Any], given: int) -> None:
    """The route's parameters are the handler's but the `given` first, which the wrapper
    passes: Powertools reads the signature to bind (and validate) what the route carries."""
    signature = inspect.signature(handler)
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=list(signature.parameters.values())[given:]
    )


def session_page(handler: Page[P]) -> Callable[P, Response[str]]:
    """A page for a signed-in session, given (session, merchant); without a session, the
    sign-in page."""

    @functools.wraps(handler)
    def shown(*args: P.args, **kwargs: P.kwargs) -> Response[str]:
        signed_in = current_session()
        if signed_in is None:
            return redirect(f"{root()}")
        return handler(*signed_in, *args, **kwargs)

    _takes_only(shown, handler, 2)
    return shown


def operators_only(handler: Page[P]) -> Page[P]:
    """Under `session_page` or `session_form`: an operator's session only; any other is told
    there is no such page."""

    @functools.wraps(handler)
    def checked(
        session: Session, merchant: Merchant, /, *args: P.args, **kwargs: P.kwargs
    ) -> Response[str]:
        if not session.operations:
            return error_page(Refusal(404, "No such page.", "resource_missing"), session)
        return handler(session, merchant, *args, **kwargs)

    return checked


def session_form(handler: Action[P]) -> Callable[P, Response[str]]:
    """A form's action, given (session, merchant, the form's fields): signed in, and sent
    from a page of this session (its CSRF token), or refused before anything is read."""

    @functools.wraps(handler)
    def done(*args: P.args, **kwargs: P.kwargs) -> Response[str]:
        signed_in = current_session()
        if signed_in is None:
            return redirect(f"{root()}")
        session, merchant = signed_in
        form = form_fields()
        if not session.accepts(form.get("csrf_token")):
            return forbidden(session)
        return handler(session, merchant, form, *args, **kwargs)

    _takes_only(done, handler, 3)
    return done


class Identified(Protocol):
    @property
    def id(self) -> str: ...


M = TypeVar("M", bound=Identified)


def newest_first(
    lister: Callable[..., PageOf[M]], merchant: Merchant, path: str
) -> tuple[list[M], str | None]:
    """A page of the merchant's objects (a service's `list`), newest first, from the one the
    `after` query names; and the link to the next page (None: no more)."""
    after = query_value("after", 100) or None
    listed = lister(merchant, limit=PAGE_SIZE, starting_after=after, ending_before=None)
    items = list(listed.items)
    more = listed.has_more and items
    return items, (f"{root()}/{path}?after={items[-1].id}" if more else None)


def query_value(name: str, limit: int = 200) -> str:
    return (router.current_event.get_query_string_value(name) or "").strip()[:limit]


@dataclass(frozen=True)
class Refusal:
    """Why an action or a page was refused, as a page shows it: the API's status and words."""

    status: int
    message: str
    code: str | None = None


def refusal(error: ApiError) -> Refusal:
    return Refusal(error_status(error), error.message, error.code)


def error_page(error: ApiError | Refusal, session: Session | None) -> Response[str]:
    shown = error if isinstance(error, Refusal) else refusal(error)
    return render_page(shown.status, "error.html", error=shown, session=session)


def run_form(
    session: Session,
    merchant: Merchant,
    form: dict[str, str],
    model: type[Params],
    params: Callable[[], dict[str, Any]],
    operation: Callable[[Caller, Any, str], Model],
    root_object: str,
    path: str,
    *,
    rides: bool = False,
) -> StoredResponse | Refusal:
    """A form's action, done as its API request would be (`path`): the same validation, the
    same operation and the same idempotency record, keyed by the form's key, by the
    session's person. A refusal (bad input, a decline, a conflict), raised or answered,
    changed nothing."""
    from api_routes import request_id, run_once
    from clearline.audit import Caller

    try:
        stored = run_once(
            Caller(merchant, request_id(), actor=session.actor),
            model,
            params(),
            operation,
            root_object,
            key_header=form.get("idempotency_key"),
            path=path,
            rides=rides,
        )
    except ApiError as error:
        return refusal(error)
    if stored.status >= 400:  # a decline is an answer, stored and replayed like a success
        answer = stored.body["error"]
        return Refusal(stored.status, answer["message"], answer.get("code"))
    return stored


# ---- sign-in --------------------------------------------------------------------------------


@router.get("/dashboard", include_in_schema=False)  # and /dashboard/: Powertools takes both
def dashboard_home() -> Response[str]:
    if current_session() is None:
        return render_page(200, "signed_out.html", session=None, cognito=cognito() is not None)
    return redirect(f"{root()}/payments")


SIGN_IN_COOKIE = "clearline_sign_in"
LINKS_ONLY = Refusal(404, "Here you sign in with a one-time link.", "resource_missing")


def cognito() -> CognitoSignIn | None:
    """Deployed, the pool people sign in with; None on the local stack (one-time links)."""
    import os

    from api_routes import links
    from clearline import dashboard_identity as identity

    domain = os.environ.get(identity.DOMAIN_ENV)
    if not domain:
        return None
    return _cognito(
        domain,
        os.environ[identity.CLIENT_ID_ENV],
        os.environ[identity.ISSUER_ENV],
        f"{links().base_url}/dashboard/callback",
    )


@cache
def _cognito(domain: str, client_id: str, issuer: str, redirect_uri: str) -> CognitoSignIn:
    from clearline.dashboard_identity import CognitoSignIn

    return CognitoSignIn(domain, client_id, issuer, redirect_uri)  # keeps the pool's keys


@router.get("/dashboard/sign-in/start", include_in_schema=False)
def start_sign_in() -> Response[str]:
    """To the pool's sign-in page, with a state and a PKCE challenge whose verifier only
    this browser keeps (for ten minutes, in an HttpOnly cookie)."""
    from clearline.dashboard_identity import Attempt

    pool = cognito()
    if pool is None:
        return error_page(
            Refusal(404, "Sign in with a one-time link here.", "resource_missing"), None
        )
    attempt = Attempt.new()
    kept = Cookie(
        SIGN_IN_COOKIE,
        attempt.as_cookie(),
        path=root(),
        secure=_secure(),
        http_only=True,
        max_age=600,
        same_site=SameSite.LAX_MODE,
    )
    return redirect(pool.authorize_url(attempt), [kept])


@router.get("/dashboard/callback", include_in_schema=False)
def sign_in_callback() -> Response[str]:
    from clearline.dashboard_identity import Attempt

    pool = cognito()
    if pool is None:
        return error_page(
            Refusal(404, "Sign in with a one-time link here.", "resource_missing"), None
        )
    attempt = Attempt.from_cookie(_cookie(SIGN_IN_COOKIE))
    try:
        who = pool.identity(query_value("code", 500), query_value("state", 100), attempt)
    except ApiError as error:
        return error_page(error, None)
    session_id, _ = sessions().open_for(
        who.merchant_id, operations=who.operations, person=who.person
    )
    return redirect(f"{root()}/payments", [_session_cookie(session_id), _gone(SIGN_IN_COOKIE)])


@router.get("/dashboard/sign-in", include_in_schema=False)
def sign_in() -> Response[str]:
    token = query_value("token", 100)
    try:
        session_id, _ = sessions().sign_in(token)
    except ApiError as error:
        return error_page(error, None)
    return redirect(f"{root()}/payments", [_session_cookie(session_id)])


def _session_cookie(session_id: str) -> Cookie:
    from clearline.dashboard import SESSION_SECONDS

    return Cookie(
        COOKIE,
        session_id,
        path=root(),
        secure=_secure(),
        http_only=True,
        max_age=SESSION_SECONDS,
        same_site=SameSite.LAX_MODE,
    )


def _gone(name: str) -> Cookie:
    return Cookie(name, "", path=root(), secure=_secure(), http_only=True, max_age=0)


@router.post("/dashboard/sign-out", include_in_schema=False)
@session_form
def sign_out(session: Session, merchant: Merchant, form: dict[str, str]) -> Response[str]:
    session_id = session_cookie_value()
    assert session_id is not None
    sessions().sign_out(session_id)
    return redirect(f"{root()}", [_gone(COOKIE)])


def form_fields() -> dict[str, str]:
    event = router.current_event
    parsed = parse_body(event.decoded_body or "", event.headers.get("content-type"))
    return {k: str(v) for k, v in parsed.items() if isinstance(v, str)}


def forbidden(session: Session) -> Response[str]:
    error = InvalidRequestError(
        "This form was not sent from a page of this dashboard session (its CSRF token is "
        "missing or wrong). Reload the page and try again.",
        code="csrf_token_invalid",
    )
    return render_page(403, "error.html", error=error, session=session)


# ---- payments -------------------------------------------------------------------------------


def compose_query(filters: dict[str, str]) -> str:
    """The filters as one query of the API's search language, which the page shows: what
    the dashboard searches is what `GET /v1/charges/search` would."""
    clauses = [filters["query"]] if filters.get("query") else []
    status = filters.get("status")
    if status == "refunded":
        clauses.append("refunded:'true'")
    elif status in STATUSES:
        clauses.append(f"status:'{status}'")
    for name, op in (("created_from", ">="), ("created_to", "<")):
        if filters.get(name):
            day = dt.date.fromisoformat(filters[name])
            if name == "created_to":
                day += dt.timedelta(days=1)  # to the end of that day
            moment = dt.datetime.combine(day, dt.time(), dt.UTC)
            clauses.append(f"created{op}{int(moment.timestamp())}")
    for name, op in (("amount_min", ">="), ("amount_max", "<=")):
        if filters.get(name):
            clauses.append(f"amount{op}{int(filters[name])}")
    if filters.get("customer"):
        clauses.append(f"customer:'{_quoted(filters['customer'])}'")
    if filters.get("metadata_key"):
        key, value = _quoted(filters["metadata_key"]), _quoted(filters.get("metadata_value", ""))
        clauses.append(f"metadata['{key}']:'{value}'")
    return " AND ".join(clauses)


def _quoted(value: str) -> str:
    if re.search(r"['\"\\]", value):
        raise InvalidRequestError(
            f"Filters cannot contain quotes: {value[:50]}", code="filter_invalid"
        )
    return value


FILTERS = (
    "query",
    "status",
    "created_from",
    "created_to",
    "amount_min",
    "amount_max",
    "customer",
    "metadata_key",
    "metadata_value",
)


@router.get("/dashboard/payments", include_in_schema=False)
@session_page
def payments(session: Session, merchant: Merchant) -> Response[str]:
    from api_routes import services
    from clearline import search

    filters = {name: query_value(name) for name in FILTERS}
    try:
        query = compose_query(filters)
        if query:
            parsed = search.parse_query(query, search.CHARGES)
            found = search.search(
                services().store,
                merchant.id,
                search.CHARGES,
                parsed,
                limit=PAGE_SIZE,
                page=query_value("page", 500) or None,
            )
            charges, next_page = list(found.found), found.next_page
            next_link = _link(filters, page=next_page) if next_page else None
        else:
            listed = services().charges.list(
                merchant,
                limit=PAGE_SIZE,
                starting_after=query_value("after", 100) or None,
                ending_before=None,
            )
            charges = list(listed.items)
            more = listed.has_more and charges
            next_link = _link(filters, after=charges[-1].id) if more else None
    except ValueError as exc:  # a date or an amount that is not one
        return error_page(
            InvalidRequestError(f"Invalid filter: {exc}", code="filter_invalid"), session
        )
    except ApiError as error:
        return render_page(
            error_status(error),
            "payments.html",
            session=session,
            merchant=merchant,
            filters=filters,
            statuses=STATUSES,
            query=None,
            error=error,
            charges=[],
            next_link=None,
        )
    return render_page(
        200,
        "payments.html",
        session=session,
        merchant=merchant,
        filters=filters,
        statuses=STATUSES,
        query=query,
        error=None,
        charges=charges,
        next_link=next_link,
    )


@router.get("/dashboard/payment-intents", include_in_schema=False)
@session_page
def payment_intents(session: Session, merchant: Merchant) -> Response[str]:
    """The merchant's PaymentIntents, newest first: each one's status, and its payment."""
    from api_routes import services

    intents, next_link = newest_first(services().payment_intents.list, merchant, "payment-intents")
    return render_page(
        200,
        "payment_intents.html",
        session=session,
        merchant=merchant,
        intents=intents,
        next_link=next_link,
    )


def _link(filters: dict[str, str], **more: str) -> str:
    asked = {k: v for k, v in {**filters, **more}.items() if v}
    return f"{root()}/payments?{urllib.parse.urlencode(asked)}"


@router.get("/dashboard/payments/<charge_id>", include_in_schema=False)
@session_page
def payment(session: Session, merchant: Merchant, charge_id: str) -> Response[str]:
    from api_routes import services

    try:
        charge = services().charges.retrieve(merchant, charge_id[:100])
    except ApiError as error:
        return error_page(error, session)
    return _payment_page(200, session, merchant, charge, done=_done(merchant, charge))


def _payment_page(
    status: int,
    session: Session,
    merchant: Merchant,
    charge: Charge,
    *,
    done: str | None = None,
    error: Refusal | None = None,
) -> Response[str]:
    from api_routes import services
    from clearline.dashboard import timeline

    return render_page(
        status,
        "payment.html",
        session=session,
        merchant=merchant,
        charge=charge,
        timeline=timeline(services().store, charge),
        refund_reasons=REFUND_REASONS,
        idempotency_key=new_idempotency_key(),
        done=done,
        error=error,
    )


def new_idempotency_key() -> str:
    """A form's key: sending the form twice (a double click, a reload) does it once."""
    return f"dashboard-{secrets.token_urlsafe(18)}"


def _done(merchant: Merchant, charge: Charge) -> str | None:
    """What the action that led here did, said from the stored objects (not the URL)."""
    from pages import format_money

    result, replayed = query_value("done", 100), query_value("replayed", 5) == "true"
    note = " (sent before: this is its first answer)" if replayed else ""
    if result == charge.id and charge.state == "captured":
        return f"Captured {format_money(charge.amount_captured, charge.currency)}{note}."
    refund = next((r for r in charge.refunds if r.id == result), None)
    if result.startswith("re_") and refund is not None:
        amount = format_money(refund.amount, refund.currency)
        return f"Refund {refund.id} of {amount}: {refund.status}{note}."
    return None


REFUND_REASONS = ("requested_by_customer", "duplicate", "fraudulent")


@router.post("/dashboard/payments/<charge_id>/refund", include_in_schema=False)
@session_form
def refund_payment(
    session: Session, merchant: Merchant, form: dict[str, str], charge_id: str
) -> Response[str]:
    from api_routes import create_refund_and_queue
    from clearline.params import RefundCreateParams

    def params(charge: Charge, form: dict[str, str]) -> dict[str, Any]:
        asked: dict[str, Any] = {"charge": charge.id}
        if form.get("amount"):
            asked["amount"] = minor_units(form["amount"], charge.currency)
        if form.get("reason"):
            asked["reason"] = form["reason"]
        return asked

    return _act(
        session,
        merchant,
        form,
        charge_id,
        "/v1/refunds",
        "refund",
        RefundCreateParams,
        create_refund_and_queue,
        params,
    )


@router.post("/dashboard/payments/<charge_id>/capture", include_in_schema=False)
@session_form
def capture_payment(
    session: Session, merchant: Merchant, form: dict[str, str], charge_id: str
) -> Response[str]:
    from api_routes import services
    from clearline.params import ChargeCaptureParams

    def params(charge: Charge, form: dict[str, str]) -> dict[str, Any]:
        if form.get("amount"):
            return {"amount": minor_units(form["amount"], charge.currency)}
        return {}

    return _act(
        session,
        merchant,
        form,
        charge_id,
        f"/v1/charges/{charge_id}/capture",
        "charge",
        ChargeCaptureParams,
        lambda who, capture, _: services().charges.capture(who, charge_id, capture),
        params,
    )


def _act(
    session: Session,
    merchant: Merchant,
    form: dict[str, str],
    charge_id: str,
    path: str,
    root_object: str,
    model: type[Params],
    operation: Callable[[Caller, Any, str], Model],
    params: Callable[[Charge, dict[str, str]], dict[str, Any]],
) -> Response[str]:
    """A payment's action. Success goes back to the payment's page, which says what
    happened; a refusal is shown on the page, having changed nothing."""
    from api_routes import request_id, services

    try:
        charge = services().charges.retrieve(merchant, charge_id[:100])
    except ApiError as error:
        return error_page(error, session)
    stored = run_form(
        session,
        merchant,
        form,
        model,
        lambda: params(charge, form),
        operation,
        root_object,
        path,
        rides=True,
    )
    if isinstance(stored, Refusal):
        charge = services().charges.retrieve(merchant, charge.id)
        return _payment_page(stored.status, session, merchant, charge, error=stored)
    replayed = "&replayed=true" if stored.request_id != request_id() else ""
    return redirect(f"{root()}/payments/{charge.id}?done={stored.body['id']}{replayed}")


def minor_units(text: str, currency: str) -> int:
    """An amount typed in major units ("12.50") as the currency's minor units (1250)."""
    from decimal import Decimal, InvalidOperation

    from pages import currency_exponent

    exponent = currency_exponent(currency)
    try:
        amount = Decimal(text.strip().replace(",", ""))
    except InvalidOperation:
        amount = Decimal("NaN")
    scaled = amount * 10**exponent if amount.is_finite() else amount
    if not scaled.is_finite() or scaled != scaled.to_integral_value() or scaled <= 0:
        places = f"at most {exponent} decimal places" if exponent else "no decimal places"
        raise InvalidRequestError(
            f"Invalid amount: {text[:30]!r}. Type a positive amount in "
            f"{currency.upper()}, with {places}.",
            param="amount",
            code="parameter_invalid",
        )
    return int(scaled)


# ---- balance and payouts --------------------------------------------------------------------


def _history(merchant: Merchant) -> tuple[Balance, BalanceHistory]:
    from api_routes import services
    from clearline.balance import merchant_balance
    from clearline.dashboard import balance_history

    found = merchant_balance(
        services().store, merchant.id, services().shards, merchant.settlement_currencies
    )
    totals: dict[str, int] = {}
    for entry in (*found.available, *found.pending):
        totals[entry.currency] = totals.get(entry.currency, 0) + entry.amount
    return found, balance_history(services().store, merchant.id, totals, time.time())


@router.get("/dashboard/balance", include_in_schema=False)
@session_page
def balance_page(session: Session, merchant: Merchant) -> Response[str]:
    from api_routes import services

    found, history = _history(merchant)
    # Each chart is an image of its own, inlined: drawn from the history the table shows, it
    # runs and fetches nothing, and its styles stay out of the page's.
    charts = {
        currency: "data:image/svg+xml;base64,"
        + base64.b64encode(balance_svg(history.days, amounts, currency).encode()).decode()
        for currency, amounts in history.amounts.items()
    }
    payouts, next_link = newest_first(services().payouts.list, merchant, "balance")
    quotes = services().fx_quotes.list(merchant, limit=10, starting_after=None, ending_before=None)
    return render_page(
        200,
        "balance.html",
        session=session,
        merchant=merchant,
        balance=found,
        history=history,
        charts=charts,
        payouts=payouts,
        quotes=quotes.items,
        next_link=next_link,
    )


def balance_svg(days: list[dt.date], amounts: list[int], currency: str) -> str:
    import pygal
    from pygal.style import Style

    from pages import currency_exponent

    exponent = currency_exponent(currency)
    style = Style(
        background="#ffffff",
        plot_background="#ffffff",
        foreground="#4f566b",
        foreground_strong="#1a1f36",
        foreground_subtle="#e3e8ee",
        colors=("#3c4fe0",),
        font_family="system-ui, sans-serif",
    )
    chart = pygal.Line(
        js=[],  # no script: the browser fetches nothing for it
        style=style,
        width=800,
        height=260,
        fill=True,
        show_legend=False,
        show_minor_x_labels=False,
        dots_size=2,
        margin=12,
        truncate_label=-1,
    )
    chart.x_labels = [day.strftime("%d %b") for day in days]
    chart.x_labels_major = chart.x_labels[::7]
    chart.value_formatter = lambda value: f"{value:,.{exponent}f} {currency.upper()}"
    chart.add(currency.upper(), [amount / 10**exponent for amount in amounts])
    # pygal writes its settings in a script, for tooltips it would load from elsewhere; an
    # image runs no script, and this one has none.
    return re.sub(r"<script.*?</script>", "", str(chart.render(is_unicode=True)), flags=re.S)


@router.get("/dashboard/payouts/<payout_id>", include_in_schema=False)
@session_page
def payout_page(session: Session, merchant: Merchant, payout_id: str) -> Response[str]:
    from api_routes import services
    from clearline import listing
    from clearline.models import BalanceTransaction

    try:
        payout = services().payouts.retrieve(merchant, payout_id[:100])
    except ApiError as error:
        return error_page(error, session)
    covered = listing.page(
        services().store,
        merchant.id,
        "txn",
        limit=100,
        starting_after=query_value("after", 100) or None,
        ending_before=None,
        facets={"payout": [payout.id]},
    ).of(BalanceTransaction.from_item)
    more = covered.has_more and covered.items
    return render_page(
        200,
        "payout.html",
        session=session,
        merchant=merchant,
        payout=payout,
        transactions=covered.items,
        next_link=f"{root()}/payouts/{payout.id}?after={covered.items[-1].id}" if more else None,
    )


@router.get("/dashboard/static/<name>", include_in_schema=False)
def static(name: str) -> Response[str]:
    kinds = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
    if name not in kinds:
        return Response(status_code=404, content_type="text/plain", body="not found")
    return Response(
        status_code=200,
        content_type=f"{kinds[name]}; charset=utf-8",
        body=(STATIC / name).read_text(),
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )
