"""What a merchant's existing Stripe code reads and sends, through the unmodified SDK:
expansion, updates with their events, search, the card and receipt fields, and the
create parameters merchants send."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pytest
import requests
import stripe

from tests.polling import eventually

from .conftest import Stack
from .receivers import Receiver

pytestmark = pytest.mark.integration


def key() -> dict[str, str]:
    return {"idempotency_key": str(uuid.uuid4())}


@pytest.fixture(scope="module")
def shop(stack: Stack) -> tuple[dict[str, Any], stripe.StripeClient]:
    """A merchant of its own, so that lists and searches see only this module's charges."""
    merchant = stack.create_merchant("Fidelity Shop")
    return merchant, stripe.StripeClient(merchant["secret_key"], base_addresses={"api": stack.url})


def charge(sdk: stripe.StripeClient, **params: Any) -> stripe.Charge:
    return sdk.v1.charges.create(
        params={"amount": 2000, "currency": "usd", "source": "tok_visa", **params}, options=key()
    )


# ---- expand ---------------------------------------------------------------------------------


def test_expand_replaces_ids_with_the_objects_they_name(
    shop: tuple[dict[str, Any], stripe.StripeClient],
) -> None:
    _, sdk = shop
    created = charge(sdk, expand=["balance_transaction"])
    assert created.balance_transaction.fee > 0  # an object, not an id
    assert created.balance_transaction.source == created.id

    refund = sdk.v1.refunds.create(params={"charge": created.id, "amount": 500}, options=key())
    deep = sdk.v1.refunds.retrieve(
        refund.id, params={"expand": ["charge.balance_transaction", "balance_transaction"]}
    )
    assert deep.charge.id == created.id
    assert deep.charge.balance_transaction.amount == 2000
    assert deep.balance_transaction.amount == -500

    listed = sdk.v1.charges.list(params={"limit": 3, "expand": ["data.balance_transaction"]})
    assert all(not isinstance(c.balance_transaction, str) for c in listed.data)
    txn = sdk.v1.balance_transactions.retrieve(
        created.balance_transaction.id, params={"expand": ["source"]}
    )
    assert txn.source.object == "charge" and txn.source.amount == 2000


@pytest.mark.parametrize(
    "path",
    ["invoice", "balance_transaction.nothing", "data.balance_transaction", "a.b.c.d.e", ""],
)
def test_a_path_that_cannot_expand_is_a_400_naming_it(
    shop: tuple[dict[str, Any], stripe.StripeClient], path: str
) -> None:
    _, sdk = shop
    created = charge(sdk)
    with pytest.raises(stripe.InvalidRequestError) as refused:
        sdk.v1.charges.retrieve(created.id, params={"expand": [path]})
    assert refused.value.param == "expand"
    assert f"({path})" in str(refused.value.user_message)


def test_a_post_with_a_bad_expand_moves_no_money(
    shop: tuple[dict[str, Any], stripe.StripeClient],
) -> None:
    _, sdk = shop
    before = sdk.v1.charges.list(params={"limit": 100})
    with pytest.raises(stripe.InvalidRequestError) as refused:
        charge(sdk, expand=["refunds"])
    assert refused.value.param == "expand"
    after = sdk.v1.charges.list(params={"limit": 100})
    assert [c.id for c in after.data] == [c.id for c in before.data]


# ---- updates --------------------------------------------------------------------------------


def test_a_charge_update_merges_metadata_and_is_announced_with_what_it_was(
    stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient]
) -> None:
    _, sdk = shop
    created = charge(sdk, metadata={"order": "6735", "gift": "no"}, description="Mugs")
    updated = sdk.v1.charges.update(
        created.id,
        params={
            "metadata": {"gift": "", "carrier": "ups"},
            "description": "Two mugs",
            "receipt_email": "jenny@example.com",
            "shipping": {"name": "Jenny Rosen", "address": {"line1": "1 Main St", "country": "US"}},
            "fraud_details": {"user_report": "safe"},
            "transfer_group": "order_6735",
        },
        options=key(),
    )
    assert updated.metadata.to_dict() == {"order": "6735", "carrier": "ups"}
    assert (updated.description, updated.receipt_email) == ("Two mugs", "jenny@example.com")
    assert updated.shipping.address.line1 == "1 Main St"
    assert updated.fraud_details.to_dict() == {"user_report": "safe"}
    assert updated.amount == 2000 and updated.status == "succeeded"  # the money is untouched
    assert sdk.v1.charges.retrieve(created.id).metadata.to_dict() == updated.metadata.to_dict()

    (event,) = [
        e
        for e in sdk.v1.events.list(params={"type": "charge.updated", "limit": 100}).data
        if e.data.object.id == created.id
    ]
    previous = event.data.previous_attributes.to_dict()
    assert previous["description"] == "Mugs"
    assert previous["metadata"] == {"gift": "no", "carrier": None}
    assert previous["receipt_email"] is None

    audit = stack.store().query_partition(f"CHARGE#{created.id}", "AUDIT#")
    assert "update" in [item["operation"] for item in audit]


