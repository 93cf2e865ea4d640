"""The resolver, one pass at a time: what it settles, what it leaves, what it alarms on."""

from __future__ import annotations

import time
import uuid

import pytest

from clearline.audit import Caller
from clearline.charges import DUE_PROCESSOR, ChargeService, due_keys
from clearline.errors import CardError
from clearline.merchants import create_merchant
from clearline.models import Charge
from clearline.params import ChargeCreateParams
from clearline.processor import ProcessorClient
from clearline.refunds import RefundService
from clearline.resolver import PENDING_GRACE_SECONDS, UNRESOLVED_AFTER_SECONDS, Resolver
from clearline.store import Store
from clearline_local.sandbox_processor import SandboxProcessor
from clearline_local.stack import free_port


def resolver_for(store: Store, processor_url: str) -> Resolver:
    client = ProcessorClient(processor_url, timeout_seconds=0.3)
    return Resolver(ChargeService(store, client), RefundService(store, client))


def pending_charge(store: Store, processor: SandboxProcessor) -> Charge:
    """A charge the processor never answered for (it timed out before committing)."""
    merchant = create_merchant(store, "Resolver Shop").merchant
    charges = ChargeService(store, ProcessorClient(processor.url, timeout_seconds=0.3))
    processor.inject_fault("timeout_before")
    created = charges.create(
        Caller(merchant, "req_test"),
        ChargeCreateParams(amount=2500, currency="usd", source="tok_visa"),
        idempotency_key=str(uuid.uuid4()),
    )
    assert created.state == "pending"
    return created


def test_an_unreachable_processor_leaves_the_charge_pending_and_alarms_when_it_is_old(
    store: Store, processor: SandboxProcessor
) -> None:
    charge = pending_charge(store, processor)
    unreachable = resolver_for(store, f"http://127.0.0.1:{free_port()}")
    soon = int(time.time()) + PENDING_GRACE_SECONDS + 1
    assert unreachable.run(soon) == {
        "settled": 0,
        "failed": 0,
        "unreachable": 1,
        "errors": 0,
        "unresolved": 0,
    }
    assert store.get(f"CHARGE#{charge.id}", "CHARGE")["state"] == "pending"
    much_later = int(time.time()) + UNRESOLVED_AFTER_SECONDS + 1
    assert unreachable.run(much_later)["unresolved"] == 1  # what the alarm watches

    settled = resolver_for(store, processor.url).run(much_later)
    assert (settled["failed"], settled["unresolved"]) == (1, 0)  # never reached the processor
    assert store.get(f"CHARGE#{charge.id}", "CHARGE")["state"] == "failed"


def test_records_younger_than_the_grace_period_are_left_to_their_request(
    store: Store, processor: SandboxProcessor
) -> None:
    charge = pending_charge(store, processor)
    outcome = resolver_for(store, processor.url).run(int(time.time()))
    assert outcome["failed"] == outcome["settled"] == 0
    assert store.get(f"CHARGE#{charge.id}", "CHARGE")["state"] == "pending"


def test_a_poison_record_does_not_stop_the_others(
    store: Store, processor: SandboxProcessor
) -> None:
    charge = pending_charge(store, processor)
    written = int(time.time())
    store.put(  # an operation record whose charge does not exist: nothing can settle it
        {
            "pk": "CHARGE#ch_missing",
            "sk": "OP#capture",
            "status": "pending",
            "operation": "capture",
            **due_keys(DUE_PROCESSOR, "ch_missing:capture", written),
        }
    )
    outcome = resolver_for(store, processor.url).run(written + PENDING_GRACE_SECONDS + 1)
    assert (outcome["errors"], outcome["failed"]) == (1, 1)
    assert store.get(f"CHARGE#{charge.id}", "CHARGE")["state"] == "failed"


def test_a_retry_after_the_resolver_failed_a_charge_is_never_authorized(
    store: Store, processor: SandboxProcessor
) -> None:
    merchant = create_merchant(store, "Late Retry Shop").merchant
    charges = ChargeService(store, ProcessorClient(processor.url, timeout_seconds=0.3))
    key = str(uuid.uuid4())
    params = ChargeCreateParams(amount=2500, currency="usd", source="tok_visa")
    processor.inject_fault("timeout_before")
    pending = charges.create(Caller(merchant, "req_first"), params, idempotency_key=key)
    assert pending.state == "pending"
    soon = int(time.time()) + PENDING_GRACE_SECONDS + 1
    assert resolver_for(store, processor.url).run(soon)["failed"] == 1
    # The merchant's retry arrives late, with the same key: the processor refuses the key
    # the resolver revoked, so the failed charge stands and nobody is charged.
    with pytest.raises(CardError):
        charges.create(Caller(merchant, "req_retry"), params, idempotency_key=key)
    assert not [a for a in processor.authorizations() if a["reference"] == pending.id]
    assert store.get(f"CHARGE#{pending.id}", "CHARGE")["state"] == "failed"
