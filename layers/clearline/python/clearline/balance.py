"""Balance transactions (`txn_`) and a merchant's balance, as Stripe shapes them.

A balance transaction is the merchant-facing record of one movement of their money; the
ledger journal written in the same transaction is the accounting record behind it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from clearline import ledger, listing
from clearline.money import CURRENCIES
from clearline.store import Store

AVAILABLE_AFTER_SECONDS = 2 * 24 * 60 * 60  # funds settle T+2
# A balance transaction's settlement state: the processor's file has reported it, or not yet.
UNSETTLED, SETTLED = "unsettled", "settled"
SETTLEMENT_SHARDS = 8


def business_day(timestamp: float) -> dt.date:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).date()


def settlement_due_keys(txn_id: str, day: dt.date) -> dict[str, str]:
    """Puts a movement in the sparse `by_due` index until the processor's settlement file
    for its business day reports it: what is still there afterwards is missing."""
    shard = int.from_bytes(hashlib.sha256(txn_id.encode()).digest()[:2], "big") % SETTLEMENT_SHARDS
    return {"due_pk": f"SETTLE#{day.isoformat()}#{shard}", "due_sk": txn_id}


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
        **settlement_due_keys(txn_id, business_day(now)),
        "id": txn_id,
        "merchant": merchant_id,
        "settlement": UNSETTLED,
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
    """What Clearline owes the merchant, per currency, from the ledger: `pending` until the
    processor's settlement reaches us, then `available`."""
    pending_accounts = {ledger.merchant_payable(merchant_id, code): code for code in CURRENCIES}
    available_accounts = {ledger.merchant_available(merchant_id, code): code for code in CURRENCIES}
    balances = ledger.account_balances(store, [*pending_accounts, *available_accounts], shards)
    used = sorted(
        {
            code
            for account, code in {**pending_accounts, **available_accounts}.items()
            if balances[account].credits_posted or balances[account].debits_posted
        }
    ) or ["usd"]

    def entries(accounts: dict[str, str]) -> list[dict[str, Any]]:
        by_code = {code: account for account, code in accounts.items()}
        return [
            {
                "amount": balances[by_code[code]].credit_balance,
                "currency": code,
                "source_types": {"card": balances[by_code[code]].credit_balance},
            }
            for code in used
        ]

    return {
        "object": "balance",
        "available": entries(available_accounts),
        "pending": entries(pending_accounts),
        "livemode": False,
    }
