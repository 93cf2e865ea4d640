"""Payouts against a real sandbox bank and an in-process store: the balance each status
moves, the bank's failures, cancels, the daily run, the bank's report, and a crash between
any two steps of a transfer finished by the resolver."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

from clearline import ledger, listing
from clearline.audit import Caller
from clearline.bank import BankClient
from clearline.bank_accounts import BankAccounts
from clearline.charges import ChargeService
from clearline.errors import ApiError, ConflictError, InvalidRequestError
from clearline.merchants import create_merchant
from clearline.params import ChargeCreateParams, PayoutCreateParams
from clearline.payout_jobs import due_payout_jobs, run_payout_job
from clearline.payouts import PayoutService
from clearline.processor import ProcessorClient, ProcessorUnavailable
from clearline.reconciliation import BANK_REPORT_COLUMNS, COLUMNS, Reconciler
from clearline.refunds import RefundService
from clearline.resolver import Resolver
from clearline.secrets import SecretBox
from clearline.store import Store
from clearline_local.provision import provision_bank_accounts_key
from clearline_local.sandbox_bank import FAILING_ACCOUNTS, SUCCEEDING_ACCOUNT, SandboxBank
from clearline_local.sandbox_processor import SandboxProcessor

DAY = 24 * 60 * 60


@pytest.fixture
def bank() -> Iterator[SandboxBank]:
    with SandboxBank(fault_delay_seconds=1.0) as sandbox:
        yield sandbox


@pytest.fixture
def world(aws: Any, store: Store, bank: SandboxBank) -> dict[str, Any]:
    secrets = SecretBox(provision_bank_accounts_key(boto3.client("kms", region_name="us-east-1")))
    accounts = BankAccounts(store, secrets)
    merchant = create_merchant(store, "Payout Shop", fee_percent=0, fee_fixed=0).merchant
    accounts.set(merchant.id, "usd", routing_number="110000000", account_number=SUCCEEDING_ACCOUNT)
    return {
        "store": store,
        "accounts": accounts,
        "merchant": merchant,
        "caller": Caller(merchant, "req_test"),
        "payouts": PayoutService(store, accounts, BankClient(bank.url, 0.5)),
    }


def settle_funds(world: dict[str, Any], processor: SandboxProcessor, amounts: list[int]) -> int:
    """Charges of `amounts`, settled by the processor's file: available to pay out."""
    charges = ChargeService(world["store"], ProcessorClient(processor.url))
    ids = {
        charges.create(
            world["caller"],
            ChargeCreateParams(amount=amount, currency="usd", source="tok_visa"),
            idempotency_key=str(uuid.uuid4()),
        ).id
        for amount in amounts
    }
    day = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=2)
    rows = [r for r in processor.settlement_rows(day) if r["charge_id"] in ids]
    lines = [",".join(COLUMNS), *(",".join(str(r[c]) for c in COLUMNS) for r in rows)]
    Reconciler(world["store"]).reconcile(lines, file=f"settlements/{uuid.uuid4()}", etag="e")
    return available(world)


def available(world: dict[str, Any]) -> int:
    result: int = world["payouts"].available(world["merchant"].id, "usd")
    return result


def payout(world: dict[str, Any], amount: int, **fields: Any) -> Any:
    params = PayoutCreateParams(amount=amount, currency="usd", **fields)
    return world["payouts"].create(world["caller"], params, idempotency_key=str(uuid.uuid4()))


def item(world: dict[str, Any], payout_id: str) -> dict[str, Any]:
    found: dict[str, Any] = world["store"].get(f"PAYOUT#{payout_id}", "PAYOUT")
    return found


def test_a_payout_goes_in_transit_then_paid_on_its_arrival_date(
    world: dict[str, Any], processor: SandboxProcessor, bank: SandboxBank
) -> None:
    assert settle_funds(world, processor, [6000, 4000]) == 10000
    (announced,) = [
        e for e in world["store"].scan() if e["sk"] == "EVENT" and e["type"] == "balance.available"
    ]
    assert announced["merchant"] == world["merchant"].id
    assert announced["data"]["object"]["available"] == [{"currency": "usd", "amount": 10000}]
    made = payout(world, 7000, description="November")
    assert (made.status, made.automatic, made.amount) == ("pending", False, 7000)
    assert available(world) == 3000  # spoken for at once
    txn = world["store"].get(f"TXN#{made.balance_transaction}", "TXN")
    assert (txn["type"], txn["amount"], txn["source"]) == ("payout", -7000, made.id)

    assert world["payouts"].send(made.id) == "sent"
    assert world["payouts"].send(made.id) == "already sent"
    sent = item(world, made.id)
    assert sent["status"] == "in_transit" and sent["arrival_date"] > made.created
    assert world["payouts"].check(made.id) == "in transit"
    bank.advance(DAY)
    assert world["payouts"].check(made.id) == "paid"
    assert item(world, made.id)["status"] == "paid"
    assert len(bank.transfers()) == 1
    in_transit = ledger.account_balance(
        world["store"], ledger.payouts_in_transit(world["merchant"].id, "usd")
    )
    assert in_transit.credit_balance == 0 and in_transit.credits_posted == 7000
    assert ledger.verify(world["store"]).ok


