"""The double-entry ledger: posting rules, balanced journals, sharded account balances.

Accounts (one per currency; see the README's chart of accounts):
- `processor_receivable:{cur}`        asset: what the processor owes us for charges
- `merchant_payable:{merchant}:{cur}` liability: what we owe the merchant
- `fee_revenue:{cur}`                 income: our fees
- `merchant_available:{merchant}:{cur}` liability: what we owe the merchant, settled and
  ready to pay out (it may go negative: a chargeback is recovered from later activity)
- `payouts_in_transit:{merchant}:{cur}` liability: paid out, on its way to the merchant's bank
- `settlement_cash:{cur}`             asset: cash at our bank
- `processor_fees:{cur}`              expense: what the processor keeps
- `fx_liquidity:{cur}`                the FX desk: money of one currency exchanged for another
- `fx_fee_revenue:{cur}`              income: the FX fee, in the settlement currency
- `fx_gain_loss:{cur}`                income (credit) or expense (debit): a refund or dispute
  of a converted charge goes back at the charge's rate; what the market moved since is ours
- `reconciliation_adjustments:{cur}`  income (credit) or expense (debit): where operations
  resolved a settlement mismatch by taking the processor's word for what moved

A conversion is two journals, each balanced in its own currency and written in the same
transaction (TigerBeetle's linked transfers through a liquidity account): money in the
customer's currency goes to `fx_liquidity:{from}`, and `fx_liquidity:{to}` pays out its
equivalent at the rate used. Each leg names the other and the rate in its `fx` details.

Entries are posted (money moved) or pending (an authorization hold, as TigerBeetle's
pending transfers): a hold is later posted or voided by a new journal, never by changing
the old one. Journals are immutable items in their charge's partition; balances live in
shard items that only ever receive ADDs, so a hot account spreads its writes over N items.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

from clearline.money import CURRENCIES
from clearline.store import Store, Write

Direction = Literal["debit", "credit"]
COUNTERS = ("debits_posted", "credits_posted", "debits_pending", "credits_pending")
SHARDS_ENV = "CLEARLINE_ACCOUNT_SHARDS"


def processor_receivable(currency: str) -> str:
    return f"processor_receivable:{currency}"


def merchant_payable(merchant_id: str, currency: str) -> str:
    return f"merchant_payable:{merchant_id}:{currency}"


def fee_revenue(currency: str) -> str:
    return f"fee_revenue:{currency}"


def merchant_available(merchant_id: str, currency: str) -> str:
    return f"merchant_available:{merchant_id}:{currency}"


def settlement_cash(currency: str) -> str:
    return f"settlement_cash:{currency}"


def processor_fees(currency: str) -> str:
    return f"processor_fees:{currency}"


def payouts_in_transit(merchant_id: str, currency: str) -> str:
    return f"payouts_in_transit:{merchant_id}:{currency}"


def fx_liquidity(currency: str) -> str:
    return f"fx_liquidity:{currency}"


def fx_fee_revenue(currency: str) -> str:
    return f"fx_fee_revenue:{currency}"


def fx_gain_loss(currency: str) -> str:
    return f"fx_gain_loss:{currency}"


def reconciliation_adjustments(currency: str) -> str:
    """What operations booked to resolve a settlement mismatch: the platform's gain or loss
    where the processor moved other than we recorded."""
    return f"reconciliation_adjustments:{currency}"


@dataclass(frozen=True)
class ShardPolicy:
    """How many balance items each account's writes spread over.

    Platform accounts take a write from every charge of every merchant; a merchant's
    accounts take all of that merchant's. A charge authorized and then captured writes
    an account twice, so at 10,000 charges per second 128 shards keep each item near
    160 writes per second, and 64 keep a merchant's near 300 (bench/hot_keys measures
    it). Overrides name an account (or an account prefix, such as
    `merchant_payable:acct_big`) and may only ever grow: a balance is read over the
    current count, so shards written under a smaller count are still read.
    """

    platform: int = 128
    merchant: int = 64
    overrides: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> ShardPolicy:
        raw = os.environ.get(SHARDS_ENV)
        return cls(overrides=json.loads(raw)) if raw else cls()

    def count(self, account: str) -> int:
        matches = [prefix for prefix in self.overrides if account.startswith(prefix)]
        if matches:
            return int(self.overrides[max(matches, key=len)])
        return self.merchant if account.startswith("merchant_") else self.platform


@dataclass(frozen=True)
class Entry:
    account: str
    direction: Direction
    amount: int
    pending: bool = False

    @property
    def counter(self) -> str:
        return f"{self.direction}s_{'pending' if self.pending else 'posted'}"

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
    operation: str  # charge.capture, charge.authorize, charge.void, refund ...
    created: int
    source: str = ""  # the object the movement belongs to (ch_, re_, du_, po_)
    details: Mapping[str, Any] = field(default_factory=dict)  # where it came from (a file row)
    # The partition the journal is kept in: its charge's, or (a payout's, which belongs to
    # no charge) its own object's.
    partition: str = ""

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
        if any(not e.account.endswith(f":{self.currency}") for e in self.entries):
            raise UnbalancedJournal(f"journal {self.id}: an entry is not in {self.currency}")

    def shard_of(self, account: str, shards: ShardPolicy) -> int:
        digest = hashlib.sha256(f"{self.id}:{account}".encode()).digest()
        return int.from_bytes(digest[:4], "big") % shards.count(account)

    def item(self) -> dict[str, Any]:
        return {
            "pk": self.partition or f"CHARGE#{self.charge_id}",
            "sk": f"JOURNAL#{self.id}",
            "id": self.id,
            "currency": self.currency,
            "entries": [e.as_item() for e in self.entries if e.amount > 0],
            "charge": self.charge_id,
            "merchant": self.merchant_id,
            "operation": self.operation,
            "source": self.source or self.charge_id,
            "created": self.created,
            **self.details,
        }


def journal_writes(
    journals: Sequence[Journal], shards: ShardPolicy, written_ms: int | None = None
) -> list[Write]:
    """The journals' items, written once, and one ADD per account for all of them: a
    transaction may touch an item only once. The shard is the one the first journal's id
    picks (balances read every shard, so which one takes the ADD changes no balance).
    `written_ms` is the transaction's time, to the millisecond, which orders a journal
    among the audit items of the change that posted it."""
    if not journals:
        return []
    stamp = {"written_ms": written_ms} if written_ms is not None else {}
    writes = [Write.put_new({**journal.item(), **stamp}) for journal in journals]
    per_account: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for journal in journals:
        for entry in journal.entries:
            if entry.amount > 0:
                per_account[entry.account][entry.counter] += entry.amount
    for account, counters in per_account.items():
        shard = journals[0].shard_of(account, shards)
        writes.append(
            Write.add({"pk": f"ACCOUNT#{account}#{shard}", "sk": "BALANCE"}, dict(counters))
        )
    return writes


# ---- posting rules ------------------------------------------------------------------------


def capture_entries(merchant_id: str, currency: str, amount: int, fee: int) -> tuple[Entry, ...]:
    """Captured money: the processor owes us the amount; the merchant is owed it less our fee."""
    return (
        Entry(processor_receivable(currency), "debit", amount),
        Entry(merchant_payable(merchant_id, currency), "credit", amount - fee),
        Entry(fee_revenue(currency), "credit", fee),
    )


def hold_entries(merchant_id: str, currency: str, amount: int) -> tuple[Entry, ...]:
    """An uncaptured authorization: the same accounts, as pending amounts, with no fee yet."""
    return (
        Entry(processor_receivable(currency), "debit", amount, pending=True),
        Entry(merchant_payable(merchant_id, currency), "credit", amount, pending=True),
    )


def release_hold_entries(merchant_id: str, currency: str, amount: int) -> tuple[Entry, ...]:
    """Voids a hold: the pending amounts reversed."""
    return (
        Entry(processor_receivable(currency), "credit", amount, pending=True),
        Entry(merchant_payable(merchant_id, currency), "debit", amount, pending=True),
    )


def capture_hold_entries(
    merchant_id: str, currency: str, held: int, captured: int, fee: int
) -> tuple[Entry, ...]:
    """Captures part or all of a hold: the whole hold is released, the captured part posted."""
    return release_hold_entries(merchant_id, currency, held) + capture_entries(
        merchant_id, currency, captured, fee
    )


def refund_entries(merchant_id: str, currency: str, amount: int) -> tuple[Entry, ...]:
    """A refund comes out of the merchant's balance in full: our fee is not returned."""
    return (
        Entry(merchant_payable(merchant_id, currency), "debit", amount),
        Entry(processor_receivable(currency), "credit", amount),
    )


