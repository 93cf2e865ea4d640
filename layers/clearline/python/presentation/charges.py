"""The charge object."""

from __future__ import annotations

from typing import Any

from clearline.models import CardDetails, Charge, Outcome
from presentation.links import Links
from presentation.lists import list_object
from presentation.refunds import render_refund

# A charge embeds the first page of its refunds, as Stripe's does.
EMBEDDED_REFUNDS = 10
DEFAULT_DESCRIPTOR = "CLEARLINE"


def _card_details(card: CardDetails) -> dict[str, Any]:
    checks = card.checks.model_dump() if card.checks else None
    return {
        "brand": card.brand,
        "checks": checks,
        "country": card.country,
        "exp_month": card.exp_month,
        "exp_year": card.exp_year,
        "fingerprint": card.fingerprint,
        "funding": card.funding,
        "installments": None,
        "last4": card.last4,
        "mandate": None,
        "network": card.network or card.brand,
        "network_token": None,
        "three_d_secure": None,
        "wallet": None,
    }


def _source(charge: Charge, card: CardDetails) -> dict[str, Any]:
    """The card charged, as the legacy `source` field shows it."""
    checks = card.checks or None
    return {
        "id": charge.payment_method_id,
        "object": "card",
        "address_city": None,
        "address_country": None,
        "address_line1": None,
        "address_line1_check": checks.address_line1_check if checks else None,
        "address_line2": None,
        "address_state": None,
        "address_zip": None,
        "address_zip_check": checks.address_postal_code_check if checks else None,
        "brand": card.brand.title() if card.brand != "amex" else "American Express",
        "country": card.country,
        "customer": charge.customer,
        "cvc_check": checks.cvc_check if checks else None,
        "dynamic_last4": None,
        "exp_month": card.exp_month,
        "exp_year": card.exp_year,
        "fingerprint": card.fingerprint,
        "funding": card.funding,
        "last4": card.last4,
        "metadata": {},
        "name": None,
        "tokenization_method": None,
        "wallet": None,
    }


def _outcome(outcome: Outcome) -> dict[str, Any]:
    """Stripe's outcome: `rule` only when a rule decided the payment and `risk_score` only
    when the payment was scored (neither is ever null)."""
    shown = outcome.model_dump()
    for optional in ("rule", "risk_score"):
        if shown.get(optional) is None:
            shown.pop(optional, None)
    return shown


def render_charge(charge: Charge, links: Links) -> dict[str, Any]:
    status = charge.status
    refunded = charge.total_refunded
    refunds = [render_refund(r) for r in charge.refunds]
    card = charge.card
    return {
        "id": charge.id,
        "object": "charge",
        "amount": charge.amount,
        "amount_captured": charge.amount_captured,
        "amount_refunded": refunded,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": charge.balance_transaction,
        "billing_details": {
            "address": None,
            "email": None,
            "name": None,
            "phone": None,
        },
        "calculated_statement_descriptor": charge.statement_descriptor or DEFAULT_DESCRIPTOR,
        "captured": charge.amount_captured > 0,
        "capture_at": charge.capture_at,
        "created": charge.created,
        "currency": charge.currency,
        "customer": charge.customer,
        "description": charge.description,
        "disputed": charge.disputed,
        "failure_balance_transaction": None,
        "failure_code": charge.failure_code,
        "failure_message": charge.failure_message,
        "fraud_details": dict(charge.fraud_details),
        "invoice": None,
        "livemode": False,
        "metadata": dict(charge.metadata),
        "on_behalf_of": None,
        "outcome": _outcome(charge.outcome) if charge.outcome else None,
        "paid": status == "succeeded",
        "payment_intent": charge.payment_intent,
        "payment_method": charge.payment_method_id if card else None,
        "payment_method_details": {"card": _card_details(card), "type": "card"} if card else None,
        # What the customer saw, where the merchant is paid in another currency.
        "presentment_details": (
            {"presentment_amount": charge.amount, "presentment_currency": charge.currency}
            if charge.settlement_currency
            else None
        ),
        "radar_options": {},
        "receipt_email": charge.receipt_email,
        "receipt_number": None,
        "receipt_url": links.receipt(charge.id, charge.receipt_token) if card else None,
        "refunded": charge.fully_refunded,
        "refunds": {
            **list_object(
                f"/v1/charges/{charge.id}/refunds",
                refunds[:EMBEDDED_REFUNDS],
                len(refunds) > EMBEDDED_REFUNDS,
            ),
            "total_count": len(refunds),
        },
        "review": charge.review,
        "shipping": charge.shipping.model_dump() if charge.shipping else None,
        "source": _source(charge, card) if card else None,
        "source_transfer": None,
        "statement_descriptor": charge.statement_descriptor,
        "statement_descriptor_suffix": charge.statement_descriptor_suffix,
        "status": status,
        "transfer_data": None,
        "transfer_group": charge.transfer_group,
    }
