"""The dashboard's Operations page, for an operator's session only (any other is told there
is no such page): the settlement files reconciled and their mismatches, with resolving an
amount mismatch by an adjusting journal; the last `ledger verify` and a button to run it;
the operations the resolver has left pending; and the exchange rates conversions use.

It reads the platform's records through the same store, and writes through the same
transitions, audited under the operator's session.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from dashboard_routes import (
    Refusal,
    error_page,
    operators_only,
    query_value,
    redirect,
    refusal,
    render_page,
    root,
    session_form,
    session_page,
)

from clearline.errors import ApiError

if TYPE_CHECKING:
    from clearline.audit import Caller
    from clearline.dashboard import Session
    from clearline.merchants import Merchant

router = Router()

DONE = {
    "redriven": "{moved} dead letter(s) moved back to their queue, to be tried again.",
    "verified": "The ledger was checked; its result is below.",
    "resolved": "Resolved by an adjusting journal: what the processor moved is booked, and "
    "what we cannot match to a movement of ours goes to reconciliation_adjustments.",
}


def _caller(session: Session, merchant: Merchant) -> Caller:
    from api_routes import request_id
    from clearline.audit import Caller

    return Caller(merchant, request_id(), actor=session.actor)


@router.get("/dashboard/operations", include_in_schema=False)
@session_page
@operators_only
def operations_page(session: Session, merchant: Merchant) -> Response[str]:
    done = DONE.get(query_value("done", 20), "").format(moved=query_value("moved", 5))
    return _operations_page(200, session, merchant, done=done or None)


def _operations_page(
    status: int,
    session: Session,
    merchant: Merchant,
    *,
    done: str | None = None,
    error: Refusal | None = None,
) -> Response[str]:
    from api_routes import services
    from clearline import operations
    from clearline.fx import LATEST_SK, MAX_RATE_AGE_SECONDS, RATES_PK
    from clearline.reconciliation import RESOLVABLE, Reconciler

    store = services().store
    found = operations.mismatches(store)
    rates = store.get(RATES_PK, LATEST_SK)
    now = time.time()
    return render_page(
        status,
        "operations.html",
        session=session,
        merchant=merchant,
        reports=operations.reconciliation_reports(store),
        mismatches=found,
        resolutions=Reconciler(store).resolutions([m["id"] for m in found]),
        resolvable=RESOLVABLE,
        verify=operations.last_ledger_verify(store),
        pending=operations.pending_operations(store, now),
        queues=queue_depths(),
        rates=rates,
        rates_age=int(now - int(rates["as_of"])) if rates else None,
        rates_bound=MAX_RATE_AGE_SECONDS,
        done=done,
        error=error,
    )


@router.post("/dashboard/operations/ledger-verify", include_in_schema=False)
@session_form
@operators_only
def run_ledger_verify(session: Session, merchant: Merchant, form: dict[str, str]) -> Response[str]:
    from api_routes import services
    from clearline import operations

    operations.run_ledger_verify(services().store, _caller(session, merchant))
    return redirect(f"{root()}/operations?done=verified#ledger")


@router.post("/dashboard/operations/mismatches/<mismatch_id>/resolve", include_in_schema=False)
@session_form
@operators_only
def resolve_mismatch(
    session: Session, merchant: Merchant, form: dict[str, str], mismatch_id: str
) -> Response[str]:
    from api_routes import services
    from clearline.reconciliation import Reconciler

    note = form.get("note", "").strip()
    if not note:
        shown = Refusal(400, "Say why it is resolved this way: the note is kept with it.")
        return _operations_page(400, session, merchant, error=shown)
    try:
        Reconciler(services().store, services().shards).resolve(
            mismatch_id[:100], _caller(session, merchant), note
        )
    except ApiError as failed:
        shown = refusal(failed)
        if shown.status == 404:
            return error_page(shown, session)
        return _operations_page(shown.status, session, merchant, error=shown)
    return redirect(f"{root()}/operations?done=resolved#mismatches")


@router.post("/dashboard/operations/view-as", include_in_schema=False)
@session_form
@operators_only
def view_as(session: Session, merchant: Merchant, form: dict[str, str]) -> Response[str]:
    """An operator sees another merchant's views: the session's merchant changes (audited)."""
    from dashboard_routes import session_cookie_value, sessions

    from api_routes import services
    from clearline.merchants import get_merchant

    asked = form.get("merchant", "").strip()[:64]
    if get_merchant(services().store, asked) is None:
        shown = Refusal(404, f"No merchant {asked or '(none given)'}.", "resource_missing")
        return _operations_page(404, session, merchant, error=shown)
    session_id = session_cookie_value()
    assert session_id is not None  # session_form found the session by it
    sessions().view_as(session_id, asked)
    return redirect(f"{root()}/payments")


# ---- queues ---------------------------------------------------------------------------------

REDRIVE_MOST = 100  # messages moved per press: the page answers within the API's time


@dataclass(frozen=True)
class QueueDepth:
    key: str
    name: str
    waiting: int
    in_flight: int
    dead: int | None  # None: the queue has no dead-letter queue


def queue_depths() -> list[QueueDepth]:
    """Every queue's messages waiting and in flight, and its dead letters (approximate, as
    SQS counts them)."""
    from api_routes import _sqs
    from clearline.topology import TOPOLOGY, dlq_env_var, queue_env_var

    waiting, in_flight = "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"

    def counts(url: str) -> dict[str, int]:
        answer = _sqs().get_queue_attributes(QueueUrl=url, AttributeNames=[waiting, in_flight])
        return {name: int(answer["Attributes"].get(name, 0)) for name in (waiting, in_flight)}

    depths = []
    for queue in TOPOLOGY.queues:
        url, dlq = os.environ.get(queue_env_var(queue.key)), os.environ.get(dlq_env_var(queue.key))
        if url is None:
            continue
        here = counts(url)
        depths.append(
            QueueDepth(
                queue.key,
                queue.name,
                here[waiting],
                here[in_flight],
                counts(dlq)[waiting] if dlq else None,
            )
        )
    return depths


@router.post("/dashboard/operations/queues/<queue_key>/redrive", include_in_schema=False)
@session_form
@operators_only
def redrive(
    session: Session, merchant: Merchant, form: dict[str, str], queue_key: str
) -> Response[str]:
    """Move a queue's dead letters back to it. Each is sent before it is deleted: a crash
    between the two leaves it in both, and every consumer takes a message twice safely."""
    from api_routes import _sqs, logger
    from clearline.topology import dlq_env_var, queue_env_var

    source, dlq = os.environ.get(queue_env_var(queue_key)), os.environ.get(dlq_env_var(queue_key))
    if source is None or dlq is None:
        return error_page(Refusal(404, f"No queue {queue_key[:40]} with dead letters."), session)
    moved = 0
    while moved < REDRIVE_MOST:
        batch = _sqs().receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        messages = batch.get("Messages", [])
        if not messages:
            break
        for message in messages:
            _sqs().send_message(QueueUrl=source, MessageBody=message["Body"])
            _sqs().delete_message(QueueUrl=dlq, ReceiptHandle=message["ReceiptHandle"])
            moved += 1
    logger.info("redrive", extra={"queue": queue_key, "moved": moved, "by": session.actor})
    return redirect(f"{root()}/operations?done=redriven&moved={moved}#queues")
