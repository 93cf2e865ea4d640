"""A large settlement file fanned out in chunks (moto in-process, and the same day of
business as the fault tests): the plan's byte ranges, each chunk settled on its own, a chunk
processed twice, and a crash between any two of the fan-out's steps."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from clearline import reconciliation
from clearline.errors import ConflictError, ServiceUnavailableError
from clearline.reconciliation import (
    BANK_REPORT_COLUMNS,
    Chunk,
    Mismatch,
    NotASettlementFile,
    Reconciler,
    Report,
    plan_chunks,
)
from clearline.store import Store, TransactionCancelled, Write
from tests.unit.test_reconcile_faults import (
    ETAG,
    FILE,
    HEADER,
    CutOffAfter,
    Day,
    assert_settled_once,
    day,
    line,
    settled_by,
    settlement_journals,
)

__all__ = ["day"]  # the fixture, shared with the fault tests


def body_of(lines: list[str], end: str = "\n") -> bytes:
    return "".join(text + end for text in lines).encode()


def lines_of(body: bytes) -> list[bytes]:
    """The file's lines with their ends, as S3's stream gives them."""
    return body.splitlines(keepends=True)


class Results:
    """Chunk results kept in memory, as the handler keeps them in S3."""

    def __init__(self) -> None:
        self.saved: dict[int, dict[str, Any]] = {}

    def save(self, index: int, partial: dict[str, Any]) -> None:
        self.saved[index] = partial

    def load(self, index: int) -> dict[str, Any]:
        return self.saved[index]


def planned(reconciler: Reconciler, body: bytes, chunk_bytes: int = 1) -> list[Chunk]:
    chunks = reconciler.fan_out(FILE, ETAG, lambda: plan_chunks(lines_of(body), chunk_bytes))
    assert chunks is not None
    return chunks


def settle_chunk(
    reconciler: Reconciler, body: bytes, chunk: Chunk, results: Results
) -> Report | None:
    """What the handler does with a chunk's message: a ranged read, then the chunk."""
    lines = body[chunk.start : chunk.end + 1].decode().splitlines()
    return reconciler.reconcile_chunk(lines, file=FILE, etag=ETAG, chunk=chunk, results=results)


def marker(store: Store) -> dict[str, Any]:
    found = store.get(f"RECON#{FILE}", ETAG)
    assert found is not None
    return found


# The plan.


@pytest.mark.parametrize("end", ["\n", "\r\n"])
@pytest.mark.parametrize("chunk_bytes", [1, 150, 250, 10_000])
def test_the_plan_covers_every_row_once_in_order_with_its_row_number(
    end: str, chunk_bytes: int
) -> None:
    rows = [f"2026-11-29,b,pa_{n},capture,{1000 + n},30,{970 + n},usd,ch_{n}," for n in range(9)]
    # An empty line is no row, as csv reads the file whole.
    body = body_of([HEADER, *rows[:4], "", *rows[4:]], end)
    chunks = plan_chunks(lines_of(body), chunk_bytes)
    assert chunks is not None
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert chunks[0].start == len(HEADER) + len(end)
    assert chunks[-1].end == len(body) - 1
    assert all(b.start == a.end + 1 for a, b in itertools.pairwise(chunks))
    numbered = []
    for chunk in chunks:
        text = body[chunk.start : chunk.end + 1].decode()
        assert text.endswith(end)  # every chunk ends at a line end
        in_chunk = [row for row in text.splitlines() if row]
        numbered += [(chunk.first_row + i, row) for i, row in enumerate(in_chunk)]
    assert numbered == list(enumerate(rows, start=1))
    if chunk_bytes == 1:
        assert len(chunks) == 10  # each line its own, the empty one too
    if chunk_bytes == 10_000:
        assert len(chunks) == 1


def test_a_bank_report_is_not_planned_and_an_unknown_header_is_refused() -> None:
    bank = body_of([",".join(BANK_REPORT_COLUMNS), "2026-11-27,tr_1,po_1,paid,100,usd,"])
    assert plan_chunks(lines_of(bank), 1) is None
    with pytest.raises(NotASettlementFile):
        plan_chunks(lines_of(body_of(["date,amount", "2026-11-27,100"])), 1)
    with pytest.raises(NotASettlementFile):
        plan_chunks([], 1)


# The fan-out.


