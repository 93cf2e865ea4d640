"""PaymentIntents through the unmodified SDK: Stripe's state machine, with the money moving
through each intent's charges."""

from __future__ import annotations

import uuid

import pytest
import requests
import stripe

from .conftest import Stack

pytestmark = pytest.mark.integration


def key() -> dict[str, str]:
    return {"idempotency_key": str(uuid.uuid4())}


@pytest.fixture
def sdk(stack: Stack) -> stripe.StripeClient:
    merchant = stack.create_merchant("Intent Shop")
    # Retrying a 503 marked Stripe-Should-Retry, as the shared client and merchants' do: a
    # vault still busy with the suite before it must not fail the first confirmation.
    return stripe.StripeClient(
        merchant["secret_key"], base_addresses={"api": stack.url}, max_network_retries=2
    )


def intent_events(sdk: stripe.StripeClient, intent_id: str) -> list[str]:
    events = sdk.v1.events.list(params={"limit": 100}).data
    return [e.type for e in reversed(events) if e.data.object.id == intent_id]


def test_an_intent_confirmed_at_creation_succeeds_through_its_charge(
    sdk: stripe.StripeClient,
) -> None:
    intent = sdk.v1.payment_intents.create(
        params={
            "amount": 2500,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
            "metadata": {"order": "6737"},
            "setup_future_usage": "off_session",
        },
        options=key(),
    )
    assert (intent.status, intent.amount_received) == ("succeeded", 2500)
    assert intent.client_secret.startswith(f"{intent.id}_secret_")
    assert intent.setup_future_usage == "off_session"
    charge = sdk.v1.charges.retrieve(intent.latest_charge)
    assert (charge.payment_intent, charge.amount_captured) == (intent.id, 2500)
    assert [c.id for c in sdk.v1.charges.list(params={"payment_intent": intent.id}).data] == [
        charge.id
    ]
    assert intent_events(sdk, intent.id) == ["payment_intent.created", "payment_intent.succeeded"]


def test_a_manual_capture_holds_then_captures_part(sdk: stripe.StripeClient) -> None:
    intent = sdk.v1.payment_intents.create(
        params={"amount": 5000, "currency": "usd", "capture_method": "manual"}, options=key()
    )
    assert intent.status == "requires_payment_method"
    ready = sdk.v1.payment_intents.update(
        intent.id, params={"payment_method": "pm_card_mastercard"}, options=key()
    )
    assert ready.status == "requires_confirmation"
    held = sdk.v1.payment_intents.confirm(intent.id, options=key())
    assert (held.status, held.amount_capturable) == ("requires_capture", 5000)
    paid = sdk.v1.payment_intents.capture(
        intent.id, params={"amount_to_capture": 4000}, options=key()
    )
    assert (paid.status, paid.amount_received, paid.amount_capturable) == ("succeeded", 4000, 0)
    charge = sdk.v1.charges.retrieve(paid.latest_charge)
    assert (charge.amount_captured, charge.amount_refunded) == (4000, 1000)  # the rest released
    assert intent_events(sdk, intent.id) == [
        "payment_intent.created",
        "payment_intent.amount_capturable_updated",
        "payment_intent.succeeded",
    ]
    with pytest.raises(stripe.InvalidRequestError) as refused:
        sdk.v1.payment_intents.cancel(intent.id, options=key())
    assert refused.value.code == "payment_intent_unexpected_state"


