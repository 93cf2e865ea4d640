"""Canceling a refund the processor has not made yet, at every point a crash can leave it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from clearline.audit import Caller
from clearline.charges import ChargeService
from clearline.errors import InvalidRequestError, ServiceUnavailableError
from clearline.ledger import verify
from clearline.merchants import Merchant, create_merchant
from clearline.params import ChargeCreateParams, RefundCreateParams
from clearline.processor import ProcessorClient
from clearline.refunds import RefundService
from clearline.resolver import PENDING_GRACE_SECONDS, Resolver
from clearline.store import Store
from clearline_local.sandbox_processor import SandboxProcessor


@pytest.fixture
def services(
    store: Store, processor: SandboxProcessor
) -> Iterator[tuple[Merchant, ChargeService, RefundService]]:
    client = ProcessorClient(processor.url, timeout_seconds=0.3)
    merchant = create_merchant(store, "Cancel Shop").merchant
    yield merchant, ChargeService(store, client), RefundService(store, client)
    processor.clear_faults()


def pending_refund(
    processor: SandboxProcessor,
    services: tuple[Merchant, ChargeService, RefundService],
    fault: str,
) -> tuple[str, str, str]:
    """A captured charge and a refund of 1,000 of it whose processor call timed out:
    (charge id, refund id, the refund's idempotency key)."""
    merchant, charges, refunds = services
    caller = Caller(merchant, "req_test")
    charge = charges.create(
        caller,
        ChargeCreateParams(amount=5000, currency="usd", source="tok_visa"),
        idempotency_key=str(uuid.uuid4()),
    )
    key = str(uuid.uuid4())
    processor.inject_fault(fault)
    with pytest.raises(ServiceUnavailableError):
        refunds.create(
            caller, RefundCreateParams(charge=charge.id, amount=1000), idempotency_key=key
        )
    (refund,) = charges.retrieve(merchant, charge.id).refunds
    assert refund.status == "pending"
    return charge.id, refund.id, key


def refunded_at_processor(processor: SandboxProcessor, charge_id: str) -> int:
    (auth,) = [a for a in processor.authorizations() if a["reference"] == charge_id]
    return int(auth["amount_refunded"])


def test_a_refund_the_processor_never_made_is_canceled_and_stays_canceled(
    store: Store,
    processor: SandboxProcessor,
    services: tuple[Merchant, ChargeService, RefundService],
) -> None:
    merchant, _, refunds = services
    charge_id, refund_id, key = pending_refund(processor, services, "timeout_before")
    canceled = refunds.cancel(Caller(merchant, "req_cancel"), refund_id)
    assert canceled.status == "canceled"

    charge = store.get(f"CHARGE#{charge_id}", "CHARGE")
    assert charge is not None and charge["refundable"] == 5000  # the reservation is released
    assert charge["amount_refunded"] == 0
    # The request's own retry finds the cancel, and the processor refuses the revoked key.
    again = refunds.create(
        Caller(merchant, "req_retry"),
        RefundCreateParams(charge=charge_id, amount=1000),
        idempotency_key=key,
    )
    assert again.status == "canceled"
    assert refunded_at_processor(processor, charge_id) == 0
    assert verify(store).ok
    # The whole 5,000 is refundable again.
    full = refunds.create(
        Caller(merchant, "req_full"),
        RefundCreateParams(charge=charge_id),
        idempotency_key=str(uuid.uuid4()),
    )
    assert (full.status, full.amount) == ("succeeded", 5000)


def test_a_refund_the_processor_already_made_is_settled_as_made_and_the_cancel_refused(
    store: Store,
    processor: SandboxProcessor,
    services: tuple[Merchant, ChargeService, RefundService],
) -> None:
    merchant, charges, refunds = services
    charge_id, refund_id, _ = pending_refund(processor, services, "timeout_after")
    with pytest.raises(InvalidRequestError) as refused:
        refunds.cancel(Caller(merchant, "req_cancel"), refund_id)
    assert refused.value.code == "refund_not_cancelable"
    assert refunds.retrieve(merchant, refund_id).status == "succeeded"
    assert charges.retrieve(merchant, charge_id).amount_refunded == 1000
    assert refunded_at_processor(processor, charge_id) == 1000
    assert verify(store).ok


def test_a_cancel_cut_short_before_the_processor_answered_is_finished_by_the_resolver(
    store: Store,
    processor: SandboxProcessor,
    services: tuple[Merchant, ChargeService, RefundService],
) -> None:
    merchant, _, refunds = services
    charge_id, refund_id, _ = pending_refund(processor, services, "timeout_before")
    processor.inject_fault("error_500")  # the revoke itself fails: only the wish is recorded
    with pytest.raises(ServiceUnavailableError):
        refunds.cancel(Caller(merchant, "req_cancel"), refund_id)
    record = store.get(f"CHARGE#{charge_id}", f"OP#refund#{refund_id}")
    assert record is not None and record["cancel_requested"] is True

    client = ProcessorClient(processor.url, timeout_seconds=0.3)
    resolver = Resolver(ChargeService(store, client), RefundService(store, client))
    outcome = resolver.run(int(time.time()) + PENDING_GRACE_SECONDS + 1)
    assert outcome["settled"] >= 1
    # The resolver finished the cancel, never the refund.
    assert refunds.retrieve(merchant, refund_id).status == "canceled"
    assert refunded_at_processor(processor, charge_id) == 0
    assert verify(store).ok


@pytest.mark.parametrize("status", ["succeeded", "canceled"])
def test_only_a_pending_refund_can_be_canceled(
    store: Store,
    processor: SandboxProcessor,
    services: tuple[Merchant, ChargeService, RefundService],
    status: str,
) -> None:
    merchant, charges, refunds = services
    caller = Caller(merchant, "req_test")
    if status == "succeeded":
        charge = charges.create(
            caller,
            ChargeCreateParams(amount=5000, currency="usd", source="tok_visa"),
            idempotency_key=str(uuid.uuid4()),
        )
        refund_id = refunds.create(
            caller, RefundCreateParams(charge=charge.id), idempotency_key=str(uuid.uuid4())
        ).id
    else:
        _, refund_id, _ = pending_refund(processor, services, "timeout_before")
        refunds.cancel(caller, refund_id)
    before: dict[str, Any] | None = store.get(f"REFUND#{refund_id}", "REFUND")
    with pytest.raises(InvalidRequestError) as refused:
        refunds.cancel(caller, refund_id)
    assert refused.value.code == "refund_not_cancelable"
    assert store.get(f"REFUND#{refund_id}", "REFUND") == before
