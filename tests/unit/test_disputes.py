"""Disputes against a real sandbox processor and an in-process store: the money each status
moves, exactly once, and a crash between any two steps of a response finished by the
resolver."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from clearline import fx, ledger
from clearline.audit import Caller
from clearline.balance import merchant_balance
from clearline.charges import ChargeService
from clearline.disputes import DisputeService, UnknownDispute, dispute_id_of
from clearline.errors import InvalidRequestError, ServiceUnavailableError
from clearline.fraud_rules import RuleBook
from clearline.merchants import Merchant, create_merchant
from clearline.models import Charge
from clearline.params import (
    ChargeCreateParams,
    DisputeEvidenceParams,
    DisputeUpdateParams,
    RefundCreateParams,
)
from clearline.post_authorization import REVIEW_IF_RISKY, AfterAuthorization
from clearline.processor import ProcessorClient, ProcessorDispute
from clearline.refunds import RefundService
from clearline.resolver import Resolver
from clearline.reviews import ReviewService
from clearline.risk import RiskAssessment
from clearline.scheduling import DISPUTE_DEADLINE, due_jobs, run_job
from clearline.store import Store, StoreUnavailable
from clearline_local.sandbox_processor import SandboxProcessor
from tests.unit.conftest import record_rates


@pytest.fixture
def world(store: Store, processor: SandboxProcessor) -> Iterator[dict[str, Any]]:
    requests.post(
        f"{processor.url}/_sandbox/config",
        json={"dispute_delay_seconds": 0.05, "decision_delay_seconds": 0.05},
        timeout=5,
    ).raise_for_status()
    client = ProcessorClient(processor.url, timeout_seconds=0.5)
    merchant = create_merchant(store, "Dispute Shop").merchant
    yield {
        "merchant": merchant,
        "caller": Caller(merchant, "req_test"),
        "charges": ChargeService(store, client),
        "refunds": RefundService(store, client),
        "disputes": DisputeService(store, client),
        "client": client,
        "store": store,
    }
    processor.clear_faults()


def charge(world: dict[str, Any], source: str, amount: int = 3000, **fields: Any) -> Charge:
    params = ChargeCreateParams(amount=amount, currency="usd", source=source, **fields)
    created: Charge = world["charges"].create(
        world["caller"], params, idempotency_key=str(uuid.uuid4())
    )
    return created


def processor_dispute(
    world: dict[str, Any], charge_id: str, status: str | None = None
) -> ProcessorDispute:
    """The processor's dispute of a charge (in `status`, if given), once it has opened it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        url = world["client"].base_url + "/_sandbox/disputes"
        for record in requests.get(url, timeout=5).json()["data"]:
            if record["reference"] == charge_id and status in (None, record["status"]):
                return ProcessorDispute.model_validate(record)
        time.sleep(0.05)
    raise AssertionError(f"the processor raised no dispute of {charge_id} in {status}")


def opened(
    world: dict[str, Any], source: str = "tok_createDispute", **fields: Any
) -> tuple[Charge, str]:
    paid = charge(world, source, **fields)
    notice = processor_dispute(world, paid.id)
    return paid, world["disputes"].receive(notice).id


def balance_of(world: dict[str, Any]) -> int:
    merchant: Merchant = world["merchant"]
    found = merchant_balance(world["store"], merchant.id, ledger.ShardPolicy())
    return sum(a.amount for a in found.pending) + sum(a.amount for a in found.available)


