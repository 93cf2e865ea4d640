"""3-D Secure survives what a customer's browser and a crash can do between its steps: the
challenge answered but the browser never back, the attempt after it written ahead and then
cut short, a challenge nobody answers. The vault is its real handler behind a front door in
this test's moto account; the processor is the sandbox."""

from __future__ import annotations

import html
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from clearline.audit import Caller
from clearline.charges import ChargeService
from clearline.errors import ResourceMissingError
from clearline.ledger import verify
from clearline.merchants import NewMerchant, create_merchant
from clearline.params import (
    PaymentIntentCancelParams,
    PaymentIntentConfirmParams,
    PaymentIntentCreateParams,
)
from clearline.payment_intents import (
    AUTHENTICATION_WINDOW_SECONDS,
    REQUIRES_ACTION,
    PaymentIntentService,
)
from clearline.processor import ProcessorClient
from clearline.refunds import RefundService
from clearline.resolver import PENDING_GRACE_SECONDS, Resolver
from clearline.store import Store
from clearline.vault_client import VaultClient
from clearline_local.sandbox_processor import SandboxProcessor
from tests.unit.in_process_vault import in_process_vault

THREE_D_SECURE = "4000002500003155"
PUBLIC_URL = "https://api.example.test"


@pytest.fixture
def shop(
    store: Store, processor: SandboxProcessor
) -> Iterator[tuple[NewMerchant, PaymentIntentService, str]]:
    with in_process_vault(processor.url) as vault_url:
        merchant = create_merchant(store, "Challenge Shop")
        yield merchant, services(store, processor, vault_url), vault_url
    processor.clear_faults()


def services(store: Store, processor: SandboxProcessor, vault_url: str) -> PaymentIntentService:
    client = ProcessorClient(processor.url, timeout_seconds=0.3, vault=VaultClient(vault_url))
    charges, refunds = ChargeService(store, client), RefundService(store, client)
    return PaymentIntentService(store, charges, refunds, public_url=PUBLIC_URL)


def resolve(intents: PaymentIntentService, now: float) -> dict[str, int]:
    return Resolver(intents.charges, intents.refunds).run(int(now))


def card(vault_url: str, merchant: NewMerchant, number: str = THREE_D_SECURE) -> str:
    form = {
        "key": merchant.publishable_key,
        "type": "card",
        "card[number]": number,
        "card[exp_month]": "12",
        "card[exp_year]": "2031",
        "card[cvc]": "123",
    }
    answer = requests.post(f"{vault_url}/v1/payment_methods", data=form, timeout=10)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def challenged(merchant: NewMerchant, intents: PaymentIntentService, vault_url: str) -> Any:
    caller = Caller(merchant.merchant, "req_test")
    intent = intents.create(
        caller,
        PaymentIntentCreateParams(
            amount=3300,
            currency="usd",
            payment_method=card(vault_url, merchant),
            confirm=True,
            return_url="https://shop.example/done",
        ),
        idempotency_key=str(uuid.uuid4()),
    )
    assert intent.state == REQUIRES_ACTION and intent.next_action_url
    return intent


def answer(challenge_url: str, outcome: str) -> str:
    """The customer's answer at the vault; returns where their browser is sent next."""
    sent = requests.post(challenge_url, data={"outcome": outcome}, allow_redirects=False)
    assert sent.status_code == 303
    leaving = requests.get(urljoin(challenge_url, sent.headers["Location"]), timeout=10)
    found = re.search(r'content="0;url=([^"]+)"', leaving.text)
    assert found is not None, leaving.text
    return html.unescape(found.group(1))


def charges_of(store: Store, intent_id: str) -> list[dict[str, Any]]:
    items = store.client.scan(TableName=store.table_name)["Items"]
    return [
        i
        for i in items
        if i["sk"]["S"] == "CHARGE" and i.get("payment_intent", {}).get("S") == intent_id
    ]


def test_a_browser_that_never_comes_back_is_finished_by_the_resolver(
    store: Store, shop: tuple[NewMerchant, PaymentIntentService, str]
) -> None:
    merchant, intents, vault_url = shop
    intent = challenged(merchant, intents, vault_url)
    back_to = answer(intent.next_action_url, "succeeded")
    assert back_to.startswith(f"{PUBLIC_URL}/v1/payment_intents/{intent.id}/")
    # Nothing comes back; within the grace period the resolver leaves it alone.
    assert intents.retrieve(merchant.merchant, intent.id).state == REQUIRES_ACTION
    resolve(intents, time.time() + PENDING_GRACE_SECONDS + 1)
    done = intents.retrieve(merchant.merchant, intent.id)
    assert (done.state, done.amount_received) == ("succeeded", 3300)
    # The browser that turns up later finds it done, and nothing is charged again.
    token = urlsplit(back_to).path.rsplit("/", 1)[-1]
    assert intents.complete_authentication(intent.id, token).state == "succeeded"
    resolve(intents, time.time() + PENDING_GRACE_SECONDS + 1)
    assert len(charges_of(store, intent.id)) == 1
    assert verify(store).ok


