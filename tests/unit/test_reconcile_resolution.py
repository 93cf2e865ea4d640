"""Resolving a settlement mismatch by an adjusting journal (moto in-process): an amount
mismatch's movement settles at the processor's figure, the difference booked to
reconciliation_adjustments; a row we have no movement for has its cash booked there; each
resolution is audited and happens once, and `ledger verify` still passes."""

from __future__ import annotations

import pytest

from clearline import ledger
from clearline.audit import Caller
from clearline.errors import ConflictError, InvalidRequestError, ResourceMissingError
from clearline.merchants import create_merchant
from clearline.reconciliation import (
    AMOUNT,
    MISSING_LEDGER,
    MISSING_SETTLEMENT,
    PLATFORM,
    Reconciler,
)
from clearline.store import Store
from clearline.transitions import Transition
from tests.unit.test_reconcile_faults import ETAG, FILE, HEADER, Day, day, line, txn_of

__all__ = ["day"]  # the fixture: a day of captures and a refund, and the processor's batch


def reconciled_with(store: Store, day: Day, changed: dict[int, int]) -> Reconciler:
    """The day's file, with row `i`'s amount changed as `changed` says."""
    rows = [
        {**row, "amount": str(changed.get(i, int(row["amount"])))} for i, row in enumerate(day.rows)
    ]
    reconciler = Reconciler(store)
    reconciler.reconcile([HEADER, *map(line, rows)], file=FILE, etag=ETAG)
    return reconciler


def mismatches(store: Store, kind: str) -> list[dict]:
    found = [
        item["data"]["object"]
        for item in store.scan("EVENT#")
        if item.get("merchant") == PLATFORM and item.get("type") == "reconciliation.mismatch"
    ]
    return [m for m in found if m["mismatch"] == kind]


def operator(store: Store) -> Caller:
    return Caller(create_merchant(store, "Operations").merchant, "req_ops", actor="dashboard ops")


@pytest.mark.parametrize("row_index", [1, 3], ids=["capture", "refund"])
def test_an_amount_mismatch_resolves_by_an_adjusting_journal_once(
    store: Store, day: Day, row_index: int
) -> None:
    ours = int(day.rows[row_index]["amount"])
    reconciler = reconciled_with(store, day, {row_index: ours - 7})
    (found,) = mismatches(store, AMOUNT)
    assert found["row"] == row_index + 1 and found["row_type"] == day.rows[row_index]["type"]
    assert ledger.verify(store).ok
    caller = operator(store)

    adjusting = reconciler.resolve(found["id"], caller, "processor short-paid; written off")
    # The movement is settled, at the processor's figure, by the file it was in.
    txn = store.get(f"TXN#{txn_of(day.rows[row_index])}", "TXN")
    assert txn is not None and txn["settlement"] == "settled" and txn["settled_by"] == FILE
    # The seven missing cents are the platform's: booked to reconciliation_adjustments.
    adjustments = ledger.account_balance(store, ledger.reconciliation_adjustments("usd"))
    inbound = day.rows[row_index]["type"] == "capture"
    assert (adjustments.debits_posted, adjustments.credits_posted) == (
        (7, 0) if inbound else (0, 7)
    )
    assert {e.account for e in adjusting.entries} == {
        ledger.reconciliation_adjustments("usd"),
        ledger.processor_receivable("usd"),
    }
    report = ledger.verify(store)
    assert report.ok, report.violations
    # Audited, by whom; and only once.
    (audit,) = store.query_partition(f"RECM#{found['id']}", "AUDIT#")
    assert (audit["actor"], audit["to_state"]) == ("dashboard ops", "resolved")
    assert reconciler.resolutions([found["id"]])[found["id"]]["journal"] == adjusting.id
    with pytest.raises(InvalidRequestError, match="already settled"):
        reconciler.resolve(found["id"], caller, "again")
    assert ledger.account_balance(
        store, ledger.reconciliation_adjustments("usd")
    ).debits_posted == (7 if inbound else 0)


def test_a_resolution_racing_another_writes_nothing(
    store: Store, day: Day, monkeypatch: pytest.MonkeyPatch
) -> None:
    reconciler = reconciled_with(store, day, {1: int(day.rows[1]["amount"]) + 5})
    (found,) = mismatches(store, AMOUNT)
    committed = reconciler.writer.commit

    def first_the_other(transition: Transition) -> object:
        monkeypatch.setattr(reconciler.writer, "commit", committed)
        reconciler.resolve(found["id"], operator(store), "the other tab")  # wins the race
        return committed(transition)

    monkeypatch.setattr(reconciler.writer, "commit", first_the_other)
    with pytest.raises(ConflictError):
        reconciler.resolve(found["id"], operator(store), "this tab")
    journals = [
        j
        for j in store.query_partition(f"CHARGE#{found['charge_id']}", "JOURNAL#")
        if j["operation"] == "reconciliation.adjustment"
    ]
    assert len(journals) == 1 and ledger.verify(store).ok


def test_a_row_missing_in_our_ledger_books_its_cash_against_adjustments(
    store: Store, day: Day
) -> None:
    extra = {**day.rows[0], "charge_id": "ch_unknown", "processor_reference": "pr_unknown"}
    reconciler = Reconciler(store)
    reconciler.reconcile([HEADER, *map(line, [*day.rows, extra])], file=FILE, etag=ETAG)
    (missing,) = mismatches(store, MISSING_LEDGER)
    cash_before = ledger.account_balance(store, ledger.settlement_cash("usd")).debits_posted
    adjusting = reconciler.resolve(missing["id"], operator(store), "processor paid us twice")
    amount, fee = int(extra["amount"]), int(extra["fee"])
    cash = ledger.account_balance(store, ledger.settlement_cash("usd"))
    assert cash.debits_posted - cash_before == amount - fee
    adjustments = ledger.account_balance(store, ledger.reconciliation_adjustments("usd"))
    assert (adjustments.credits_posted, adjustments.debits_posted) == (amount, 0)
    assert adjusting.charge_id == "" and adjusting.partition == f"RECM#{missing['id']}"
    report = ledger.verify(store)
    assert report.ok, report.violations
    with pytest.raises(ConflictError):  # once
        reconciler.resolve(missing["id"], operator(store), "again")


def test_other_mismatches_and_unknown_ones_are_not_resolved_here(store: Store, day: Day) -> None:
    reconciler = Reconciler(store)
    reconciler.reconcile([HEADER, *map(line, day.rows[1:])], file=FILE, etag=ETAG)
    (missing,) = mismatches(store, MISSING_SETTLEMENT)
    with pytest.raises(InvalidRequestError, match="missing_in_settlement"):
        reconciler.resolve(missing["id"], operator(store), "no")
    with pytest.raises(ResourceMissingError):
        reconciler.resolve("recm_made_up", operator(store), "no")
    assert store.query_partition(f"RECM#{missing['id']}") == []
