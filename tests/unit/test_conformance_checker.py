"""The Stripe schema checker of tests/conformance, on hand-made objects."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.conformance.schemas import (
    SCHEMAS_PATH,
    check,
    defined_fields,
    expected_fields,
    object_schema,
    schema,
    source,
    walk,
)

CREATED = 1_700_000_000


def refund(**changes: Any) -> dict[str, Any]:
    return {
        "id": "re_1",
        "object": "refund",
        "amount": 500,
        "balance_transaction": "txn_2",
        "charge": "ch_1",
        "created": CREATED,
        "currency": "usd",
        "metadata": {},
        "payment_intent": None,
        "reason": None,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": "succeeded",
        "transfer_reversal": None,
        **changes,
    }


def balance_transaction(**changes: Any) -> dict[str, Any]:
    return {
        "id": "txn_1",
        "object": "balance_transaction",
        "amount": 2000,
        "available_on": CREATED,
        "created": CREATED,
        "currency": "usd",
        "description": None,
        "exchange_rate": None,
        "fee": 88,
        "fee_details": [
            {
                "amount": 88,
                "application": None,
                "currency": "usd",
                "description": "Clearline fee",
                "type": "stripe_fee",
            }
        ],
        "net": 1912,
        "reporting_category": "charge",
        "source": "ch_1",
        "status": "pending",
        "type": "charge",
        **changes,
    }


def charge(**changes: Any) -> dict[str, Any]:
    """A charge with every field Stripe always returns, right in type and value."""
    nulls = [
        "application",
        "application_fee",
        "application_fee_amount",
        "calculated_statement_descriptor",
        "customer",
        "description",
        "failure_balance_transaction",
        "failure_code",
        "failure_message",
        "invoice",
        "on_behalf_of",
        "payment_intent",
        "receipt_email",
        "receipt_number",
        "review",
        "shipping",
        "source_transfer",
        "statement_descriptor",
        "statement_descriptor_suffix",
        "transfer_data",
        "transfer_group",
    ]
    return {
        **dict.fromkeys(nulls),
        "id": "ch_1",
        "object": "charge",
        "amount": 2000,
        "amount_captured": 2000,
        "amount_refunded": 500,
        "balance_transaction": "txn_1",
        "billing_details": {"address": None, "email": None, "name": "Jenny", "phone": None},
        "captured": True,
        "created": CREATED,
        "currency": "usd",
        "disputed": False,
        "fraud_details": {},
        "livemode": False,
        "metadata": {"order": "42"},
        "outcome": {
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "seller_message": "Payment complete.",
            "type": "authorized",
        },
        "paid": True,
        "payment_method": "card_1",
        "payment_method_details": {
            "type": "card",
            "card": {
                "brand": "visa",
                "checks": {
                    "address_line1_check": None,
                    "address_postal_code_check": None,
                    "cvc_check": "pass",
                },
                "country": "US",
                "exp_month": 12,
                "exp_year": 2030,
                "fingerprint": "fp_1",
                "funding": "credit",
                "installments": None,
                "last4": "4242",
                "mandate": None,
                "network": "visa",
                "network_token": None,
                "three_d_secure": None,
                "wallet": None,
            },
        },
        "receipt_url": "https://example.test/receipts/ch_1",
        "refunded": False,
        "refunds": {
            "object": "list",
            "data": [refund()],
            "has_more": False,
            "url": "/v1/charges/ch_1/refunds",
        },
        "status": "succeeded",
        **changes,
    }


def customer(**changes: Any) -> dict[str, Any]:
    """A customer with every field Stripe always returns, right in type and value."""
    nulls = [
        "cash_balance",
        "currency",
        "default_source",
        "description",
        "discount",
        "phone",
        "test_clock",
    ]
    return {
        **dict.fromkeys(nulls),
        "id": "cus_1",
        "object": "customer",
        "address": {
            "city": "Lisbon",
            "country": "PT",
            "line1": "Rua 1",
            "line2": None,
            "postal_code": "1000-001",
            "state": None,
        },
        "balance": 0,
        "created": CREATED,
        "delinquent": False,
        "email": "jenny@example.com",
        "invoice_prefix": "ABCD1234",
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": "pm_1",
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": {"tier": "gold"},
        "name": "Jenny",
        "next_invoice_sequence": 1,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        **changes,
    }


def deleted_customer(**changes: Any) -> dict[str, Any]:
    return {"id": "cus_1", "object": "customer", "deleted": True, **changes}


def payment_intent(**changes: Any) -> dict[str, Any]:
    """A PaymentIntent with every field Stripe always returns, right in type and value."""
    nulls = [
        "application",
        "application_fee_amount",
        "automatic_payment_methods",
        "canceled_at",
        "cancellation_reason",
        "customer",
        "description",
        "invoice",
        "last_payment_error",
        "latest_charge",
        "next_action",
        "on_behalf_of",
        "payment_method",
        "processing",
        "receipt_email",
        "review",
        "setup_future_usage",
        "shipping",
        "statement_descriptor",
        "statement_descriptor_suffix",
        "transfer_data",
        "transfer_group",
    ]
    return {
        **dict.fromkeys(nulls),
        "id": "pi_1",
        "object": "payment_intent",
        "amount": 2000,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": 0,
        "capture_method": "automatic",
        "client_secret": "pi_1_secret_x",
        "confirmation_method": "automatic",
        "created": CREATED,
        "currency": "usd",
        "livemode": False,
        "metadata": {},
        "payment_method_options": {},
        "payment_method_types": ["card"],
        "status": "requires_payment_method",
        **changes,
    }


def event(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "evt_1",
        "object": "event",
        "api_version": "2023-08-16",
        "created": CREATED,
        "data": {"object": obj, "previous_attributes": {"amount_refunded": 0}},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": "req_1", "idempotency_key": None},
        "type": "charge.refunded",
    }


def test_the_schemas_name_their_stripe_source() -> None:
    assert source()["repo"] == "github.com/stripe/openapi"
    assert len(source()["commit"]) == 40


def test_a_correct_charge_passes() -> None:
    report = check(charge(), "charge")
    assert report.violations == []
    assert report.missing == []
    assert report.nested_missing == []
    assert report.ok
    assert report.schema_name == "charge"
    # Every field Stripe always returns is there; the optional ones (transfer,
    # radar_options) are not, and count against coverage only.
    assert expected_fields("charge") <= report.present
    assert defined_fields("charge") - report.present == {"transfer", "radar_options"}
    assert report.coverage == pytest.approx(len(report.present) / len(defined_fields("charge")))
    assert 0.9 < report.coverage < 1


def test_a_wrong_type_is_reported_with_its_path() -> None:
    bad = charge(amount="2000")
    bad["refunds"]["data"][0]["amount"] = "500"
    bad["payment_method_details"]["card"]["exp_month"] = 12.5

    violations = check(bad, "charge").violations

    assert violations == [
        "charge.amount: expected integer, got str",
        "charge.payment_method_details.card.exp_month: expected integer, got float",
        "charge.refunds.data[0].amount: expected integer, got str",
    ]


def test_a_value_outside_the_enum_is_a_violation() -> None:
    assert check(charge(status="authorized"), "charge").violations == [
        "charge.status: 'authorized' is not one of ['failed', 'pending', 'succeeded']"
    ]


def test_a_metadata_value_must_be_a_string() -> None:
    violations = check(charge(metadata={"order": 42}), "charge").violations
    assert violations == ["charge.metadata.order: expected string, got int"]


def test_a_missing_field_is_reported() -> None:
    incomplete = charge()
    del incomplete["amount_captured"]  # required
    del incomplete["failure_code"]  # nullable: Stripe returns it as null
    del incomplete["outcome"]["network_status"]
    del incomplete["payment_method_details"]["card"]["last4"]

    report = check(incomplete, "charge")

    assert report.missing == ["amount_captured", "failure_code"]
    assert report.nested_missing == [
        "charge.outcome.network_status",
        "charge.payment_method_details.card.last4",
    ]
    assert "amount_captured" not in report.present
    assert report.violations == []
    assert not report.ok


def test_an_optional_field_may_be_absent_but_counts_in_coverage() -> None:
    with_transfer = check(charge(transfer="tr_1"), "charge")
    without = check(charge(), "charge")
    assert with_transfer.missing == without.missing == []
    assert with_transfer.coverage > without.coverage


def test_a_nullable_null_is_fine() -> None:
    report = check(
        charge(description=None, outcome=None, balance_transaction=None, refunds=None), "charge"
    )
    assert report.violations == []
    assert report.ok


def test_a_null_where_the_schema_does_not_allow_it_is_a_violation() -> None:
    report = check(charge(amount=None, billing_details=None, metadata=None), "charge")
    assert report.violations == [
        "charge.amount: expected integer, got null",
        "charge.billing_details: expected billing_details, got null",
        "charge.metadata: expected object, got null",
    ]
    assert report.missing == []  # present, as null: a violation, not a missing field


def test_a_bool_is_not_an_integer_nor_a_number() -> None:
    assert check(charge(amount=True), "charge").violations == [
        "charge.amount: expected integer, got bool"
    ]
    assert check(balance_transaction(exchange_rate=False), "balance_transaction").violations == [
        "balance_transaction.exchange_rate: expected number, got bool"
    ]
    # ... while a number is an int or a float, and a boolean only a bool
    assert check(balance_transaction(exchange_rate=1), "balance_transaction").ok
    assert check(balance_transaction(exchange_rate=1.08), "balance_transaction").ok
    assert check(charge(paid=1), "charge").violations == ["charge.paid: expected boolean, got int"]


def test_an_expandable_field_is_an_id_or_the_expanded_object() -> None:
    assert check(charge(balance_transaction="txn_1"), "charge").ok
    assert check(charge(balance_transaction=balance_transaction()), "charge").ok

    expanded_wrong = balance_transaction(fee="88")
    del expanded_wrong["net"]
    report = check(charge(balance_transaction=expanded_wrong), "charge")
    assert report.violations == ["charge.balance_transaction.fee: expected integer, got str"]
    assert report.nested_missing == ["charge.balance_transaction.net"]

    assert check(charge(balance_transaction=42), "charge").violations == [
        "charge.balance_transaction: expected string or balance_transaction, got int"
    ]


def test_an_expanded_object_is_checked_against_its_own_type() -> None:
    # A balance transaction's source may be a charge or a refund (or objects Clearline
    # does not serve): an expanded refund is checked as a refund.
    assert check(balance_transaction(source=refund()), "balance_transaction").ok
    bad = balance_transaction(source=refund(amount="500"))
    assert check(bad, "balance_transaction").violations == [
        "balance_transaction.source.amount: expected integer, got str"
    ]


def test_a_stub_accepts_any_object_but_only_an_object() -> None:
    # `invoice` is an object Clearline does not serve, stubbed in the schemas.
    assert check(charge(invoice={"id": "in_1", "anything": [1, {"at": "all"}]}), "charge").ok
    assert check(charge(invoice=["in_1"]), "charge").violations == [
        "charge.invoice: expected string or invoice, got list"
    ]


def test_nested_objects_can_be_left_to_walk() -> None:
    bad = charge(balance_transaction=balance_transaction(fee="88"))
    bad["refunds"]["data"][0]["amount"] = "500"
    shallow = check(bad, "charge", nested_objects=False)
    assert shallow.violations == []
    by_type = {name: check(obj, name, nested_objects=False).violations for name, obj in walk(bad)}
    assert by_type == {
        "charge": [],
        "balance_transaction": ["balance_transaction.fee: expected integer, got str"],
        "refund": ["refund.amount: expected integer, got str"],
    }


def test_object_schema_maps_responses_to_schemas() -> None:
    assert object_schema(charge()) == "charge"
    assert object_schema(refund()) == "refund"
    assert object_schema({"object": "balance", "available": []}) == "balance"
    assert object_schema({"object": "webhook_endpoint", "id": "we_1"}) == "webhook_endpoint"
    deleted = {"object": "webhook_endpoint", "id": "we_1", "deleted": True}
    assert object_schema(deleted) == "deleted_webhook_endpoint"
    assert object_schema({"error": {"type": "card_error", "message": "declined"}}) == "error"
    assert object_schema({"object": "list", "data": []}) is None
    assert object_schema({"object": "invoice", "id": "in_1"}) is None
    assert object_schema("ch_1") is None


def test_an_error_body_is_checked() -> None:
    declined = {"error": {"type": "card_error", "code": "card_declined", "charge": "ch_1"}}
    assert check(declined, "error").ok
    assert check({"error": {"type": "card_error", "code": 402}}, "error").violations == [
        "error.error.code: expected string, got int"
    ]
    assert check({"error": {"message": "no type"}}, "error").nested_missing == ["error.error.type"]


def test_walk_finds_nested_refunds_and_event_data_object() -> None:
    the_charge = charge(balance_transaction=balance_transaction())
    the_charge["refunds"]["data"].append(refund(id="re_2"))
    body = {
        "object": "list",
        "data": [event(the_charge)],
        "has_more": False,
        "url": "/v1/events",
    }

    found = [(name, obj.get("id")) for name, obj in walk(body)]

    assert found == [
        ("event", "evt_1"),
        ("charge", "ch_1"),
        ("balance_transaction", "txn_1"),
        ("refund", "re_1"),
        ("refund", "re_2"),
    ]
    # The objects are the ones in the body, not copies, and each checks out by itself.
    assert next(obj for name, obj in walk(body) if name == "charge") is the_charge
    assert all(check(obj, name).ok for name, obj in walk(body))


def test_walk_skips_what_has_no_schema_and_partial_previous_attributes() -> None:
    the_event = event(refund())
    the_event["data"]["previous_attributes"] = {"charge": {"object": "charge", "id": "ch_0"}}
    assert [name for name, _ in walk(the_event)] == ["event", "refund"]
    assert list(walk({"object": "invoice", "id": "in_1"})) == []
    assert list(walk("ch_1")) == []


def test_checking_does_not_change_the_object() -> None:
    original = charge(balance_transaction=balance_transaction())
    checked = copy.deepcopy(original)
    check(checked, "charge")
    list(walk(checked))
    assert checked == original


def test_an_unknown_schema_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="no schema named 'invoice'"):
        check({}, "invoice")


def test_the_added_schemas_name_their_source() -> None:
    added = json.loads(SCHEMAS_PATH.read_text())["_added"]
    names = [entry["schema"] for entry in added]
    assert {"customer", "deleted_customer", "payment_intent"} <= set(names)
    for entry in added:
        assert schema(entry["schema"])["type"] == "object"
        assert entry["source"]["repo"] == source()["repo"]
        assert entry["source"]["commit"] == source()["commit"]
        assert entry["source"]["pointer"] == f"#/components/schemas/{entry['schema']}"


def test_a_correct_customer_passes() -> None:
    report = check(customer(), "customer")
    assert report.violations == []
    assert report.missing == []
    assert report.nested_missing == []
    assert report.ok
    assert object_schema(customer()) == "customer"
    assert expected_fields("customer") <= report.present
    # With a shipping address, and without the optional invoice settings.
    shipping = {
        "address": customer()["address"],
        "carrier": None,
        "name": "Jenny",
        "phone": None,
        "tracking_number": None,
    }
    without_settings = customer(shipping=shipping)
    del without_settings["invoice_settings"]
    assert check(without_settings, "customer").ok


def test_a_customer_with_wrong_or_missing_fields_is_reported() -> None:
    bad = customer(delinquent="no", tax_exempt="partial")
    bad["invoice_settings"]["default_payment_method"] = 7
    del bad["email"]
    del bad["address"]["city"]
    report = check(bad, "customer")
    assert report.violations == [
        "customer.delinquent: expected boolean, got str",
        "customer.invoice_settings.default_payment_method: expected string or payment_method,"
        " got int",
        "customer.tax_exempt: 'partial' is not one of ['exempt', 'none', 'reverse']",
    ]
    assert report.missing == ["email"]
    assert report.nested_missing == ["customer.address.city"]


def test_a_deleted_customer_maps_to_deleted_customer_and_passes() -> None:
    deleted = deleted_customer()
    assert object_schema(deleted) == "deleted_customer"
    assert check(deleted, "deleted_customer").ok
    assert [name for name, _ in walk(deleted)] == ["deleted_customer"]
    # `deleted` is always true, and a deleted customer has only its id besides.
    assert check(deleted_customer(deleted=False), "deleted_customer").violations == [
        "deleted_customer.deleted: False is not one of [True]"
    ]
    assert check({"object": "customer", "deleted": True}, "deleted_customer").missing == ["id"]


def test_an_expanded_customer_is_checked_as_a_customer_or_a_deleted_one() -> None:
    assert check(payment_intent(customer=customer()), "payment_intent").ok
    assert check(payment_intent(customer=deleted_customer()), "payment_intent").ok
    report = check(payment_intent(customer=customer(balance="0")), "payment_intent")
    assert report.violations == ["payment_intent.customer.balance: expected integer, got str"]


def test_a_correct_payment_intent_passes() -> None:
    report = check(payment_intent(), "payment_intent")
    assert report.violations == []
    assert report.missing == []
    assert report.nested_missing == []
    assert object_schema(payment_intent()) == "payment_intent"
    assert defined_fields("payment_intent") == report.present
    declined = payment_intent(
        status="requires_payment_method",
        latest_charge="ch_1",
        last_payment_error={
            "type": "card_error",
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.",
            "charge": "ch_1",
        },
    )
    assert check(declined, "payment_intent").ok
    assert check(payment_intent(latest_charge=charge()), "payment_intent").ok


def test_a_payment_intent_with_a_wrong_type_is_reported() -> None:
    bad = payment_intent(
        amount="2000",
        status="authorized",
        payment_method_types="card",
        last_payment_error={"type": "card_error", "code": 402},
        latest_charge=charge(amount_captured="2000"),
    )
    report = check(bad, "payment_intent")
    assert report.violations == [
        "payment_intent.amount: expected integer, got str",
        "payment_intent.last_payment_error.code: expected string, got int",
        "payment_intent.latest_charge.amount_captured: expected integer, got str",
        "payment_intent.payment_method_types: expected array, got str",
        "payment_intent.status: 'authorized' is not one of ['canceled', 'processing',"
        " 'requires_action', 'requires_capture', 'requires_confirmation',"
        " 'requires_payment_method', 'succeeded']",
    ]
    assert report.missing == []
    # Checked by itself, as `walk` yields it, the expanded charge is not looked into.
    shallow = check(bad, "payment_intent", nested_objects=False).violations
    assert "payment_intent.latest_charge.amount_captured: expected integer, got str" not in shallow
    assert len(shallow) == len(report.violations) - 1


def test_walk_finds_an_errors_payment_intent() -> None:
    intent = payment_intent(
        latest_charge="ch_1",
        last_payment_error={"type": "card_error", "code": "card_declined", "charge": "ch_1"},
    )
    body = {
        "error": {
            "type": "card_error",
            "code": "card_declined",
            "charge": "ch_1",
            "message": "Your card was declined.",
            "payment_intent": intent,
        }
    }
    found = list(walk(body))
    assert [name for name, _ in found] == ["error", "payment_intent"]
    assert found[1][1] is intent
    assert all(check(obj, name, nested_objects=False).ok for name, obj in found)

    body["error"]["payment_intent"] = payment_intent(amount="2000")
    by_type = {name: check(obj, name, nested_objects=False).violations for name, obj in walk(body)}
    assert by_type == {
        "error": [],
        "payment_intent": ["payment_intent.amount: expected integer, got str"],
    }


def test_walk_finds_expanded_customers_payment_intents_and_latest_charges() -> None:
    intent = payment_intent(customer=customer(), latest_charge=charge(customer=deleted_customer()))
    found = [(name, obj.get("id")) for name, obj in walk(intent)]
    assert found == [
        ("payment_intent", "pi_1"),
        ("customer", "cus_1"),
        ("charge", "ch_1"),
        ("deleted_customer", "cus_1"),
        ("refund", "re_1"),
    ]
    the_charge = charge(customer=customer(), payment_intent=payment_intent())
    assert [name for name, _ in walk(the_charge)] == [
        "charge",
        "customer",
        "payment_intent",
        "refund",
    ]
    assert all(check(obj, name).ok for name, obj in walk(intent))


def test_a_field_returned_only_when_expanded_is_not_expected_unasked() -> None:
    assert "cash_balance" not in expected_fields("customer")
    assert "email" in expected_fields("customer")  # nullable, and always returned
