"""Balance transactions (`txn_`) and a merchant's balance, as Stripe shapes them.

A balance transaction is the merchant-facing record of one movement of their money; the
ledger journal written in the same transaction is the accounting record behind it.
"""

from __future__ import annotations

from typing import Any

from clearline import ledger, listing
from clearline.money import CURRENCIES
from clearline.store import Store

AVAILABLE_AFTER_SECONDS = 2 * 24 * 60 * 60  # funds settle T+2


def transaction_item(
    txn_id: str,
    *,
    merchant_id: str,
    kind: str,
    source: str,
    amount: int,
    fee: int,
    currency: str,
    now: float,
    description: str | None = None,
) -> dict[str, Any]:
    created_ms = int(now * 1000)
    return {
        "pk": f"TXN#{txn_id}",
        "sk": "TXN",
        **listing.list_keys(merchant_id, "txn", created_ms, txn_id),
        "id": txn_id,
        "merchant": merchant_id,
        "type": kind,
        "source": source,
        "amount": amount,
        "fee": fee,
        "net": amount - fee,
        "currency": currency,
        "created": int(now),
        "available_on": int(now) + AVAILABLE_AFTER_SECONDS,
        "description": description,
    }


def transaction_object(item: dict[str, Any]) -> dict[str, Any]:
    fee_details = (
        []
        if not item["fee"]
        else [
            {
                "amount": item["fee"],
                "application": None,
                "currency": item["currency"],
                "description": "Clearline processing fees",
                "type": "stripe_fee",
            }
        ]
    )
    return {
        "id": item["id"],
        "object": "balance_transaction",
        "amount": item["amount"],
        "available_on": item["available_on"],
        "created": item["created"],
        "currency": item["currency"],
        "description": item.get("description"),
        "exchange_rate": None,
        "fee": item["fee"],
        "fee_details": fee_details,
        "net": item["net"],
        "reporting_category": item["type"],
        "source": item["source"],
        # Funds stay pending until the processor settles them.
        "status": "pending",
        "type": item["type"],
    }


def balance_object(store: Store, merchant_id: str, shards: ledger.ShardPolicy) -> dict[str, Any]:
    """What Clearline owes the merchant, per currency, from the ledger's payable accounts.

    Everything is pending until settlement moves it to available.
    """
    accounts = {ledger.merchant_payable(merchant_id, code): code for code in CURRENCIES}
    balances = ledger.account_balances(store, list(accounts), shards)
    pending = [
        {
            "amount": balance.credit_balance,
            "currency": accounts[account],
            "source_types": {"card": balance.credit_balance},
        }
        for account, balance in balances.items()
        if balance.credits_posted or balance.debits_posted
    ] or [{"amount": 0, "currency": "usd", "source_types": {"card": 0}}]
    available = [
        {"amount": 0, "currency": p["currency"], "source_types": {"card": 0}} for p in pending
    ]
    return {"object": "balance", "available": available, "pending": pending, "livemode": False}
