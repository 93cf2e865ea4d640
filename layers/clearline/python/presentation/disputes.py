"""The dispute object."""

from __future__ import annotations

from typing import Any

from clearline.models import Dispute
from presentation.balance import render_balance_transaction

TEXT_EVIDENCE = (
    "access_activity_log", "billing_address", "cancellation_policy_disclosure",
    "cancellation_rebuttal", "customer_email_address", "customer_name", "customer_purchase_ip",
    "duplicate_charge_explanation", "duplicate_charge_id", "product_description",
    "refund_policy_disclosure", "refund_refusal_explanation", "service_date",
    "shipping_address", "shipping_carrier", "shipping_date", "shipping_tracking_number",
    "uncategorized_text",
)  # fmt: skip
# Evidence that is a file upload: Clearline has no files, so these are always null.
FILE_EVIDENCE = (
    "cancellation_policy", "customer_communication", "customer_signature",
    "duplicate_charge_documentation", "receipt", "refund_policy", "service_documentation",
    "shipping_documentation", "uncategorized_file",
)  # fmt: skip


def render_dispute(dispute: Dispute) -> dict[str, Any]:
    evidence: dict[str, Any] = {name: dispute.evidence.get(name) for name in TEXT_EVIDENCE}
    evidence |= dict.fromkeys(FILE_EVIDENCE)
    evidence["enhanced_evidence"] = {}
    details = dispute.evidence_details
    # The withdrawal first, then the reinstatement, as Stripe lists them.
    transactions = sorted(dispute.balance_transactions, key=lambda t: (t.created, t.amount))
    return {
        "id": dispute.id,
        "object": "dispute",
        "amount": dispute.amount,
        "balance_transactions": [render_balance_transaction(t) for t in transactions],
        "charge": dispute.charge,
        "created": dispute.created,
        "currency": dispute.currency,
        "enhanced_eligibility_types": [],
        "evidence": evidence,
        "evidence_details": {
            "due_by": details.due_by,
            "enhanced_eligibility": {},
            "has_evidence": details.has_evidence,
            "past_due": details.past_due,
            "submission_count": details.submission_count,
        },
        "is_charge_refundable": dispute.is_charge_refundable,
        "livemode": False,
        "metadata": dict(dispute.metadata),
        "network_reason_code": dispute.network_reason_code,
        "payment_intent": dispute.payment_intent,
        "payment_method_details": {
            "card": {
                "brand": dispute.card_brand,
                "case_type": "inquiry" if dispute.status.startswith("warning_") else "chargeback",
                "network_reason_code": dispute.network_reason_code,
            },
            "type": "card",
        },
        "reason": dispute.reason,
        "status": dispute.status,
    }
