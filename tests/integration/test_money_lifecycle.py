"""Capture, partial capture, void and refunds through the stripe SDK, and their ledger."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
import stripe

from clearline import ledger

from .conftest import Stack, journals_for

pytestmark = pytest.mark.integration


def key() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def shop(stack: Stack) -> dict[str, Any]:
    """A fresh merchant at 3% + 0, so each scenario's balances are its own."""
    return stack.create_merchant("Lifecycle Shop", fee_percent=3, fee_fixed=0)


@pytest.fixture
def sdk(stack: Stack, shop: dict[str, Any]) -> stripe.StripeClient:
    return stripe.StripeClient(
        shop["secret_key"], base_addresses={"api": stack.url}, max_network_retries=2
    )


def authorize(sdk: stripe.StripeClient, amount: int, token: str = "tok_visa") -> stripe.Charge:
    return sdk.v1.charges.create(
        params={"amount": amount, "currency": "usd", "source": token, "capture": False},
        options={"idempotency_key": key()},
    )


def refund(sdk: stripe.StripeClient, charge_id: str, amount: int | None = None) -> stripe.Refund:
    params: dict[str, Any] = {"charge": charge_id}
    if amount is not None:
        params["amount"] = amount
    return sdk.v1.refunds.create(params=params, options={"idempotency_key": key()})  # type: ignore[arg-type]


def payable(stack: Stack, shop: dict[str, Any]) -> ledger.AccountBalance:
    return ledger.account_balance(stack.store(), ledger.merchant_payable(shop["id"], "usd"))


def test_hotel_stay(sdk: stripe.StripeClient, stack: Stack, shop: dict[str, Any]) -> None:
    """Authorize 200.00, capture 180.00, refund 50.00, then a refund over what is left."""
    held = authorize(sdk, 20000)
    assert (held.captured, held.amount_captured, held.status) == (False, 0, "succeeded")
    assert payable(stack, shop).credits_pending == 20000

    captured = sdk.v1.charges.capture(
        held.id, params={"amount": 18000}, options={"idempotency_key": key()}
    )
    assert (captured.captured, captured.amount_captured) == (True, 18000)
    assert captured.amount_refunded == 2000  # the released part of the hold, as Stripe reports it
    assert captured.balance_transaction is not None
    txn = sdk.v1.balance_transactions.retrieve(str(captured.balance_transaction))
    assert (txn.amount, txn.fee, txn.net, txn.type, txn.source) == (
        18000,
        540,
        17460,
        "charge",
        held.id,
    )

    first = refund(sdk, held.id, 5000)
    assert (first.status, first.amount, first.charge) == ("succeeded", 5000, held.id)
    after = sdk.v1.charges.retrieve(held.id)
    assert (after.amount_refunded, after.refunded) == (7000, False)
    assert [r.id for r in after.refunds.data] == [first.id]

    with pytest.raises(stripe.InvalidRequestError) as raised:
        refund(sdk, held.id, 13001)
    assert (raised.value.code, raised.value.param) == ("amount_too_large", "amount")

    rest = refund(sdk, held.id)  # no amount: everything still refundable
    assert rest.amount == 13000
    final = sdk.v1.charges.retrieve(held.id)
    assert (final.amount_refunded, final.refunded) == (20000, True)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        refund(sdk, held.id, 1)
    assert raised.value.code == "charge_already_refunded"

    # The merchant got 180.00 less 3%, then gave back 180.00: the fee is not returned.
    balance = payable(stack, shop)
    assert balance.credit_balance == 17460 - 18000
    assert balance.debits_pending == balance.credits_pending == 20000
    operations = sorted(j["operation"] for j in journals_for(stack, held.id))
    assert operations == ["charge.authorize", "charge.capture", "refund", "refund"]


