"""Customers through the unmodified SDK: their lifecycle, their events, and charges that
name them."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import stripe

from .conftest import Stack

pytestmark = pytest.mark.integration


def key() -> dict[str, str]:
    return {"idempotency_key": str(uuid.uuid4())}


@pytest.fixture
def sdk(stack: Stack) -> stripe.StripeClient:
    """A merchant of its own per test, so that lists hold only what the test made."""
    merchant = stack.create_merchant("Customer Shop")
    return stripe.StripeClient(merchant["secret_key"], base_addresses={"api": stack.url})


def test_a_customer_is_created_updated_listed_and_deleted(
    stack: Stack, sdk: stripe.StripeClient
) -> None:
    jenny = sdk.v1.customers.create(
        params={
            "email": "jenny@example.com",
            "name": "Jenny Rosen",
            "metadata": {"crm": "C-1", "tier": "gold"},
            "address": {"line1": "1 Main St", "city": "Berlin", "country": "DE"},
        },
        options=key(),
    )
    assert jenny.id.startswith("cus_") and jenny.address.city == "Berlin"
    other = sdk.v1.customers.create(params={"email": "sam@example.com"}, options=key())

    updated = sdk.v1.customers.update(
        jenny.id,
        params={"email": "jenny.rosen@example.com", "metadata": {"tier": ""}},
        options=key(),
    )
    assert updated.metadata.to_dict() == {"crm": "C-1"}
    assert sdk.v1.customers.retrieve(jenny.id).email == "jenny.rosen@example.com"

    def listed(**params: Any) -> list[str]:
        return [c.id for c in sdk.v1.customers.list(params={"limit": 100, **params}).data]

    assert listed() == [other.id, jenny.id]
    assert listed(email="jenny.rosen@example.com") == [jenny.id]
    assert listed(email="jenny@example.com") == []  # the old email no longer finds her
    assert listed(limit=1, starting_after=other.id) == [jenny.id]

    found = sdk.v1.customers.search(params={"query": "metadata['crm']:'C-1' OR email~'sam@'"})
    assert [c.id for c in found.data] == [other.id, jenny.id]
    named = sdk.v1.customers.search(params={"query": "name:'Jenny Rosen'"})
    assert [c.id for c in named.data] == [jenny.id]

    deleted = sdk.v1.customers.delete(jenny.id)
    assert deleted.deleted is True
    again = sdk.v1.customers.retrieve(jenny.id)
    assert again.deleted is True  # still found, as deleted
    assert listed() == [other.id]
    assert listed(email="jenny.rosen@example.com") == []
    assert sdk.v1.customers.search(params={"query": "name:'Jenny Rosen'"}).data == []

    types = [
        e.type
        for e in sdk.v1.events.list(params={"limit": 100}).data
        if e.data.object.id == jenny.id
    ]
    assert types == ["customer.deleted", "customer.updated", "customer.created"]
    audit = stack.store().query_partition(f"CUSTOMER#{jenny.id}", "AUDIT#")
    assert [item["operation"] for item in audit] == ["create", "update", "delete"]


def test_a_retried_create_returns_the_same_customer(sdk: stripe.StripeClient) -> None:
    options = key()
    first = sdk.v1.customers.create(params={"email": "a@example.com"}, options=options)
    again = sdk.v1.customers.create(params={"email": "a@example.com"}, options=options)
    assert again.id == first.id
    assert [c.id for c in sdk.v1.customers.list().data] == [first.id]


def test_charges_name_their_customer_and_list_by_it(sdk: stripe.StripeClient) -> None:
    jenny = sdk.v1.customers.create(params={"email": "jenny@example.com"}, options=key())
    charged = sdk.v1.charges.create(
        params={"amount": 2000, "currency": "usd", "source": "tok_visa", "customer": jenny.id},
        options=key(),
    )
    sdk.v1.charges.create(
        params={"amount": 3000, "currency": "usd", "source": "tok_visa"}, options=key()
    )
    assert charged.customer == jenny.id
    listed = sdk.v1.charges.list(params={"customer": jenny.id})
    assert [c.id for c in listed.data] == [charged.id]
    expanded = sdk.v1.charges.retrieve(charged.id, params={"expand": ["customer"]})
    assert expanded.customer.email == "jenny@example.com"
    found = sdk.v1.charges.search(params={"query": f"customer:'{jenny.id}'"})
    assert [c.id for c in found.data] == [charged.id]


def test_bad_customer_requests_are_refused_and_change_nothing(
    stack: Stack, sdk: stripe.StripeClient
) -> None:
    jenny = sdk.v1.customers.create(params={"email": "jenny@example.com"}, options=key())
    elsewhere = stripe.StripeClient(
        stack.create_merchant("Other Shop")["secret_key"], base_addresses={"api": stack.url}
    )
    with pytest.raises(stripe.InvalidRequestError) as missing:
        elsewhere.v1.customers.retrieve(jenny.id)  # another merchant's customer
    assert missing.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError) as not_theirs:
        elsewhere.v1.charges.create(
            params={"amount": 2000, "currency": "usd", "source": "tok_visa", "customer": jenny.id},
            options=key(),
        )
    assert not_theirs.value.param == "customer"
    assert elsewhere.v1.charges.list().data == []

    with pytest.raises(stripe.InvalidRequestError) as bad_email:
        sdk.v1.customers.update(jenny.id, params={"email": "nope"}, options=key())
    assert bad_email.value.param == "email"
    with pytest.raises(stripe.InvalidRequestError) as no_card:
        sdk.v1.charges.create(
            params={"amount": 2000, "currency": "usd", "customer": jenny.id}, options=key()
        )
    assert no_card.value.param == "source"

    sdk.v1.customers.delete(jenny.id)
    with pytest.raises(stripe.InvalidRequestError) as gone:
        sdk.v1.charges.create(
            params={"amount": 2000, "currency": "usd", "source": "tok_visa", "customer": jenny.id},
            options=key(),
        )
    assert gone.value.param == "customer"
    assert sdk.v1.charges.list().data == []
    assert sdk.v1.customers.retrieve(jenny.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError):
        sdk.v1.customers.delete(jenny.id)  # deleted once


def test_a_charge_or_intent_naming_only_the_customer_uses_its_default_payment_method(
    sdk: stripe.StripeClient,
) -> None:
    jenny = sdk.v1.customers.create(
        params={
            "email": "jenny@example.com",
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        },
        options=key(),
    )
    visa = sdk.v1.payment_methods.retrieve(jenny.invoice_settings.default_payment_method)
    assert (visa.card.last4, visa.customer) == ("4242", jenny.id)
    charged = sdk.v1.charges.create(
        params={"amount": 2000, "currency": "usd", "customer": jenny.id}, options=key()
    )
    assert (charged.status, charged.payment_method_details.card.last4) == ("succeeded", "4242")
    intent = sdk.v1.payment_intents.create(
        params={"amount": 1500, "currency": "usd", "customer": jenny.id, "confirm": True},
        options=key(),
    )
    assert intent.status == "succeeded"
    with pytest.raises(stripe.InvalidRequestError) as unattached:
        sdk.v1.customers.update(
            jenny.id,
            params={"invoice_settings": {"default_payment_method": "pm_card_mastercard"}},
            options=key(),
        )
    assert unattached.value.param == "invoice_settings[default_payment_method]"
    mastercard = sdk.v1.payment_methods.attach(
        "pm_card_mastercard", params={"customer": jenny.id}, options=key()
    )
    sdk.v1.customers.update(
        jenny.id,
        params={"invoice_settings": {"default_payment_method": mastercard.id}},
        options=key(),
    )
    again = sdk.v1.charges.create(
        params={"amount": 2000, "currency": "usd", "customer": jenny.id}, options=key()
    )
    assert again.payment_method_details.card.brand == "mastercard"


def test_lists_stay_whole_around_refused_charges_and_deleted_customers(
    sdk: stripe.StripeClient,
) -> None:
    jenny = sdk.v1.customers.create(params={"email": "jenny@example.com"}, options=key())
    with pytest.raises(stripe.InvalidRequestError):  # an unknown token: the charge is withdrawn
        sdk.v1.charges.create(
            params={"amount": 2000, "currency": "usd", "source": "tok_bogus", "customer": jenny.id},
            options=key(),
        )
    none = sdk.v1.charges.list(params={"customer": jenny.id, "limit": 1})
    assert (none.data, none.has_more) == ([], False)

    sam = sdk.v1.customers.create(params={"email": "sam@example.com"}, options=key())
    sdk.v1.customers.delete(sam.id)
    after_deleted = sdk.v1.customers.list(params={"starting_after": sam.id})
    assert [c.id for c in after_deleted.data] == [jenny.id]
