"""Reconciliation: a processor settlement file, matched row by row against the ledger.

The file is read as a stream and looked up in batches of 100 rows, so memory does not
grow with the file. Each row is matched to the balance transaction it settles (its id
derives from our charge or refund id), and classified: matched, amount mismatch, currency
mismatch, missing in our ledger, or duplicate. A matched row posts its settlement journal,
exactly once: the journal id derives from the movement, and the journal records the file
and row that posted it, so a redelivered or resumed file posts nothing twice. Movements
that should have settled on the file's day but are absent from it are reported as
missing in settlement: they are still in the `by_due` index under their business day.

A large file is fanned out: one pass over its bytes plans chunks that end at line ends
(`plan_chunks`), recorded on the file's marker before any is sent, and each chunk is read
and settled on its own, in parallel, with the same row numbers as a whole run. A chunk's
result is saved, then counted done once (create-only, in the transaction that adds to the
marker's count), and the chunk that leaves them all done claims the finish: it merges the
results, looks for movements missing in settlement and writes the report. A chunk
processed twice settles nothing twice: each row is guarded by its movement's state, and a
row this file settled before reads back as matched.

The bank's daily payout report (a CSV with BANK_REPORT_COLUMNS, which is how it is told
apart) is reconciled the same way, row by row against our payouts: a payout still in
transit is settled from its row (paid, or returned with its failure code) through the same
transition the payout worker commits, so whichever comes first settles it, once; a row
that disagrees with what we recorded is a mismatch for operations.

File format (CSV, with this header):
settlement_date,batch_id,processor_reference,type,amount,fee,net,currency,charge_id,refund_id
`type` is capture, refund, dispute (a chargeback taken back) or dispute_reversal (a won
dispute paid back); amounts are integers in minor units; `fee` is what the processor keeps
(its dispute fee, on a chargeback); `net` is what it pays (negative for refunds and
chargebacks); charge_id and refund_id are ours (refund_id is empty but on refunds). A
dispute's processor_reference is the network's dispute id, from which ours derives.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from typing import Any, Protocol

from clearline import balance, ledger, listing
from clearline.audit import Caller
from clearline.balance import SETTLED, SETTLEMENT_SHARDS, UNSETTLED, awaiting_payout_keys
from clearline.bank_accounts import BankAccounts
from clearline.disputes import dispute_id_of, reinstatement_txn_id, withdrawal_txn_id
from clearline.errors import ConflictError, InvalidRequestError, ResourceMissingError
from clearline.ids import derived_id
from clearline.models import ReconciliationMismatch
from clearline.payouts import IN_TRANSIT, PayoutService, payout_pk
from clearline.secrets import SecretBox
from clearline.store import Store, TransactionCancelled
from clearline.transitions import Announcement, Change, Transition, TransitionWriter

COLUMNS = [
    "settlement_date",
    "batch_id",
    "processor_reference",
    "type",
    "amount",
    "fee",
    "net",
    "currency",
    "charge_id",
    "refund_id",
]
LAG_DAYS = int(os.environ.get("CLEARLINE_SETTLEMENT_LAG_DAYS", "2"))
BATCH = 100
MAX_TRANSACTION_ITEMS = 100  # DynamoDB's limit for one TransactWriteItems
PLATFORM = "clearline"  # operations events belong to the platform, not to a merchant
REPORT_KIND = "recon"  # a finished file's marker, in the platform's list
MISMATCH_EVENT = "reconciliation.mismatch"
RESOLVED = "resolved"

MATCHED, AMOUNT, CURRENCY, MISSING_LEDGER, DUPLICATE, MISSING_SETTLEMENT, MALFORMED = (
    "matched",
    "amount_mismatch",
    "currency_mismatch",
    "missing_in_ledger",
    "duplicate",
    "missing_in_settlement",
    "malformed",
)
# What operations resolve by an adjusting journal (Reconciler.resolve).
RESOLVABLE = (AMOUNT, MISSING_LEDGER, DUPLICATE)


ROW_TYPES = ("capture", "refund", "dispute", "dispute_reversal")
BANK_REPORT_COLUMNS = [
    "report_date",
    "transfer_id",
    "reference",
    "status",
    "amount",
    "currency",
    "failure_code",
]
STATUS = "status_mismatch"
# What the bank's report says of a transfer, as our payout's status.
_BANK_STATUSES = {"paid": "paid", "returned": "failed"}

# A settlement file's state, on its marker item (one per file and ETag). A fanned-out file
# is FINISHING while the chunk that completed it merges the results.
PROCESSING, FINISHING, DONE = "processing", "finishing", "done"
# A file larger than this is reconciled in chunks of about this size: some 11,000 rows, a
# few seconds of DynamoDB calls each.
DEFAULT_CHUNK_BYTES = 1 << 20
# Parallel chunks post to the same accounts' shards: a transaction that meets another on an
# item is tried again, this many times in all, after a short random wait.
CONFLICT_ATTEMPTS = 5


class NotASettlementFile(ValueError):
    pass


@dataclass(frozen=True)
class Row:
    number: int
    settlement_date: dt.date
    processor_reference: str
    type: str
    amount: int
    fee: int
    currency: str
    charge_id: str
    refund_id: str

    @classmethod
    def parse(cls, number: int, raw: dict[str, str]) -> Row:
        # csv fills a short row's missing fields with None and gathers extra ones under
        # None: either way the row's fields are not where the header says.
        if None in raw or any(value is None for value in raw.values()):
            raise ValueError("the row does not have the header's number of fields")
        kind = raw["type"]
        if kind not in ROW_TYPES:
            raise ValueError(f"unknown type {kind!r}")
        return cls(
            number,
            dt.date.fromisoformat(raw["settlement_date"]),
            raw["processor_reference"],
            kind,
            int(raw["amount"]),
            int(raw["fee"]),
            raw["currency"].lower(),
            raw["charge_id"],
            raw["refund_id"],
        )

    def mismatch(self, kind: str, detail: str) -> Mismatch:
        return Mismatch(
            kind,
            self.number,
            self.processor_reference,
            self.charge_id,
            detail,
            self.amount,
            self.currency,
            row_type=self.type,
            fee=self.fee,
            refund_id=self.refund_id,
            settlement_date=self.settlement_date.isoformat(),
        )

    @property
    def txn_id(self) -> str:
        """The balance transaction this row settles."""
        if self.type == "capture":
            return derived_id("txn", self.charge_id, "capture")
        if self.type == "dispute":
            return withdrawal_txn_id(dispute_id_of(self.processor_reference))
        if self.type == "dispute_reversal":
            return reinstatement_txn_id(dispute_id_of(self.processor_reference))
        return derived_id("txn", self.refund_id, "refund")


@dataclass
class Mismatch:
    kind: str
    row: int | None
    processor_reference: str | None
    charge_id: str | None
    detail: str
    amount: int = 0
    currency: str | None = None
    # The row's other fields, for resolving it later (a settlement file row's, not a bank's).
    row_type: str | None = None
    fee: int = 0
    refund_id: str | None = None
    settlement_date: str | None = None


@dataclass
class Report:
    file: str
    etag: str
    rows: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    settled: Counter[str] = field(default_factory=Counter)  # currency -> amount matched
    mismatches: list[Mismatch] = field(default_factory=list)
    already_reconciled: bool = False
    seconds: float = 0.0
    # Movements named by a mismatched row: already reported, not "missing" too.
    reported: set[str] = field(default_factory=set)
    # Merchants whose money this file made available (for balance.available).
    credited: set[str] = field(default_factory=set)
    # The settlement dates of its rows, whose movements should all have been in it.
    days: set[dt.date] = field(default_factory=set)
    chunks: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "etag": self.etag,
            "rows": self.rows,
            "chunks": self.chunks,
            "counts": dict(self.counts),
            "settled": dict(self.settled),
            "mismatches": [asdict(m) for m in self.mismatches],
            "already_reconciled": self.already_reconciled,
            "seconds": round(self.seconds, 3),
        }

    def to_partial(self) -> dict[str, Any]:
        """A chunk's result, as the chunk that finishes the file reads it back."""
        return {
            "rows": self.rows,
            "counts": dict(self.counts),
            "settled": dict(self.settled),
            "mismatches": [asdict(m) for m in self.mismatches],
            "reported": sorted(self.reported),
            "credited": sorted(self.credited),
            "days": sorted(day.isoformat() for day in self.days),
        }

    def absorb(self, partial: dict[str, Any]) -> None:
        """Add a chunk's result (`to_partial`) to this, the file's report."""
        self.rows += int(partial["rows"])
        self.counts.update(partial["counts"])
        self.settled.update(partial["settled"])
        self.mismatches += [Mismatch(**m) for m in partial["mismatches"]]
        self.reported |= set(partial["reported"])
        self.credited |= set(partial["credited"])
        self.days |= {dt.date.fromisoformat(day) for day in partial["days"]}


