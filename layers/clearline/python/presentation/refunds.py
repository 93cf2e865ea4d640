"""The refund object."""

from __future__ import annotations

from typing import Any

from clearline.models import Refund


def render_refund(refund: Refund) -> dict[str, Any]:
    rendered: dict[str, Any] = {
        "id": refund.id,
        "object": "refund",
        "amount": refund.amount,
        "balance_transaction": refund.balance_transaction,
        "charge": refund.charge,
        "created": refund.created,
        "currency": refund.currency,
        "metadata": dict(refund.metadata),
        "payment_intent": refund.payment_intent,
        "reason": refund.reason,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": refund.status,
        "transfer_reversal": None,
    }
    # Stripe's schema has these only when they apply: absent, never null.
    if refund.description is not None:
        rendered["description"] = refund.description
    if refund.failure_reason is not None:
        rendered["failure_reason"] = refund.failure_reason
    if refund.failure_balance_transaction is not None:
        rendered["failure_balance_transaction"] = refund.failure_balance_transaction
    return rendered
