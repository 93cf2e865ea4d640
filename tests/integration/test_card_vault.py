"""The card vault on its own origin, and everything Clearline does with the cards it holds:
tokenization with the publishable key (raw HTTP, as clearline.js sends it), PaymentMethods
and customers through the unmodified SDK, charges and PaymentIntents on stored cards, and
3-D Secure through the vault's challenge page."""

from __future__ import annotations

import html
import re
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
import stripe
from vault.rate_limits import WINDOW_SECONDS

from .conftest import Stack

pytestmark = pytest.mark.integration

VISA = "4242424242424242"
DECLINED = "4000000000000002"
INSUFFICIENT_FUNDS = "4000000000009995"
THREE_D_SECURE = "4000002500003155"
RETURN_URL = "https://shop.example/checkout/done"


def key() -> dict[str, str]:
    return {"idempotency_key": str(uuid.uuid4())}


class Shop:
    def __init__(self, stack: Stack, name: str = "Vault Shop") -> None:
        self.stack = stack
        self.merchant = stack.create_merchant(name)
        self.sdk = stripe.StripeClient(
            self.merchant["secret_key"], base_addresses={"api": stack.url}
        )

    @property
    def publishable_key(self) -> str:
        return str(self.merchant["publishable_key"])

    def tokenize(self, number: str = VISA, **card: str) -> requests.Response:
        """What the hosted card field posts: the card and the publishable key, no header."""
        form = {
            "key": self.publishable_key,
            "type": "card",
            "card[number]": number,
            "card[exp_month]": card.get("exp_month", "12"),
            "card[exp_year]": card.get("exp_year", "2031"),
            "card[cvc]": card.get("cvc", "123"),
            "billing_details[name]": "Jenny Rosen",
        }
        return requests.post(f"{self.stack.info.vault_url}/v1/payment_methods", data=form)

    def card(self, number: str = VISA) -> str:
        answer = self.tokenize(number)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["id"])

    def events(self, kind: str) -> list[Any]:
        return [e for e in self.sdk.v1.events.list(params={"limit": 100}).data if e.type == kind]


@pytest.fixture
def shop(stack: Stack) -> Shop:
    return Shop(stack)


def test_a_card_tokenized_in_the_vault_is_a_payment_method_clearline_describes(
    shop: Shop,
) -> None:
    answer = shop.tokenize()
    assert answer.status_code == 200, answer.text
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    made = answer.json()
    assert VISA not in answer.text
    method = shop.sdk.v1.payment_methods.retrieve(made["id"])
    assert (method.type, method.card.brand, method.card.last4) == ("card", "visa", "4242")
    assert (method.card.exp_month, method.card.exp_year) == (12, 2031)
    assert method.card.fingerprint == made["card"]["fingerprint"]
    assert method.billing_details.name == "Jenny Rosen"
    # The same number is the same fingerprint; another number is another.
    again = shop.sdk.v1.payment_methods.retrieve(shop.card(VISA))
    other = shop.sdk.v1.payment_methods.retrieve(shop.card("5555555555554444"))
    assert again.id != method.id and again.card.fingerprint == method.card.fingerprint
    assert (other.card.brand, other.card.fingerprint != method.card.fingerprint) == (
        "mastercard",
        True,
    )


@pytest.mark.parametrize(
    ("card", "code", "param"),
    [
        ({"number": "4242424242424241"}, "incorrect_number", "card[number]"),
        ({"number": "4242abcd"}, "invalid_number", "card[number]"),
        ({"exp_year": "2020"}, "invalid_expiry_year", "card[exp_year]"),
        ({"exp_month": "13"}, "invalid_expiry_month", "card[exp_month]"),
        ({"cvc": "12"}, "invalid_cvc", "card[cvc]"),
    ],
)
def test_a_bad_card_is_a_card_error_and_nothing_is_made(
    shop: Shop, card: dict[str, str], code: str, param: str
) -> None:
    answer = shop.tokenize(card.pop("number", VISA), **card)
    assert answer.status_code == 402, answer.text
    error = answer.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("card_error", code, param)
    assert shop.sdk.v1.payment_methods.list().data == []


