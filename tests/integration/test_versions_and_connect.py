"""What a merchant's Stripe code sends that Clearline must answer plainly: API versions,
Connect's header and parameters, and amounts a three-decimal currency cannot carry."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import requests
import stripe

from clearline.versions import CURRENT_VERSION

from .conftest import Stack

pytestmark = pytest.mark.integration


def post_charge(stack: Stack, merchant: dict[str, Any], body: str, **headers: str) -> Any:
    return requests.post(
        f"{stack.url}/v1/charges",
        data=body,
        auth=(merchant["secret_key"], ""),
        headers={"Idempotency-Key": str(uuid.uuid4()), **headers},
        timeout=30,
    )


def test_the_sdk_sends_its_version_and_gets_it_back(stack: Stack, merchant: dict[str, Any]) -> None:
    sdk = stripe.StripeClient(merchant["secret_key"], base_addresses={"api": stack.url})
    charge = sdk.v1.charges.create(
        params={"amount": 2000, "currency": "usd", "source": "tok_visa"},
        options={"idempotency_key": str(uuid.uuid4())},
    )
    raw = charge.last_response
    assert raw is not None
    assert raw.headers["Stripe-Version"] == stripe.api_version


def test_without_a_version_the_merchants_pinned_one_answers(
    stack: Stack, merchant: dict[str, Any]
) -> None:
    response = requests.get(
        f"{stack.url}/v1/balance", auth=(merchant["secret_key"], ""), timeout=30
    )
    assert response.status_code == 200
    assert response.headers["Stripe-Version"] == CURRENT_VERSION
    # Indented as Stripe's responses are.
    assert response.text.startswith('{\n  "object": "balance"'), response.text[:40]
    older = requests.get(
        f"{stack.url}/v1/balance",
        auth=(merchant["secret_key"], ""),
        headers={"Stripe-Version": "2024-06-20"},
        timeout=30,
    )
    assert older.headers["Stripe-Version"] == "2024-06-20"


@pytest.mark.parametrize("version", ["latest", "2024-13-01", "2024-06-20.Basil", "1999-01-01"])
def test_a_malformed_version_is_refused(
    stack: Stack, merchant: dict[str, Any], version: str
) -> None:
    before = stack.item_counts()
    response = post_charge(
        stack, merchant, "amount=2000&currency=usd&source=tok_visa", **{"Stripe-Version": version}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("api_version_invalid", "Stripe-Version")
    assert stack.item_counts() == before
    # A method the URL does not answer is a 405 first, whatever the version says.
    wrong_method = requests.put(
        f"{stack.url}/v1/balance",
        auth=(merchant["secret_key"], ""),
        headers={"Stripe-Version": version},
        timeout=30,
    )
    assert wrong_method.status_code == 405, wrong_method.text


def test_connect_is_refused_never_ignored(stack: Stack, merchant: dict[str, Any]) -> None:
    before = stack.item_counts()
    sdk = stripe.StripeClient(merchant["secret_key"], base_addresses={"api": stack.url})
    with pytest.raises(stripe.InvalidRequestError) as raised:
        sdk.v1.charges.create(
            params={"amount": 2000, "currency": "usd", "source": "tok_visa"},
            options={"idempotency_key": str(uuid.uuid4()), "stripe_account": "acct_other"},
        )
    assert raised.value.code == "connect_not_supported"
    assert raised.value.param == "Stripe-Account"
    for body, param in [
        ("&application_fee_amount=100", "application_fee_amount"),
        ("&transfer_data[destination]=acct_x", "transfer_data"),
        ("&on_behalf_of=acct_x", "on_behalf_of"),
    ]:
        response = post_charge(stack, merchant, "amount=2000&currency=usd&source=tok_visa" + body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("connect_not_supported", param)
        assert "Connect is not supported" in error["message"]
    assert stack.item_counts() == before


def test_three_decimal_currencies_move_in_tens(stack: Stack, merchant: dict[str, Any]) -> None:
    refused = post_charge(stack, merchant, "amount=1005&currency=kwd&source=tok_visa")
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == "amount"
    charge = post_charge(
        stack, merchant, "amount=1010&currency=kwd&source=tok_visa&capture=false"
    ).json()
    assert charge["status"] == "succeeded", json.dumps(charge)
    auth = (merchant["secret_key"], "")
    capture = requests.post(
        f"{stack.url}/v1/charges/{charge['id']}/capture",
        data="amount=1005",
        auth=auth,
        headers={"Idempotency-Key": str(uuid.uuid4())},
        timeout=30,
    )
    assert capture.status_code == 400, capture.text
    assert "divisible by 10" in capture.json()["error"]["message"]
    captured = requests.post(
        f"{stack.url}/v1/charges/{charge['id']}/capture",
        data="amount=1000",
        auth=auth,
        headers={"Idempotency-Key": str(uuid.uuid4())},
        timeout=30,
    )
    assert captured.status_code == 200, captured.text
    refund = requests.post(
        f"{stack.url}/v1/refunds",
        data=f"charge={charge['id']}&amount=505",
        auth=auth,
        headers={"Idempotency-Key": str(uuid.uuid4())},
        timeout=30,
    )
    assert refund.status_code == 400, refund.text
    assert refund.json()["error"]["param"] == "amount"
