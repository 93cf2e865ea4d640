"""Value lists as rules read them: one query per list, values kept as rules compare them."""

from __future__ import annotations

import uuid

import pytest

from clearline.audit import Caller
from clearline.errors import InvalidRequestError
from clearline.merchants import create_merchant
from clearline.params import ValueListCreateParams, ValueListItemCreateParams
from clearline.radar_rules import parse
from clearline.store import Store
from clearline.value_lists import ValueListService


def test_a_rule_reads_a_list_by_its_alias(store: Store) -> None:
    merchant = create_merchant(store, "Risky Goods").merchant
    caller = Caller(merchant, "req_lists")
    lists = ValueListService(store)

    def made(alias: str, item_type: str, *values: str) -> str:
        params = ValueListCreateParams(alias=alias, name=alias, item_type=item_type)  # type: ignore[arg-type]
        list_id = lists.create(caller, params, idempotency_key=str(uuid.uuid4())).id
        for value in values:
            item = ValueListItemCreateParams(value_list=list_id, value=value)
            lists.create_item(caller, item, idempotency_key=str(uuid.uuid4()))
        return list_id

    made("blocked_emails", "email", "Fraud@Example.com", "x@y.co")
    made("codes", "case_sensitive_string", "AbC")
    assert lists.values_of(merchant.id, "blocked_emails") == {"fraud@example.com", "x@y.co"}
    assert lists.values_of(merchant.id, "codes") == {"AbC"}
    assert lists.values_of(merchant.id, "no_such_list") is None
    assert lists.values_of("acct_someone_else", "blocked_emails") is None

    rule = parse("Block if :email: in @blocked_emails")
    found = {
        alias: lists.values_of(merchant.id, alias) or frozenset() for alias in rule.value_lists
    }
    assert rule.matches({"email": "FRAUD@example.com"}, found)
    assert not rule.matches({"email": "honest@example.com"}, found)


def test_an_emailed_list_refuses_what_is_not_an_email_and_keeps_no_twins(store: Store) -> None:
    merchant = create_merchant(store, "Careful").merchant
    caller = Caller(merchant, "req_lists")
    lists = ValueListService(store)
    params = ValueListCreateParams(alias="emails", name="Emails", item_type="email")
    list_id = lists.create(caller, params, idempotency_key="k1").id
    assert lists.create(caller, params, idempotency_key="k1").id == list_id  # a retry
    lists.create_item(
        caller, ValueListItemCreateParams(value_list=list_id, value="a@b.co"), idempotency_key="i1"
    )
    for value in ("not an email", "A@B.CO"):
        with pytest.raises(InvalidRequestError) as refused:
            lists.create_item(
                caller,
                ValueListItemCreateParams(value_list=list_id, value=value),
                idempotency_key=str(uuid.uuid4()),
            )
        assert refused.value.param == "value"
    assert lists.retrieve(merchant, list_id).list_items[0].value == "a@b.co"
    assert store.get(f"VALUELIST#{list_id}", "VALUELIST")["items"] == 1  # type: ignore[index]


def test_a_long_value_is_kept_whole_and_once(store: Store) -> None:
    merchant = create_merchant(store, "Wordy").merchant
    caller = Caller(merchant, "req_lists")
    lists = ValueListService(store)
    params = ValueListCreateParams(alias="phrases", name="Phrases")
    list_id = lists.create(caller, params, idempotency_key="long").id
    long_value = "é" * 800  # 1,600 bytes: longer than a sort key may be
    item = ValueListItemCreateParams(value_list=list_id, value=long_value)
    lists.create_item(caller, item, idempotency_key="first")
    with pytest.raises(InvalidRequestError):
        lists.create_item(caller, item, idempotency_key="second")
    assert lists.values_of(merchant.id, "phrases") == {long_value}


def test_ids_keep_their_case_and_a_deleted_list_is_no_cursor(store: Store) -> None:
    merchant = create_merchant(store, "Exact").merchant
    caller = Caller(merchant, "req_lists")
    lists = ValueListService(store)
    params = ValueListCreateParams(alias="customers", name="C", item_type="customer_id")
    list_id = lists.create(caller, params, idempotency_key="ids").id
    for value in ("cus_AbC", "cus_abc"):  # two customers, not one twice
        lists.create_item(
            caller,
            ValueListItemCreateParams(value_list=list_id, value=value),
            idempotency_key=value,
        )
    held = lists.values_of(merchant.id, "customers")
    assert held == {"cus_AbC", "cus_abc"}
    assert held is not None
    rule = parse("Block if :customer: in @customers")
    assert rule.matches({"customer": "cus_AbC"}, {"customers": held})
    assert not rule.matches({"customer": "CUS_ABC"}, {"customers": held})
    with pytest.raises(InvalidRequestError):  # Arabic-Indic digits are not a BIN
        bins = ValueListCreateParams(alias="bins", name="B", item_type="card_bin")
        bins_id = lists.create(caller, bins, idempotency_key="bins").id
        lists.create_item(
            caller,
            ValueListItemCreateParams(value_list=bins_id, value="٤٢٤٢٤٢"),
            idempotency_key="arabic",
        )

    lists.delete(caller, list_id)
    with pytest.raises(InvalidRequestError) as gone:
        lists.list(merchant, limit=10, starting_after=list_id, ending_before=None)
    assert gone.value.code == "resource_missing"
    with pytest.raises(InvalidRequestError) as reused:  # its create's key, once more
        lists.create(caller, params, idempotency_key="ids")
    assert reused.value.code == "idempotency_key_in_use"