def dispute_withdrawal_entries(
    merchant_id: str, currency: str, amount: int, fee: int
) -> tuple[Entry, ...]:
    """A chargeback: the network takes the amount back through the processor, and the
    merchant is debited it and the dispute fee. Like a refund, it reaches the merchant's
    available balance when the processor's settlement reports it."""
    return (
        Entry(merchant_payable(merchant_id, currency), "debit", amount + fee),
        Entry(processor_receivable(currency), "credit", amount),
        Entry(fee_revenue(currency), "credit", fee),
    )


def dispute_reinstatement_entries(
    merchant_id: str, currency: str, amount: int
) -> tuple[Entry, ...]:
    """A won dispute: the amount comes back (the fee does not)."""
    return (
        Entry(processor_receivable(currency), "debit", amount),
        Entry(merchant_payable(merchant_id, currency), "credit", amount),
    )


def processor_settled_entries(
    currency: str, amount: int, processor_fee: int, *, inbound: bool
) -> tuple[Entry, ...]:
    """The processor's settlement reported a movement, in the currency it moved: a capture
    or won dispute (`inbound`) paid in, less its fee; a refund or chargeback taken out, with
    its fee; either way against the receivable."""
    if inbound:
        return (
            Entry(settlement_cash(currency), "debit", amount - processor_fee),
            Entry(processor_fees(currency), "debit", processor_fee),
            Entry(processor_receivable(currency), "credit", amount),
        )
    return (
        Entry(processor_receivable(currency), "debit", amount),
        Entry(processor_fees(currency), "debit", processor_fee),
        Entry(settlement_cash(currency), "credit", amount + processor_fee),
    )