def test_metadata_set_to_empty_clears_every_key(
    shop: tuple[dict[str, Any], stripe.StripeClient],
) -> None:
    _, sdk = shop
    created = charge(sdk, metadata={"a": "1", "b": "2"})
    cleared = sdk.v1.charges.update(created.id, params={"metadata": ""}, options=key())
    assert cleared.metadata.to_dict() == {}


def test_a_bad_update_is_refused_and_changes_nothing(
    shop: tuple[dict[str, Any], stripe.StripeClient],
) -> None:
    _, sdk = shop
    created = charge(sdk, description="Kept")
    for params, param in [
        ({"receipt_email": "not-an-email"}, "receipt_email"),
        ({"amount": 1}, "amount"),
        ({"fraud_details": {"user_report": "maybe"}}, "fraud_details[user_report]"),
        ({"shipping": {"address": {"line1": "x"}}}, "shipping[name]"),
    ]:
        with pytest.raises(stripe.InvalidRequestError) as refused:
            sdk.v1.charges.update(created.id, params=params, options=key())
        assert refused.value.param == param
    assert sdk.v1.charges.retrieve(created.id).description == "Kept"


def test_a_refund_update_changes_its_metadata_on_the_refund_and_its_charge(
    shop: tuple[dict[str, Any], stripe.StripeClient],
) -> None:
    _, sdk = shop
    created = charge(sdk)
    refund = sdk.v1.refunds.create(
        params={"charge": created.id, "metadata": {"ticket": "T-1"}}, options=key()
    )
    updated = sdk.v1.refunds.update(
        refund.id, params={"metadata": {"ticket": "", "reason": "damaged"}}, options=key()
    )
    assert updated.metadata.to_dict() == {"reason": "damaged"}
    embedded = sdk.v1.charges.retrieve(created.id).refunds.data[0]
    assert embedded.metadata.to_dict() == {"reason": "damaged"}
    events = sdk.v1.events.list(params={"type": "refund.updated", "limit": 100}).data
    # The refund's settling was announced as refund.updated too, without previous values.
    (event,) = [
        e for e in events if e.data.object.id == refund.id and "previous_attributes" in e.data
    ]
    assert event.data.previous_attributes.to_dict() == {
        "metadata": {"ticket": "T-1", "reason": None}
    }


# ---- search ---------------------------------------------------------------------------------


def test_search_finds_charges_by_stripes_query_language(stack: Stack) -> None:
    sdk = stripe.StripeClient(
        stack.create_merchant("Search Shop")["secret_key"], base_addresses={"api": stack.url}
    )
    big = charge(sdk, amount=9000, metadata={"order": "A-1"}, description="Big blue mug")
    small = charge(sdk, amount=1000, metadata={"order": "A-2"}, currency="eur")
    master = charge(sdk, amount=3000, source="tok_mastercard")
    refunded = charge(sdk, amount=4000)
    sdk.v1.refunds.create(params={"charge": refunded.id}, options=key())

    def ids(query: str, **params: Any) -> list[str]:
        return [c.id for c in sdk.v1.charges.search(params={"query": query, **params}).data]

    assert ids("metadata['order']:'A-1'") == [big.id]
    assert ids("amount>=3000 AND -amount:9000") == [refunded.id, master.id]
    assert ids("currency:'eur' OR amount:9000") == [small.id, big.id]
    assert ids("description~'blue'") == [big.id]
    assert ids("payment_method_details.card.brand:'mastercard'") == [master.id]
    assert ids("refunded:true") == [refunded.id]
    assert ids(f"created>={big.created} AND amount<2000") == [small.id]

    first = sdk.v1.charges.search(params={"query": "status:'succeeded'", "limit": 3})
    assert first.has_more and first.next_page
    rest = sdk.v1.charges.search(
        params={"query": "status:'succeeded'", "limit": 3, "page": first.next_page}
    )
    assert [c.id for c in [*first.data, *rest.data]] == [
        refunded.id,
        master.id,
        small.id,
        big.id,
    ]
    assert rest.next_page is None and not rest.has_more


@pytest.mark.parametrize(
    ("query", "position"),
    [
        ("amount>", 7),
        ("nope:'x'", 0),
        ("amount:1 AND currency:'usd' OR status:'failed'", 28),
        ("currency~'us'", 9),
        ("metadata['order':'x'", 16),
    ],
)
def test_a_malformed_query_is_a_400_naming_the_position(
    shop: tuple[dict[str, Any], stripe.StripeClient], query: str, position: int
) -> None:
    _, sdk = shop
    with pytest.raises(stripe.InvalidRequestError) as refused:
        sdk.v1.charges.search(params={"query": query})
    assert refused.value.param == "query"
    assert f"at position {position}" in str(refused.value.user_message)