def test_a_file_in_chunks_settles_every_row_once_and_the_last_chunk_reports(
    store: Store, day: Day
) -> None:
    body = body_of([HEADER, *map(line, day.rows)])
    reported: list[Mismatch] = []
    reconciler = Reconciler(store, on_mismatch=reported.extend)
    chunks = planned(reconciler, body)
    assert len(chunks) == 4
    assert (marker(store)["status"], marker(store)["chunks"]) == ("processing", 4)

    results = Results()
    reports = [settle_chunk(reconciler, body, chunk, results) for chunk in chunks]
    assert reports[:3] == [None, None, None]
    report = reports[3]
    assert report is not None
    assert (report.rows, report.chunks, dict(report.counts)) == (4, 4, {"matched": 4})
    assert report.settled == {"usd": sum(int(r["amount"]) for r in day.rows)}
    assert report.mismatches == reported == []
    assert_settled_once(store, day)
    assert (marker(store)["status"], marker(store)["rows"]) == ("done", 4)
    assert marker(store)["chunks_done"] == 4

    # The notification again, and every chunk again, once the file is done: nothing moves.
    assert reconciler.fan_out(FILE, ETAG, lambda: pytest.fail("planned again")) == []
    assert [settle_chunk(reconciler, body, chunk, results) for chunk in chunks] == [None] * 4
    assert len(settlement_journals(store, day.rows)) == 4


def test_mismatches_in_different_chunks_are_all_reported(store: Store, day: Day) -> None:
    """A duplicate of a row two chunks earlier, a wrong amount and a row left out: each
    caught by the chunk that reads it, and the missing one by the finish, once."""
    first, second, third, refund = day.rows
    body = body_of(
        [
            HEADER,
            line(first),
            line({**second, "amount": str(int(second["amount"]) + 1)}),
            line(refund),
            line(first),
        ]
    )  # the third capture is missing
    reconciler = Reconciler(store)
    results = Results()
    chunks = planned(reconciler, body, chunk_bytes=2 * len(line(first)))
    assert len(chunks) == 2
    reports = [settle_chunk(reconciler, body, chunk, results) for chunk in chunks]
    report = reports[-1]
    assert report is not None
    assert sorted((m.kind, m.row) for m in report.mismatches) == [
        ("amount_mismatch", 2),
        ("duplicate", 4),
        ("missing_in_settlement", None),
    ]
    (missing,) = [m for m in report.mismatches if m.row is None]
    assert missing.charge_id == third["charge_id"]  # not the mismatched second: reported
    assert report.counts["matched"] == 2


def test_a_chunk_processed_twice_is_counted_once(store: Store, day: Day) -> None:
    body = body_of([HEADER, *map(line, day.rows)])
    reconciler = Reconciler(store)
    results = Results()
    first, *rest = planned(reconciler, body)
    assert settle_chunk(reconciler, body, first, results) is None
    assert settle_chunk(reconciler, body, first, results) is None  # SQS delivered it twice
    assert marker(store)["chunks_done"] == 1
    assert results.saved[0]["counts"] == {"matched": 1}  # its own row, read back as its own
    reports = [settle_chunk(reconciler, body, chunk, results) for chunk in rest]
    report = reports[-1]
    assert report is not None and dict(report.counts) == {"matched": 4} and report.rows == 4
    assert_settled_once(store, day)


class Crash(Exception):
    """The function stopped here: killed, timed out, or out of memory."""


def crash(*_: Any, **__: Any) -> None:
    raise Crash


