"""The money path under injected faults: every fault at every step of each operation,
then seeded random schedules; after each, the invariants against the processor's books."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from clearline.topology import MAIN_TABLE
from clearline_local.fault_harness import OPERATIONS, Harness, Schedule


@pytest.fixture
def harness(aws: Any) -> Iterator[Harness]:
    running = Harness(aws, MAIN_TABLE.name)
    yield running
    running.close()


@pytest.mark.parametrize("operation", OPERATIONS)
def test_every_fault_at_every_step(harness: Harness, operation: str) -> None:
    schedules = harness.exhaustive(operation, capture=operation != "charge")
    assert len(schedules) >= 20, "each operation has several steps to break"
    for schedule in schedules:
        harness.run(schedule)
    harness.verify_ledger()
    assert harness.outcome.violations == []
    print(f"{operation}: {harness.outcome.schedules} fault schedules, all invariants held")


@pytest.mark.parametrize("operation", ["charge", "refund"])
def test_converted_money_under_every_fault(harness: Harness, operation: str) -> None:
    """In euros for a merchant paid in dollars: the conversion locked at the charge, and
    the refund's rate recorded before its write-ahead, survive every fault at every step."""
    schedules = harness.exhaustive(operation, capture=True, currency="eur")
    assert len(schedules) >= 20
    for schedule in schedules:
        harness.run(schedule)
    report = harness.verify_ledger()
    assert {"eur", "usd"} <= set(report.totals)
    assert harness.outcome.violations == []


def test_an_authorize_only_charge_under_every_fault(harness: Harness) -> None:
    for schedule in harness.exhaustive("charge", capture=False):
        harness.run(schedule)
    harness.verify_ledger()
    assert harness.outcome.violations == []


def test_seeded_random_schedules(harness: Harness) -> None:
    for seed in range(40):
        harness.run(Harness.random(seed))
    harness.verify_ledger()
    assert harness.outcome.violations == []


def test_the_checks_catch_money_moved_behind_clearlines_back(harness: Harness) -> None:
    """The invariants can fail: a refund made at the processor that Clearline never
    recorded is reported, so a green run means something."""
    schedule = Schedule(7, "charge", None, True, False, 5000, False)
    harness.run(schedule)
    assert harness.outcome.violations == []
    (charge,) = [
        c
        for c in harness.clean_store.scan("CHARGE#")
        if c["sk"] == "CHARGE" and c["state"] == "captured"
    ]
    harness.charges.processor.refund(
        idempotency_key="refund-behind-our-back",
        authorization_id=charge["processor_authorization"],
        amount=1,
    )
    merchant = harness.charges.merchant_of(charge["merchant"])
    harness.check(schedule, merchant, [charge["id"]])
    name = f"{schedule.describe()}: {charge['id']} (captured)"
    assert harness.outcome.violations == [
        f"{name}: refunded 0, processor 1",
        f"{name}: 0 refunds, processor 1",
    ]
