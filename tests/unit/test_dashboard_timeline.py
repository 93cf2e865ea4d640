"""A payment's timeline puts each thing where the change that wrote it happened, even when
the steps of one request are milliseconds apart."""

from __future__ import annotations

import itertools
import uuid

from clearline.audit import Caller
from clearline.charges import ChargeService
from clearline.dashboard import timeline
from clearline.merchants import create_merchant
from clearline.params import ChargeCreateParams, RefundCreateParams
from clearline.processor import ProcessorClient
from clearline.refunds import RefundService
from clearline.store import Store
from clearline_local.sandbox_processor import SandboxProcessor

START = 1_795_000_000.0


def test_a_refunds_balance_transaction_stands_with_the_change_that_wrote_it(
    store: Store, processor: SandboxProcessor
) -> None:
    # Every reading of the clock is 7 ms after the last: no two steps share a millisecond.
    ticks = itertools.count()
    clock = lambda: START + next(ticks) * 0.007  # noqa: E731
    client = ProcessorClient(processor.url, timeout_seconds=5)
    merchant = create_merchant(store, "Timeline Shop").merchant
    caller = Caller(merchant, "req_timeline")
    charges = ChargeService(store, client, clock=clock)
    charge = charges.create(
        caller,
        ChargeCreateParams(amount=2599, currency="usd", source="tok_visa"),
        idempotency_key=str(uuid.uuid4()),
    )
    RefundService(store, client, clock=clock).create(
        caller, RefundCreateParams(charge=charge.id, amount=599), idempotency_key="refund-1"
    )

    titles = [entry.title for entry in timeline(store, charges.retrieve(merchant, charge.id))]
    in_order = [
        "create: new → pending",
        "authorize: pending → captured",
        "journal charge.capture",
        "balance transaction charge",
        "refund.created",
        "succeed: pending → succeeded",
        "journal refund",
        "balance transaction refund",
        "charge.refunded",
    ]
    assert all(title in titles for title in in_order), titles
    positions = [titles.index(title) for title in in_order]
    assert positions == sorted(positions), titles