def available_entries(merchant_id: str, currency: str, net: int) -> tuple[Entry, ...]:
    """A settled movement's effect on the merchant (`net`, negative for money out) moves from
    their pending balance to their available balance."""
    if net >= 0:
        return (
            Entry(merchant_payable(merchant_id, currency), "debit", net),
            Entry(merchant_available(merchant_id, currency), "credit", net),
        )
    return (
        Entry(merchant_available(merchant_id, currency), "debit", -net),
        Entry(merchant_payable(merchant_id, currency), "credit", -net),
    )


def payout_entries(merchant_id: str, currency: str, amount: int) -> tuple[Entry, ...]:
    """A payout leaves the merchant's available balance for the bank."""
    return (
        Entry(merchant_available(merchant_id, currency), "debit", amount),
        Entry(payouts_in_transit(merchant_id, currency), "credit", amount),
    )


def payout_paid_entries(merchant_id: str, currency: str, amount: int) -> tuple[Entry, ...]:
    """The bank paid it: the cash has left our account."""
    return (
        Entry(payouts_in_transit(merchant_id, currency), "debit", amount),
        Entry(settlement_cash(currency), "credit", amount),
    )


def payout_return_entries(merchant_id: str, currency: str, amount: int) -> tuple[Entry, ...]:
    """A payout canceled, or returned by the bank: back to the available balance."""
    return (
        Entry(payouts_in_transit(merchant_id, currency), "debit", amount),
        Entry(merchant_available(merchant_id, currency), "credit", amount),
    )


# ---- conversions: each leg balanced in its own currency -----------------------------------


def fx_in_entries(currency: str, amount: int) -> tuple[Entry, ...]:
    """Money arriving in the customer's currency (a capture, a won dispute) is exchanged:
    the processor owes it to us, and it goes to the FX desk."""
    return (
        Entry(processor_receivable(currency), "debit", amount),
        Entry(fx_liquidity(currency), "credit", amount),
    )


def fx_out_entries(currency: str, amount: int) -> tuple[Entry, ...]:
    """Money leaving in the customer's currency (a refund, a chargeback) comes from the FX
    desk."""
    return (
        Entry(fx_liquidity(currency), "debit", amount),
        Entry(processor_receivable(currency), "credit", amount),
    )


def _gain_or_loss(currency: str, gain: int) -> tuple[Entry, ...]:
    if gain == 0:
        return ()
    return (Entry(fx_gain_loss(currency), "credit" if gain > 0 else "debit", abs(gain)),)


def fx_settled_in_entries(
    merchant_id: str,
    currency: str,
    *,
    exchanged: int,
    to_merchant: int,
    fee: int = 0,
    fx_fee: int = 0,
) -> tuple[Entry, ...]:
    """The settlement side of money arriving: the FX desk pays out `exchanged`; the merchant
    is owed `to_merchant` less our `fee`, the FX fee is revenue, and whatever is left (the
    market moved since the charge's rate was locked) is our gain or loss."""
    return (
        Entry(fx_liquidity(currency), "debit", exchanged),
        Entry(merchant_payable(merchant_id, currency), "credit", to_merchant - fee),
        Entry(fee_revenue(currency), "credit", fee),
        Entry(fx_fee_revenue(currency), "credit", fx_fee),
        *_gain_or_loss(currency, exchanged - to_merchant - fx_fee),
    )


