"""Reviews, and the second look after the authorization: a risky payment opens a review; a
merchant's rule may reverse it; each step survives being cut short."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from clearline import post_authorization
from clearline.audit import Caller
from clearline.charges import ChargeService
from clearline.disputes import DisputeService
from clearline.errors import ConflictError, InvalidRequestError, ResourceMissingError
from clearline.fraud_rules import RuleBook
from clearline.merchants import create_merchant
from clearline.models import Charge
from clearline.params import ChargeCreateParams
from clearline.post_authorization import AfterAuthorization
from clearline.processor import ProcessorClient, ProcessorDispute
from clearline.refunds import RefundService
from clearline.reviews import ReviewService
from clearline.store import Store
from clearline.topology import (
    COUNTERS_TABLE,
    MAIN_TABLE,
    PROCESSOR_URL_ENV,
    TOPOLOGY,
    table_env_var,
)
from clearline_local.lambda_runtime import LocalLambdaContext, load_handler
from clearline_local.sandbox_processor import SandboxProcessor

EVENTS = Path(__file__).resolve().parents[2] / "events"


@pytest.fixture
def shop(store: Store, processor: SandboxProcessor) -> dict[str, Any]:
    merchant = create_merchant(store, "Reviewing Shop").merchant
    client = ProcessorClient(processor.url, timeout_seconds=2.0, capacity=None)
    charges = ChargeService(store, client)
    refunds = RefundService(store, client)
    return {
        "merchant": merchant,
        "caller": Caller(merchant, "req_reviews"),
        "charges": charges,
        "refunds": refunds,
        "reviews": ReviewService(store),
        "second_look": AfterAuthorization(charges, refunds),
        "book": RuleBook(store),
    }


def pay(shop: dict[str, Any], source: str = "tok_visa", **params: Any) -> Charge:
    charge: Charge = shop["charges"].create(
        shop["caller"],
        ChargeCreateParams(source=source, **{"amount": 2500, "currency": "usd", **params}),
        idempotency_key=str(uuid.uuid4()),
    )
    return charge


def events_of(store: Store, object_id: str) -> list[str]:
    """The review events naming the object."""
    found = [
        (item["created"], item["type"])
        for item in store.scan("EVENT#")
        if item["sk"] == "EVENT" and object_id in json.dumps(item.get("data", ""), default=str)
    ]
    return sorted(kind for _, kind in found if kind.startswith("review."))


def test_a_payment_sent_to_review_opens_one_and_approving_closes_it(
    store: Store, shop: dict[str, Any]
) -> None:
    charge = pay(shop, "tok_riskLevelElevated")
    assert charge.review is not None and charge.review.startswith("prv_")
    review = shop["reviews"].retrieve(shop["merchant"], charge.review)
    assert (review.charge, review.open, review.opened_reason, review.reason) == (
        charge.id,
        True,
        "rule",
        "rule",
    )
    listed = shop["reviews"].list(
        shop["merchant"], limit=10, starting_after=None, ending_before=None
    )
    assert [r.id for r in listed.items] == [review.id]
    assert "review.opened" in events_of(store, review.id)

    approved = shop["reviews"].approve(shop["caller"], review.id)
    assert (approved.open, approved.closed_reason, approved.reason) == (
        False,
        "approved",
        "approved",
    )
    assert events_of(store, review.id) == ["review.closed", "review.opened"]
    with pytest.raises(InvalidRequestError) as again:
        shop["reviews"].approve(shop["caller"], review.id)
    assert "already closed" in again.value.message
    assert (
        shop["reviews"]
        .list(shop["merchant"], limit=10, starting_after=None, ending_before=None)
        .items
        == ()
    )

    other = create_merchant(store, "Someone Else").merchant
    with pytest.raises(ResourceMissingError):
        shop["reviews"].retrieve(other, review.id)
    assert pay(shop).review is None  # an ordinary payment opens none


def test_a_failed_cvc_found_after_the_authorization_opens_a_review(
    store: Store, shop: dict[str, Any]
) -> None:
    charge = pay(shop, "tok_cvcCheckFail")
    assert charge.review is None and charge.state == "captured"  # approved by the issuer
    assert shop["second_look"].look(charge.id) == "reviewed"
    looked = shop["charges"].retrieve(shop["merchant"], charge.id)
    assert looked.review is not None and looked.state == "captured"
    assert shop["second_look"].look(charge.id) == "reviewed"  # a redelivery opens no second
    assert events_of(store, looked.review) == ["review.opened"]
    assert shop["second_look"].look(pay(shop).id) == "passed"


@pytest.mark.parametrize("capture", [True, False])
def test_a_merchants_rule_reverses_a_payment_after_its_authorization(
    store: Store, shop: dict[str, Any], processor: SandboxProcessor, capture: bool
) -> None:
    shop["book"].add(shop["merchant"].id, "Block if :cvc_check: = 'fail'")
    charge = pay(shop, "tok_cvcCheckFail", capture=capture)
    assert charge.outcome is not None and charge.outcome.type == "authorized"  # unknown before
    assert shop["second_look"].look(charge.id) == "reversed"
    reversed_ = shop["charges"].retrieve(shop["merchant"], charge.id)
    assert reversed_.outcome is not None
    assert (reversed_.outcome.network_status, reversed_.outcome.type) == (
        "reversed_after_approval",
        "blocked",
    )
    assert reversed_.fraud_details == {"stripe_report": "fraudulent"}
    assert reversed_.total_refunded == charge.amount
    assert reversed_.refunds[0].reason == "fraudulent"
    assert reversed_.state == ("captured" if capture else "canceled")
    assert reversed_.review is not None
    review = shop["reviews"].retrieve(shop["merchant"], reversed_.review)
    assert (review.open, review.closed_reason) == (False, "refunded_as_fraud")
    assert shop["second_look"].look(charge.id) == "reversed"  # again: nothing more
    assert len(shop["charges"].retrieve(shop["merchant"], charge.id).refunds) == 1


def test_a_reversal_cut_short_is_finished_by_the_next_delivery(
    store: Store, shop: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    shop["book"].add(shop["merchant"].id, "Block if :cvc_check: = 'fail'")
    charge = pay(shop, "tok_cvcCheckFail")

    def crash(*_: Any, **__: Any) -> Any:
        raise RuntimeError("the execution environment died")

    monkeypatch.setattr(RefundService, "create", crash)
    with pytest.raises(RuntimeError):
        shop["second_look"].look(charge.id)
    monkeypatch.undo()
    marked = shop["charges"].retrieve(shop["merchant"], charge.id)
    assert marked.outcome is not None and marked.outcome.network_status == (
        "reversed_after_approval"
    )
    assert marked.amount_refunded == 0  # marked, not yet reversed
    assert shop["second_look"].look(charge.id) == "reversed"
    done = shop["charges"].retrieve(shop["merchant"], charge.id)
    assert done.amount_refunded == charge.amount and len(done.refunds) == 1


def test_the_function_fails_a_poison_record_alone(
    store: Store, shop: dict[str, Any], processor: SandboxProcessor
) -> None:
    charge = pay(shop, "tok_cvcCheckFail")
    os.environ.update(
        {
            table_env_var(MAIN_TABLE.key): MAIN_TABLE.name,
            table_env_var(COUNTERS_TABLE.key): COUNTERS_TABLE.name,
            PROCESSOR_URL_ENV: processor.url,
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_SERVICE_NAME": "clearline",
        }
    )
    handler = load_handler(TOPOLOGY.function("risk_review"))
    import risk_review_handler

    risk_review_handler.after_authorization = shop["second_look"]
    sample = json.loads((EVENTS / "risk_review" / "sqs_charge_succeeded.json").read_text())
    (record,) = sample["Records"]
    body = json.loads(record["body"])
    body["detail"]["event"]["data"]["object"]["id"] = charge.id
    good = {**record, "messageId": "good", "body": json.dumps(body)}
    poison = {**record, "messageId": "poison", "body": "{not json"}
    context = LocalLambdaContext("risk_review", 512, 30, str(uuid.uuid4()))
    answer = handler({"Records": [poison, good]}, context)
    assert answer == {"batchItemFailures": [{"itemIdentifier": "poison"}]}
    assert shop["charges"].retrieve(shop["merchant"], charge.id).review is not None


def test_a_payer_the_merchant_allowed_is_not_reversed_after_the_authorization(
    shop: dict[str, Any],
) -> None:
    shop["book"].add(shop["merchant"].id, "Allow if :email: = 'ceo@shop.example'")
    shop["book"].add(shop["merchant"].id, "Block if :cvc_check: = 'fail'")
    trusted = pay(shop, "tok_cvcCheckFail", receipt_email="ceo@shop.example")
    assert shop["second_look"].look(trusted.id) == "passed"
    kept = shop["charges"].retrieve(shop["merchant"], trusted.id)
    assert kept.amount_refunded == 0 and kept.review is None
    stranger = pay(shop, "tok_cvcCheckFail", receipt_email="someone@else.example")
    assert shop["second_look"].look(stranger.id) == "reversed"


def test_a_payment_refunded_before_the_reversal_closes_its_review_as_refunded(
    shop: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    shop["book"].add(shop["merchant"].id, "Block if :cvc_check: = 'fail'")
    charge = pay(shop, "tok_cvcCheckFail")

    def crash(*_: Any, **__: Any) -> Any:
        raise RuntimeError("the execution environment died")

    monkeypatch.setattr(AfterAuthorization, "_reverse", crash)
    with pytest.raises(RuntimeError):
        shop["second_look"].look(charge.id)  # marked, then cut short
    monkeypatch.undo()
    from clearline.params import RefundCreateParams

    shop["refunds"].create(  # the merchant refunds it first
        shop["caller"], RefundCreateParams(charge=charge.id), idempotency_key="merchant-refund"
    )
    assert shop["second_look"].look(charge.id) == "reversed"
    done = shop["charges"].retrieve(shop["merchant"], charge.id)
    assert len(done.refunds) == 1 and done.amount_refunded == charge.amount  # no second
    assert done.review is not None
    review = shop["reviews"].retrieve(shop["merchant"], done.review)
    assert (review.open, review.closed_reason) == (False, "refunded")
    unmarked = pay(shop, "tok_cvcCheckFail")
    shop["refunds"].create(
        shop["caller"], RefundCreateParams(charge=unmarked.id), idempotency_key="refund-2"
    )
    assert shop["second_look"].look(unmarked.id) == "skipped"


def test_refunding_a_reviewed_payment_in_full_closes_its_review(
    store: Store, shop: dict[str, Any]
) -> None:
    from clearline.params import RefundCreateParams

    charge = pay(shop, "tok_riskLevelElevated")
    assert charge.review is not None
    shop["refunds"].create(
        shop["caller"], RefundCreateParams(charge=charge.id, amount=500), idempotency_key="p"
    )
    assert shop["reviews"].retrieve(shop["merchant"], charge.review).open  # part: still open
    shop["refunds"].create(
        shop["caller"],
        RefundCreateParams(charge=charge.id, reason="fraudulent"),
        idempotency_key="rest",
    )
    closed = shop["reviews"].retrieve(shop["merchant"], charge.review)
    assert (closed.open, closed.closed_reason) == (False, "refunded_as_fraud")
    assert events_of(store, closed.id) == ["review.closed", "review.opened"]


def disputed(shop: dict[str, Any], processor: SandboxProcessor, charge_id: str) -> None:
    """The processor's notice of the charge's dispute, received as the intake receives it."""
    client = ProcessorClient(processor.url, timeout_seconds=2.0, capacity=None)
    disputes = DisputeService(shop["charges"].store, client)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = requests.get(f"{processor.url}/_sandbox/disputes", timeout=5).json()["data"]
        for record in found:
            if record["reference"] == charge_id:
                disputes.receive(ProcessorDispute.model_validate(record))
                return
        time.sleep(0.05)
    raise AssertionError(f"the processor raised no dispute of {charge_id}")


def test_a_disputed_payment_closes_its_review_and_the_second_look_leaves_it(
    store: Store, shop: dict[str, Any], processor: SandboxProcessor
) -> None:
    shop["book"].add(shop["merchant"].id, "Review if :amount: = 2600")
    charge = pay(shop, "tok_createDispute", amount=2600)
    assert charge.review is not None
    disputed(shop, processor, charge.id)
    review = shop["reviews"].retrieve(shop["merchant"], charge.review)
    assert (review.open, review.closed_reason) == (False, "disputed")
    assert shop["second_look"].look(charge.id) == "skipped"  # nothing left to look at
    assert events_of(store, review.id) == ["review.closed", "review.opened"]


def test_a_payment_disputed_before_its_reversal_closes_its_review_once(
    store: Store,
    shop: dict[str, Any],
    processor: SandboxProcessor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Marked for reversal, then cut short; the dispute closes the review as `disputed`, and
    the reversal that follows finds nothing to take back and the review already closed."""
    shop["book"].add(shop["merchant"].id, "Block if :cvc_check: = 'pass'")
    charge = pay(shop, "tok_createDispute")

    def crash(*_: Any, **__: Any) -> Any:
        raise RuntimeError("the execution environment died")

    monkeypatch.setattr(AfterAuthorization, "_reverse", crash)
    with pytest.raises(RuntimeError):
        shop["second_look"].look(charge.id)
    monkeypatch.undo()
    marked = shop["charges"].retrieve(shop["merchant"], charge.id)
    assert marked.review is not None

    disputed(shop, processor, charge.id)
    review = shop["reviews"].retrieve(shop["merchant"], marked.review)
    assert (review.open, review.closed_reason) == (False, "disputed")
    assert shop["second_look"].look(charge.id) == "reversed"
    done = shop["charges"].retrieve(shop["merchant"], charge.id)
    assert done.disputed and done.refunds == () and done.amount_refunded == 0
    assert events_of(store, review.id) == ["review.closed", "review.opened"]