def test_the_vault_takes_only_a_publishable_key(shop: Shop, stack: Stack) -> None:
    url = f"{stack.info.vault_url}/v1/payment_methods"
    card = {"type": "card", "card[number]": VISA, "card[exp_month]": "1", "card[exp_year]": "2031"}
    secret = requests.post(url, data={**card, "key": shop.merchant["secret_key"]})
    assert secret.status_code == 401 and "publishable" in secret.json()["error"]["message"]
    unknown = requests.post(url, data={**card, "key": "pk_test_nobodyhasthiskeyatall"})
    assert unknown.status_code == 401
    missing = requests.post(url, data=card)
    assert missing.status_code == 401


def test_the_vaults_internal_routes_refuse_an_unsigned_caller(shop: Shop, stack: Stack) -> None:
    pm = shop.card()
    url = f"{stack.info.vault_url}/internal/payment_methods/{pm}"
    answer = requests.get(url, params={"merchant": shop.merchant["id"]})
    assert answer.status_code == 403
    assert VISA not in answer.text


def test_the_clearline_api_never_takes_a_card_number(shop: Shop) -> None:
    with pytest.raises(stripe.InvalidRequestError) as refused:
        shop.sdk.v1.charges.create(
            params={"amount": 500, "currency": "usd", "source": VISA}, options=key()
        )
    assert refused.value.code == "card_number_in_request"


def test_a_payment_method_is_attached_listed_and_detached(shop: Shop) -> None:
    customer = shop.sdk.v1.customers.create(params={"email": "jenny@example.com"}, options=key())
    pm = shop.card()
    attached = shop.sdk.v1.payment_methods.attach(pm, params={"customer": customer.id})
    assert attached.customer == customer.id
    listed = shop.sdk.v1.customers.payment_methods.list(customer.id, params={"type": "card"})
    assert [m.id for m in listed.data] == [pm]
    assert [m.id for m in shop.sdk.v1.payment_methods.list(params={"customer": customer.id})] == [
        pm
    ]
    # Attached to a customer, the card is charged for that customer only.
    with pytest.raises(stripe.InvalidRequestError) as refused:
        shop.sdk.v1.charges.create(
            params={"amount": 700, "currency": "usd", "payment_method": pm}, options=key()
        )
    assert refused.value.code == "payment_method_unexpected_state"
    charge = shop.sdk.v1.charges.create(
        params={"amount": 700, "currency": "usd", "payment_method": pm, "customer": customer.id},
        options=key(),
    )
    assert (charge.status, charge.payment_method, charge.customer) == ("succeeded", pm, customer.id)
    detached = shop.sdk.v1.payment_methods.detach(pm)
    assert detached.customer is None
    assert shop.sdk.v1.customers.payment_methods.list(customer.id).data == []
    with pytest.raises(stripe.InvalidRequestError) as twice:
        shop.sdk.v1.payment_methods.detach(pm)
    assert twice.value.code == "payment_method_unexpected_state"
    kinds = {e.type for e in shop.sdk.v1.events.list(params={"limit": 100}).data}
    assert {"payment_method.attached", "payment_method.detached"} <= kinds


def test_another_merchants_card_does_not_exist_for_this_one(shop: Shop, stack: Stack) -> None:
    theirs = Shop(stack, "Someone Else").card()
    with pytest.raises(stripe.InvalidRequestError) as missing:
        shop.sdk.v1.payment_methods.retrieve(theirs)
    assert (missing.value.http_status, missing.value.code) == (404, "resource_missing")
    customer = shop.sdk.v1.customers.create(options=key())
    with pytest.raises(stripe.InvalidRequestError) as attach:
        shop.sdk.v1.payment_methods.attach(theirs, params={"customer": customer.id})
    assert attach.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError) as charge:
        shop.sdk.v1.payment_intents.create(
            params={"amount": 900, "currency": "usd", "payment_method": theirs, "confirm": True},
            options=key(),
        )
    assert charge.value.http_status == 404


