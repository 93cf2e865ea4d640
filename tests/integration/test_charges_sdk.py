"""The charge path through the unmodified stripe SDK, against the local stack."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
import stripe

from clearline import ledger

from .conftest import Stack, charges_with_key, journals_for

pytestmark = pytest.mark.integration


def key() -> str:
    return str(uuid.uuid4())


def test_create_retrieve_and_list(client: stripe.StripeClient) -> None:
    created = client.v1.charges.create(
        params={
            "amount": 2000,
            "currency": "usd",
            "source": "tok_visa",
            "description": "Tea",
            "metadata": {"order_id": "6735"},
            "statement_descriptor": "CLEARLINE TEA",
        },
        options={"idempotency_key": key()},
    )
    assert created.id.startswith("ch_")
    assert (created.status, created.paid, created.captured) == ("succeeded", True, True)
    assert created.amount_captured == 2000
    assert created.metadata["order_id"] == "6735"
    assert created.payment_method_details is not None
    assert created.payment_method_details.card.last4 == "4242"

    fetched = client.v1.charges.retrieve(created.id)
    assert fetched.to_dict() == created.to_dict()
    assert created.id in [c.id for c in client.v1.charges.list(params={"limit": 5}).data]


def test_list_paginates_newest_first(stack: Stack) -> None:
    shop = stack.create_merchant("Pagination Shop")
    client = stripe.StripeClient(shop["secret_key"], base_addresses={"api": stack.url})
    made = [
        client.v1.charges.create(
            params={"amount": 100 + i, "currency": "usd", "source": "tok_visa"},
            options={"idempotency_key": key()},
        ).id
        for i in range(7)
    ]
    newest_first = list(reversed(made))

    page1 = client.v1.charges.list(params={"limit": 3})
    assert [c.id for c in page1.data] == newest_first[:3] and page1.has_more
    page2 = client.v1.charges.list(params={"limit": 3, "starting_after": page1.data[-1].id})
    assert [c.id for c in page2.data] == newest_first[3:6] and page2.has_more
    page3 = client.v1.charges.list(params={"limit": 3, "starting_after": page2.data[-1].id})
    assert [c.id for c in page3.data] == newest_first[6:] and not page3.has_more
    back = client.v1.charges.list(params={"limit": 2, "ending_before": page2.data[0].id})
    assert [c.id for c in back.data] == newest_first[1:3] and back.has_more
    # The SDK's auto-pagination walks every page with starting_after.
    everything = [c.id for c in client.v1.charges.list(params={"limit": 2}).auto_paging_iter()]
    assert everything == newest_first


DECLINES = [
    ("tok_chargeDeclined", "card_declined", "generic_decline"),
    ("tok_chargeDeclinedInsufficientFunds", "card_declined", "insufficient_funds"),
    ("tok_chargeDeclinedExpiredCard", "expired_card", "expired_card"),
    ("tok_chargeDeclinedIncorrectCvc", "incorrect_cvc", "incorrect_cvc"),
    ("tok_chargeDeclinedProcessingError", "processing_error", "processing_error"),
    ("tok_chargeDeclinedFraudulent", "card_declined", "fraudulent"),
]


@pytest.mark.parametrize(("token", "code", "decline_code"), DECLINES)
def test_declines_are_card_errors_and_the_failed_charge_is_stored(
    client: stripe.StripeClient, stack: Stack, token: str, code: str, decline_code: str
) -> None:
    with pytest.raises(stripe.CardError) as raised:
        client.v1.charges.create(
            params={"amount": 5000, "currency": "usd", "source": token},
            options={"idempotency_key": key()},
        )
    error = raised.value
    assert error.http_status == 402
    assert (error.code, error.error.decline_code) == (code, decline_code)
    charge_id = error.error.charge
    assert charge_id and charge_id.startswith("ch_")
    failed = client.v1.charges.retrieve(charge_id)
    assert (failed.status, failed.paid, failed.failure_code) == ("failed", False, code)
    assert journals_for(stack, charge_id) == []  # a decline moves no money


def test_a_replayed_decline_is_the_same_decline(client: stripe.StripeClient) -> None:
    idem = key()
    ids = []
    for _ in range(2):
        with pytest.raises(stripe.CardError) as raised:
            client.v1.charges.create(
                params={"amount": 5000, "currency": "usd", "source": "tok_chargeDeclined"},
                options={"idempotency_key": idem},
            )
        ids.append(raised.value.error.charge)
    assert ids[0] == ids[1]


def test_worked_example_fee_posting(stack: Stack) -> None:
    """$50.00 at 3%: merchant payable 48.50 and fee revenue 1.50 against the receivable."""
    shop = stack.create_merchant("Three Percent", fee_percent=3, fee_fixed=0)
    client = stripe.StripeClient(shop["secret_key"], base_addresses={"api": stack.url})
    charge = client.v1.charges.create(
        params={"amount": 5000, "currency": "usd", "source": "tok_visa"},
        options={"idempotency_key": key()},
    )
    (journal,) = journals_for(stack, charge.id)
    entries = {e["account"]: (e["direction"], e["amount"]) for e in journal["entries"]}
    assert entries == {
        ledger.processor_receivable("usd"): ("debit", 5000),
        ledger.merchant_payable(shop["id"], "usd"): ("credit", 4850),
        ledger.fee_revenue("usd"): ("credit", 150),
    }
    payable = ledger.account_balance(stack.store(), ledger.merchant_payable(shop["id"], "usd"))
    assert (payable.credits_posted, payable.debits_posted) == (4850, 0)


def test_zero_decimal_currency(client: stripe.StripeClient) -> None:
    charge = client.v1.charges.create(
        params={"amount": 500, "currency": "jpy", "source": "tok_visa"},
        options={"idempotency_key": key()},
    )
    assert (charge.amount, charge.currency) == (500, "jpy")
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.charges.create(
            params={"amount": 49, "currency": "jpy", "source": "tok_visa"},
            options={"idempotency_key": key()},
        )
    assert raised.value.code == "amount_too_small"
    assert "50 jpy" in str(raised.value.user_message)


def test_uncaptured_charge_holds_funds_without_a_fee(
    client: stripe.StripeClient, stack: Stack
) -> None:
    charge = client.v1.charges.create(
        params={"amount": 7000, "currency": "eur", "source": "tok_mastercard", "capture": False},
        options={"idempotency_key": key()},
    )
    assert (charge.status, charge.captured, charge.amount_captured) == ("succeeded", False, 0)
    (journal,) = journals_for(stack, charge.id)
    assert all(e["pending"] for e in journal["entries"])
    assert sum(e["amount"] for e in journal["entries"] if e["direction"] == "debit") == 7000


def test_ten_sequential_retries_make_one_charge_and_one_journal(
    client: stripe.StripeClient, stack: Stack, merchant: dict[str, Any]
) -> None:
    idem = key()
    params = {"amount": 1234, "currency": "usd", "source": "tok_visa"}
    ids = {
        client.v1.charges.create(params=params, options={"idempotency_key": idem}).id
        for _ in range(10)
    }
    assert len(ids) == 1
    assert len(charges_with_key(stack, merchant["id"], idem)) == 1
    assert len(journals_for(stack, ids.pop())) == 1


def test_twenty_concurrent_requests_with_one_key_make_one_charge(
    stack: Stack, merchant: dict[str, Any]
) -> None:
    idem = key()
    body = {"amount": 4321, "currency": "usd", "source": "tok_visa"}

    def attempt(_: int) -> requests.Response:
        return requests.post(
            f"{stack.url}/v1/charges",
            data=body,
            timeout=30,
            auth=(merchant["secret_key"], ""),
            headers={"Idempotency-Key": idem},
        )

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(attempt, range(20)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 409}, statuses
    succeeded = {r.json()["id"] for r in responses if r.status_code == 200}
    assert len(succeeded) == 1
    in_flight = [r.json()["error"] for r in responses if r.status_code == 409]
    assert all(e["code"] == "idempotency_key_in_use" for e in in_flight)
    assert len(charges_with_key(stack, merchant["id"], idem)) == 1
    # Once the first request is done, every retry replays it.
    replay = attempt(0)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] in succeeded


def test_same_key_with_other_parameters_is_an_idempotency_error(
    client: stripe.StripeClient,
) -> None:
    idem = key()
    client.v1.charges.create(
        params={"amount": 900, "currency": "usd", "source": "tok_visa"},
        options={"idempotency_key": idem},
    )
    with pytest.raises(stripe.IdempotencyError):
        client.v1.charges.create(
            params={"amount": 901, "currency": "usd", "source": "tok_visa"},
            options={"idempotency_key": idem},
        )


def test_another_merchant_sees_nothing(client: stripe.StripeClient, stack: Stack) -> None:
    mine = client.v1.charges.create(
        params={"amount": 800, "currency": "usd", "source": "tok_visa"},
        options={"idempotency_key": key()},
    )
    other = stack.create_merchant("Someone Else")
    theirs = stripe.StripeClient(other["secret_key"], base_addresses={"api": stack.url})
    with pytest.raises(stripe.InvalidRequestError) as raised:
        theirs.v1.charges.retrieve(mine.id)
    assert (raised.value.http_status, raised.value.code) == (404, "resource_missing")
    assert mine.id not in [c.id for c in theirs.v1.charges.list().data]
    with pytest.raises(stripe.InvalidRequestError) as raised:
        theirs.v1.charges.list(params={"starting_after": mine.id})
    assert raised.value.param == "starting_after"


@pytest.mark.parametrize("mode", ["timeout_before", "timeout_after", "error_500"])
def test_processor_failure_leaves_a_pending_charge_that_a_retry_settles_once(
    stack: Stack, merchant: dict[str, Any], mode: str
) -> None:
    """The processor fails: the charge is stored pending, with no money moved; a retry with
    the same key asks the processor again with the same key, and charges exactly once."""
    idem = key()
    params = {"amount": 2500, "currency": "usd", "source": "tok_visa"}
    once = stripe.StripeClient(
        merchant["secret_key"], base_addresses={"api": stack.url}, max_network_retries=0
    )
    stack.inject_processor_fault(mode)
    pending = once.v1.charges.create(params=params, options={"idempotency_key": idem})
    assert (pending.status, pending.paid) == ("pending", False)
    assert journals_for(stack, pending.id) == []

    settled = once.v1.charges.create(params=params, options={"idempotency_key": idem})
    assert (settled.id, settled.status) == (pending.id, "succeeded")
    assert len(charges_with_key(stack, merchant["id"], idem)) == 1
    assert len(journals_for(stack, settled.id)) == 1