def fx_settled_out_entries(
    merchant_id: str, currency: str, *, exchanged: int, from_merchant: int, fee: int = 0
) -> tuple[Entry, ...]:
    """The settlement side of money leaving: the merchant gives back `from_merchant` (at the
    charge's rate) and our `fee`; buying the customer's currency back costs `exchanged` at
    today's rate, and the difference is our gain or loss, never the merchant's."""
    return (
        Entry(merchant_payable(merchant_id, currency), "debit", from_merchant + fee),
        Entry(fee_revenue(currency), "credit", fee),
        Entry(fx_liquidity(currency), "credit", exchanged),
        *_gain_or_loss(currency, from_merchant - exchanged),
    )


def exchange(amount: int, rate: Decimal, from_currency: str, to_currency: str) -> int:
    """`amount` minor units of one currency at `rate`, in minor units of the other, rounded
    half-even once: 10.00 eur at 1.0869565 is 1087 usd cents; 1000 jpy at 0.006611570 is
    661 cents; 1.000 kwd at 3.252032520 is 325 cents."""
    shift = CURRENCIES[to_currency].exponent - CURRENCIES[from_currency].exponent
    exact = (Decimal(amount) * rate).scaleb(shift)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def linked(
    customer_leg: Journal,
    settlement_leg: Journal,
    *,
    rate: str,
    from_amount: int,
    to_amount: int,
) -> list[Journal]:
    """Two legs of one conversion, each naming the other and the rate the FX desk used."""
    facts = {
        "from_currency": customer_leg.currency,
        "to_currency": settlement_leg.currency,
        "from_amount": from_amount,
        "to_amount": to_amount,
        "rate": rate,
    }
    return [
        replace(
            customer_leg,
            details={**customer_leg.details, "fx": {**facts, "counterpart": settlement_leg.id}},
        ),
        replace(
            settlement_leg,
            details={**settlement_leg.details, "fx": {**facts, "counterpart": customer_leg.id}},
        ),
    ]


# ---- balances and verification ------------------------------------------------------------


@dataclass
class AccountBalance:
    account: str
    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0

    def add(self, counters: Mapping[str, Any]) -> None:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + int(counters.get(name, 0)))

    @property
    def credit_balance(self) -> int:
        """Posted credits less debits: what a liability (a merchant's payable) holds."""
        return self.credits_posted - self.debits_posted


def account_balances(
    store: Store, accounts: list[str], shards: ShardPolicy
) -> dict[str, AccountBalance]:
    """Each account's balance: the sum of its shards, read in batches."""
    keys = [
        (f"ACCOUNT#{account}#{n}", "BALANCE")
        for account in accounts
        for n in range(shards.count(account))
    ]
    totals = {account: AccountBalance(account) for account in accounts}
    for shard in store.get_many(keys):
        totals[_account_of(shard["pk"])].add(shard)
    return totals


def account_balance(
    store: Store, account: str, shards: ShardPolicy | None = None
) -> AccountBalance:
    return account_balances(store, [account], shards or ShardPolicy())[account]


def _account_of(shard_pk: str) -> str:
    return shard_pk.removeprefix("ACCOUNT#").rsplit("#", 1)[0]


@dataclass
class VerifyReport:
    journals: int = 0
    accounts: int = 0
    charges: int = 0
    totals: dict[str, dict[str, int]] = field(default_factory=dict)  # currency -> debits/credits
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def _check_journal(journal: dict[str, Any], report: VerifyReport) -> dict[tuple[bool, str], int]:
    sums: dict[tuple[bool, str], int] = defaultdict(int)
    for entry in journal["entries"]:
        sums[(entry["pending"], entry["direction"])] += entry["amount"]
        if not entry["account"].endswith(f":{journal['currency']}"):
            report.violations.append(
                f"{journal['id']}: {entry['account']} is not in {journal['currency']}"
            )
    for pending in (False, True):
        debits, credits = sums[(pending, "debit")], sums[(pending, "credit")]
        if debits != credits:
            report.violations.append(f"{journal['id']}: debits {debits} != credits {credits}")
    return sums


def _check_charge(
    charge: dict[str, Any], journals: list[dict[str, Any]], report: VerifyReport
) -> None:
    """A charge's captured and refunded amounts are what its journals moved."""
    receivable = processor_receivable(charge["currency"])
    captured = refunded = 0
    for journal in journals:
        for entry in journal["entries"]:
            if entry["account"] != receivable or entry["pending"]:
                continue
            if journal["operation"] == "charge.capture" and entry["direction"] == "debit":
                captured += entry["amount"]
            elif journal["operation"] == "refund" and entry["direction"] == "credit":
                refunded += entry["amount"]
    if captured != charge["amount_captured"]:
        report.violations.append(
            f"{charge['id']}: amount_captured {charge['amount_captured']} != journals {captured}"
        )
    if refunded != charge["amount_refunded"]:
        report.violations.append(
            f"{charge['id']}: amount_refunded {charge['amount_refunded']} != journals {refunded}"
        )
    if charge["amount_captured"] > charge["amount"]:
        report.violations.append(f"{charge['id']}: captured more than authorized")
    if charge["amount_refunded"] > charge["amount_captured"]:
        report.violations.append(f"{charge['id']}: refunded more than captured")