def test_checkout_authorize_then_capture_in_full(
    sdk: stripe.StripeClient, stack: Stack, shop: dict[str, Any]
) -> None:
    held = authorize(sdk, 5000, "tok_mastercard")
    captured = sdk.v1.charges.capture(held.id, options={"idempotency_key": key()})
    assert (captured.amount_captured, captured.amount_refunded, captured.refunded) == (
        5000,
        0,
        False,
    )
    assert payable(stack, shop).credit_balance == 4850
    balance = sdk.v1.balance.retrieve()
    assert [(b.currency, b.amount) for b in balance.pending] == [("usd", 4850)]
    assert [b.amount for b in balance.available] == [0]


def test_void_releases_the_hold(
    sdk: stripe.StripeClient, stack: Stack, shop: dict[str, Any]
) -> None:
    held = authorize(sdk, 7000)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        refund(sdk, held.id, 100)  # partial refunds of uncaptured charges are refused
    assert "partially refund an uncaptured charge" in str(raised.value.user_message)
    voided = refund(sdk, held.id)
    assert (voided.status, voided.amount, voided.balance_transaction) == ("succeeded", 7000, None)
    charge = sdk.v1.charges.retrieve(held.id)
    assert (charge.captured, charge.refunded, charge.amount_refunded) == (False, True, 7000)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        sdk.v1.charges.capture(held.id, options={"idempotency_key": key()})
    assert raised.value.code == "charge_already_refunded"
    held_balance = payable(stack, shop)
    assert held_balance.credits_pending == held_balance.debits_pending == 7000
    assert held_balance.credits_posted == 0


def test_double_capture(sdk: stripe.StripeClient) -> None:
    held = authorize(sdk, 3000)
    sdk.v1.charges.capture(held.id, options={"idempotency_key": key()})
    with pytest.raises(stripe.InvalidRequestError) as raised:
        sdk.v1.charges.capture(held.id, options={"idempotency_key": key()})
    assert raised.value.code == "charge_already_captured"


def test_capture_replays_under_its_own_key(sdk: stripe.StripeClient, stack: Stack) -> None:
    held = authorize(sdk, 3000)
    capture_key = key()
    first = sdk.v1.charges.capture(
        held.id, params={"amount": 2500}, options={"idempotency_key": capture_key}
    )
    again = sdk.v1.charges.capture(
        held.id, params={"amount": 2500}, options={"idempotency_key": capture_key}
    )
    assert first.to_dict() == again.to_dict()
    assert len([j for j in journals_for(stack, held.id) if j["operation"] == "charge.capture"]) == 1


@pytest.mark.parametrize("amount", [3001, 0, -5])
def test_capture_amount_outside_the_authorization(sdk: stripe.StripeClient, amount: int) -> None:
    held = authorize(sdk, 3000)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        sdk.v1.charges.capture(
            held.id, params={"amount": amount}, options={"idempotency_key": key()}
        )
    assert raised.value.param == "amount"


def test_refund_of_a_declined_charge(sdk: stripe.StripeClient) -> None:
    with pytest.raises(stripe.CardError) as declined:
        sdk.v1.charges.create(
            params={"amount": 5000, "currency": "usd", "source": "tok_chargeDeclined"},
            options={"idempotency_key": key()},
        )
    with pytest.raises(stripe.InvalidRequestError) as raised:
        refund(sdk, str(declined.value.error.charge))
    assert raised.value.code == "charge_not_refundable"
    with pytest.raises(stripe.InvalidRequestError) as raised:
        sdk.v1.charges.capture(str(declined.value.error.charge), options={"idempotency_key": key()})
    assert raised.value.code == "charge_not_capturable"


