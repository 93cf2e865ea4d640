"""The dashboard's Developers pages: webhook endpoints (create, disable, roll the signing
secret), the merchant's events with every delivery attempt, and redelivering one.

Each form writes as its API request would (`run_once`: the same validation, operation and
idempotency record, keyed by the form's key), by the session's person. A signing secret is
shown once, in the page that answers its creation or its roll, and never again.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from dashboard_routes import (
    PAGE_SIZE,
    Refusal,
    current_session,
    error_page,
    new_idempotency_key,
    query_value,
    redirect,
    refusal,
    render_page,
    root,
    run_form,
    session_form,
    session_page,
)

from clearline.errors import ApiError

if TYPE_CHECKING:
    from clearline.dashboard import Session
    from clearline.merchants import Merchant
    from clearline.webhooks import Attempt

router = Router()

# What "send a test event" offers, besides each endpoint's own enabled events.
TEST_EVENT_TYPES = (
    "charge.succeeded",
    "charge.refunded",
    "charge.dispute.created",
    "payment_intent.succeeded",
    "payout.paid",
)


@router.get("/dashboard/developers", include_in_schema=False)
def developers_page() -> Response[str]:
    return developers(200)


def developers(
    status: int,
    *,
    created_secret: str | None = None,
    created_key: str | None = None,
    tested: Attempt | None = None,
    tested_type: str | None = None,
    error: Refusal | None = None,
) -> Response[str]:
    from api_routes import services
    from clearline import listing
    from clearline.models import Event

    signed_in = current_session()
    if signed_in is None:
        return redirect(f"{root()}")
    session, merchant = signed_in
    endpoints = services().webhook_endpoints.list(
        merchant, limit=100, starting_after=None, ending_before=None
    )
    events = listing.page(
        services().store,
        merchant.id,
        "evt",
        limit=PAGE_SIZE,
        starting_after=query_value("after", 100) or None,
        ending_before=None,
    )
    event_ids, store = [str(item["id"]) for item in events.items], services().store
    delivered = dict(
        zip(event_ids, listing.side_by_side(lambda e: _delivered(store, e), event_ids), strict=True)
    )
    shown = [Event.from_item(item) for item in events.items]
    more = events.has_more and shown
    from clearline.merchants import KEY_OVERLAPS, api_keys
    from clearline.request_log import RequestLog

    requests = RequestLog(services().store).recent(merchant.id)
    return render_page(
        status,
        "developers.html",
        session=session,
        merchant=merchant,
        endpoints=endpoints.items,
        events=shown,
        delivered=delivered,
        requests=requests,
        keys=api_keys(services().store, merchant.id, time.time()),
        overlaps=KEY_OVERLAPS,
        created_key=created_key,
        tested=tested,
        tested_type=tested_type,
        test_types=TEST_EVENT_TYPES,
        created_secret=created_secret,
        error=error,
        done=_done(),
        idempotency_key=new_idempotency_key(),
        next_link=f"{root()}/developers?after={shown[-1].id}" if more else None,
    )


def _done() -> str | None:
    said = {
        "disabled": "The endpoint is disabled: nothing is delivered to it.",
        "enabled": "The endpoint is enabled.",
    }
    return said.get(query_value("done", 20))


def _delivered(store: Any, event_id: str) -> str:
    """How an event's deliveries stand: none tried, all failed so far, or one succeeded."""
    from clearline.webhooks import attempts_for

    attempts = attempts_for(store, event_id)
    if not attempts:
        return "none"
    return (
        "delivered" if any(200 <= int(a.get("status") or 0) < 300 for a in attempts) else "failing"
    )