def test_a_token_becomes_a_customers_default_card_once(shop: Shop, stack: Stack) -> None:
    form = {
        "key": shop.publishable_key,
        "card[number]": VISA,
        "card[exp_month]": "8",
        "card[exp_year]": "2032",
        "card[cvc]": "314",
    }
    token = requests.post(f"{stack.info.vault_url}/v1/tokens", data=form).json()
    assert token["id"].startswith("tok_") and token["card"]["last4"] == "4242"
    customer = shop.sdk.v1.customers.create(
        params={"source": token["id"], "email": "pat@example.com"}, options=key()
    )
    assert customer.default_source and customer.default_source.startswith("pm_")
    cards = shop.sdk.v1.customers.payment_methods.list(customer.id).data
    assert [c.id for c in cards] == [customer.default_source]
    # A charge naming only the customer uses its default card.
    charge = shop.sdk.v1.charges.create(
        params={"amount": 1200, "currency": "usd", "customer": customer.id}, options=key()
    )
    assert (charge.status, charge.payment_method) == ("succeeded", customer.default_source)
    with pytest.raises(stripe.InvalidRequestError) as reused:
        shop.sdk.v1.customers.create(params={"source": token["id"]}, options=key())
    assert reused.value.code == "token_already_used"


def test_a_test_token_as_a_customers_source_becomes_a_stored_card(shop: Shop) -> None:
    customer = shop.sdk.v1.customers.create(params={"source": "tok_mastercard"}, options=key())
    card = shop.sdk.v1.payment_methods.retrieve(customer.default_source)
    assert (card.card.brand, card.card.last4, card.customer) == ("mastercard", "4444", customer.id)


def test_payment_intents_on_stored_cards_succeed_and_decline_as_the_card_says(
    shop: Shop,
) -> None:
    paid = shop.sdk.v1.payment_intents.create(
        params={"amount": 2000, "currency": "usd", "payment_method": shop.card(), "confirm": True},
        options=key(),
    )
    assert (paid.status, paid.amount_received) == ("succeeded", 2000)
    charge = shop.sdk.v1.charges.retrieve(paid.latest_charge)
    card = shop.sdk.v1.payment_methods.retrieve(paid.payment_method).card
    assert charge.payment_method_details.card.last4 == "4242"
    assert charge.payment_method_details.card.fingerprint == card.fingerprint
    for number, decline_code in (
        (DECLINED, "generic_decline"),
        (INSUFFICIENT_FUNDS, "insufficient_funds"),
    ):
        with pytest.raises(stripe.CardError) as declined:
            shop.sdk.v1.payment_intents.create(
                params={
                    "amount": 2000,
                    "currency": "usd",
                    "payment_method": shop.card(number),
                    "confirm": True,
                },
                options=key(),
            )
        assert declined.value.code == "card_declined"
        intent = declined.value.error.payment_intent
        assert intent.status == "requires_payment_method"
        assert intent.last_payment_error.decline_code == decline_code


def test_pm_card_aliases_become_cards_of_their_own(shop: Shop) -> None:
    intent = shop.sdk.v1.payment_intents.create(
        params={"amount": 800, "currency": "usd", "payment_method": "pm_card_visa"}, options=key()
    )
    assert intent.payment_method.startswith("pm_") and intent.payment_method != "pm_card_visa"
    card = shop.sdk.v1.payment_methods.retrieve(intent.payment_method)
    assert (card.card.brand, card.card.last4) == ("visa", "4242")
    confirmed = shop.sdk.v1.payment_intents.confirm(intent.id, options=key())
    assert confirmed.status == "succeeded"