@dataclass(frozen=True)
class Chunk:
    """A run of a settlement file's rows: the object's bytes `start` to `end` (inclusive, as
    an HTTP Range), whose first row is row `first_row` of the file."""

    index: int
    start: int
    end: int
    first_row: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Chunk:
        return cls(int(raw["index"]), int(raw["start"]), int(raw["end"]), int(raw["first_row"]))


def plan_chunks(lines: Iterable[bytes], chunk_bytes: int) -> list[Chunk] | None:
    """A settlement file's rows as chunks of about `chunk_bytes`, each ending at a line end.
    `lines` are the file's lines with their line ends, so that their lengths add up to byte
    offsets; a row of the processor's file never holds a line break, and an empty line is no
    row (as csv reads it). None for the bank's payout report, which is reconciled whole (a
    row per payout); NotASettlementFile for any other header."""
    iterator = iter(lines)
    header = next(iterator, b"")
    columns = next(csv.reader([header.decode("utf-8")]), [])
    if columns == BANK_REPORT_COLUMNS:
        return None
    if columns != COLUMNS:
        raise NotASettlementFile(f"expected the columns {','.join(COLUMNS)}")
    chunks: list[Chunk] = []
    start = offset = len(header)
    first_row = next_row = 1
    for line in iterator:
        offset += len(line)
        if line.rstrip(b"\r\n"):
            next_row += 1
        if offset - start >= chunk_bytes:
            chunks.append(Chunk(len(chunks), start, offset - 1, first_row))
            start, first_row = offset, next_row
    if offset > start:
        chunks.append(Chunk(len(chunks), start, offset - 1, first_row))
    return chunks


