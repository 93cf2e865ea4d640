"""Balance transactions (`txn_`) and a merchant's balance.

A balance transaction is the merchant-facing record of one movement of their money; the
ledger journal written in the same transaction is the accounting record behind it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Any

from clearline import ledger, listing
from clearline.models import Balance, BalanceAmount
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


def awaiting_payout_keys(merchant_id: str, currency: str, txn_id: str, at: float) -> dict[str, str]:
    """Puts an available movement in the sparse `by_due` index until an automatic payout
    covers it: what the next one pays out, for `GET /v1/balance_transactions?payout=`."""
    return {"due_pk": f"UNPAID#{merchant_id}#{currency}", "due_sk": f"{int(at):010d}#{txn_id}"}


def transaction_items(
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
    reporting_category: str | None = None,
    fee_description: str | None = None,
    settles: bool = True,
    payout: str | None = None,
    presentment: tuple[int, str] | None = None,
    exchange_rate: str | None = None,
) -> list[dict[str, Any]]:
    """A balance transaction's item, and the index items that filter its list by type,
    source and currency. `settles`: the processor's settlement file will report it (a
    payout's movements are the bank's, reconciled from its own report). A payout's own
    movements name it (`payout`); a payout's money coming back awaits the next one.
    `presentment`: the amount and currency the processor moved, which its settlement file
    reports, when the merchant's side was converted (at `exchange_rate`)."""
    moved, moved_in = presentment or (abs(amount), currency)
    created_ms = int(now * 1000)
    facets = {"type": kind, "source": source, "currency": currency, "payout": payout}
    key = (f"TXN#{txn_id}", "TXN")
    item = {
        "pk": f"TXN#{txn_id}",
        "sk": "TXN",
        **listing.list_keys(merchant_id, "txn", created_ms, txn_id),
        **(settlement_due_keys(txn_id, business_day(now)) if settles else {}),
        **(
            awaiting_payout_keys(merchant_id, currency, txn_id, now)
            if not settles and payout is None and amount > 0
            else {}
        ),
        "payout": payout,
        "id": txn_id,
        "merchant": merchant_id,
        "settlement": UNSETTLED if settles else SETTLED,
        "type": kind,
        "source": source,
        "amount": amount,
        "fee": fee,
        "net": amount - fee,
        "currency": currency,
        "created": int(now),
        "available_on": int(now) + (AVAILABLE_AFTER_SECONDS if settles else 0),
        "description": description,
        "reporting_category": reporting_category,
        "fee_description": fee_description,
        "exchange_rate": exchange_rate,
        "presentment_amount": moved,
        "presentment_currency": moved_in,
    }
    return [item, *listing.facet_items(merchant_id, "txn", created_ms, key, txn_id, facets)]


def merchant_balance(
    store: Store,
    merchant_id: str,
    shards: ledger.ShardPolicy,
    currencies: Sequence[str] | None = None,
) -> Balance:
    """What Clearline owes the merchant, per currency, from the ledger: `pending` until the
    processor's settlement reaches us, then `available`. `currencies` are those the
    merchant can hold money in, its settlement currencies (a payment in any other converts
    into one of them): only their shards are read. By default, every currency's."""
    held = list(currencies or CURRENCIES)
    pending_accounts = {ledger.merchant_payable(merchant_id, code): code for code in held}
    available_accounts = {ledger.merchant_available(merchant_id, code): code for code in held}
    balances = ledger.account_balances(store, [*pending_accounts, *available_accounts], shards)
    used = sorted(
        {
            code
            for account, code in {**pending_accounts, **available_accounts}.items()
            if balances[account].credits_posted or balances[account].debits_posted
        }
    ) or [currencies[0] if currencies else "usd"]

    def entries(accounts: dict[str, str]) -> tuple[BalanceAmount, ...]:
        by_code = {code: account for account, code in accounts.items()}
        return tuple(
            BalanceAmount(currency=code, amount=balances[by_code[code]].credit_balance)
            for code in used
        )

    return Balance(available=entries(available_accounts), pending=entries(pending_accounts))