@pytest.mark.parametrize(
    "step",
    ["after_save", "after_count", "after_claim", "in_finish"],
)
def test_a_crash_in_the_last_chunk_is_finished_by_its_redelivery(
    store: Store, day: Day, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    body = body_of([HEADER, *map(line, day.rows)])
    reconciler = Reconciler(store)
    results = Results()
    *others, last = planned(reconciler, body)
    for chunk in others:
        settle_chunk(reconciler, body, chunk, results)

    original: dict[str, Callable[..., Any]] = {
        "after_save": reconciler._count_done,
        "after_count": reconciler._claim_finish,
        "after_claim": reconciler._close,
        "in_finish": reconciler._announce_available,
    }
    method = original[step].__name__
    with monkeypatch.context() as patched:
        patched.setattr(reconciler, method, crash)
        with pytest.raises(Crash):
            settle_chunk(reconciler, body, last, results)
    expected_status = "finishing" if step in ("after_claim", "in_finish") else "processing"
    assert marker(store)["status"] == expected_status

    report = settle_chunk(reconciler, body, last, results)  # the queue delivers it again
    assert report is not None
    assert (report.rows, dict(report.counts), report.mismatches) == (4, {"matched": 4}, [])
    assert marker(store)["status"] == "done"
    assert marker(store)["chunks_done"] == 4
    assert_settled_once(store, day)


def test_a_chunk_cut_off_part_way_is_resumed(
    store: Store, day: Day, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = body_of([HEADER, *map(line, day.rows)])
    results = Results()
    (whole,) = planned(Reconciler(store), body, chunk_bytes=len(body))
    # One row to a transaction, so the cut falls between the chunk's rows.
    monkeypatch.setattr(reconciliation, "MAX_TRANSACTION_ITEMS", 9)
    with pytest.raises(ServiceUnavailableError):
        settle_chunk(Reconciler(CutOffAfter(store, 2)), body, whole, results)
    assert [settled_by(store, row) for row in day.rows] == [FILE, FILE, None, None]
    assert results.saved == {} and marker(store)["chunks_done"] == 0
    report = settle_chunk(Reconciler(store), body, whole, results)
    assert report is not None and dict(report.counts) == {"matched": 4}
    assert_settled_once(store, day)


def test_a_crash_after_the_plan_is_recorded_sends_the_same_plan_again(
    store: Store, day: Day
) -> None:
    body = body_of([HEADER, *map(line, day.rows)])
    reconciler = Reconciler(store)
    chunks = planned(reconciler, body)  # recorded; the sending was then cut off
    # Delivered again after the operators lowered the chunk size: the plan on record holds.
    again = reconciler.fan_out(FILE, ETAG, lambda: pytest.fail("planned again"))
    assert again == chunks


def test_a_file_begun_whole_is_resumed_whole(store: Store, day: Day) -> None:
    """The chunk size was raised past this file's while it ran whole: it is not re-planned."""
    reconciler = Reconciler(store)
    assert reconciler._start(FILE, ETAG)
    assert reconciler.fan_out(FILE, ETAG, lambda: pytest.fail("planned")) is None


def test_a_bank_report_is_reconciled_whole(store: Store) -> None:
    reconciler = Reconciler(store)
    bank = body_of([",".join(BANK_REPORT_COLUMNS), "2026-11-27,tr_1,po_1,paid,100,usd,"])
    assert reconciler.fan_out(FILE, ETAG, lambda: plan_chunks(lines_of(bank), 1)) is None
    assert store.get(f"RECON#{FILE}", ETAG) is None  # nothing recorded: the whole run starts it


class ConflictingFirst(Store):
    """The table, meeting another transaction on an item the first `conflicts` times a
    settlement is written (as parallel chunks do on a ledger shard)."""

    def __init__(self, store: Store, conflicts: int) -> None:
        super().__init__(store.table_name, store.client)
        self.conflicts = conflicts

    def transact(self, writes: list[Write]) -> None:
        settling = any(w.key and str(w.key.get("pk", "")).startswith("TXN#") for w in writes)
        if settling and self.conflicts > 0:
            self.conflicts -= 1
            raise TransactionCancelled(["TransactionConflict"] + ["None"] * (len(writes) - 1))
        super().transact(writes)


def test_a_settlement_that_meets_another_transaction_is_tried_again(
    store: Store, day: Day, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconciliation.time, "sleep", lambda _: None)
    body = body_of([HEADER, *map(line, day.rows)])
    conflicting = ConflictingFirst(store, reconciliation.CONFLICT_ATTEMPTS - 1)
    reconciler = Reconciler(conflicting)
    (whole,) = planned(reconciler, body, chunk_bytes=len(body))
    report = settle_chunk(reconciler, body, whole, Results())
    assert conflicting.conflicts == 0
    assert report is not None and dict(report.counts) == {"matched": 4}
    assert_settled_once(store, day)


def test_a_settlement_that_keeps_meeting_others_fails_the_chunk_for_a_later_delivery(
    store: Store, day: Day, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconciliation.time, "sleep", lambda _: None)
    body = body_of([HEADER, *map(line, day.rows)])
    results = Results()
    (whole,) = planned(Reconciler(store), body, chunk_bytes=len(body))
    with pytest.raises(ConflictError):
        settle_chunk(Reconciler(ConflictingFirst(store, 100)), body, whole, results)
    assert results.saved == {} and marker(store)["chunks_done"] == 0
    report = settle_chunk(Reconciler(store), body, whole, results)
    assert report is not None and dict(report.counts) == {"matched": 4}
    assert_settled_once(store, day)
