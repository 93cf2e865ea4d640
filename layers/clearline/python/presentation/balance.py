"""Balance transactions and the balance."""

from __future__ import annotations

from typing import Any

from clearline.models import Balance, BalanceAmount, BalanceTransaction

# Stripe's reporting categories where they differ from the type.
_REPORTING_CATEGORY = {"payout_cancel": "payout_reversal", "payout_failure": "payout_reversal"}


def render_balance_transaction(txn: BalanceTransaction) -> dict[str, Any]:
    fee_details = (
        [
            {
                "amount": txn.fee,
                "application": None,
                "currency": txn.currency,
                "description": txn.fee_description or "Clearline processing fees",
                "type": "stripe_fee",
            }
        ]
        if txn.fee
        else []
    )
    return {
        "id": txn.id,
        "object": "balance_transaction",
        "amount": txn.amount,
        "available_on": txn.available_on,
        "created": txn.created,
        "currency": txn.currency,
        "description": txn.description,
        # Settlement-currency units per unit of what the customer paid, when converted.
        "exchange_rate": float(txn.exchange_rate) if txn.exchange_rate else None,
        "fee": txn.fee,
        "fee_details": fee_details,
        "net": txn.net,
        "reporting_category": (
            txn.reporting_category or _REPORTING_CATEGORY.get(txn.type, txn.type)
        ),
        "source": txn.source,
        # Funds stay pending until the processor's settlement file reports them.
        "status": "available" if txn.settlement == "settled" else "pending",
        "type": txn.type,
    }


def _amounts(amounts: tuple[BalanceAmount, ...]) -> list[dict[str, Any]]:
    return [
        {"amount": a.amount, "currency": a.currency, "source_types": {"card": a.amount}}
        for a in amounts
    ]


def render_balance(balance: Balance) -> dict[str, Any]:
    return {
        "object": "balance",
        "available": _amounts(balance.available),
        "connect_reserved": [],
        "instant_available": [],
        "livemode": balance.livemode,
        "pending": _amounts(balance.pending),
    }
