"""A PaymentIntent survives a crash between any two steps of its confirmation: the intent
written as processing, its charge created, the intent following its charge."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from clearline.audit import Caller
from clearline.charges import DUE_PROCESSOR, ChargeService, due_keys
from clearline.errors import ConflictError, InvalidRequestError
from clearline.ids import derived_id
from clearline.ledger import verify
from clearline.merchants import Merchant, create_merchant
from clearline.params import (
    ChargeCaptureParams,
    ChargeCreateParams,
    PaymentIntentCancelParams,
    PaymentIntentConfirmParams,
    PaymentIntentCreateParams,
    PaymentIntentUpdateParams,
)
from clearline.payment_intents import PROCESSING, PaymentIntentService, attempt_key
from clearline.processor import ProcessorClient
from clearline.refunds import RefundService
from clearline.resolver import PENDING_GRACE_SECONDS, Resolver
from clearline.store import Store
from clearline_local.sandbox_processor import SandboxProcessor


@pytest.fixture
def shop(
    store: Store, processor: SandboxProcessor
) -> Iterator[tuple[Caller, PaymentIntentService]]:
    client = ProcessorClient(processor.url, timeout_seconds=0.3)
    charges, refunds = ChargeService(store, client), RefundService(store, client)
    merchant: Merchant = create_merchant(store, "Intent Faults Shop").merchant
    yield Caller(merchant, "req_test"), PaymentIntentService(store, charges, refunds)
    processor.clear_faults()


def new_intent(caller: Caller, intents: PaymentIntentService, **params: Any) -> str:
    created = intents.create(
        caller,
        PaymentIntentCreateParams(amount=2500, currency="usd", **params),
        idempotency_key=str(uuid.uuid4()),
    )
    return created.id


def resolve(store: Store, processor: SandboxProcessor) -> dict[str, int]:
    client = ProcessorClient(processor.url, timeout_seconds=0.3)
    resolver = Resolver(ChargeService(store, client), RefundService(store, client))
    return resolver.run(int(time.time()) + PENDING_GRACE_SECONDS + 1)


def charges_of(store: Store, intent_id: str) -> list[dict[str, Any]]:
    items = store.client.scan(TableName=store.table_name)["Items"]
    return [
        i
        for i in items
        if i["sk"]["S"] == "CHARGE" and i.get("payment_intent", {}).get("S") == intent_id
    ]


def test_a_crash_before_the_charge_is_created_is_finished_by_the_resolver(
    store: Store, processor: SandboxProcessor, shop: tuple[Caller, PaymentIntentService]
) -> None:
    caller, intents = shop
    intent_id = new_intent(caller, intents, payment_method="pm_card_visa")
    item = intents.owned(caller.merchant.id, intent_id)
    charge_id = derived_id("ch", caller.merchant.id, attempt_key(intent_id, 1))
    # The write-ahead of a confirmation, and then nothing: the request died.
    intents._move(
        item,
        PROCESSING,
        caller,
        set={
            "attempt": 1,
            "latest_charge": charge_id,
            **due_keys(DUE_PROCESSOR, intent_id, int(time.time())),
        },
    )
    assert intents.retrieve(caller.merchant, intent_id).state == PROCESSING
    resolve(store, processor)
    settled = intents.retrieve(caller.merchant, intent_id)
    assert (settled.state, settled.latest_charge, settled.amount_received) == (
        "succeeded",
        charge_id,
        2500,
    )
    assert len(charges_of(store, intent_id)) == 1
    assert verify(store).ok


def test_a_crash_after_the_charge_is_captured_is_followed_on_the_next_read(
    store: Store, shop: tuple[Caller, PaymentIntentService]
) -> None:
    caller, intents = shop
    intent_id = new_intent(caller, intents, payment_method="pm_card_visa")
    item = intents.owned(caller.merchant.id, intent_id)
    processing = intents._move(
        item,
        PROCESSING,
        caller,
        set={
            "attempt": 1,
            "latest_charge": derived_id("ch", caller.merchant.id, attempt_key(intent_id, 1)),
        },
    )
    # The charge went through, and the request died before the intent followed it.
    intents.charges.create(
        caller,
        ChargeCreateParams(amount=2500, currency="usd", payment_method="pm_card_visa"),
        idempotency_key=attempt_key(intent_id, 1),
        payment_intent=intent_id,
    )
    assert store.get(processing["pk"], "PI")["state"] == PROCESSING  # type: ignore[index]
    assert intents.retrieve(caller.merchant, intent_id).state == "succeeded"
    assert len(charges_of(store, intent_id)) == 1


@pytest.mark.parametrize("fault", ["timeout_before", "timeout_after"])
def test_a_processor_that_does_not_answer_leaves_the_intent_processing_until_its_charge_settles(
    store: Store,
    processor: SandboxProcessor,
    shop: tuple[Caller, PaymentIntentService],
    fault: str,
) -> None:
    caller, intents = shop
    intent_id = new_intent(caller, intents, payment_method="pm_card_visa")
    processor.inject_fault(fault)
    waiting = intents.confirm(caller, intent_id, params=PaymentIntentConfirmParams())
    assert waiting.state == PROCESSING
    resolve(store, processor)
    settled = intents.retrieve(caller.merchant, intent_id)
    (charge,) = charges_of(store, intent_id)
    authorized = [a for a in processor.authorizations() if a["reference"] == charge["id"]["S"]]
    # The resolver either finishes the attempt (asking the processor again, with the same
    # key) or, when it reaches the charge first, finds nothing and fails it for good. Either
    # way the intent says what the processor did, and money moved once or not at all.
    if settled.state == "succeeded":
        assert len(authorized) == 1 and authorized[0]["amount_captured"] == 2500
    else:
        assert fault == "timeout_before"  # only a call that never reached it can fail
        assert settled.state == "requires_payment_method" and authorized == []
        assert settled.last_payment_error is not None
        assert settled.last_payment_error["code"] == "processing_error"
    assert verify(store).ok


def test_a_confirmation_that_loses_a_race_creates_no_charge(
    store: Store, shop: tuple[Caller, PaymentIntentService]
) -> None:
    caller, intents = shop
    intent_id = new_intent(caller, intents, payment_method="pm_card_visa")
    stale = intents.owned(caller.merchant.id, intent_id)
    intents.update(caller, intent_id, PaymentIntentUpdateParams(description="changed meanwhile"))
    with pytest.raises(ConflictError):
        intents.confirm(caller, intent_id, PaymentIntentConfirmParams(), current=stale)
    assert charges_of(store, intent_id) == []
    assert intents.retrieve(caller.merchant, intent_id).state == "requires_confirmation"


def test_a_cancel_never_refunds_a_capture_that_got_there_first(
    store: Store, shop: tuple[Caller, PaymentIntentService]
) -> None:
    caller, intents = shop
    intent_id = new_intent(
        caller, intents, payment_method="pm_card_visa", capture_method="manual", confirm=True
    )
    held = intents.retrieve(caller.merchant, intent_id)
    assert held.state == "requires_capture" and held.latest_charge is not None
    # The capture wins; the cancel's void of the hold must then be refused, not a refund.
    intents.charges.capture(caller, held.latest_charge, ChargeCaptureParams())
    with pytest.raises(InvalidRequestError):
        intents.refunds.void_hold(caller, held.latest_charge, idempotency_key="void-after")
    charge = store.get(f"CHARGE#{held.latest_charge}", "CHARGE")
    assert charge is not None and (charge["state"], charge["amount_refunded"]) == ("captured", 0)
    with pytest.raises(InvalidRequestError) as refused:
        intents.cancel(caller, intent_id, PaymentIntentCancelParams())
    assert refused.value.code == "payment_intent_unexpected_state"
    assert intents.retrieve(caller.merchant, intent_id).state == "succeeded"


def test_automatic_async_capture_captures(shop: tuple[Caller, PaymentIntentService]) -> None:
    caller, intents = shop
    intent_id = new_intent(
        caller, intents, payment_method="pm_card_visa", capture_method="automatic_async"
    )
    paid = intents.confirm(caller, intent_id, PaymentIntentConfirmParams())
    assert (paid.state, paid.amount_received) == ("succeeded", 2500)


def test_an_intent_whose_held_charge_expired_before_it_followed_is_canceled(
    store: Store, shop: tuple[Caller, PaymentIntentService]
) -> None:
    caller, intents = shop
    intent_id = new_intent(caller, intents, payment_method="pm_card_visa", capture_method="manual")
    item = intents.owned(caller.merchant.id, intent_id)
    charge_id = derived_id("ch", caller.merchant.id, attempt_key(intent_id, 1))
    intents._move(item, PROCESSING, caller, set={"attempt": 1, "latest_charge": charge_id})
    intents.charges.create(  # authorized, and the request died before the intent followed
        caller,
        ChargeCreateParams(
            amount=2500, currency="usd", payment_method="pm_card_visa", capture=False
        ),
        idempotency_key=attempt_key(intent_id, 1),
        payment_intent=intent_id,
    )
    assert intents.charges.expire(charge_id)
    canceled = intents.retrieve(caller.merchant, intent_id)
    assert (canceled.state, canceled.cancellation_reason) == ("canceled", "automatic")
    assert verify(store).ok
