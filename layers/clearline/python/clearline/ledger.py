"""The double-entry ledger: posting rules, balanced journals, sharded account balances.

Accounts (one per currency; see the README's chart of accounts):
- `processor_receivable:{cur}`   asset: what the processor owes us for captured charges
- `merchant_payable:{merchant}:{cur}` liability: what we owe the merchant
- `fee_revenue:{cur}`            income: our fees

Entries are either posted (money moved) or pending (an authorization hold, as
TigerBeetle's pending transfers): a hold is later posted or voided by a new journal,
never by changing the old one. Journals are immutable items; balances live in shard
items that only ever receive ADDs, so a hot account spreads its writes over N items.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from clearline.store import Store, Write

Direction = Literal["debit", "credit"]

PLATFORM_SHARDS = 64  # processor receivable and fee revenue take every charge's writes
MERCHANT_SHARDS = 32  # one merchant may be most of the peak traffic


def processor_receivable(currency: str) -> str:
    return f"processor_receivable:{currency}"


def merchant_payable(merchant_id: str, currency: str) -> str:
    return f"merchant_payable:{merchant_id}:{currency}"


def fee_revenue(currency: str) -> str:
    return f"fee_revenue:{currency}"


def shard_count(account: str) -> int:
    return MERCHANT_SHARDS if account.startswith("merchant_payable:") else PLATFORM_SHARDS


@dataclass(frozen=True)
class Entry:
    account: str
    direction: Direction
    amount: int
    pending: bool = False

    def as_item(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "direction": self.direction,
            "amount": self.amount,
            "pending": self.pending,
        }


class UnbalancedJournal(ValueError):
    pass


@dataclass(frozen=True)
class Journal:
    id: str
    currency: str
    entries: tuple[Entry, ...]
    charge_id: str
    merchant_id: str
    operation: str  # e.g. "charge.capture", "charge.authorize"
    created: int
    memo: str = ""

    def __post_init__(self) -> None:
        for pending in (False, True):
            debits = sum(
                e.amount for e in self.entries if e.direction == "debit" and e.pending == pending
            )
            credits = sum(
                e.amount for e in self.entries if e.direction == "credit" and e.pending == pending
            )
            if debits != credits:
                raise UnbalancedJournal(f"journal {self.id}: debits {debits} != credits {credits}")
        if any(e.amount < 0 for e in self.entries):
            raise UnbalancedJournal(f"journal {self.id}: negative entry")
        accounts = [e.account for e in self.entries]
        if len(accounts) != len(set(accounts)):
            # A transaction may touch each shard item once; merged entries keep it so.
            raise UnbalancedJournal(f"journal {self.id}: an account appears twice")

    def shard_of(self, account: str) -> int:
        digest = hashlib.sha256(f"{self.id}:{account}".encode()).digest()
        return int.from_bytes(digest[:4], "big") % shard_count(account)

    def writes(self) -> list[Write]:
        """The journal item (written once) and an ADD on one shard of each account."""
        journal_item = {
            "pk": f"JOURNAL#{self.id}",
            "sk": "JOURNAL",
            "id": self.id,
            "currency": self.currency,
            "entries": [e.as_item() for e in self.entries if e.amount > 0],
            "charge": self.charge_id,
            "merchant": self.merchant_id,
            "operation": self.operation,
            "created": self.created,
            "memo": self.memo,
        }
        writes = [Write.put_new(journal_item)]
        for entry in self.entries:
            if entry.amount == 0:
                continue
            phase = "pending" if entry.pending else "posted"
            shard = self.shard_of(entry.account)
            writes.append(
                Write.add(
                    {"pk": f"ACCOUNT#{entry.account}#{shard}", "sk": "BALANCE"},
                    {f"{entry.direction}s_{phase}": entry.amount},
                )
            )
        return writes


def capture_entries(merchant_id: str, currency: str, amount: int, fee: int) -> tuple[Entry, ...]:
    """A captured charge: the processor owes us the amount; the merchant is owed it less our fee."""
    return (
        Entry(processor_receivable(currency), "debit", amount),
        Entry(merchant_payable(merchant_id, currency), "credit", amount - fee),
        Entry(fee_revenue(currency), "credit", fee),
    )


def authorization_hold_entries(merchant_id: str, currency: str, amount: int) -> tuple[Entry, ...]:
    """An uncaptured authorization: the same accounts, as pending amounts, with no fee yet."""
    return (
        Entry(processor_receivable(currency), "debit", amount, pending=True),
        Entry(merchant_payable(merchant_id, currency), "credit", amount, pending=True),
    )


@dataclass
class AccountBalance:
    account: str
    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0


def account_balance(store: Store, account: str) -> AccountBalance:
    """The sum of an account's shards."""
    keys = [(f"ACCOUNT#{account}#{n}", "BALANCE") for n in range(shard_count(account))]
    total = AccountBalance(account)
    for shard in store.get_many(keys):
        for name in ("debits_posted", "credits_posted", "debits_pending", "credits_pending"):
            setattr(total, name, getattr(total, name) + int(shard.get(name, 0)))
    return total


@dataclass
class VerifyReport:
    journals: int = 0
    accounts: int = 0
    totals: dict[str, dict[str, int]] = field(default_factory=dict)  # currency -> debits/credits
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def verify(store: Store) -> VerifyReport:
    """Check the whole ledger: every journal balances, and shards equal their entries."""
    report = VerifyReport()
    from_entries: dict[str, AccountBalance] = {}
    for journal in store.scan("JOURNAL#"):
        report.journals += 1
        sums: dict[tuple[bool, str], int] = defaultdict(int)
        for entry in journal["entries"]:
            sums[(entry["pending"], entry["direction"])] += entry["amount"]
            if not entry["account"].endswith(f":{journal['currency']}"):
                report.violations.append(
                    f"{journal['id']}: {entry['account']} is not in {journal['currency']}"
                )
            balance = from_entries.setdefault(entry["account"], AccountBalance(entry["account"]))
            phase = "pending" if entry["pending"] else "posted"
            name = f"{entry['direction']}s_{phase}"
            setattr(balance, name, getattr(balance, name) + entry["amount"])
        for pending in (False, True):
            debits, credits = sums[(pending, "debit")], sums[(pending, "credit")]
            if debits != credits:
                report.violations.append(f"{journal['id']}: debits {debits} != credits {credits}")
        totals = report.totals.setdefault(journal["currency"], {"debits": 0, "credits": 0})
        totals["debits"] += sums[(False, "debit")]
        totals["credits"] += sums[(False, "credit")]
    from_shards: dict[str, AccountBalance] = {}
    for shard in store.scan("ACCOUNT#"):
        account = shard["pk"].removeprefix("ACCOUNT#").rsplit("#", 1)[0]
        balance = from_shards.setdefault(account, AccountBalance(account))
        for name in ("debits_posted", "credits_posted", "debits_pending", "credits_pending"):
            setattr(balance, name, getattr(balance, name) + int(shard.get(name, 0)))
    report.accounts = len(set(from_entries) | set(from_shards))
    for account in sorted(set(from_entries) | set(from_shards)):
        expected = from_entries.get(account, AccountBalance(account))
        actual = from_shards.get(account, AccountBalance(account))
        if expected != actual:
            report.violations.append(f"{account}: shards {actual} != entries {expected}")
    return report
