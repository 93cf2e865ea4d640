"""Work that comes due: scheduled captures, expiring authorizations and disputes past their
evidence deadline, found through the sparse `by_due` index, never a scan. (Operations left
pending are the resolver's.)

Each job says what it is due for and as of when, so a worker acts on the scheduler's
clock: a test can move time forward by sending a later schedule time, without sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clearline.charges import (
    AUTHORIZED,
    DUE_AUTHORIZATION,
    DUE_INDEX,
    DUE_SHARDS,
    ChargeService,
)
from clearline.disputes import DUE_DISPUTE, DisputeService
from clearline.errors import InvalidRequestError
from clearline.params import ChargeCaptureParams
from clearline.refunds import RefundService
from clearline.store import Store

DISPUTE_DEADLINE = "dispute_deadline"
# A refund answered pending for want of processor capacity, sent when capacity allows.
WAITING_REFUND = "refund"


@dataclass(frozen=True)
class Job:
    charge: str  # the charge; for a dispute deadline the dispute, for a refund the refund
    action: str  # capture | expire | dispute_deadline | refund
    as_of: int

    def as_message(self) -> dict[str, Any]:
        return {"charge": self.charge, "action": self.action, "as_of": self.as_of}


def due_items(store: Store, kind: str, until: int) -> list[dict[str, Any]]:
    """Every item `kind` work is due for at or before `until`, oldest first."""
    items: list[dict[str, Any]] = []
    for shard in range(DUE_SHARDS):
        items += store.query_index(
            DUE_INDEX,
            "due_pk",
            f"{kind}#{shard}",
            "due_sk",
            before=f"{until:010d}~",  # every due_sk at or before `until` ('~' sorts after '#')
            newest_first=False,
            limit=1000,
        )
    return items


def due_jobs(store: Store, now: int) -> list[Job]:
    """Authorizations whose scheduled capture time or expiry has come, and disputes whose
    evidence is due."""
    jobs = []
    for item in due_items(store, DUE_AUTHORIZATION, now):
        capture_at = item.get("capture_at")
        action = "capture" if capture_at is not None and capture_at <= now else "expire"
        jobs.append(Job(item["id"], action, now))
    jobs += [Job(item["id"], DISPUTE_DEADLINE, now) for item in due_items(store, DUE_DISPUTE, now)]
    return jobs


def run_job(
    charges: ChargeService,
    store: Store,
    job: Job,
    disputes: DisputeService | None = None,
    refunds: RefundService | None = None,
) -> str:
    """Capture or expire one authorization, close a dispute past its deadline, or send a
    refund that waited for capacity, once: a repeated job finds it done."""
    if job.action == DISPUTE_DEADLINE:
        assert disputes is not None, "a worker that takes dispute deadlines has disputes"
        return disputes.past_due(job.charge, job.as_of)
    if job.action == WAITING_REFUND:
        assert refunds is not None, "a worker that takes refunds has refunds"
        return refunds.send_waiting(job.charge)
    item = store.get(f"CHARGE#{job.charge}", "CHARGE")
    if item is None or item["state"] != AUTHORIZED:
        return "already settled"
    if job.action == "capture" and (item.get("capture_at") or job.as_of + 1) <= job.as_of:
        try:
            charges.capture(None, job.charge, ChargeCaptureParams(), merchant_id=item["merchant"])
        except InvalidRequestError:
            return "already settled"  # captured, voided or expired meanwhile
        return "captured"
    if item["expires_at"] <= job.as_of:
        return "expired" if charges.expire(job.charge) else "already settled"
    return "not due"
