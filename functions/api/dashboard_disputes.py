"""The dashboard's Disputes and Reviews pages: disputes with their due dates, the evidence
form (pre-filled from the charge, as the dispute's evidence starts), accepting a dispute;
and the open reviews, approved or refunded.

Each form writes as its API request would (`run_once`), by the session's person, with the
form's idempotency key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from dashboard_routes import (
    Refusal,
    error_page,
    new_idempotency_key,
    newest_first,
    query_value,
    redirect,
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

router = Router()

NEEDS_RESPONSE = ("needs_response", "warning_needs_response")
# The evidence form's fields: those a merchant fills most, in the order they are asked.
EVIDENCE_FIELDS = (
    ("product_description", "Product or service description", True),
    ("customer_name", "Customer name", False),
    ("customer_email_address", "Customer email", False),
    ("billing_address", "Billing address", True),
    ("shipping_address", "Shipping address", True),
    ("shipping_carrier", "Shipping carrier", False),
    ("shipping_tracking_number", "Tracking number", False),
    ("shipping_date", "Shipping date", False),
    ("service_date", "Service date", False),
    ("refund_policy_disclosure", "How the refund policy was shown", True),
    ("uncategorized_text", "Anything else", True),
)


@router.get("/dashboard/disputes", include_in_schema=False)
@session_page
def disputes_page(session: Session, merchant: Merchant) -> Response[str]:
    from api_routes import services

    disputes, next_link = newest_first(services().disputes.list, merchant, "disputes")
    return render_page(
        200,
        "disputes.html",
        session=session,
        merchant=merchant,
        needing_response=[d for d in disputes if d.status in NEEDS_RESPONSE],
        others=[d for d in disputes if d.status not in NEEDS_RESPONSE],
        next_link=next_link,
    )


@router.get("/dashboard/disputes/<dispute_id>", include_in_schema=False)
@session_page
def dispute_page(session: Session, merchant: Merchant, dispute_id: str) -> Response[str]:
    said = {
        "submitted": "Evidence submitted. The card network decides; you will see the outcome here.",
        "saved": "Evidence saved, not submitted yet.",
        "accepted": "Dispute accepted: it is closed as lost.",
    }
    return _dispute_page(200, session, merchant, dispute_id, done=said.get(query_value("done", 20)))


def _dispute_page(
    status: int,
    session: Session,
    merchant: Merchant,
    dispute_id: str,
    *,
    done: str | None = None,
    error: Refusal | None = None,
    typed: dict[str, str] | None = None,
) -> Response[str]:
    from api_routes import services

    try:
        dispute = services().disputes.retrieve(merchant, dispute_id[:100])
    except ApiError as failure:
        return error_page(failure, session)
    return render_page(
        status,
        "dispute.html",
        session=session,
        merchant=merchant,
        dispute=dispute,
        open=dispute.status in NEEDS_RESPONSE,
        fields=EVIDENCE_FIELDS,
        # What the form shows: what was typed, when it was refused; else the evidence so
        # far, which starts from the charge (its description, email, addresses).
        values=typed if typed is not None else dict(dispute.evidence),
        idempotency_key=new_idempotency_key(),
        done=done,
        error=error,
    )


@router.post("/dashboard/disputes/<dispute_id>/evidence", include_in_schema=False)
@session_form
def submit_evidence(
    session: Session, merchant: Merchant, form: dict[str, str], dispute_id: str
) -> Response[str]:
    from api_routes import services
    from clearline.params import DisputeUpdateParams

    evidence = {name: form.get(name, "") for name, _, _ in EVIDENCE_FIELDS}
    submit = form.get("submit") != "false"
    stored = run_form(
        session,
        merchant,
        form,
        DisputeUpdateParams,
        lambda: {"evidence": evidence, "submit": submit},
        lambda who, update, _: services().disputes.update(who, dispute_id[:100], update),
        "dispute",
        f"/v1/disputes/{dispute_id}",
    )
    if isinstance(stored, Refusal):
        if stored.status == 404:
            return error_page(stored, session)
        return _dispute_page(
            stored.status, session, merchant, dispute_id, error=stored, typed=evidence
        )
    done = "submitted" if submit else "saved"
    return redirect(f"{root()}/disputes/{dispute_id}?done={done}")


@router.post("/dashboard/disputes/<dispute_id>/accept", include_in_schema=False)
@session_form
def accept_dispute(
    session: Session, merchant: Merchant, form: dict[str, str], dispute_id: str
) -> Response[str]:
    from api_routes import services
    from clearline.params import DisputeCloseParams

    stored = run_form(
        session,
        merchant,
        form,
        DisputeCloseParams,
        dict,
        lambda who, _, __: services().disputes.close(who, dispute_id[:100]),
        "dispute",
        f"/v1/disputes/{dispute_id}/close",
    )
    if isinstance(stored, Refusal):
        if stored.status == 404:
            return error_page(stored, session)
        return _dispute_page(stored.status, session, merchant, dispute_id, error=stored)
    return redirect(f"{root()}/disputes/{dispute_id}?done=accepted")


# ---- reviews --------------------------------------------------------------------------------


@router.get("/dashboard/reviews", include_in_schema=False)
@session_page
def reviews_page(session: Session, merchant: Merchant) -> Response[str]:
    said = {"approved": "Review approved.", "refunded": "Payment refunded; its review is closed."}
    return _reviews_page(200, session, merchant, done=said.get(query_value("done", 20)))


def _reviews_page(
    status: int,
    session: Session,
    merchant: Merchant,
    *,
    done: str | None = None,
    error: Refusal | None = None,
) -> Response[str]:
    from api_routes import services

    reviews, next_link = newest_first(services().reviews.list, merchant, "reviews")
    charges = services().charges.retrieve_many(merchant, [r.charge for r in reviews])
    return render_page(
        status,
        "reviews.html",
        session=session,
        merchant=merchant,
        reviews=reviews,
        charges=charges,
        idempotency_key=new_idempotency_key(),
        done=done,
        error=error,
        next_link=next_link,
    )


@router.post("/dashboard/reviews/<review_id>/<action>", include_in_schema=False)
@session_form
def close_review(
    session: Session, merchant: Merchant, form: dict[str, str], review_id: str, action: str
) -> Response[str]:
    from api_routes import create_refund_and_queue, services
    from clearline.params import RefundCreateParams, ReviewApproveParams

    try:
        review = services().reviews.retrieve(merchant, review_id[:100])
    except ApiError as error:
        return error_page(error, session)
    if action == "approve":
        stored = run_form(
            session,
            merchant,
            form,
            ReviewApproveParams,
            dict,
            lambda who, _, __: services().reviews.approve(who, review.id),
            "review",
            f"/v1/reviews/{review.id}/approve",
        )
    elif action == "refund":  # Stripe's "refund" on a review: the whole payment, as fraud
        stored = run_form(
            session,
            merchant,
            form,
            RefundCreateParams,
            lambda: {"charge": review.charge, "reason": "fraudulent"},
            create_refund_and_queue,
            "refund",
            "/v1/refunds",
            rides=True,
        )
    else:
        return error_page(Refusal(400, f"Unknown action: {action[:30]}"), session)
    if isinstance(stored, Refusal):
        return _reviews_page(stored.status, session, merchant, error=stored)
    done = "approved" if action == "approve" else "refunded"
    return redirect(f"{root()}/reviews?done={done}")