def test_refunds_are_listed_and_retrieved(
    sdk: stripe.StripeClient, stack: Stack, shop: dict[str, Any]
) -> None:
    charge = sdk.v1.charges.create(
        params={"amount": 9000, "currency": "usd", "source": "tok_visa"},
        options={"idempotency_key": key()},
    )
    made = [refund(sdk, charge.id, 1000).id for _ in range(3)]
    assert sdk.v1.refunds.retrieve(made[0]).amount == 1000
    by_charge = sdk.v1.refunds.list(params={"charge": charge.id, "limit": 2})
    assert [r.id for r in by_charge.data] == made[::-1][:2] and by_charge.has_more
    nested = requests.get(
        f"{stack.url}/v1/charges/{charge.id}/refunds", timeout=30, auth=(shop["secret_key"], "")
    ).json()
    assert [r["id"] for r in nested["data"]] == made[::-1]
    assert nested["url"] == f"/v1/charges/{charge.id}/refunds"
    assert [r.id for r in sdk.v1.refunds.list().data] == made[::-1]
    kinds = [t.type for t in sdk.v1.balance_transactions.list().data]
    assert kinds == ["refund", "refund", "refund", "charge"]


def test_two_concurrent_captures_one_succeeds(
    sdk: stripe.StripeClient, stack: Stack, shop: dict[str, Any]
) -> None:
    held = authorize(sdk, 4000)

    def capture(amount: int) -> int:
        response = requests.post(
            f"{stack.url}/v1/charges/{held.id}/capture",
            timeout=30,
            data={"amount": amount},
            auth=(shop["secret_key"], ""),
            headers={"Idempotency-Key": key()},
        )
        return response.status_code

    with ThreadPoolExecutor(max_workers=2) as pool:
        statuses = sorted(pool.map(capture, [4000, 3500]))
    assert statuses[0] == 200 and statuses[1] in (400, 409), statuses
    captures = [j for j in journals_for(stack, held.id) if j["operation"] == "charge.capture"]
    assert len(captures) == 1


def test_concurrent_partial_refunds_never_exceed_the_capture(
    sdk: stripe.StripeClient, stack: Stack, shop: dict[str, Any]
) -> None:
    charge = sdk.v1.charges.create(
        params={"amount": 10000, "currency": "usd", "source": "tok_visa"},
        options={"idempotency_key": key()},
    )

    def refund_3000(_: int) -> requests.Response:
        return requests.post(
            f"{stack.url}/v1/refunds",
            timeout=30,
            data={"charge": charge.id, "amount": 3000},
            auth=(shop["secret_key"], ""),
            headers={"Idempotency-Key": key()},
        )

    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(refund_3000, range(6)))
    succeeded = [r for r in responses if r.status_code == 200]
    assert all(r.status_code in (200, 400, 409) for r in responses)
    assert 1 <= len(succeeded) <= 3
    after = sdk.v1.charges.retrieve(charge.id)
    assert after.amount_refunded == 3000 * len(succeeded) <= 10000
    refunded_in_ledger = sum(
        e["amount"]
        for j in journals_for(stack, charge.id)
        if j["operation"] == "refund"
        for e in j["entries"]
        if e["direction"] == "credit"
    )
    assert refunded_in_ledger == after.amount_refunded


@pytest.mark.parametrize("mode", ["timeout_after", "error_500"])
def test_refund_survives_a_processor_failure(
    sdk: stripe.StripeClient, stack: Stack, shop: dict[str, Any], mode: str
) -> None:
    charge = sdk.v1.charges.create(
        params={"amount": 6000, "currency": "usd", "source": "tok_visa"},
        options={"idempotency_key": key()},
    )
    once = stripe.StripeClient(
        shop["secret_key"], base_addresses={"api": stack.url}, max_network_retries=0
    )
    refund_key = key()
    stack.inject_processor_fault(mode)
    with pytest.raises(stripe.APIError):
        once.v1.refunds.create(
            params={"charge": charge.id, "amount": 2500}, options={"idempotency_key": refund_key}
        )
    assert sdk.v1.charges.retrieve(charge.id).amount_refunded == 0  # reserved, not yet refunded
    done = sdk.v1.refunds.create(
        params={"charge": charge.id, "amount": 2500}, options={"idempotency_key": refund_key}
    )
    assert done.status == "succeeded"
    assert sdk.v1.charges.retrieve(charge.id).amount_refunded == 2500
    refunds = [j for j in journals_for(stack, charge.id) if j["operation"] == "refund"]
    assert len(refunds) == 1