def test_a_dispute_opened_during_the_second_look_keeps_its_review_from_opening(
    store: Store,
    shop: dict[str, Any],
    processor: SandboxProcessor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The dispute lands between the look's read of the charge and its write: the write
    is refused (the dispute settles the charge otherwise), and the next delivery skips."""
    shop["book"].add(shop["merchant"].id, "Review if :cvc_check: = 'pass'")
    charge = pay(shop, "tok_createDispute")
    scored = post_authorization.second_score

    def disputed_meanwhile(item: dict[str, Any]) -> Any:
        disputed(shop, processor, charge.id)
        return scored(item)

    monkeypatch.setattr(post_authorization, "second_score", disputed_meanwhile)
    with pytest.raises(ConflictError):
        shop["second_look"].look(charge.id)
    monkeypatch.undo()
    after = shop["charges"].retrieve(shop["merchant"], charge.id)
    assert after.disputed and after.review is None
    assert shop["second_look"].look(charge.id) == "skipped"
    assert not [item for item in store.scan("REVIEW#") if item.get("charge") == charge.id]


def test_a_merchant_without_radars_review_rule_gets_no_review_from_the_second_look(
    shop: dict[str, Any],
) -> None:
    merchant = shop["merchant"].id
    shop["book"].set_default(merchant, "manual_review_if_elevated_risk", False)
    risky = pay(shop, "tok_cvcCheckFail")
    assert shop["second_look"].look(risky.id) == "passed"
    assert shop["charges"].retrieve(shop["merchant"], risky.id).review is None
    # The merchant's own rules on what only this look knows still run.
    own = shop["book"].add(merchant, "Review if :cvc_check: = 'fail'")
    assert shop["second_look"].look(pay(shop, "tok_cvcCheckFail").id) == "reviewed"
    shop["book"].remove(merchant, own.id)
    shop["book"].set_default(merchant, "manual_review_if_elevated_risk", True)
    assert shop["second_look"].look(pay(shop, "tok_cvcCheckFail").id) == "reviewed"