def _challenge(intent: Any) -> str:
    assert intent.status == "requires_action"
    action = intent.next_action
    assert action.type == "redirect_to_url"
    return str(action.redirect_to_url.url)


def _answer_challenge(url: str, outcome: str) -> dict[str, list[str]]:
    """The customer answers the vault's challenge page; their browser is sent back through
    Clearline to the merchant's return_url, whose query is returned."""
    page = requests.get(url)
    assert page.status_code == 200 and 'id="complete-authentication"' in page.text
    answer = requests.post(url, data={"outcome": outcome}, allow_redirects=False)
    assert answer.status_code == 303
    leaving = requests.get(urljoin(url, answer.headers["Location"]))
    assert leaving.status_code == 200
    refresh = re.search(r'http-equiv="refresh" content="0;url=([^"]+)"', leaving.text)
    assert refresh is not None, leaving.text
    back = requests.get(html.unescape(refresh.group(1)), allow_redirects=False)
    assert back.status_code == 303, back.text
    location = back.headers["Location"]
    assert location.startswith(RETURN_URL)
    return parse_qs(urlsplit(location).query)


def test_three_d_secure_passes_through_the_challenge_and_the_payment_succeeds(
    shop: Shop, stack: Stack
) -> None:
    intent = shop.sdk.v1.payment_intents.create(
        params={
            "amount": 4200,
            "currency": "usd",
            "payment_method": shop.card(THREE_D_SECURE),
            "confirm": True,
            "return_url": RETURN_URL,
        },
        options=key(),
    )
    url = _challenge(intent)
    assert url.startswith(stack.info.vault_url)
    assert intent.next_action.redirect_to_url.return_url == RETURN_URL
    assert intent.latest_charge is None  # nothing is charged before the customer answers
    query = _answer_challenge(url, "succeeded")
    assert query["payment_intent"] == [intent.id]
    assert query["redirect_status"] == ["succeeded"]
    assert query["payment_intent_client_secret"] == [intent.client_secret]
    done = shop.sdk.v1.payment_intents.retrieve(intent.id)
    assert (done.status, done.amount_received, done.next_action) == ("succeeded", 4200, None)
    assert [e.data.object.id for e in shop.events("payment_intent.requires_action")] == [intent.id]
    # The customer's browser coming back again changes nothing.
    again = requests.post(url, data={"outcome": "failed"}, allow_redirects=False)
    assert again.status_code == 303
    assert "already been answered (succeeded)" in requests.get(url).text
    assert shop.sdk.v1.payment_intents.retrieve(intent.id).status == "succeeded"


def test_a_failed_challenge_leaves_the_intent_for_another_card(shop: Shop) -> None:
    intent = shop.sdk.v1.payment_intents.create(
        params={
            "amount": 4300,
            "currency": "usd",
            "payment_method": "pm_card_threeDSecure2Required",
            "confirm": True,
            "return_url": RETURN_URL,
        },
        options=key(),
    )
    query = _answer_challenge(_challenge(intent), "failed")
    assert query["redirect_status"] == ["failed"]
    failed = shop.sdk.v1.payment_intents.retrieve(intent.id)
    assert failed.status == "requires_payment_method"
    assert failed.last_payment_error.code == "payment_intent_authentication_failure"
    assert failed.latest_charge is None
    retried = shop.sdk.v1.payment_intents.confirm(
        intent.id, params={"payment_method": shop.card()}, options=key()
    )
    assert retried.status == "succeeded"


def test_a_card_that_asks_for_authentication_declines_off_session_and_on_charges(
    shop: Shop,
) -> None:
    customer = shop.sdk.v1.customers.create(options=key())
    pm = shop.card(THREE_D_SECURE)
    shop.sdk.v1.payment_methods.attach(pm, params={"customer": customer.id})
    with pytest.raises(stripe.CardError) as off_session:
        shop.sdk.v1.payment_intents.create(
            params={
                "amount": 1500,
                "currency": "usd",
                "customer": customer.id,
                "payment_method": pm,
                "confirm": True,
                "off_session": True,
            },
            options=key(),
        )
    assert off_session.value.error.decline_code == "authentication_required"
    with pytest.raises(stripe.CardError) as charge:
        shop.sdk.v1.charges.create(
            params={"amount": 1500, "currency": "usd", "customer": customer.id, "source": pm},
            options=key(),
        )
    assert charge.value.error.decline_code == "authentication_required"


