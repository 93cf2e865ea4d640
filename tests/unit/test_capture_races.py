"""A capture in flight, met by another capture request."""

from __future__ import annotations

import uuid

import pytest

from clearline.audit import Caller
from clearline.charges import ChargeService, operation_record
from clearline.errors import ConflictError
from clearline.merchants import create_merchant
from clearline.params import ChargeCaptureParams, ChargeCreateParams
from clearline.processor import ProcessorClient
from clearline.store import Store
from clearline_local.sandbox_processor import SandboxProcessor


def test_a_different_capture_waits_and_a_retry_of_the_same_one_finishes_it(
    store: Store, processor: SandboxProcessor
) -> None:
    charges = ChargeService(store, ProcessorClient(processor.url, timeout_seconds=0.3))
    caller = Caller(create_merchant(store, "Capture Race Shop").merchant, "req_test")
    held = charges.create(
        caller,
        ChargeCreateParams(amount=4000, currency="usd", source="tok_visa", capture=False),
        idempotency_key=str(uuid.uuid4()),
    )
    item = charges.owned(caller.merchant.id, held.id)
    # A capture of all 4,000 has locked the charge and not finished yet.
    record = operation_record(
        item, "capture", processor_key=f"{held.id}:capture", amount=4000, caller=caller, now=1.0
    )
    assert charges._lock(item, caller, "capture", record) is not None

    with pytest.raises(ConflictError):  # another capture, of another amount: not this one
        charges.capture(caller, held.id, ChargeCaptureParams(amount=3500))
    assert charges.owned(caller.merchant.id, held.id)["state"] == "authorized"

    finished = charges.capture(caller, held.id, ChargeCaptureParams())  # the same capture
    assert (finished.state, finished.amount_captured) == ("captured", 4000)
