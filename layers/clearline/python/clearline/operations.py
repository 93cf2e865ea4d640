"""What the operations views read and run: `ledger verify` on demand, with its last result
kept (who ran it, what it found); the money operations the resolver has left pending; and
the settlement files reconciled, with their mismatches.

A run of the verify is a record like any other change: created once, by the transition
writer, with its audit item.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clearline import ledger, listing
from clearline.audit import Caller
from clearline.charges import DUE_PROCESSOR
from clearline.reconciliation import MISMATCH_EVENT, PLATFORM, REPORT_KIND
from clearline.scheduling import due_items
from clearline.store import Store
from clearline.transitions import Change, Transition, TransitionWriter

VERIFY_PK = "OPS#LEDGER_VERIFY"
VERIFY_KEPT_SECONDS = 90 * 86400
SHOWN_VIOLATIONS = 50  # a run keeps this many of what it found, and their count


@dataclass(frozen=True)
class VerifyRun:
    at_ms: int
    ok: bool
    journals: int
    accounts: int
    charges: int
    violations: list[str]
    violation_count: int
    actor: str


def run_ledger_verify(
    store: Store, caller: Caller, clock: Callable[[], float] = time.time
) -> VerifyRun:
    """Check the whole ledger now, and keep what it found."""
    report = ledger.verify(store)
    now = clock()
    at_ms = int(now * 1000)
    run = VerifyRun(
        at_ms,
        report.ok,
        report.journals,
        report.accounts,
        report.charges,
        report.violations[:SHOWN_VIOLATIONS],
        len(report.violations),
        caller.actor or caller.merchant.id,
    )
    item: dict[str, Any] = {
        "pk": VERIFY_PK,
        "sk": f"RUN#{at_ms:013d}",
        "journals": run.journals,
        "accounts": run.accounts,
        "charges": run.charges,
        "violations": run.violations,
        "violation_count": run.violation_count,
        "actor": run.actor,
        "ttl": int(now) + VERIFY_KEPT_SECONDS,
    }
    recorded = Change(
        VERIFY_PK,
        item["sk"],
        f"ledger_verify_{at_ms}",
        "ledger.verify",
        "ok" if run.ok else "violations",
        create=item,
    )
    TransitionWriter(store, clock=clock).commit(Transition([recorded], caller))
    return run


def last_ledger_verify(store: Store) -> VerifyRun | None:
    runs = store.query_partition(VERIFY_PK, "RUN#")
    if not runs:
        return None
    last = runs[-1]
    return VerifyRun(
        int(last["sk"].removeprefix("RUN#")),
        last["state"] == "ok",
        int(last["journals"]),
        int(last["accounts"]),
        int(last["charges"]),
        list(last.get("violations") or []),
        int(last.get("violation_count") or 0),
        str(last["actor"]),
    )


@dataclass(frozen=True)
class PendingOperation:
    object_id: str
    record: str  # which record of it: the charge, or an operation on it (OP#...)
    merchant: str | None
    written_at: int


def pending_operations(store: Store, now: float) -> list[PendingOperation]:
    """Every write-ahead record still waiting for the processor's answer, oldest first: the
    resolver settles each once it is past its grace period."""
    return [
        PendingOperation(
            str(item.get("id") or item.get("charge") or item["pk"]),
            str(item["sk"]),
            item.get("merchant"),
            int(str(item["due_sk"]).split("#", 1)[0]),
        )
        for item in due_items(store, DUE_PROCESSOR, int(now))
    ]


def reconciliation_reports(store: Store, limit: int = 20) -> list[dict[str, Any]]:
    """The settlement files reconciled, newest first, with their counts by outcome."""
    return listing.page(
        store, PLATFORM, REPORT_KIND, limit=limit, starting_after=None, ending_before=None
    ).items


def mismatches(store: Store, limit: int = 100) -> list[dict[str, Any]]:
    """The newest mismatches reported, as their events announced them."""
    events = listing.page(
        store,
        PLATFORM,
        "evt",
        limit=limit,
        starting_after=None,
        ending_before=None,
        facets={"type": [MISMATCH_EVENT]},
    ).items
    return [dict(event["data"]["object"]) for event in events]