def verify(store: Store) -> VerifyReport:
    """Check the whole ledger: journals balance, shards equal entries, charges equal journals."""
    report = VerifyReport()
    from_entries: dict[str, AccountBalance] = {}
    from_shards: dict[str, AccountBalance] = {}
    charges: dict[str, dict[str, Any]] = {}
    journals_by_charge: dict[str, list[dict[str, Any]]] = defaultdict(list)
    conversions: dict[str, dict[str, Any]] = {}
    for item in store.scan():
        if item["sk"] == "CHARGE":
            charges[item["id"]] = item
        elif item["sk"].startswith("JOURNAL#"):
            report.journals += 1
            if item["charge"]:  # a payout's journals belong to no charge
                journals_by_charge[item["charge"]].append(item)
            sums = _check_journal(item, report)
            if item.get("fx"):
                conversions[item["id"]] = item
            for entry in item["entries"]:
                balance = from_entries.setdefault(
                    entry["account"], AccountBalance(entry["account"])
                )
                balance.add({Entry(**entry).counter: entry["amount"]})
            totals = report.totals.setdefault(item["currency"], {"debits": 0, "credits": 0})
            totals["debits"] += sums[(False, "debit")]
            totals["credits"] += sums[(False, "credit")]
        elif item["pk"].startswith("ACCOUNT#"):
            account = _account_of(item["pk"])
            from_shards.setdefault(account, AccountBalance(account)).add(item)
    accounts = set(from_entries) | set(from_shards)
    report.accounts = len(accounts)
    for account in sorted(accounts):
        expected = from_entries.get(account, AccountBalance(account))
        actual = from_shards.get(account, AccountBalance(account))
        if expected != actual:
            report.violations.append(f"{account}: shards {actual} != entries {expected}")
    for charge_id in sorted(set(journals_by_charge) - set(charges)):
        report.violations.append(f"journals of {charge_id} belong to no charge")
    report.charges = len(charges)
    for charge_id, charge in charges.items():
        _check_charge(charge, journals_by_charge.get(charge_id, []), report)
    for journal in conversions.values():
        _check_conversion(journal, conversions, report)
    for currency, totals in sorted(report.totals.items()):
        if totals["debits"] != totals["credits"]:
            report.violations.append(
                f"{currency}: debits {totals['debits']} != credits {totals['credits']}"
            )
    return report


def _liquidity_moved(journal: dict[str, Any]) -> int:
    account = fx_liquidity(journal["currency"])
    return sum(e["amount"] for e in journal["entries"] if e["account"] == account)


def _check_conversion(
    journal: dict[str, Any], conversions: dict[str, dict[str, Any]], report: VerifyReport
) -> None:
    """Each leg of a conversion names the other, both state the same facts, each moved its
    side through its currency's FX desk, and the rate turns one amount into the other."""
    fx, name = journal["fx"], journal["id"]
    other = conversions.get(fx["counterpart"])
    if other is None or other["fx"].get("counterpart") != name:
        report.violations.append(f"{name}: its conversion's other leg does not name it")
        return
    facts = ("from_currency", "to_currency", "from_amount", "to_amount", "rate")
    if any(str(fx[f]) != str(other["fx"][f]) for f in facts):
        report.violations.append(f"{name}: its legs disagree on the conversion")
    customer_side = journal["currency"] == fx["from_currency"]
    if not customer_side and journal["currency"] != fx["to_currency"]:
        report.violations.append(f"{name}: a leg in neither currency of its conversion")
        return
    expected = int(fx["from_amount"] if customer_side else fx["to_amount"])
    if _liquidity_moved(journal) != expected:
        report.violations.append(
            f"{name}: the FX desk moved {_liquidity_moved(journal)}, the conversion says {expected}"
        )
    converted = exchange(
        int(fx["from_amount"]), Decimal(str(fx["rate"])), fx["from_currency"], fx["to_currency"]
    )
    if converted != int(fx["to_amount"]):
        report.violations.append(
            f"{name}: {fx['from_amount']} {fx['from_currency']} at {fx['rate']} is {converted}, "
            f"not {fx['to_amount']}"
        )