@router.post("/dashboard/developers/endpoints", include_in_schema=False)
@session_form
def create_endpoint(session: Session, merchant: Merchant, form: dict[str, str]) -> Response[str]:
    from api_routes import services
    from clearline.webhooks import WebhookEndpointCreateParams

    events = [e.strip() for e in form.get("enabled_events", "*").split(",") if e.strip()]
    params: dict[str, Any] = {"url": form.get("url", "").strip(), "enabled_events": events}
    if form.get("description"):
        params["description"] = form["description"]
    stored = run_form(
        session,
        merchant,
        form,
        WebhookEndpointCreateParams,
        lambda: params,
        lambda who, endpoint, _: services().webhook_endpoints.create(who, endpoint),
        "endpoint",
        "/v1/webhook_endpoints",
    )
    if isinstance(stored, Refusal):
        return developers(stored.status, error=stored)
    return developers(201, created_secret=stored.body.get("secret"))


@router.post("/dashboard/developers/endpoints/<endpoint_id>/<action>", include_in_schema=False)
@session_form
def change_endpoint(
    session: Session, merchant: Merchant, form: dict[str, str], endpoint_id: str, action: str
) -> Response[str]:
    from api_routes import services
    from clearline.webhooks import WebhookEndpointUpdateParams

    endpoints = services().webhook_endpoints
    if action in ("disable", "enable"):
        stored = run_form(
            session,
            merchant,
            form,
            WebhookEndpointUpdateParams,
            lambda: {"disabled": action == "disable"},
            lambda who, update, _: endpoints.update(who, endpoint_id, update),
            "endpoint",
            f"/v1/webhook_endpoints/{endpoint_id}",
        )
    elif action == "roll-secret":
        stored = run_form(
            session,
            merchant,
            form,
            WebhookEndpointUpdateParams,
            dict,
            lambda who, _, __: endpoints.roll_secret(who, endpoint_id),
            "endpoint",
            f"/dashboard/developers/endpoints/{endpoint_id}/roll-secret",
        )
    elif action == "test":
        return _send_test(session, merchant, endpoint_id, form.get("type", ""))
    else:
        return error_page(Refusal(400, f"Unknown action: {action[:30]}"), session)
    if isinstance(stored, Refusal):
        if stored.status == 404:
            return error_page(stored, session)
        return developers(stored.status, error=stored)
    if action == "roll-secret":
        return developers(200, created_secret=stored.body.get("secret"))
    return redirect(f"{root()}/developers?done={action}d")


def _send_test(session: Session, merchant: Merchant, endpoint_id: str, kind: str) -> Response[str]:
    """A made-up event of the chosen type, POSTed now to that endpoint, signed as any
    delivery; the page shows how the receiver answered."""
    from api_routes import services
    from clearline.egress import EgressPolicy
    from clearline.webhooks import Dispatcher

    dispatcher = Dispatcher(
        services().store,
        secrets=services().secret_box,
        egress=EgressPolicy.from_settings(services().settings),
        timeout_seconds=10,  # within the API's 29 s
    )
    try:
        attempt = dispatcher.send_test(merchant, endpoint_id[:100], kind or "charge.succeeded")
    except ApiError as error:
        shown = refusal(error)
        if shown.status == 404:
            return error_page(shown, session)
        return developers(shown.status, error=shown)
    return developers(200, tested=attempt, tested_type=kind or "charge.succeeded")


# ---- API keys -------------------------------------------------------------------------------


@router.post("/dashboard/developers/keys/roll", include_in_schema=False)
@session_form
def roll_key(session: Session, merchant: Merchant, form: dict[str, str]) -> Response[str]:
    from api_routes import request_id, services
    from clearline.audit import Caller
    from clearline.merchants import KEY_OVERLAPS, roll_secret_key

    overlap = form.get("overlap", "")
    if overlap not in KEY_OVERLAPS:
        shown = Refusal(
            400, f"Choose how long the old key keeps working: {', '.join(KEY_OVERLAPS)}."
        )
        return developers(400, error=shown)
    try:
        key = roll_secret_key(
            services().store,
            Caller(merchant, request_id(), actor=session.actor),
            KEY_OVERLAPS[overlap],
        )
    except ApiError as error:
        return developers(refusal(error).status, error=refusal(error))
    return developers(200, created_key=key)