def test_a_chargeback_withdraws_the_amount_and_the_fee_once(world: dict[str, Any]) -> None:
    paid = charge(world, "tok_createDispute", description="A lamp", metadata={"order": "42"})
    before = balance_of(world)
    notice = processor_dispute(world, paid.id)
    first = world["disputes"].receive(notice)
    again = world["disputes"].receive(notice)  # the processor delivered it twice

    assert first == again
    assert (first.status, first.reason, first.amount) == ("needs_response", "fraudulent", 3000)
    assert first.id == dispute_id_of(notice.id)
    (withdrawal,) = first.balance_transactions
    assert (withdrawal.type, withdrawal.reporting_category) == ("adjustment", "dispute")
    assert (withdrawal.amount, withdrawal.fee, withdrawal.net) == (-3000, 1500, -4500)
    assert balance_of(world) == before - 4500
    assert first.evidence["product_description"] == "A lamp"
    assert "order: 42" in first.evidence["uncategorized_text"]
    assert not first.evidence_details.has_evidence and not first.is_charge_refundable
    assert world["charges"].retrieve(world["merchant"], paid.id).disputed
    assert ledger.verify(world["store"]).ok


def test_an_inquiry_moves_no_money_and_leaves_the_charge_refundable(world: dict[str, Any]) -> None:
    paid, dispute_id = opened(world, "tok_createDisputeInquiry")
    dispute = world["disputes"].retrieve(world["merchant"], dispute_id)
    assert dispute.status == "warning_needs_response"
    assert dispute.balance_transactions == () and dispute.is_charge_refundable
    refund = world["refunds"].create(
        world["caller"], RefundCreateParams(charge=paid.id), idempotency_key=str(uuid.uuid4())
    )
    assert refund.status == "succeeded"


def test_a_charged_back_charge_cannot_be_refunded(world: dict[str, Any]) -> None:
    paid, _ = opened(world)
    before = balance_of(world)
    with pytest.raises(InvalidRequestError) as refused:
        world["refunds"].create(
            world["caller"], RefundCreateParams(charge=paid.id), idempotency_key=str(uuid.uuid4())
        )
    assert refused.value.code == "charge_disputed"
    assert world["charges"].retrieve(world["merchant"], paid.id).refunds == ()
    assert balance_of(world) == before


def evidence(text: str, **fields: str) -> DisputeEvidenceParams:
    return DisputeEvidenceParams(uncategorized_text=text, **fields)


def test_staged_evidence_is_not_sent_and_winning_evidence_reinstates(world: dict[str, Any]) -> None:
    paid, dispute_id = opened(world)
    disputes: DisputeService = world["disputes"]
    staged = disputes.update(
        world["caller"],
        dispute_id,
        DisputeUpdateParams(evidence=evidence("draft", customer_name="Ada"), submit=False),
    )
    assert (staged.status, staged.evidence_details.has_evidence) == ("needs_response", True)
    assert staged.evidence_details.submission_count == 0
    processor_id = processor_dispute(world, paid.id).id
    assert processor_dispute(world, paid.id, "needs_response").id == processor_id  # not sent

    low = balance_of(world)
    submitted = disputes.update(
        world["caller"], dispute_id, DisputeUpdateParams(evidence=evidence("winning_evidence"))
    )
    assert (submitted.status, submitted.evidence_details.submission_count) == ("under_review", 1)
    assert submitted.evidence["customer_name"] == "Ada"  # the staged field went too
    won = disputes.receive(processor_dispute(world, paid.id, "won"))
    disputes.receive(processor_dispute(world, paid.id, "won"))  # and once more

    assert (won.status, won.is_charge_refundable) == ("won", True)
    assert [t.reporting_category for t in won.balance_transactions] == [
        "dispute",
        "dispute_reversal",
    ]
    assert balance_of(world) == low + 3000  # the amount back, not the fee
    refund = world["refunds"].create(
        world["caller"], RefundCreateParams(charge=paid.id), idempotency_key=str(uuid.uuid4())
    )
    assert refund.status == "succeeded"
    assert ledger.verify(world["store"]).ok