def test_more_than_is_available_is_refused_and_writes_nothing(
    world: dict[str, Any], processor: SandboxProcessor
) -> None:
    settle_funds(world, processor, [2000])
    before = list(world["store"].scan())
    with pytest.raises(InvalidRequestError) as refused:
        payout(world, 2001)
    assert refused.value.code == "balance_insufficient"
    with pytest.raises(InvalidRequestError) as no_account:
        world["payouts"].create(
            world["caller"],
            PayoutCreateParams(amount=100, currency="eur"),
            idempotency_key=str(uuid.uuid4()),
        )
    assert no_account.value.code == "payouts_not_allowed"
    assert list(world["store"].scan()) == before


class Interleaved(Store):
    """The table, with another request's work run just after the next balance is read:
    the moment two payouts race for the same money."""

    def __init__(self, store: Store) -> None:
        super().__init__(store.table_name, store.client)
        self.meanwhile: Callable[[], object] | None = None

    def get_many(self, keys: list[tuple[str, str]]) -> list[dict[str, Any]]:
        found = super().get_many(keys)
        if self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            meanwhile()
        return found


def test_a_payout_racing_another_for_the_same_money_is_refused(
    world: dict[str, Any], processor: SandboxProcessor
) -> None:
    settle_funds(world, processor, [10000])
    interleaved = Interleaved(world["store"])
    racing = PayoutService(interleaved, world["accounts"], None)
    params = PayoutCreateParams(amount=6000, currency="usd")
    interleaved.meanwhile = lambda: payout(world, 6000)  # commits first, on the same balance
    with pytest.raises(ConflictError):
        racing.create(world["caller"], params, idempotency_key="race")
    with pytest.raises(InvalidRequestError) as retried:  # the retry sees the balance taken
        racing.create(world["caller"], params, idempotency_key="race")
    assert retried.value.code == "balance_insufficient"
    assert available(world) == 4000


@pytest.mark.parametrize("account, code", sorted(FAILING_ACCOUNTS.items()))
def test_a_returned_payout_fails_with_its_code_and_the_money_comes_back(
    world: dict[str, Any], processor: SandboxProcessor, bank: SandboxBank, account: str, code: str
) -> None:
    world["accounts"].set(
        world["merchant"].id, "usd", routing_number="110000000", account_number=account
    )
    settle_funds(world, processor, [5000])
    made = payout(world, 5000)
    world["payouts"].send(made.id)
    bank.advance(DAY)
    assert world["payouts"].check(made.id) == "failed"
    failed = item(world, made.id)
    assert (failed["status"], failed["failure_code"]) == ("failed", code)
    returned = world["store"].get(f"TXN#{failed['failure_balance_transaction']}", "TXN")
    assert (returned["type"], returned["amount"]) == ("payout_failure", 5000)
    assert available(world) == 5000
    assert ledger.verify(world["store"]).ok


def test_only_a_pending_manual_payout_not_yet_sent_can_be_canceled(
    world: dict[str, Any], processor: SandboxProcessor
) -> None:
    settle_funds(world, processor, [9000])
    payouts: PayoutService = world["payouts"]
    first, second = payout(world, 3000), payout(world, 3000)
    canceled = payouts.cancel(world["caller"], first.id)
    assert canceled.status == "canceled" and canceled.failure_balance_transaction
    assert available(world) == 6000
    payouts.send(second.id)
    for payout_id in (first.id, second.id):
        with pytest.raises(InvalidRequestError) as refused:
            payouts.cancel(world["caller"], payout_id)
        assert refused.value.code == "payout_not_cancelable"
    (automatic,) = payouts.pay_out_available(dt.date(2026, 11, 26))
    with pytest.raises(InvalidRequestError, match="automatic"):
        payouts.cancel(world["caller"], automatic.id)