def test_a_decline_asks_for_another_payment_method_and_the_next_one_pays(
    sdk: stripe.StripeClient,
) -> None:
    intent = sdk.v1.payment_intents.create(
        params={"amount": 1800, "currency": "usd", "payment_method": "tok_chargeDeclined"},
        options=key(),
    )
    with pytest.raises(stripe.CardError) as declined_error:
        sdk.v1.payment_intents.confirm(intent.id, options=key())
    error = declined_error.value.error
    assert (error.code, error.decline_code) == ("card_declined", "generic_decline")
    assert error.payment_intent is not None and error.payment_intent.id == intent.id
    assert error.payment_intent.status == "requires_payment_method"
    declined = sdk.v1.payment_intents.retrieve(intent.id)
    assert declined.status == "requires_payment_method"
    assert declined.last_payment_error.decline_code == "generic_decline"
    failed_charge = sdk.v1.charges.retrieve(declined.latest_charge)
    assert failed_charge.status == "failed" and error.charge == failed_charge.id

    paid = sdk.v1.payment_intents.confirm(
        intent.id, params={"payment_method": "pm_card_visa"}, options=key()
    )
    assert paid.status == "succeeded" and paid.last_payment_error is None
    assert paid.latest_charge != failed_charge.id
    assert "payment_intent.payment_failed" in intent_events(sdk, intent.id)


def test_canceling_a_held_intent_voids_its_authorization(sdk: stripe.StripeClient) -> None:
    held = sdk.v1.payment_intents.create(
        params={
            "amount": 3000,
            "currency": "eur",
            "capture_method": "manual",
            "payment_method": "pm_card_visa",
            "confirm": True,
        },
        options=key(),
    )
    assert held.status == "requires_capture"
    canceled = sdk.v1.payment_intents.cancel(
        held.id, params={"cancellation_reason": "abandoned"}, options=key()
    )
    assert (canceled.status, canceled.cancellation_reason) == ("canceled", "abandoned")
    charge = sdk.v1.charges.retrieve(held.latest_charge)
    assert (charge.captured, charge.refunded) == (False, True)
    assert intent_events(sdk, held.id)[-1] == "payment_intent.canceled"


def test_bad_intent_requests_are_refused_and_change_nothing(
    stack: Stack, sdk: stripe.StripeClient
) -> None:
    for params, param in [
        ({"amount": 10, "currency": "usd"}, "amount"),
        ({"amount": 1000, "currency": "usd", "capture_method": "later"}, "capture_method"),
        ({"amount": 1000, "currency": "usd", "customer": "cus_nobody"}, "customer"),
        ({"amount": 1000, "currency": "usd", "off_session": True}, "off_session"),
    ]:
        with pytest.raises(stripe.InvalidRequestError) as refused:
            sdk.v1.payment_intents.create(params=params, options=key())  # type: ignore[arg-type]
        assert refused.value.param == param
    assert sdk.v1.payment_intents.list().data == []

    intent = sdk.v1.payment_intents.create(
        params={"amount": 1000, "currency": "usd"}, options=key()
    )
    with pytest.raises(stripe.InvalidRequestError) as no_method:
        sdk.v1.payment_intents.confirm(intent.id, options=key())
    assert no_method.value.param == "payment_method"
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        sdk.v1.payment_intents.confirm(
            intent.id, params={"payment_method": "pm_nonexistent"}, options=key()
        )
    assert unknown.value.code == "resource_missing"
    again = sdk.v1.payment_intents.retrieve(intent.id)
    assert (again.status, again.latest_charge) == ("requires_payment_method", None)
    with pytest.raises(stripe.InvalidRequestError) as not_capturable:
        sdk.v1.payment_intents.capture(intent.id, options=key())
    assert not_capturable.value.code == "payment_intent_unexpected_state"

    elsewhere = stripe.StripeClient(
        stack.create_merchant("Other Intent Shop")["secret_key"],
        base_addresses={"api": stack.url},
    )
    with pytest.raises(stripe.InvalidRequestError) as missing:
        elsewhere.v1.payment_intents.retrieve(intent.id)
    assert missing.value.http_status == 404