def test_a_page_token_that_was_not_issued_is_refused(
    shop: tuple[dict[str, Any], stripe.StripeClient],
) -> None:
    _, sdk = shop
    with pytest.raises(stripe.InvalidRequestError) as refused:
        sdk.v1.charges.search(params={"query": "amount>0", "page": "not-a-page"})
    assert refused.value.param == "page"


# ---- fields ---------------------------------------------------------------------------------


def test_the_card_is_a_source_with_a_fingerprint_per_card_number(
    shop: tuple[dict[str, Any], stripe.StripeClient],
) -> None:
    _, sdk = shop
    by_token = charge(sdk)
    by_payment_method = sdk.v1.charges.create(
        params={"amount": 2000, "currency": "usd", "payment_method": "pm_card_visa"},
        options=key(),
    )
    other_card = charge(sdk, source="tok_mastercard")
    card = by_token.payment_method_details.card
    assert by_token.source.object == "card"
    assert (by_token.source.last4, by_token.source.brand) == ("4242", "Visa")
    assert by_token.payment_method.startswith("pm_")
    assert by_token.payment_method != "tok_visa"
    assert card.checks.cvc_check == "pass" and card.network == "visa"
    assert card.fingerprint == by_payment_method.payment_method_details.card.fingerprint
    assert card.fingerprint != other_card.payment_method_details.card.fingerprint
    assert by_token.source.fingerprint == card.fingerprint


def test_the_create_parameters_merchants_send_are_kept(
    shop: tuple[dict[str, Any], stripe.StripeClient],
) -> None:
    _, sdk = shop
    created = charge(
        sdk,
        receipt_email="jenny@example.com",
        statement_descriptor_suffix="ORDER 6735",
        transfer_group="order_6735",
        shipping={"name": "Jenny Rosen", "address": {"city": "Berlin", "country": "DE"}},
    )
    again = sdk.v1.charges.retrieve(created.id)
    assert again.receipt_email == "jenny@example.com"
    assert again.statement_descriptor_suffix == "ORDER 6735"
    assert again.transfer_group == "order_6735"
    assert again.shipping.address.city == "Berlin"


def test_the_receipt_url_serves_the_customers_receipt(
    shop: tuple[dict[str, Any], stripe.StripeClient],
) -> None:
    _, sdk = shop
    created = charge(sdk, amount=12345, description="A teapot")
    sdk.v1.refunds.create(params={"charge": created.id, "amount": 2345}, options=key())
    page = requests.get(created.receipt_url, timeout=30)  # public: no API key
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    text = page.text
    for shown in ["Fidelity Shop", "123.45", "4242", created.id, "23.45", "100.00"]:
        assert shown in text, shown
    assert "no-store" in page.headers["Cache-Control"]

    forged = re.sub(r"/[^/]+$", "/" + "A" * 32, created.receipt_url)
    assert requests.get(forged, timeout=30).status_code == 404


def test_every_error_links_a_page_that_explains_its_code(
    shop: tuple[dict[str, Any], stripe.StripeClient],
) -> None:
    _, sdk = shop
    with pytest.raises(stripe.CardError) as declined:
        charge(sdk, source="tok_chargeDeclined")
    doc_url = declined.value.error.doc_url
    assert doc_url is not None and doc_url.endswith("/errors/card_declined")
    page = requests.get(doc_url, timeout=30)
    assert page.status_code == 200 and "card_declined" in page.text
    assert requests.get(doc_url.rsplit("/", 1)[0] + "/no_such_code", timeout=30).status_code == 404


def test_a_charge_lists_the_first_ten_of_its_refunds_and_counts_them_all(
    shop: tuple[dict[str, Any], stripe.StripeClient],
) -> None:
    _, sdk = shop
    created = charge(sdk, amount=12000)
    for _ in range(11):
        sdk.v1.refunds.create(params={"charge": created.id, "amount": 100}, options=key())
        time.sleep(0.002)
    refunds = sdk.v1.charges.retrieve(created.id).refunds
    assert (len(refunds.data), refunds.has_more, refunds.total_count) == (10, True, 11)


# ---- list filters ---------------------------------------------------------------------------