def test_a_browser_confirms_with_the_publishable_key_and_client_secret(
    shop: Shop, stack: Stack
) -> None:
    intent = shop.sdk.v1.payment_intents.create(
        params={"amount": 3100, "currency": "usd"}, options=key()
    )
    url = f"{stack.url}/v1/payment_intents/{intent.id}/confirm"
    form = {
        "key": shop.publishable_key,
        "client_secret": intent.client_secret,
        "payment_method": shop.card(),
    }
    confirmed = requests.post(url, data=form)  # no Authorization, no Idempotency-Key
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.headers["Access-Control-Allow-Origin"] == "*"
    body = confirmed.json()
    assert body["status"] == "succeeded" and "metadata" not in body
    wrong = requests.post(url, data={**form, "client_secret": f"{intent.id}_secret_nope"})
    assert wrong.status_code == 400
    assert wrong.json()["error"]["param"] == "client_secret"
    read = requests.get(
        f"{stack.url}/v1/payment_intents/{intent.id}",
        params={"key": shop.publishable_key, "client_secret": intent.client_secret},
    )
    assert read.status_code == 200 and read.json()["status"] == "succeeded"
    secret_only = requests.get(f"{stack.url}/v1/customers", params={"key": shop.publishable_key})
    assert secret_only.status_code == 401


def test_publishable_key_traffic_is_rate_limited_per_key(shop: Shop) -> None:
    # The vault counts in fixed one-minute windows of the clock: start in a fresh one, so
    # that the 101 requests are counted in the same window, as an abuser's burst would be.
    left = WINDOW_SECONDS - time.time() % WINDOW_SECONDS
    if left < WINDOW_SECONDS / 2:
        time.sleep(left + 0.5)
    statuses = [shop.tokenize(DECLINED[:-1] + "1").status_code for _ in range(101)]
    assert statuses[:100] == [402] * 100  # refused cards count too: card testing is the abuse
    assert statuses[100] == 429
    limited = shop.tokenize()
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limit"
    assert int(limited.headers["Retry-After"]) > 0


def test_setup_future_usage_saves_the_card_that_paid_for_its_customer(shop: Shop) -> None:
    customer = shop.sdk.v1.customers.create(params={"email": "sam@example.com"}, options=key())
    pm = shop.card()
    first = shop.sdk.v1.payment_intents.create(
        params={
            "amount": 1800,
            "currency": "usd",
            "customer": customer.id,
            "payment_method": pm,
            "setup_future_usage": "off_session",
            "confirm": True,
        },
        options=key(),
    )
    assert first.status == "succeeded"
    saved = shop.sdk.v1.customers.payment_methods.list(customer.id).data
    assert [m.id for m in saved] == [pm]
    # Later, without the customer present, the saved card pays again.
    later = shop.sdk.v1.payment_intents.create(
        params={
            "amount": 900,
            "currency": "usd",
            "customer": customer.id,
            "payment_method": pm,
            "off_session": True,
            "confirm": True,
        },
        options=key(),
    )
    assert later.status == "succeeded"
    # A card that declined is not saved.
    declined_card = shop.card(DECLINED)
    with pytest.raises(stripe.CardError):
        shop.sdk.v1.payment_intents.create(
            params={
                "amount": 900,
                "currency": "usd",
                "customer": customer.id,
                "payment_method": declined_card,
                "setup_future_usage": "off_session",
                "confirm": True,
            },
            options=key(),
        )
    assert shop.sdk.v1.payment_methods.retrieve(declined_card).customer is None
