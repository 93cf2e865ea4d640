"""The reconciler under faults (moto in-process, and a sandbox processor of the test's own so
that its settlement batch holds only the test's movements): a run cut off part way through
a file and run again, and rows that cannot be read."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from clearline import ledger, reconciliation
from clearline.audit import Caller
from clearline.charges import ChargeService
from clearline.errors import ServiceUnavailableError
from clearline.ids import derived_id
from clearline.merchants import create_merchant
from clearline.params import ChargeCreateParams, RefundCreateParams
from clearline.processor import ProcessorClient
from clearline.reconciliation import COLUMNS, Mismatch, Reconciler
from clearline.refunds import RefundService
from clearline.store import Store, StoreUnavailable, Write
from clearline_local.sandbox_processor import SandboxProcessor
from tests.unit.conftest import record_rates

FILE = "settlements/2026/11/27/batch_20261127_1.csv"
ETAG = "9b2cf535f27731c974343645a3985328"
HEADER = ",".join(COLUMNS)


@dataclass
class Day:
    merchant_id: str
    rows: list[dict[str, str]]  # the processor's settlement batch for the day


@pytest.fixture
def day(store: Store) -> Iterator[Day]:
    """Three captured charges and a partial refund, and the processor's batch settling them."""
    with SandboxProcessor() as sandbox:
        processor = ProcessorClient(sandbox.url)
        merchant = create_merchant(store, "Settling Shop", fee_percent=3, fee_fixed=0).merchant
        caller = Caller(merchant, "req_reconcile")
        charges = [
            ChargeService(store, processor).create(
                caller,
                ChargeCreateParams(amount=1000 + i, currency="usd", source="tok_visa"),
                idempotency_key=str(uuid.uuid4()),
            )
            for i in range(3)
        ]
        RefundService(store, processor).create(
            caller,
            RefundCreateParams(charge=charges[0].id, amount=300),
            idempotency_key=str(uuid.uuid4()),
        )
        rows = sandbox.settlement_rows(dt.datetime.now(dt.UTC).date() + dt.timedelta(days=2))
    assert [r["type"] for r in rows] == ["capture", "capture", "capture", "refund"]
    yield Day(merchant.id, [{k: str(v) for k, v in r.items()} for r in rows])


def line(row: dict[str, str]) -> str:
    return ",".join(row[column] for column in COLUMNS)


def txn_of(row: dict[str, str]) -> str:
    if row["type"] == "capture":
        return derived_id("txn", row["charge_id"], "capture")
    return derived_id("txn", row["refund_id"], "refund")


def settled_by(store: Store, row: dict[str, str]) -> str | None:
    txn = store.get(f"TXN#{txn_of(row)}", "TXN")
    assert txn is not None
    return txn.get("settled_by")


