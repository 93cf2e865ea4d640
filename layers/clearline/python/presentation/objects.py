"""Any model to its Stripe object: the dispatch that events and expansion share."""

from __future__ import annotations

from typing import Any

from clearline.models import (
    Balance,
    BalanceTransaction,
    Charge,
    Customer,
    Dispute,
    EarlyFraudWarning,
    FxQuote,
    Model,
    PaymentIntent,
    PaymentMethod,
    Payout,
    ReconciliationMismatch,
    Refund,
    Review,
    ValueList,
    ValueListItem,
    WebhookEndpoint,
)
from presentation.balance import render_balance, render_balance_transaction
from presentation.charges import render_charge
from presentation.customers import render_customer
from presentation.disputes import render_dispute
from presentation.fx_quotes import render_fx_quote
from presentation.links import Links
from presentation.payment_intents import render_payment_intent
from presentation.payment_methods import render_payment_method
from presentation.payouts import render_payout
from presentation.radar import (
    render_early_fraud_warning,
    render_review,
    render_value_list,
    render_value_list_item,
)
from presentation.refunds import render_refund
from presentation.webhook_endpoints import render_webhook_endpoint

MODELS: dict[str, type[Model]] = {
    "charge": Charge,
    "refund": Refund,
    "balance_transaction": BalanceTransaction,
    "balance": Balance,
    "webhook_endpoint": WebhookEndpoint,
    "customer": Customer,
    "payment_intent": PaymentIntent,
    "payment_method": PaymentMethod,
    "reconciliation_mismatch": ReconciliationMismatch,
    "dispute": Dispute,
    "payout": Payout,
    "fx_quote": FxQuote,
    "radar.value_list": ValueList,
    "radar.value_list_item": ValueListItem,
    "review": Review,
    "radar.early_fraud_warning": EarlyFraudWarning,
}


def model_of(kind: str, snapshot: dict[str, Any]) -> Model:
    """A model again, from the snapshot an event stored."""
    return MODELS[kind].model_validate(snapshot)


def render(model: Model, links: Links) -> dict[str, Any]:
    if isinstance(model, Charge):
        return render_charge(model, links)
    if isinstance(model, Refund):
        return render_refund(model)
    if isinstance(model, BalanceTransaction):
        return render_balance_transaction(model)
    if isinstance(model, Balance):
        return render_balance(model)
    if isinstance(model, WebhookEndpoint):
        return render_webhook_endpoint(model)
    if isinstance(model, PaymentIntent):
        return render_payment_intent(model)
    if isinstance(model, Customer):
        return render_customer(model)
    if isinstance(model, PaymentMethod):
        return render_payment_method(model)
    if isinstance(model, Dispute):
        return render_dispute(model)
    if isinstance(model, Payout):
        return render_payout(model)
    if isinstance(model, FxQuote):
        return render_fx_quote(model)
    if isinstance(model, ValueList):
        return render_value_list(model)
    if isinstance(model, ValueListItem):
        return render_value_list_item(model)
    if isinstance(model, Review):
        return render_review(model)
    if isinstance(model, EarlyFraudWarning):
        return render_early_fraud_warning(model)
    if isinstance(model, ReconciliationMismatch):
        rendered = model.model_dump(exclude={"kind", "mismatch"})
        return {"object": "reconciliation_mismatch", "kind": model.mismatch, **rendered}
    raise TypeError(f"no Stripe shape for {type(model).__name__}")
