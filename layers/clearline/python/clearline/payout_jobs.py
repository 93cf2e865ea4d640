"""How payout work travels on the payouts queue, and how a worker does it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from clearline.payouts import DUE_PAYOUT, IN_TRANSIT, PENDING, PayoutService
from clearline.scheduling import due_items
from clearline.store import Store

Action = Literal["send", "check"]


@dataclass(frozen=True)
class PayoutJob:
    payout: str
    action: Action  # send: to the bank; check: how it ended, on its arrival date

    def as_message(self) -> dict[str, Any]:
        return {"payout": self.payout, "action": self.action}


def due_payout_jobs(store: Store, now: int) -> list[PayoutJob]:
    """Pending payouts not yet sent (a lost message), and in-transit payouts whose arrival
    date has come."""
    jobs = []
    for item in due_items(store, DUE_PAYOUT, now):
        if item["status"] == PENDING:
            jobs.append(PayoutJob(item["id"], "send"))
        elif item["status"] == IN_TRANSIT:
            jobs.append(PayoutJob(item["id"], "check"))
    return jobs


def run_payout_job(payouts: PayoutService, job: PayoutJob) -> str:
    if job.action == "send":
        return payouts.send(job.payout)
    return payouts.check(job.payout)