def test_losing_evidence_and_closing_lose_and_a_closed_dispute_takes_nothing(
    world: dict[str, Any],
) -> None:
    disputes: DisputeService = world["disputes"]
    paid, dispute_id = opened(world)
    disputes.update(
        world["caller"], dispute_id, DisputeUpdateParams(evidence=evidence("losing_evidence"))
    )
    lost = disputes.receive(processor_dispute(world, paid.id, "lost"))
    assert lost.status == "lost" and len(lost.balance_transactions) == 1

    _, other = opened(world)
    closed = disputes.close(world["caller"], other)
    assert closed.status == "lost"
    for attempt in (
        lambda: disputes.close(world["caller"], other),
        lambda: disputes.update(world["caller"], other, DisputeUpdateParams(metadata={"a": "b"})),
    ):
        with pytest.raises(InvalidRequestError, match="already closed"):
            attempt()


def test_an_inquiry_that_escalates_withdraws_then(world: dict[str, Any]) -> None:
    disputes: DisputeService = world["disputes"]
    paid, dispute_id = opened(world, "tok_createDisputeInquiry")
    before = balance_of(world)
    disputes.update(
        world["caller"],
        dispute_id,
        DisputeUpdateParams(evidence=evidence("escalate_inquiry_evidence")),
    )
    escalated = disputes.receive(processor_dispute(world, paid.id, "needs_response"))
    assert (escalated.status, escalated.is_charge_refundable) == ("needs_response", False)
    assert balance_of(world) == before - 4500


def test_notices_out_of_order_settle_to_the_same_place(world: dict[str, Any]) -> None:
    """The decision arrives before the dispute was ever opened here: opened, withdrawn and
    reinstated in one go, as if every notice had come in order."""
    disputes: DisputeService = world["disputes"]
    paid = charge(world, "tok_createDispute")
    notice = processor_dispute(world, paid.id)
    requests.post(
        f"{world['client'].base_url}/_sandbox/disputes/{notice.id}/decide",
        json={"status": "won"},
        timeout=5,
    ).raise_for_status()
    won = disputes.receive(processor_dispute(world, paid.id, "won"))
    assert won.status == "won" and len(won.balance_transactions) == 2
    assert disputes.receive(notice).status == "won"  # the late "created" changes nothing
    assert ledger.verify(world["store"]).ok


def test_a_notice_about_a_charge_we_do_not_have_stores_nothing(world: dict[str, Any]) -> None:
    paid = charge(world, "tok_createDispute")
    notice = processor_dispute(world, paid.id)
    forged = notice.model_copy(update={"reference": "ch_unknown"})
    with pytest.raises(UnknownDispute):
        world["disputes"].receive(forged)
    other_authorization = notice.model_copy(update={"authorization": "pa_other"})
    with pytest.raises(UnknownDispute):
        world["disputes"].receive(other_authorization)
    assert world["store"].get(f"DISPUTE#{dispute_id_of(notice.id)}", "DISPUTE") is None


@pytest.mark.parametrize("fault", ["timeout_before", "timeout_after"])
def test_a_submission_cut_short_is_finished_by_the_resolver(
    world: dict[str, Any], processor: SandboxProcessor, fault: str
) -> None:
    disputes: DisputeService = world["disputes"]
    paid, dispute_id = opened(world)
    processor.inject_fault(fault)
    with pytest.raises(ServiceUnavailableError):
        disputes.update(world["caller"], dispute_id, DisputeUpdateParams(evidence=evidence("text")))
    item = world["store"].get(f"DISPUTE#{dispute_id}", "DISPUTE")
    assert item["pending"]["operation"] == "submit" and item["status"] == "needs_response"

    resolver = Resolver(world["charges"], world["refunds"])
    assert resolver.resolve(item) == "settled"
    assert resolver.resolve(world["store"].get(f"DISPUTE#{dispute_id}", "DISPUTE")) == "settled"
    done = disputes.retrieve(world["merchant"], dispute_id)
    assert (done.status, done.evidence_details.submission_count) == ("under_review", 1)
    at_processor = world["client"].get_dispute(processor_dispute(world, paid.id).id)
    assert at_processor.status == "under_review"