def test_list_filters_narrow_lists_through_their_index(
    stack: Stack,
) -> None:
    # Paid in both currencies, so that each charge's balance transaction is in its own.
    shop = stack.create_merchant("Filter Shop", settlement_currencies=("usd", "eur"))
    sdk = stripe.StripeClient(shop["secret_key"], base_addresses={"api": stack.url})
    usd, eur = charge(sdk, amount=3000), charge(sdk, amount=4000, currency="eur")
    refund = sdk.v1.refunds.create(params={"charge": usd.id, "amount": 1000}, options=key())

    def txns(**params: Any) -> list[Any]:
        return list(sdk.v1.balance_transactions.list(params={"limit": 100, **params}).data)

    assert [t.source for t in txns(source=usd.id)] == [usd.id]
    assert [t.source for t in txns(type="refund")] == [refund.id]
    assert [t.source for t in txns(currency="eur")] == [eur.id]
    assert [t.source for t in txns(type="charge", currency="usd")] == [usd.id]
    assert txns(payout="po_none") == []
    newest, older = txns(type="charge", limit=1), None
    assert [t.source for t in newest] == [eur.id]
    older = txns(type="charge", limit=1, starting_after=newest[0].id)
    assert [t.source for t in older] == [usd.id]

    def event_types(**params: Any) -> list[str]:
        events = sdk.v1.events.list(params={"limit": 100, **params}).data
        return sorted(e.type for e in events)

    assert event_types(types=["charge.refunded", "refund.created"]) == [
        "charge.refunded",
        "refund.created",
    ]
    assert event_types(type="charge.succeeded") == ["charge.succeeded", "charge.succeeded"]
    assert sdk.v1.charges.list(params={"customer": "cus_nobody"}).data == []
    with pytest.raises(stripe.InvalidRequestError) as refused:
        sdk.v1.events.list(params={"type": "charge.succeeded", "types": ["refund.created"]})
    assert refused.value.param == "types"


# ---- refund cancel --------------------------------------------------------------------------


def test_a_refund_the_processor_has_not_made_can_be_canceled(
    stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient]
) -> None:
    merchant, sdk = shop
    no_retries = stripe.StripeClient(
        merchant["secret_key"], base_addresses={"api": stack.url}, max_network_retries=0
    )
    created = charge(sdk, amount=5000)
    stack.inject_processor_fault("timeout_before")  # the refund's call never reaches it
    with pytest.raises(stripe.APIError):
        no_retries.v1.refunds.create(params={"charge": created.id, "amount": 1500}, options=key())
    (pending,) = sdk.v1.charges.retrieve(created.id).refunds.data
    assert pending.status == "pending"

    canceled = sdk.v1.refunds.cancel(pending.id, options=key())
    assert canceled.status == "canceled"
    after = sdk.v1.charges.retrieve(created.id)
    assert (after.amount_refunded, after.refunds.data[0].status) == (0, "canceled")
    (event,) = [
        e
        for e in sdk.v1.events.list(params={"type": "refund.updated", "limit": 100}).data
        if e.data.object.id == pending.id
    ]
    assert event.data.previous_attributes.to_dict() == {"status": "pending"}
    (auth,) = [a for a in stack.processor_authorizations() if a["reference"] == created.id]
    assert auth["amount_refunded"] == 0  # nothing was refunded, and nothing will be

    with pytest.raises(stripe.InvalidRequestError) as refused:
        sdk.v1.refunds.cancel(pending.id, options=key())
    assert refused.value.code == "refund_not_cancelable"
    whole = sdk.v1.refunds.create(params={"charge": created.id}, options=key())
    assert (whole.status, whole.amount) == ("succeeded", 5000)


def test_events_are_filed_by_whether_every_endpoint_accepted_them(stack: Stack) -> None:
    sdk = stripe.StripeClient(
        stack.create_merchant("Delivery Shop")["secret_key"], base_addresses={"api": stack.url}
    )
    accepting, refusing = Receiver(), Receiver(["500"] * 50)
    for receiver, types in [(accepting, ["charge.succeeded"]), (refusing, ["charge.refunded"])]:
        endpoint = sdk.v1.webhook_endpoints.create(
            params={"url": receiver.url, "enabled_events": types}, options=key()
        )
        receiver.secret = endpoint.secret or ""
    created = charge(sdk)
    sdk.v1.refunds.create(params={"charge": created.id}, options=key())

    def filed(delivered: bool) -> list[str]:
        events = sdk.v1.events.list(params={"delivery_success": delivered, "limit": 100}).data
        return sorted(e.type for e in events)

    # charge.succeeded reached its one endpoint; refund.created and refund.updated had none
    # to reach, so nothing was left undelivered either.
    eventually(
        lambda: filed(True) == ["charge.succeeded", "refund.created", "refund.updated"],
        message="the delivered events filed as delivered",
    )
    eventually(lambda: refusing.refused >= 1, message="the refusing endpoint's first attempt")
    assert filed(False) == ["charge.refunded"]  # its endpoint keeps refusing it
    by_type = sdk.v1.events.list(params={"type": "charge.succeeded", "delivery_success": True})
    assert [e.data.object.id for e in by_type.data] == [created.id]
