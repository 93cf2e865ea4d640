"""The PaymentIntent object."""

from __future__ import annotations

from typing import Any

from clearline.models import PaymentIntent


def render_payment_intent(intent: PaymentIntent) -> dict[str, Any]:
    error = dict(intent.last_payment_error) if intent.last_payment_error else None
    if error is not None:
        error = {k: v for k, v in error.items() if v is not None}
    return {
        "id": intent.id,
        "object": "payment_intent",
        "amount": intent.amount,
        "amount_capturable": intent.amount_capturable,
        "amount_details": {"tip": {}},
        "amount_received": intent.amount_received,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": None,
        "canceled_at": intent.canceled_at,
        "cancellation_reason": intent.cancellation_reason,
        "capture_method": intent.capture_method,
        "client_secret": intent.client_secret,
        "confirmation_method": "automatic",
        "created": intent.created,
        "currency": intent.currency,
        "customer": intent.customer,
        "description": intent.description,
        "fx_quote": intent.fx_quote,
        "invoice": None,
        "last_payment_error": error,
        "latest_charge": intent.latest_charge,
        "livemode": False,
        "metadata": dict(intent.metadata),
        "next_action": _next_action(intent),
        "on_behalf_of": None,
        "payment_method": intent.payment_method,
        "payment_method_options": {},
        "payment_method_types": ["card"],
        "processing": None,
        "receipt_email": intent.receipt_email,
        "review": None,
        "setup_future_usage": intent.setup_future_usage,
        "shipping": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": intent.state,
        "transfer_data": None,
        "transfer_group": None,
    }


def _next_action(intent: PaymentIntent) -> dict[str, Any] | None:
    """Where the customer goes to authenticate, while the intent waits for it."""
    if intent.state != "requires_action" or not intent.next_action_url:
        return None
    return {
        "type": "redirect_to_url",
        "redirect_to_url": {"url": intent.next_action_url, "return_url": intent.return_url},
    }