def test_past_the_deadline_a_dispute_without_evidence_is_lost_and_staged_evidence_sent(
    world: dict[str, Any],
) -> None:
    disputes: DisputeService = world["disputes"]
    _, silent = opened(world)
    _, prepared = opened(world)
    disputes.update(
        world["caller"],
        prepared,
        DisputeUpdateParams(evidence=evidence("receipt attached"), submit=False),
    )
    due_by = disputes.retrieve(world["merchant"], silent).evidence_details.due_by
    assert due_by is not None
    assert not [j for j in due_jobs(world["store"], due_by - 1) if j.action == DISPUTE_DEADLINE]
    jobs = [j for j in due_jobs(world["store"], due_by + 60) if j.action == DISPUTE_DEADLINE]
    assert {j.charge for j in jobs} >= {silent, prepared}
    outcomes = {j.charge: run_job(world["charges"], world["store"], j, disputes) for j in jobs}
    assert (outcomes[silent], outcomes[prepared]) == ("closed", "submitted")
    assert disputes.retrieve(world["merchant"], silent).status == "lost"
    sent = disputes.retrieve(world["merchant"], prepared)
    assert (sent.status, sent.evidence_details.past_due) == ("under_review", True)
    for job in jobs:  # a job delivered again finds its dispute answered
        assert run_job(world["charges"], world["store"], job, disputes) == "already settled"


def test_a_chargeback_of_a_converted_charge_waits_for_fresh_rates(
    world: dict[str, Any],
) -> None:
    """Booking the market's move needs today's rate: with stale rates the notice is refused
    as retryable (the intake answers 503, the processor sends it again) and nothing is
    written; with fresh ones it opens at the charge's rate."""
    store = world["store"]
    record_rates(store)
    params = ChargeCreateParams(amount=4000, currency="eur", source="tok_createDispute")
    paid = world["charges"].create(world["caller"], params, idempotency_key=str(uuid.uuid4()))
    notice = processor_dispute(world, paid.id)

    two_hours_on = DisputeService(store, world["client"], clock=lambda: time.time() + 7200)
    with pytest.raises(fx.FxRatesUnavailable):
        two_hours_on.receive(notice)
    assert store.get(f"DISPUTE#{dispute_id_of(notice.id)}", "DISPUTE") is None

    opened_now = world["disputes"].receive(notice)
    (withdrawal,) = opened_now.balance_transactions
    captured = store.get(f"TXN#{paid.balance_transaction}", "TXN")
    assert captured is not None
    assert (withdrawal.currency, withdrawal.amount) == ("usd", -captured["amount"])
    assert withdrawal.fee == 1500
    assert ledger.verify(store).ok


# ---- a disputed payment's review --------------------------------------------------------------

REVIEWED_AMOUNT = 3100  # what the merchant's rule sends to review


def reviewed(world: dict[str, Any], source: str = "tok_createDispute") -> tuple[Charge, str]:
    """A payment the merchant's rule put in review, on a card whose cardholder disputes it."""
    RuleBook(world["store"]).add(world["merchant"].id, f"Review if :amount: = {REVIEWED_AMOUNT}")
    paid = charge(world, source, amount=REVIEWED_AMOUNT)
    assert paid.review is not None
    return paid, paid.review


def review_events(store: Store, review_id: str) -> list[str]:
    return sorted(
        item["type"]
        for item in store.scan("EVENT#")
        if item["sk"] == "EVENT"
        and item["type"].startswith("review.")
        and review_id in json.dumps(item.get("data", ""), default=str)
    )