def test_an_intent_is_refunded_through_its_successful_charge(sdk: stripe.StripeClient) -> None:
    intent = sdk.v1.payment_intents.create(
        params={
            "amount": 4000,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
        },
        options=key(),
    )
    refund = sdk.v1.refunds.create(
        params={"payment_intent": intent.id, "amount": 1500}, options=key()
    )
    assert (refund.charge, refund.payment_intent, refund.amount) == (
        intent.latest_charge,
        intent.id,
        1500,
    )
    listed = sdk.v1.refunds.list(params={"payment_intent": intent.id})
    assert [r.id for r in listed.data] == [refund.id]
    unpaid = sdk.v1.payment_intents.create(
        params={"amount": 4000, "currency": "usd"}, options=key()
    )
    for params, param in [
        ({"payment_intent": unpaid.id}, "payment_intent"),
        ({"payment_intent": intent.id, "charge": intent.latest_charge}, "charge"),
        ({}, "charge"),
    ]:
        with pytest.raises(stripe.InvalidRequestError) as refused:
            sdk.v1.refunds.create(params=params, options=key())  # type: ignore[arg-type]
        assert refused.value.param == param


def test_a_browser_with_the_publishable_key_reads_and_confirms_only_with_the_client_secret(
    stack: Stack,
) -> None:
    merchant = stack.create_merchant("Checkout Shop")
    server = stripe.StripeClient(merchant["secret_key"], base_addresses={"api": stack.url})
    intent = server.v1.payment_intents.create(
        params={"amount": 1999, "currency": "usd"}, options=key()
    )
    other = server.v1.payment_intents.create(
        params={"amount": 500, "currency": "usd"}, options=key()
    )
    browser = requests.Session()
    browser.auth = (merchant["publishable_key"], "")
    url = f"{stack.url}/v1/payment_intents/{intent.id}"

    def confirm(secret: str | None, **extra: str) -> requests.Response:
        body = {"payment_method": "pm_card_visa", **extra}
        if secret is not None:
            body["client_secret"] = secret
        return browser.post(
            f"{url}/confirm", data=body, headers={"Idempotency-Key": str(uuid.uuid4())}
        )

    shown = browser.get(url, params={"client_secret": intent.client_secret})
    assert shown.status_code == 200 and shown.json()["status"] == "requires_payment_method"
    for secret, status, code in [
        (None, 401, "secret_key_required"),
        (other.client_secret, 400, "payment_intent_invalid_parameter"),
        (intent.client_secret + "x", 400, "payment_intent_invalid_parameter"),
    ]:
        refused = confirm(secret)
        assert (refused.status_code, refused.json()["error"]["code"]) == (status, code)
    expanding = confirm(intent.client_secret, **{"expand[0]": "latest_charge"})
    assert expanding.json()["error"]["param"] == "expand"
    assert server.v1.payment_intents.retrieve(intent.id).status == "requires_payment_method"

    paid = confirm(intent.client_secret)
    assert paid.status_code == 200 and paid.json()["status"] == "succeeded"
    # Nothing else answers to the publishable key.
    assert browser.get(f"{stack.url}/v1/charges").status_code == 401
    assert browser.get(f"{stack.url}/v1/payment_intents").status_code == 401


def test_a_browser_sees_the_payment_not_the_merchants_notes_and_odd_secrets_are_refused(
    stack: Stack,
) -> None:
    merchant = stack.create_merchant("Private Shop")
    server = stripe.StripeClient(merchant["secret_key"], base_addresses={"api": stack.url})
    customer = server.v1.customers.create(params={"email": "c@example.com"}, options=key())
    intent = server.v1.payment_intents.create(
        params={
            "amount": 1200,
            "currency": "usd",
            "customer": customer.id,
            "metadata": {"margin": "42%"},
        },
        options=key(),
    )
    browser = requests.Session()
    browser.auth = (merchant["publishable_key"], "")
    url = f"{stack.url}/v1/payment_intents/{intent.id}"
    shown = browser.get(url, params={"client_secret": intent.client_secret}).json()
    assert shown["status"] == "requires_payment_method"
    assert "metadata" not in shown and "customer" not in shown and "latest_charge" not in shown
    odd = browser.post(
        f"{url}/confirm",
        json={"client_secret": "\ud800", "payment_method": "pm_card_visa"},
        headers={"Idempotency-Key": str(uuid.uuid4())},
    )
    assert odd.status_code == 400
    receipt = requests.get(f"{stack.url}/receipts/{intent.id.replace('pi_', 'ch_')}/é")
    assert receipt.status_code == 404