# ---- the request log ------------------------------------------------------------------------


@router.get("/dashboard/logs", include_in_schema=False)
def request_lookup() -> Response[str]:
    """The lookup form's answer: the request asked for, by its Request-Id."""
    asked = query_value("request_id", 100)
    return redirect(f"{root()}/logs/{asked}" if asked else f"{root()}/developers#requests")


@router.get("/dashboard/logs/<request_id>", include_in_schema=False)
@session_page
def request_page(session: Session, merchant: Merchant, request_id: str) -> Response[str]:
    from api_routes import services
    from clearline.request_log import RequestLog

    found = RequestLog(services().store).find(merchant.id, request_id[:100])
    if found is None:
        missing = (
            f"No request {request_id[:100]} in your request log. It keeps, for 30 days, every "
            "request that changed something or was refused."
        )
        return error_page(Refusal(404, missing, "resource_missing"), session)
    return render_page(200, "request.html", session=session, merchant=merchant, request=found)


# ---- events and their deliveries ------------------------------------------------------------


@router.get("/dashboard/developers/events/<event_id>", include_in_schema=False)
@session_page
def event_page(session: Session, merchant: Merchant, event_id: str) -> Response[str]:
    done = "Queued for delivery again." if query_value("done", 20) == "redelivered" else None
    return _event_page(200, session, merchant, event_id, done=done)


def _event_page(
    status: int,
    session: Session,
    merchant: Merchant,
    event_id: str,
    *,
    done: str | None = None,
    error: Refusal | None = None,
) -> Response[str]:
    from api_routes import links, services
    from clearline import listing
    from clearline.dashboard import delivery_attempts
    from clearline.models import Event
    from presentation.events import render_event

    try:
        item = listing.get_owned(services().store, merchant.id, event_id[:100], "evt")
    except ApiError as failure:
        return error_page(failure, session)
    event = Event.from_item(item)
    return render_page(
        status,
        "event.html",
        session=session,
        merchant=merchant,
        event=event,
        # What each delivery sent: this body, signed (Stripe-Signature) at the moment of sending.
        payload=json.dumps(render_event(event, links()), indent=2),
        attempts=delivery_attempts(services().store, event.id),
        idempotency_key=new_idempotency_key(),
        done=done,
        error=error,
    )


@router.post("/dashboard/developers/events/<event_id>/redeliver", include_in_schema=False)
@session_form
def redeliver(
    session: Session, merchant: Merchant, form: dict[str, str], event_id: str
) -> Response[str]:
    from api_routes import request_id, services
    from clearline.audit import Caller
    from clearline.idempotency import check_key
    from clearline.webhooks import Redeliveries

    try:
        key = check_key(form.get("idempotency_key"))
        who = Caller(merchant, request_id(), actor=session.actor)
        Redeliveries(services().store, queue_for_delivery).redeliver(who, event_id[:100], key)
    except ApiError as error:
        shown = refusal(error)
        if shown.status == 404:
            return error_page(shown, session)
        return _event_page(shown.status, session, merchant, event_id, error=shown)
    return redirect(f"{root()}/developers/events/{event_id}?done=redelivered")


def queue_for_delivery(event: dict[str, Any]) -> None:
    """The event on the webhook delivery queue, as the relay's rule puts it, marked to be
    delivered even to endpoints that have it."""
    from api_routes import _sqs, links
    from clearline.topology import EVENT_SOURCE, WEBHOOK_QUEUE, queue_env_var
    from presentation.outbox import webhook_detail

    _sqs().send_message(
        QueueUrl=os.environ[queue_env_var(WEBHOOK_QUEUE.key)],
        MessageBody=json.dumps(
            {
                "source": EVENT_SOURCE,
                "detail-type": event["type"],
                "detail": {**webhook_detail(event, links()), "force": True},
            }
        ),
    )