@pytest.mark.parametrize("fault", ["timeout_before", "timeout_after", "error_500"])
def test_a_transfer_cut_short_is_finished_by_the_resolver_once(
    world: dict[str, Any], processor: SandboxProcessor, bank: SandboxBank, fault: str
) -> None:
    settle_funds(world, processor, [4000])
    made = payout(world, 4000)
    bank.inject_fault(fault)
    with pytest.raises(ProcessorUnavailable):
        world["payouts"].send(made.id)
    stuck = item(world, made.id)
    assert stuck["status"] == "pending" and stuck["transfer_key"]
    with pytest.raises(InvalidRequestError):  # the bank may have it: no cancel now
        world["payouts"].cancel(world["caller"], made.id)

    client = ProcessorClient(processor.url)
    resolver = Resolver(
        ChargeService(world["store"], client),
        RefundService(world["store"], client),
        world["payouts"],
    )
    assert resolver.resolve(stuck) == "settled"
    assert item(world, made.id)["status"] == "in_transit"
    assert len(bank.transfers()) == 1


def test_the_daily_run_pays_out_the_available_balance_once_a_day(
    world: dict[str, Any], processor: SandboxProcessor
) -> None:
    settle_funds(world, processor, [2500, 2500])
    payouts: PayoutService = world["payouts"]
    day = dt.date(2026, 11, 26)
    (made,) = payouts.pay_out_available(day)
    assert (made.amount, made.automatic) == (5000, True)
    assert payouts.pay_out_available(day) == []  # nothing left, and nothing made twice

    # It names what it paid out: the two charges, and itself.
    covered = listing.page(
        world["store"],
        world["merchant"].id,
        "txn",
        limit=10,
        starting_after=None,
        ending_before=None,
        facets={"payout": [made.id]},
    ).items
    assert sorted((t["type"], t["amount"]) for t in covered) == [
        ("charge", 2500),
        ("charge", 2500),
        ("payout", -5000),
    ]
    assert item(world, made.id)["reconciliation_status"] == "completed"
    assert payouts.cover(made.id) == 0
    jobs = due_payout_jobs(world["store"], made.created + 1)
    assert [(j.payout, j.action) for j in jobs] == [(made.id, "send")]
    assert run_payout_job(payouts, jobs[0]) == "sent"


def test_the_banks_report_settles_each_payout_once_and_reports_what_differs(
    world: dict[str, Any], processor: SandboxProcessor, bank: SandboxBank
) -> None:
    settle_funds(world, processor, [8000])
    payouts: PayoutService = world["payouts"]
    early, checked = payout(world, 3000), payout(world, 2000)
    for made in (early, checked):
        payouts.send(made.id)
    bank.advance(DAY)
    assert payouts.check(checked.id) == "paid"  # the worker got there first for this one
    rows = bank.report_rows(dt.datetime.fromtimestamp(bank.now(), dt.UTC).date())
    assert {r["reference"] for r in rows} == {early.id, checked.id}
    forged = {**rows[0], "transfer_id": "tr_forged", "reference": "po_unknown"}
    wrong = {**rows[0], "amount": 1}
    lines = [
        ",".join(BANK_REPORT_COLUMNS),
        *(",".join(str(r[c]) for c in BANK_REPORT_COLUMNS) for r in [*rows, forged, wrong]),
    ]
    seen: list[Any] = []
    reconciler = Reconciler(world["store"], on_mismatch=seen.extend)
    report = reconciler.reconcile(lines, file="settlements/bank/1.csv", etag="e1")
    assert report.counts["matched"] == 2
    assert sorted(m.kind for m in seen) == ["amount_mismatch", "missing_in_ledger"]
    assert item(world, early.id)["status"] == "paid"
    again = reconciler.reconcile(lines, file="settlements/bank/1.csv", etag="e1")
    assert again.already_reconciled
    assert (
        reconciler.reconcile(lines, file="settlements/bank/2.csv", etag="e2").counts["matched"] == 2
    )
    assert ledger.verify(world["store"]).ok
    paid = ledger.account_balance(world["store"], ledger.settlement_cash("usd"))
    assert paid.credits_posted == 5000  # each payout left our cash once


def test_the_account_number_is_never_stored_in_the_clear(world: dict[str, Any]) -> None:
    dumped = json.dumps(list(world["store"].scan()), default=str)
    assert SUCCEEDING_ACCOUNT not in dumped
    account = world["accounts"].get(world["merchant"].id, "usd")
    assert account.last4 == SUCCEEDING_ACCOUNT[-4:]
    for bad in ({"routing_number": "110000001"}, {"account_number": "12"}):
        with pytest.raises(ApiError):
            world["accounts"].set(
                world["merchant"].id,
                "usd",
                **{"routing_number": "110000000", "account_number": SUCCEEDING_ACCOUNT, **bad},
            )