class ChunkResults(Protocol):
    """Where a fanned-out file's chunks leave their results (`Report.to_partial`) for the
    chunk that finishes it: kept whole, since a chunk's mismatches may be many."""

    def save(self, index: int, partial: dict[str, Any]) -> None: ...

    def load(self, index: int) -> dict[str, Any]: ...


def _together(settlements: list[Transition]) -> Transition:
    """Rows' settlements as one transaction: their changes first, in order, so that
    `failed_at(i)` names row i."""
    return Transition(
        [s.changes[0] for s in settlements], journals=[j for s in settlements for j in s.journals]
    )


def _accounts(settlement: Transition) -> set[str]:
    """The ledger accounts a settlement's journals post to: one ADD each in a transaction."""
    return {e.account for j in settlement.journals for e in j.entries if e.amount > 0}


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _settled_amount(row: Row, txn: dict[str, Any]) -> int:
    rate = Decimal(str(txn["exchange_rate"]))
    return ledger.exchange(row.amount, rate, row.currency, txn["currency"])


class Reconciler:
    def __init__(
        self,
        store: Store,
        shards: ledger.ShardPolicy | None = None,
        on_mismatch: Callable[[list[Mismatch]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.shards = shards or ledger.ShardPolicy()
        self.on_mismatch = on_mismatch or (lambda _: None)
        self.clock = clock
        self.writer = TransitionWriter(store, self.shards, lambda: self.clock())
        # Settling a payout from the bank's report calls nobody and reads no account number.
        self.payouts = PayoutService(
            store, BankAccounts(store, SecretBox("")), None, self.shards, lambda: self.clock()
        )

    def reconcile(
        self,
        lines: Iterable[str],
        *,
        file: str,
        etag: str,
        progress: Callable[[int], None] | None = None,
    ) -> Report:
        """The whole file, in this call. A file started before and interrupted is resumed."""
        report = Report(file, etag)
        started = time.monotonic()
        marker = self._marker(file, etag)
        if marker is not None and marker.get("status") == DONE:
            report.already_reconciled = True  # S3 or SQS delivered the same file again
            report.rows = marker.get("rows", 0)
            return report
        if marker is None:
            self._start(file, etag)
        reader = csv.DictReader(lines)
        if reader.fieldnames == BANK_REPORT_COLUMNS:
            self._bank_report(reader, report, progress)
            return self._finish(report, PROCESSING, time.monotonic() - started)
        if reader.fieldnames != COLUMNS:
            raise NotASettlementFile(f"{file}: expected the columns {','.join(COLUMNS)}")
        self._settle_rows(reader, report, 1, progress)
        self._close(report)
        return self._finish(report, PROCESSING, time.monotonic() - started)

    def fan_out(
        self, file: str, etag: str, plan: Callable[[], list[Chunk] | None]
    ) -> list[Chunk] | None:
        """The chunks to reconcile the file in, to be sent out (again, on a redelivery):
        planned and recorded on the file's marker the first time, before any is sent, and
        read back from it after; none once the file is done or being finished. None when
        the file is to be reconciled whole: `plan` says so, or a whole run of it began
        before."""
        marker = self._marker(file, etag)
        if marker is None:
            chunks = plan()
            if chunks is None:
                return None
            recorded = [chunk.to_dict() for chunk in chunks]
            if self._start(file, etag, chunks=len(chunks), chunks_done=0, plan=recorded):
                return chunks
            marker = self._marker(file, etag)  # another delivery recorded it first
            assert marker is not None
        if marker.get("status") != PROCESSING:
            return []
        if "plan" not in marker:
            return None
        return [Chunk.from_dict(raw) for raw in marker["plan"]]

    def reconcile_chunk(
        self, lines: Iterable[str], *, file: str, etag: str, chunk: Chunk, results: ChunkResults
    ) -> Report | None:
        """One chunk of a fanned-out file: its rows settled, its result saved and counted
        done. Returns the file's report when this chunk was the one that completed it, or
        when the file's finish was claimed and not done (cut off: the claiming chunk's
        redelivery, as a rule, runs it again, and a finish run twice writes the same
        report); else None. `lines` are only read when the chunk is still to be done."""
        marker = self._marker(file, etag)
        status = marker.get("status") if marker else None
        if marker is None or status not in (PROCESSING, FINISHING):
            return None  # done (a late redelivery), or no such fan-out
        if status == PROCESSING:
            report = Report(file, etag)
            self._settle_rows(csv.DictReader(lines, fieldnames=COLUMNS), report, chunk.first_row)
            results.save(chunk.index, report.to_partial())
            self._count_done(file, etag, chunk, report)
            if not self._claim_finish(file, etag):
                return None
        report = Report(file, etag, chunks=int(marker["chunks"]))
        for index in range(report.chunks):
            report.absorb(results.load(index))
        self._close(report)
        return self._finish(report, FINISHING, self.clock() - int(marker["started"]))

    def _marker(self, file: str, etag: str) -> dict[str, Any] | None:
        return self.store.get(f"RECON#{file}", etag)

    def _start(self, file: str, etag: str, **fields: Any) -> bool:
        """The file's marker, created; False when another delivery created it first."""
        marker = {"pk": f"RECON#{file}", "sk": etag, "started": int(self.clock()), **fields}
        start = Change(
            marker["pk"], etag, file, "start", PROCESSING, state_attribute="status", create=marker
        )
        return self.writer.commit(Transition([start])) is None

    def _count_done(self, file: str, etag: str, chunk: Chunk, report: Report) -> None:
        """The chunk, counted on the marker once: its own item is created in the same
        transaction, so a chunk processed again finds itself counted and adds nothing."""
        pk = f"RECON#{file}"
        sk = f"{etag}#chunk#{chunk.index:06d}"
        done = {"pk": pk, "sk": sk, "rows": report.rows, "mismatches": len(report.mismatches)}
        counted = Change(pk, sk, file, "chunk", DONE, state_attribute="status", create=done)
        counting = Change(
            pk,
            etag,
            file,
            "chunk.done",
            PROCESSING,
            from_state=PROCESSING,
            state_attribute="status",
            add={"chunks_done": 1},
            audited=False,
        )
        self.writer.commit(Transition([counted, counting]))

    def _claim_finish(self, file: str, etag: str) -> bool:
        """Whether this caller finishes the file: every chunk is done, and no other caller
        claimed it first."""
        claim = Change(
            f"RECON#{file}",
            etag,
            file,
            "finishing",
            FINISHING,
            from_state=PROCESSING,
            state_attribute="status",
            condition="chunks_done = chunks",
        )
        return self.writer.commit(Transition([claim])) is None

    def _settle_rows(
        self,
        reader: Iterable[dict[str, str]],
        report: Report,
        first_row: int,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Rows numbered from `first_row`, looked up and settled a batch at a time."""
        for chunk in batched(enumerate(reader, start=first_row), BATCH):
            rows: list[Row] = []
            for number, raw in chunk:
                try:
                    rows.append(Row.parse(number, raw))
                except (ValueError, KeyError, TypeError) as exc:
                    self._mismatch(
                        report,
                        Mismatch(
                            MALFORMED,
                            number,
                            raw.get("processor_reference"),
                            raw.get("charge_id"),
                            f"unreadable row: {exc}",
                        ),
                    )
            report.days |= {row.settlement_date for row in rows}
            found = {
                t["id"]: t for t in self.store.get_many([(f"TXN#{r.txn_id}", "TXN") for r in rows])
            }
            matched = [
                (row, txn)
                for row in rows
                if (txn := self._classify(report, row, found.get(row.txn_id))) is not None
            ]
            self._settle_many(report, matched)
            report.rows += len(chunk)
            if progress:
                progress(report.rows)

    def _close(self, report: Report) -> None:
        """What is known only once every row is read: the movements missing from the file,
        and the merchants told their money became available."""
        for day in sorted(report.days):
            self._missing_in_settlement(report, day - dt.timedelta(days=LAG_DAYS))
        self._announce_available(report)

    def _announce_available(self, report: Report) -> None:
        """balance.available, once per merchant and file, with the balance it left: as
        Stripe's, only for money that became available, never for a withdrawal alone."""
        for merchant in sorted(report.credited):
            available = balance.merchant_balance(self.store, merchant, self.shards)
            event = Announcement(
                merchant,
                "balance.available",
                available,
                operation=f"balance.available:{report.file}:{report.etag}",
            )
            self.writer.commit(Transition([], events=[event]))

    def _finish(self, report: Report, from_state: str, seconds: float) -> Report:
        finished = Change(
            f"RECON#{report.file}",
            report.etag,
            report.file,
            "finish",
            DONE,
            from_state=from_state,
            state_attribute="status",
            set={
                "rows": report.rows,
                "finished": int(self.clock()),
                "counts": dict(report.counts),
                # Listed among the platform's reports, newest first, for operations.
                **listing.list_keys(PLATFORM, REPORT_KIND, int(self.clock() * 1000), report.file),
            },
        )
        self.writer.commit(Transition([finished]))
        report.seconds = seconds
        return report

    # ---- resolving a mismatch ----------------------------------------------------------------

    def mismatch(self, mismatch_id: str) -> dict[str, Any]:
        """A reported mismatch, as its event announced it."""
        event = self.store.get(f"EVENT#{derived_id('evt', mismatch_id, MISMATCH_EVENT)}", "EVENT")
        if event is None or event.get("merchant") != PLATFORM:
            raise ResourceMissingError("reconciliation mismatch", mismatch_id)
        return dict(event["data"]["object"])

    def resolve(self, mismatch_id: str, caller: Caller, note: str) -> ledger.Journal:
        """Resolve a settlement file's mismatch by an adjusting journal, taking the
        processor's word for what moved (the cash is what the bank holds):

        - an amount mismatch: the movement settles as its row said (the cash and fee the
          processor reported; the merchant's side as we recorded it, so the merchant is
          whole), and the difference goes to reconciliation_adjustments;
        - a row missing in our ledger, or a duplicate row: the processor moved money we
          have no movement for (again); its cash and fee are booked against
          reconciliation_adjustments, for the platform to recover or keep.

        Nothing is edited: the journals are new, a movement's change to settled is guarded
        by its being unsettled, and the resolution is created once, audited, in the same
        transaction. Other kinds (a currency mismatch, a movement missing in settlement)
        are taken up with the processor, not resolved here."""
        found = self.mismatch(mismatch_id)
        kind = found["mismatch"]
        if kind not in RESOLVABLE or not found.get("row_type") or not found.get("etag"):
            raise InvalidRequestError(
                f"This mismatch ({kind}) is not resolved by an adjusting journal here: take it "
                "up with the processor.",
                param="mismatch",
            )
        row = Row(
            int(found["row"]),
            dt.date.fromisoformat(found["settlement_date"]),
            str(found["processor_reference"]),
            str(found["row_type"]),
            int(found["amount"]),
            int(found.get("fee") or 0),
            str(found["currency"]),
            str(found["charge_id"]),
            str(found.get("refund_id") or ""),
        )
        if kind == AMOUNT:
            changes, journals, adjusting = self._at_the_processors_figure(mismatch_id, found, row)
        else:
            adjusting = self._unexplained_movement(mismatch_id, found, row)
            changes, journals = [], [adjusting]
        resolution: dict[str, Any] = {
            "pk": f"RECM#{mismatch_id}",
            "sk": "RESOLUTION",
            "id": mismatch_id,
            "journal": adjusting.id,
            "note": note[:500],
            "resolved": int(self.clock()),
        }
        resolved = Change(
            resolution["pk"], "RESOLUTION", mismatch_id, "resolve", RESOLVED, create=resolution
        )
        if self.writer.commit(Transition([*changes, resolved], caller, journals=journals)):
            raise ConflictError(
                f"The mismatch {mismatch_id} was resolved, or its movement settled, meanwhile."
            )
        return adjusting

    def _at_the_processors_figure(
        self, mismatch_id: str, found: dict[str, Any], row: Row
    ) -> tuple[list[Change], list[ledger.Journal], ledger.Journal]:
        """An amount mismatch's settlement at the row's figure, and its adjusting journal."""
        txn = self.store.get(f"TXN#{row.txn_id}", "TXN")
        if txn is None or txn.get("settlement") != UNSETTLED:
            raise InvalidRequestError(
                f"The movement {row.txn_id} is already settled: there is nothing to resolve.",
                param="mismatch",
            )
        if txn.get("presentment_currency", txn["currency"]) != row.currency or txn.get(
            "exchange_rate"
        ):
            raise InvalidRequestError(
                "A converted movement's mismatch is resolved by hand.", param="mismatch"
            )
        settlement = self._settlement(Report(str(found["file"]), str(found["etag"])), row, txn)
        ours = abs(int(txn["amount"]))
        inbound = row.type in ("capture", "dispute_reversal")
        # What is left on the receivable once the processor's figure settles: booked away.
        left = (ours - row.amount) if inbound else (row.amount - ours)
        receivable = ledger.processor_receivable(row.currency)
        adjustments = ledger.reconciliation_adjustments(row.currency)
        entries = (
            (ledger.Entry(adjustments, "debit", left), ledger.Entry(receivable, "credit", left))
            if left > 0
            else (
                ledger.Entry(receivable, "debit", -left),
                ledger.Entry(adjustments, "credit", -left),
            )
        )
        adjusting = self._adjusting(mismatch_id, found, row, entries, str(txn["merchant"]))
        return settlement.changes, [*settlement.journals, adjusting], adjusting

    def _unexplained_movement(
        self, mismatch_id: str, found: dict[str, Any], row: Row
    ) -> ledger.Journal:
        """The cash and fee of a row we have no (further) movement for, booked against
        reconciliation_adjustments: in, less the fee kept; or out, with its fee."""
        cash = ledger.settlement_cash(row.currency)
        fees = ledger.processor_fees(row.currency)
        adjustments = ledger.reconciliation_adjustments(row.currency)
        if row.type in ("capture", "dispute_reversal"):
            entries = (
                ledger.Entry(cash, "debit", row.amount - row.fee),
                ledger.Entry(fees, "debit", row.fee),
                ledger.Entry(adjustments, "credit", row.amount),
            )
        else:
            entries = (
                ledger.Entry(adjustments, "debit", row.amount),
                ledger.Entry(fees, "debit", row.fee),
                ledger.Entry(cash, "credit", row.amount + row.fee),
            )
        # Its own partition: the row may name no charge of ours.
        return replace(
            self._adjusting(mismatch_id, found, row, entries, ""),
            charge_id="",
            partition=f"RECM#{mismatch_id}",
        )

    def _adjusting(
        self,
        mismatch_id: str,
        found: dict[str, Any],
        row: Row,
        entries: tuple[ledger.Entry, ...],
        merchant_id: str,
    ) -> ledger.Journal:
        return ledger.Journal(
            id=derived_id("jnl", mismatch_id, "adjustment"),
            currency=row.currency,
            entries=tuple(e for e in entries if e.amount > 0),
            charge_id=row.charge_id,
            merchant_id=merchant_id,
            operation="reconciliation.adjustment",
            created=int(self.clock()),
            source=mismatch_id,
            details={"mismatch": mismatch_id, "file": found["file"], "row": row.number},
        )

    def resolutions(self, mismatch_ids: list[str]) -> dict[str, dict[str, Any]]:
        keys = [(f"RECM#{mismatch_id}", "RESOLUTION") for mismatch_id in mismatch_ids]
        return {item["id"]: item for item in self.store.get_many(keys)}

    def _bank_report(
        self,
        reader: csv.DictReader[str],
        report: Report,
        progress: Callable[[int], None] | None,
    ) -> None:
        for chunk in batched(enumerate(reader, start=1), BATCH):
            keys = [(payout_pk(str(raw.get("reference"))), "PAYOUT") for _, raw in chunk]
            found = {item["id"]: item for item in self.store.get_many(keys)}
            for number, raw in chunk:
                self._bank_row(report, number, raw, found.get(str(raw.get("reference"))))
            report.rows += len(chunk)
            if progress:
                progress(report.rows)

    def _bank_row(
        self, report: Report, number: int, raw: dict[str, str], payout: dict[str, Any] | None
    ) -> None:
        def mismatch(kind: str, detail: str) -> None:
            amount = int(raw["amount"]) if str(raw.get("amount", "")).isdigit() else 0
            self._mismatch(
                report,
                Mismatch(
                    kind, number, raw.get("transfer_id"), None, detail, amount, raw.get("currency")
                ),
            )

        status = _BANK_STATUSES.get(str(raw.get("status")))
        if None in raw or status is None or not str(raw.get("amount", "")).isdigit():
            mismatch(MALFORMED, "unreadable row")
            return
        if payout is None:
            mismatch(MISSING_LEDGER, f"no payout {raw['reference']}")
            return
        if payout["currency"] != raw["currency"].lower():
            mismatch(CURRENCY, f"ours {payout['currency']}, the bank's {raw['currency']}")
            return
        if payout["amount"] != int(raw["amount"]):
            mismatch(AMOUNT, f"ours {payout['amount']}, the bank's {raw['amount']}")
            return
        if payout["status"] == IN_TRANSIT:
            bank_status = "paid" if status == "paid" else "returned"
            self.payouts.settle(payout, bank_status, raw.get("failure_code") or None)
            payout = self.store.get(payout["pk"], "PAYOUT") or payout
        code = raw.get("failure_code") or None
        if payout["status"] != status or (
            status == "failed" and payout.get("failure_code") != code
        ):
            mismatch(STATUS, f"{payout['id']} is {payout['status']}, the bank says {raw['status']}")
            return
        report.counts[MATCHED] += 1
        report.settled[payout["currency"]] += payout["amount"]

    def _classify(
        self, report: Report, row: Row, txn: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """The movement the row settles, when it matches; else the row's mismatch is
        reported and None returned."""
        if txn is None:
            self._mismatch(report, row.mismatch(MISSING_LEDGER, f"no {row.type} {row.txn_id}"))
            return None
        # The processor reports what it moved, in the customer's currency: a converted
        # movement is matched on that, and settles the merchant's side in theirs.
        moved_in = txn.get("presentment_currency", txn["currency"])
        moved = int(txn.get("presentment_amount", abs(txn["amount"])))
        if moved_in != row.currency:
            mismatch = row.mismatch(CURRENCY, f"ours {moved_in}, theirs {row.currency}")
        elif moved != row.amount:
            mismatch = row.mismatch(AMOUNT, f"ours {moved}, theirs {row.amount}")
        elif txn.get("exchange_rate") and _settled_amount(row, txn) != abs(txn["amount"]):
            # The row's amount, at the movement's rate, must be what the merchant's side says.
            mismatch = row.mismatch(
                AMOUNT,
                f"{row.amount} {row.currency} at {txn['exchange_rate']} is "
                f"{_settled_amount(row, txn)} {txn['currency']}, ours {abs(txn['amount'])}",
            )
        else:
            return txn
        report.reported.add(txn["id"])
        self._mismatch(report, mismatch)
        return None

    def _settled(self, report: Report, row: Row, txn: dict[str, Any]) -> None:
        report.counts[MATCHED] += 1
        report.settled[row.currency] += row.amount
        if txn["net"] > 0:
            report.credited.add(txn["merchant"])

    def _settle_many(self, report: Report, matched: list[tuple[Row, dict[str, Any]]]) -> None:
        """Post the matched rows' settlement journals, as many rows to a transaction as fit
        in one (100 items, each item once; the rows' ADDs to an account are one). A row
        whose movement another row (or an earlier, interrupted run of this file) settled
        first fails its own guard alone: the rest of its batch is committed again without
        it."""
        for batch in self._batches(report, matched):
            while batch:
                cancelled = self._commit(_together([s for _, _, s in batch]))
                if cancelled is None:
                    for row, txn, _ in batch:
                        self._settled(report, row, txn)
                    break
                failed = [i for i in range(len(batch)) if cancelled.failed_at(i)]
                if not failed:  # refused for a reason no row's guard names: one at a time
                    for row, txn, settlement in batch:
                        self._settle_one(report, row, txn, settlement)
                    break
                for i in failed:
                    row, txn, _ = batch[i]
                    self._already_settled(report, row, txn)
                batch = [entry for i, entry in enumerate(batch) if i not in failed]

    def _batches(
        self, report: Report, matched: list[tuple[Row, dict[str, Any]]]
    ) -> Iterator[list[tuple[Row, dict[str, Any], Transition]]]:
        """The rows' settlements packed into transactions of at most MAX_TRANSACTION_ITEMS
        items. Two rows of one movement never share one (an item once per transaction), so
        the second finds the movement settled by the first."""
        batch: list[tuple[Row, dict[str, Any], Transition]] = []
        movements: set[str] = set()
        # The batch's size kept as it grows: each row's own items, and one ADD per account
        # however many rows post to it.
        own_items, accounts = 0, set[str]()
        now = self.clock()
        for row, txn in matched:
            settlement = self._settlement(report, row, txn)
            posted = _accounts(settlement)
            own = len(self.writer.writes(_together([settlement]), now)) - len(posted)
            fits = own_items + own + len(accounts | posted) <= MAX_TRANSACTION_ITEMS
            if batch and (txn["id"] in movements or not fits):
                yield batch
                batch, movements, own_items, accounts = [], set(), 0, set()
            batch.append((row, txn, settlement))
            movements.add(txn["id"])
            own_items += own
            accounts |= posted
        if batch:
            yield batch

    def _commit(self, settlement: Transition) -> TransactionCancelled | None:
        attempt = 1
        while True:
            try:
                return self.writer.commit(settlement)
            except ConflictError:  # another chunk's transaction on a shard: all or nothing
                if attempt == CONFLICT_ATTEMPTS:
                    raise
            time.sleep(random.uniform(0, 0.02 * 2**attempt))
            attempt += 1

    def _settle_one(
        self, report: Report, row: Row, txn: dict[str, Any], settlement: Transition
    ) -> None:
        if self._commit(settlement) is None:
            self._settled(report, row, txn)
        else:
            self._already_settled(report, row, txn)

    def _already_settled(self, report: Report, row: Row, txn: dict[str, Any]) -> None:
        """A row whose movement was settled before: by this same row of this same file in
        an interrupted earlier run (resumed: matched), or by another row (a duplicate)."""
        journal_id = derived_id("jnl", txn["id"], "settlement")
        posted = self.store.get(f"CHARGE#{row.charge_id}", f"JOURNAL#{journal_id}") or {}
        if posted.get("file") == report.file and posted.get("row") == row.number:
            self._settled(report, row, txn)
            return
        report.reported.add(txn["id"])
        self._mismatch(report, row.mismatch(DUPLICATE, f"{row.txn_id} was already settled"))

    def _settlement(self, report: Report, row: Row, txn: dict[str, Any]) -> Transition:
        """The row's settlement journal (two, when converted) and its movement's change to
        settled, guarded by its being unsettled."""
        merchant, cur = txn["merchant"], txn["currency"]
        inbound = row.type in ("capture", "dispute_reversal")
        processor_fee = row.fee if row.type in ("capture", "dispute") else 0
        processor_side = ledger.processor_settled_entries(
            row.currency, row.amount, processor_fee, inbound=inbound
        )
        merchant_side = ledger.available_entries(merchant, cur, int(txn["net"]))
        journal = ledger.Journal(
            id=derived_id("jnl", txn["id"], "settlement"),
            currency=row.currency,
            entries=processor_side + merchant_side if row.currency == cur else processor_side,
            charge_id=row.charge_id,
            merchant_id=merchant,
            operation="settlement",
            created=int(self.clock()),
            source=txn["id"],
            details={"file": report.file, "etag": report.etag, "row": row.number},
        )
        journals = [journal]
        if row.currency != cur:  # converted: the merchant's side is in their currency
            journals.append(
                replace(
                    journal,
                    id=derived_id("jnl", txn["id"], "settlement", cur),
                    currency=cur,
                    entries=merchant_side,
                )
            )
        settled = Change(
            f"TXN#{txn['id']}",
            "TXN",
            txn["id"],
            "settle",
            SETTLED,
            from_state=UNSETTLED,
            state_attribute="settlement",
            # Settled is available: it waits for the next automatic payout now.
            set={
                "settled_by": report.file,
                **awaiting_payout_keys(merchant, cur, txn["id"], self.clock()),
            },
        )
        return Transition([settled], journals=journals)

    def _missing_in_settlement(self, report: Report, business_day: dt.date) -> None:
        for shard in range(SETTLEMENT_SHARDS):
            for txn in self.store.query_index(
                "by_due",
                "due_pk",
                f"SETTLE#{business_day.isoformat()}#{shard}",
                "due_sk",
                newest_first=False,
                limit=100_000,
            ):
                if txn["id"] in report.reported:
                    continue
                detail = f"{txn['type']} {txn['id']} ({txn['source']}) of {business_day}"
                charge = txn["source"] if txn["type"] == "charge" else None
                missing = Mismatch(
                    MISSING_SETTLEMENT,
                    None,
                    None,
                    charge,
                    detail,
                    int(txn.get("presentment_amount", abs(txn["amount"]))),
                    txn.get("presentment_currency", txn["currency"]),
                )
                self._mismatch(report, missing)

    def _mismatch(self, report: Report, mismatch: Mismatch) -> None:
        report.counts[mismatch.kind] += 1
        report.mismatches.append(mismatch)
        fields = asdict(mismatch)
        data = ReconciliationMismatch(
            id=derived_id(
                "recm", report.file, report.etag, mismatch.kind, str(mismatch.row), mismatch.detail
            ),
            file=report.file,
            etag=report.etag,
            mismatch=fields.pop("kind"),
            **fields,
        )
        self.writer.commit(Transition([], events=[Announcement(PLATFORM, MISMATCH_EVENT, data)]))
        self.on_mismatch([mismatch])
