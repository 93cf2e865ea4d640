"""Work that comes due: scheduled captures, expiring authorizations, and charges left
pending by a processor timeout. Found through the sparse `by_due` index, never a scan.

Each job says what it is due for and as of when, so a worker acts on the scheduler's
clock: a test can move time forward by sending a later schedule time, without sleeping.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from clearline.charges import (
    AUTHORIZED,
    DUE_AUTHORIZATION,
    DUE_INDEX,
    DUE_PROCESSOR,
    DUE_SHARDS,
    PENDING,
    ChargeService,
)
from clearline.errors import CardError, InvalidRequestError
from clearline.params import ChargeCaptureParams
from clearline.processor import Authorization, ProcessorUnavailable
from clearline.store import Store

# A pending charge is left to the API's own retries for this long before the sync steps in.
PENDING_GRACE_SECONDS = 30


@dataclass(frozen=True)
class Job:
    charge: str
    action: str  # capture | expire
    as_of: int

    def as_message(self) -> dict[str, Any]:
        return {"charge": self.charge, "action": self.action, "as_of": self.as_of}


def _due(store: Store, kind: str, until: int) -> list[dict[str, Any]]:
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
    """Authorizations whose scheduled capture time or expiry has come."""
    jobs = []
    for item in _due(store, DUE_AUTHORIZATION, now):
        capture_at = item.get("capture_at")
        action = "capture" if capture_at is not None and capture_at <= now else "expire"
        jobs.append(Job(item["id"], action, now))
    return jobs


def run_job(charges: ChargeService, store: Store, job: Job) -> str:
    """Capture or expire one authorization, once: a repeated job finds it done."""
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


def sync_pending(charges: ChargeService, store: Store, now: int) -> dict[str, int]:
    """Settle charges left pending by a processor timeout, by asking the processor what it
    committed under each charge's idempotency key."""
    outcome = {"settled": 0, "failed": 0, "unreachable": 0}
    for item in _due(store, DUE_PROCESSOR, now - PENDING_GRACE_SECONDS):
        if item["state"] != PENDING:
            continue
        try:
            committed = charges.processor.lookup(f"{item['id']}:authorize")
        except ProcessorUnavailable:
            outcome["unreachable"] += 1
            continue
        if committed is None:
            charges.fail_pending(
                item, "The card processor did not complete this payment; the card was not charged."
            )
            outcome["failed"] += 1
        else:
            # A decline settles as a failed charge (a CardError): settled all the same.
            with contextlib.suppress(CardError):
                charges.resolve_pending(item, None, Authorization.model_validate(committed))
            outcome["settled"] += 1
    return outcome
