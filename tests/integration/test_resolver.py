"""The resolver settles what a client gave up on, to exactly what the processor did.

Each scenario breaks one processor call (it times out before or after the processor
commits, or the processor answers 5xx) for a client that does not retry, then runs the
resolver with the clock moved past its grace period, and holds Clearline's charge
against the sandbox processor's own books.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import stripe

from .conftest import Stack, journals_for

pytestmark = pytest.mark.integration

FAULTS = ["timeout_before", "timeout_after", "error_500"]


def key() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def shop(stack: Stack) -> dict[str, Any]:
    return stack.create_merchant("Resolver Shop", fee_percent=3, fee_fixed=0)


@pytest.fixture
def sdk(stack: Stack, shop: dict[str, Any]) -> stripe.StripeClient:
    return stripe.StripeClient(
        shop["secret_key"], base_addresses={"api": stack.url}, max_network_retries=2
    )


@pytest.fixture
def gives_up(stack: Stack, shop: dict[str, Any]) -> stripe.StripeClient:
    """A client that makes one attempt and never comes back."""
    return stripe.StripeClient(
        shop["secret_key"], base_addresses={"api": stack.url}, max_network_retries=0
    )


def charge(sdk: stripe.StripeClient, *, capture: bool) -> stripe.Charge:
    return sdk.v1.charges.create(
        params={"amount": 8000, "currency": "usd", "source": "tok_visa", "capture": capture},
        options={"idempotency_key": key()},
    )


def resolve(stack: Stack) -> dict[str, int]:
    done = stack.clearline("invoke", "processor_sync", "--time", "+2m")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.splitlines()[-1]))  # the handler's result, after its logs


def at_processor(stack: Stack, charge_id: str) -> dict[str, Any]:
    (authorization,) = [a for a in stack.processor_authorizations() if a["reference"] == charge_id]
    return authorization


@pytest.mark.parametrize("mode", FAULTS)
def test_a_capture_the_client_gave_up_on_is_finished(
    sdk: stripe.StripeClient, gives_up: stripe.StripeClient, stack: Stack, mode: str
) -> None:
    held = charge(sdk, capture=False)
    stack.inject_processor_fault(mode)
    with pytest.raises(stripe.APIError):
        gives_up.v1.charges.capture(held.id, options={"idempotency_key": key()})
    assert sdk.v1.charges.retrieve(held.id).captured is False  # not until the processor says

    assert resolve(stack)["settled"] >= 1
    captured = sdk.v1.charges.retrieve(held.id)
    assert (captured.captured, captured.amount_captured) == (True, 8000)
    assert at_processor(stack, held.id)["amount_captured"] == 8000
    assert [j["operation"] for j in journals_for(stack, held.id)].count("charge.capture") == 1


@pytest.mark.parametrize("mode", FAULTS)
def test_a_refund_the_client_gave_up_on_is_finished(
    sdk: stripe.StripeClient, gives_up: stripe.StripeClient, stack: Stack, mode: str
) -> None:
    paid = charge(sdk, capture=True)
    stack.inject_processor_fault(mode)
    with pytest.raises(stripe.APIError):
        gives_up.v1.refunds.create(
            params={"charge": paid.id, "amount": 3000}, options={"idempotency_key": key()}
        )
    (pending,) = sdk.v1.refunds.list(params={"charge": paid.id}).data
    assert pending.status == "pending"

    assert resolve(stack)["settled"] >= 1
    assert sdk.v1.refunds.retrieve(pending.id).status == "succeeded"
    assert sdk.v1.charges.retrieve(paid.id).amount_refunded == 3000
    assert at_processor(stack, paid.id)["refunds"] == [3000]
    assert [j["operation"] for j in journals_for(stack, paid.id)].count("refund") == 1


@pytest.mark.parametrize("mode", FAULTS)
def test_a_void_the_client_gave_up_on_is_finished_and_capture_is_then_refused(
    sdk: stripe.StripeClient, gives_up: stripe.StripeClient, stack: Stack, mode: str
) -> None:
    held = charge(sdk, capture=False)
    stack.inject_processor_fault(mode)
    with pytest.raises(stripe.APIError):
        gives_up.v1.refunds.create(params={"charge": held.id}, options={"idempotency_key": key()})
    with pytest.raises(stripe.APIError) as busy:  # the void is in flight: retry later
        gives_up.v1.charges.capture(held.id, options={"idempotency_key": key()})
    assert busy.value.http_status == 409

    assert resolve(stack)["settled"] >= 1
    voided = sdk.v1.charges.retrieve(held.id)
    assert (voided.refunded, voided.amount_refunded) == (True, 8000)
    assert at_processor(stack, held.id)["voided"] is True
    with pytest.raises(stripe.InvalidRequestError) as refused:
        sdk.v1.charges.capture(held.id, options={"idempotency_key": key()})
    assert refused.value.code == "charge_already_refunded"


def test_a_charge_the_client_gave_up_on_settles_to_what_the_processor_did(
    gives_up: stripe.StripeClient, sdk: stripe.StripeClient, stack: Stack
) -> None:
    stack.inject_processor_fault("timeout_after")
    pending = charge(gives_up, capture=True)
    assert pending.status == "pending"
    stack.inject_processor_fault("timeout_before")
    never_sent = charge(gives_up, capture=True)
    assert never_sent.status == "pending"

    outcome = resolve(stack)
    assert outcome["settled"] >= 1 and outcome["failed"] >= 1
    assert sdk.v1.charges.retrieve(pending.id).status == "succeeded"
    assert at_processor(stack, pending.id)["amount_captured"] == 8000
    failed = sdk.v1.charges.retrieve(never_sent.id)
    assert (failed.status, failed.failure_code) == ("failed", "processing_error")
    assert not [a for a in stack.processor_authorizations() if a["reference"] == never_sent.id]