@pytest.mark.parametrize("source", ["tok_createDispute", "tok_createDisputeInquiry"])
def test_disputing_a_reviewed_payment_closes_its_review_once(
    world: dict[str, Any], source: str
) -> None:
    paid, review_id = reviewed(world, source)
    notice = processor_dispute(world, paid.id)
    first = world["disputes"].receive(notice)
    again = world["disputes"].receive(notice)  # delivered twice: no second review.closed

    assert first == again
    review = ReviewService(world["store"]).retrieve(world["merchant"], review_id)
    assert (review.open, review.closed_reason, review.reason) == (False, "disputed", "disputed")
    assert review_events(world["store"], review_id) == ["review.closed", "review.opened"]
    assert world["charges"].retrieve(world["merchant"], paid.id).disputed


def test_a_review_closed_before_the_dispute_stays_as_it_was(world: dict[str, Any]) -> None:
    paid, review_id = reviewed(world)
    reviews = ReviewService(world["store"])
    reviews.approve(world["caller"], review_id)
    before = balance_of(world)

    dispute = world["disputes"].receive(processor_dispute(world, paid.id))

    assert (
        dispute.status == "needs_response" and balance_of(world) == before - REVIEWED_AMOUNT - 1500
    )
    review = reviews.retrieve(world["merchant"], review_id)
    assert (review.open, review.closed_reason) == (False, "approved")
    assert review_events(world["store"], review_id) == ["review.closed", "review.opened"]


@pytest.mark.parametrize(
    "failure", [StoreUnavailable("throttled"), ServiceUnavailableError("store down")]
)
def test_a_review_that_cannot_be_closed_does_not_fail_the_dispute(
    world: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    failure: Exception,
) -> None:
    paid, review_id = reviewed(world)
    before = balance_of(world)

    def unavailable(*_: Any, **__: Any) -> Any:
        raise failure

    monkeypatch.setattr(ReviewService, "close", unavailable)
    with caplog.at_level(logging.WARNING, logger="clearline.disputes"):
        dispute = world["disputes"].receive(processor_dispute(world, paid.id))
    monkeypatch.undo()

    assert (
        dispute.status == "needs_response" and balance_of(world) == before - REVIEWED_AMOUNT - 1500
    )
    assert world["charges"].retrieve(world["merchant"], paid.id).disputed
    assert f"review {review_id} of charge {paid.id} left open" in caplog.text
    review = ReviewService(world["store"]).retrieve(world["merchant"], review_id)
    assert review.open  # left for a person to close
    assert ledger.verify(world["store"]).ok


def test_a_review_opened_while_the_dispute_was_being_opened_is_closed_too(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The look after the authorization opens the review between the dispute's read of the
    charge and its commit: the charge is read again after the commit, and the review closes."""
    paid = charge(world, "tok_createDispute")
    assert paid.review is None
    second_look = AfterAuthorization(world["charges"], world["refunds"])
    withdraw = DisputeService._withdraw

    def opened_meanwhile(self: DisputeService, *args: Any) -> None:
        item = world["store"].get(f"CHARGE#{paid.id}", "CHARGE")
        second_look._mark(item, RiskAssessment(70), REVIEW_IF_RISKY, reverse=False)
        monkeypatch.setattr(DisputeService, "_withdraw", withdraw)
        withdraw(self, *args)

    monkeypatch.setattr(DisputeService, "_withdraw", opened_meanwhile)
    world["disputes"].receive(processor_dispute(world, paid.id))

    disputed = world["charges"].retrieve(world["merchant"], paid.id)
    assert disputed.disputed and disputed.review is not None
    review = ReviewService(world["store"]).retrieve(world["merchant"], disputed.review)
    assert (review.open, review.closed_reason) == (False, "disputed")


def test_disputing_a_payment_without_a_review_touches_no_review(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def unexpected(*_: Any, **__: Any) -> Any:
        raise AssertionError("no review to close")

    monkeypatch.setattr(ReviewService, "close", unexpected)
    paid, dispute_id = opened(world)
    assert world["charges"].retrieve(world["merchant"], paid.id).review is None
    assert world["disputes"].retrieve(world["merchant"], dispute_id).status == "needs_response"