def test_an_attempt_cut_short_after_the_challenge_is_finished_once(
    store: Store,
    processor: SandboxProcessor,
    shop: tuple[NewMerchant, PaymentIntentService, str],
) -> None:
    merchant, intents, vault_url = shop
    intent = challenged(merchant, intents, vault_url)
    token = urlsplit(answer(intent.next_action_url, "succeeded")).path.rsplit("/", 1)[-1]
    # The processor takes the authorization, then the answer is lost.
    processor.inject_fault("timeout_after")
    processing = intents.complete_authentication(intent.id, token)
    assert processing.state == "processing"
    resolve(intents, time.time() + PENDING_GRACE_SECONDS + 1)
    done = intents.retrieve(merchant.merchant, intent.id)
    assert (done.state, done.amount_received) == ("succeeded", 3300)
    (charge,) = charges_of(store, intent.id)
    made = [a for a in processor.authorizations() if a["reference"] == charge["id"]["S"]]
    assert len(made) == 1  # the retry under the same key found the first authorization
    assert verify(store).ok


def test_a_failed_challenge_charges_nothing_and_the_resolver_leaves_it(
    store: Store, shop: tuple[NewMerchant, PaymentIntentService, str]
) -> None:
    merchant, intents, vault_url = shop
    intent = challenged(merchant, intents, vault_url)
    answer(intent.next_action_url, "failed")
    resolve(intents, time.time() + PENDING_GRACE_SECONDS + 1)
    failed = intents.retrieve(merchant.merchant, intent.id)
    assert failed.state == "requires_payment_method"
    assert (failed.last_payment_error or {})["code"] == "payment_intent_authentication_failure"
    assert charges_of(store, intent.id) == []
    # Confirming again asks for a new challenge, not the failed one.
    again = intents.confirm(
        Caller(merchant.merchant, "req_again"),
        intent.id,
        PaymentIntentConfirmParams(payment_method=card(vault_url, merchant)),
    )
    assert again.state == REQUIRES_ACTION and again.next_action_url != intent.next_action_url


def test_a_challenge_nobody_answers_waits_to_be_canceled(
    store: Store, shop: tuple[NewMerchant, PaymentIntentService, str]
) -> None:
    merchant, intents, vault_url = shop
    intent = challenged(merchant, intents, vault_url)
    resolve(intents, time.time() + AUTHENTICATION_WINDOW_SECONDS + 1)
    item = intents.owned(merchant.merchant.id, intent.id)
    assert item["state"] == REQUIRES_ACTION and "due_pk" not in item  # no longer looked at
    canceled = intents.cancel(
        Caller(merchant.merchant, "req_cancel"),
        intent.id,
        PaymentIntentCancelParams(cancellation_reason="abandoned"),
    )
    assert (canceled.state, canceled.cancellation_reason) == ("canceled", "abandoned")
    assert charges_of(store, intent.id) == []


def test_the_way_back_needs_the_intents_own_token(
    shop: tuple[NewMerchant, PaymentIntentService, str],
) -> None:
    merchant, intents, vault_url = shop
    intent = challenged(merchant, intents, vault_url)
    answer(intent.next_action_url, "succeeded")
    with pytest.raises(ResourceMissingError):
        intents.complete_authentication(intent.id, "not-the-token")
    assert intents.retrieve(merchant.merchant, intent.id).state == REQUIRES_ACTION


def test_a_function_without_the_vault_leaves_a_stored_cards_charge_pending(
    store: Store,
    processor: SandboxProcessor,
    shop: tuple[NewMerchant, PaymentIntentService, str],
) -> None:
    merchant, intents, vault_url = shop
    caller = Caller(merchant.merchant, "req_test")
    processor.inject_fault("timeout_before")  # the first answer is lost, nothing authorized
    intent = intents.create(
        caller,
        PaymentIntentCreateParams(
            amount=2100,
            currency="usd",
            payment_method=card(vault_url, merchant, "4242424242424242"),
            confirm=True,
        ),
        idempotency_key=str(uuid.uuid4()),
    )
    assert intent.state == "processing"
    (pending,) = charges_of(store, intent.id)
    # Set up without the vault, a function cannot know what became of the card: it must
    # not call the charge unknown (which would withdraw it), only leave it pending.
    blind = ChargeService(store, ProcessorClient(processor.url, timeout_seconds=0.3))
    item = store.get(pending["pk"]["S"], "CHARGE")
    assert item is not None
    assert blind.authorize_pending(item, None)["state"] == "pending"
    assert store.get(pending["pk"]["S"], "CHARGE") is not None
    # The resolver, with the vault, settles it either way it may: the processor never saw
    # the call (failed, nothing charged), or the retry under the same key went through.
    resolve(intents, time.time() + PENDING_GRACE_SECONDS + 1)
    after = intents.retrieve(merchant.merchant, intent.id)
    assert (after.state, after.amount_received) in (
        ("requires_payment_method", 0),
        ("succeeded", 2100),
    )
    (charge,) = charges_of(store, intent.id)
    made = [a for a in processor.authorizations() if a["reference"] == charge["id"]["S"]]
    assert len(made) == (1 if after.state == "succeeded" else 0)
    assert verify(store).ok