def settlement_journals(store: Store, rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [
        journal
        for charge in sorted({r["charge_id"] for r in rows})
        for journal in store.query_partition(f"CHARGE#{charge}", "JOURNAL#")
        if journal["operation"] == "settlement"
    ]


def assert_settled_once(store: Store, day: Day) -> None:
    """Every movement of the day has exactly one settlement journal, and the balances moved
    once: the processor's fees, and the merchant's share from pending to available."""
    journals = settlement_journals(store, day.rows)
    assert sorted(j["source"] for j in journals) == sorted(txn_of(r) for r in day.rows)
    assert all(settled_by(store, row) == FILE for row in day.rows)
    fees = ledger.account_balance(store, ledger.processor_fees("usd"))
    assert fees.debits_posted == sum(int(r["fee"]) for r in day.rows)
    nets = [store.get(f"TXN#{txn_of(r)}", "TXN") or {} for r in day.rows]
    available = ledger.account_balance(store, ledger.merchant_available(day.merchant_id, "usd"))
    assert available.credits_posted - available.debits_posted == sum(t["net"] for t in nets)
    assert ledger.verify(store).ok


class CutOffAfter(Store):
    """The table, answering `transactions` more transactions; after that the run is cut off
    (the function timed out, or DynamoDB stopped answering)."""

    def __init__(self, store: Store, transactions: int) -> None:
        super().__init__(store.table_name, store.client)
        self.left = transactions

    def transact(self, writes: list[Write]) -> None:
        if self.left == 0:
            raise StoreUnavailable("TransactWriteItems failed: the run was cut off")
        self.left -= 1
        super().transact(writes)


def test_a_file_cut_off_part_way_is_resumed_and_settles_each_row_once(
    store: Store, day: Day, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [HEADER, *map(line, day.rows)]
    # Two capture rows to a transaction (3 items each, and one ADD to each of 5 accounts for
    # both), so the cut falls inside the file.
    monkeypatch.setattr(reconciliation, "MAX_TRANSACTION_ITEMS", 11)
    with pytest.raises(ServiceUnavailableError):  # the file's start, two rows, then cut
        Reconciler(CutOffAfter(store, 2)).reconcile(lines, file=FILE, etag=ETAG)
    assert [settled_by(store, row) for row in day.rows] == [FILE, FILE, None, None]
    marker = store.get(f"RECON#{FILE}", ETAG)
    assert marker is not None and marker["status"] == "processing"

    # The queue delivers the notification again, and the four rows now fit one transaction:
    # the two settled before the cut fail their guards alone, are known as this file's own
    # (not duplicates), and the transaction is committed again without them.
    monkeypatch.undo()
    report = Reconciler(store).reconcile(lines, file=FILE, etag=ETAG)
    assert report.mismatches == []
    assert (report.rows, dict(report.counts)) == (4, {"matched": 4})
    assert report.settled == {"usd": sum(int(r["amount"]) for r in day.rows)}
    assert_settled_once(store, day)
    marker = store.get(f"RECON#{FILE}", ETAG)
    assert marker is not None and (marker["status"], marker["rows"]) == ("done", 4)

    # And once it is done, a third delivery posts nothing.
    assert Reconciler(store).reconcile(lines, file=FILE, etag=ETAG).already_reconciled
    assert len(settlement_journals(store, day.rows)) == 4


def test_malformed_rows_are_reported_and_the_rest_of_the_file_settles(
    store: Store, day: Day
) -> None:
    first, second, third, refund = day.rows
    lines = [
        HEADER,
        line(first),
        line({**second, "amount": "10.01"}),  # row 2: not an integer amount
        line(second),
        ",".join(third[c] for c in COLUMNS[:5]),  # row 4: cut off after the amount
        line(third),
        line({**refund, "type": "chargeback"}),  # row 6: a type the format does not have
        line(refund),
    ]
    to_operations: list[Mismatch] = []
    report = Reconciler(store, on_mismatch=to_operations.extend).reconcile(
        lines, file=FILE, etag=ETAG
    )
    assert (report.rows, dict(report.counts)) == (7, {"matched": 4, "malformed": 3})
    assert [(m.kind, m.row) for m in report.mismatches] == [
        ("malformed", 2),
        ("malformed", 4),
        ("malformed", 6),
    ]
    assert "10.01" in report.mismatches[0].detail
    assert "chargeback" in report.mismatches[2].detail
    assert to_operations == report.mismatches
    assert_settled_once(store, day)


@pytest.mark.parametrize(("index", "dropped"), [(0, "currency"), (3, "fee")])
def test_a_row_missing_a_column_is_reported_malformed(
    store: Store, day: Day, index: int, dropped: str
) -> None:
    short = day.rows[index]
    others = [r for r in day.rows if r is not short]
    lines = [
        HEADER,
        ",".join(short[c] for c in COLUMNS if c != dropped),
        *map(line, others),
    ]
    report = Reconciler(store).reconcile(lines, file=FILE, etag=ETAG)
    assert [(m.kind, m.row) for m in report.mismatches if m.row is not None] == [("malformed", 1)]
    assert report.counts["matched"] == 3
    assert [settled_by(store, r) for r in others] == [FILE] * 3


def test_a_converted_movement_is_matched_in_both_currencies(store: Store) -> None:
    """A row in the customer's currency matches the presentment amount; at the movement's
    rate it must also give the merchant's side. A merchant's side that disagrees posts
    nothing and is reported."""
    record_rates(store)
    with SandboxProcessor() as sandbox:
        processor = ProcessorClient(sandbox.url)
        merchant = create_merchant(store, "Abroad", fee_percent=3, fee_fixed=0).merchant
        caller = Caller(merchant, "req_reconcile_fx")
        paid, tampered = (
            ChargeService(store, processor).create(
                caller,
                ChargeCreateParams(amount=amount, currency="eur", source="tok_visa"),
                idempotency_key=str(uuid.uuid4()),
            )
            for amount in (5000, 7000)
        )
        rows = sandbox.settlement_rows(dt.datetime.now(dt.UTC).date() + dt.timedelta(days=2))
    lines = [HEADER, *(line({k: str(v) for k, v in r.items()}) for r in rows)]
    assert {r["currency"] for r in rows} == {"eur"}
    # The merchant's side of the second says one cent more than its rate gives.
    txn_key = (f"TXN#{tampered.balance_transaction}", "TXN")
    item = store.get(*txn_key)
    assert item is not None and item["currency"] == "usd"
    store.put({**item, "amount": item["amount"] + 1})

    reported: list[Mismatch] = []
    report = Reconciler(store, on_mismatch=reported.extend).reconcile(lines, file=FILE, etag=ETAG)
    assert report.counts["matched"] == 1
    (mismatch,) = reported
    assert mismatch.kind == "amount_mismatch" and mismatch.charge_id == tampered.id
    assert f"at {item['exchange_rate']}" in mismatch.detail
    journals = {
        j["currency"]
        for j in store.query_partition(f"CHARGE#{paid.id}", "JOURNAL#")
        if j["operation"] == "settlement"
    }
    assert journals == {"eur", "usd"}  # the processor's side, and the merchant's
    assert not [
        j
        for j in store.query_partition(f"CHARGE#{tampered.id}", "JOURNAL#")
        if j["operation"] == "settlement"
    ]


def test_a_row_twice_in_one_file_settles_once_and_the_second_is_a_duplicate(
    store: Store, day: Day
) -> None:
    """Rows settle many to a transaction; two rows of one movement never share one, so the
    second finds it settled."""
    lines = [HEADER, *map(line, day.rows), line(day.rows[1])]
    report = Reconciler(store).reconcile(lines, file=FILE, etag=ETAG)
    assert dict(report.counts) == {"matched": 4, "duplicate": 1}
    assert [(m.kind, m.row) for m in report.mismatches] == [("duplicate", 5)]
    assert_settled_once(store, day)


class CountingTransactions(Store):
    def __init__(self, store: Store) -> None:
        super().__init__(store.table_name, store.client)
        self.transactions = 0

    def transact(self, writes: list[Write]) -> None:
        self.transactions += 1
        super().transact(writes)


def test_rows_settle_many_to_a_transaction(store: Store, day: Day) -> None:
    counting = CountingTransactions(store)
    report = Reconciler(counting).reconcile([HEADER, *map(line, day.rows)], file=FILE, etag=ETAG)
    assert report.counts["matched"] == 4
    # The file's start, its four rows, the merchant's balance.available, the file's finish.
    assert counting.transactions == 4
    assert_settled_once(store, day)


def test_a_batch_refused_for_no_rows_guard_is_settled_row_by_row(store: Store, day: Day) -> None:
    """A settlement journal already there while its movement is unsettled (written by hand,
    say) refuses the whole transaction at an item no row's guard names: the rows are then
    settled one at a time, and only that one is held back, as a duplicate."""
    first = day.rows[0]
    journal_id = derived_id("jnl", txn_of(first), "settlement")
    store.put(
        {
            "pk": f"CHARGE#{first['charge_id']}",
            "sk": f"JOURNAL#{journal_id}",
            "id": journal_id,
            "operation": "manual",
        }
    )
    report = Reconciler(store).reconcile([HEADER, *map(line, day.rows)], file=FILE, etag=ETAG)
    assert dict(report.counts) == {"matched": 3, "duplicate": 1}
    assert [(m.kind, m.row) for m in report.mismatches] == [("duplicate", 1)]
    assert [settled_by(store, row) for row in day.rows] == [None, FILE, FILE, FILE]
