"""A merchant's fraud rules, as operators keep them: parsed on the way in, in order, and
never lost to a concurrent edit."""

from __future__ import annotations

import time
from typing import Any

import pytest

from clearline.audit import Caller
from clearline.charges import ChargeService
from clearline.errors import CardError, ConflictError, InvalidRequestError, ResourceMissingError
from clearline.fraud_rules import RuleBook
from clearline.ids import derived_id
from clearline.merchants import create_merchant
from clearline.models import Charge
from clearline.params import (
    ChargeCreateParams,
    ValueListCreateParams,
    ValueListItemCreateParams,
    ValueListUpdateParams,
)
from clearline.processor import ProcessorClient
from clearline.refunds import RefundService
from clearline.resolver import Resolver
from clearline.store import Store
from clearline.value_lists import ValueListService
from clearline_local.sandbox_processor import SandboxProcessor
from tests.unit.conftest import record_rates


def test_rules_are_kept_in_order_and_removed_by_id(store: Store) -> None:
    merchant = create_merchant(store, "Careful Shop").merchant
    book = RuleBook(store)
    assert book.rules(merchant.id) == ()
    block = book.add(merchant.id, "Block if   :card_country: != 'US'")
    review = book.add(merchant.id, "Review if :amount_in_usd: > 1000")
    rules = book.rules(merchant.id)
    assert [(r.id, r.action) for r in rules] == [(block.id, "block"), (review.id, "review")]
    assert rules[0].predicate == ":card_country: != 'US'"  # whitespace tidied
    assert rules[0].matches({"card_country": "FR"}, {})
    book.remove(merchant.id, block.id)
    assert [r.id for r in book.rules(merchant.id)] == [review.id]
    with pytest.raises(ResourceMissingError):
        book.remove(merchant.id, block.id)
    assert book.rules("acct_someone_else") == ()


def test_a_rule_that_does_not_parse_is_refused_and_not_kept(store: Store) -> None:
    merchant = create_merchant(store, "Typo Shop").merchant
    book = RuleBook(store)
    with pytest.raises(InvalidRequestError) as refused:
        book.add(merchant.id, "Block if :card_country: !== 'US'")
    assert refused.value.param == "rule"
    assert "position 26" in refused.value.message  # the second "="
    assert book.rules(merchant.id) == ()


def test_a_rule_that_could_never_match_is_refused(store: Store) -> None:
    """A rule naming what the screener does not know, or a list that does not exist,
    would be kept to no effect: it is refused, and a list a rule names cannot go."""
    merchant = create_merchant(store, "Strict Shop").merchant
    book, lists = RuleBook(store), ValueListService(store)
    caller = Caller(merchant, "req_strict")
    for text, says in (
        ("Review if :address_zip_check: = 'fail'", ":address_zip_check:"),
        ("Block if :email: in @vip", "@vip"),
    ):
        with pytest.raises(InvalidRequestError) as refused:
            book.add(merchant.id, text)
        assert says in refused.value.message
    vip = lists.create(
        caller,
        ValueListCreateParams(alias="vip", name="VIP", item_type="email"),
        idempotency_key="v",
    )
    rule = book.add(merchant.id, "Block if :email: not in @vip")
    for attempt in (
        lambda: lists.delete(caller, vip.id),
        lambda: lists.update(caller, vip.id, ValueListUpdateParams(alias="vip2")),
    ):
        with pytest.raises(InvalidRequestError) as kept:
            attempt()
        assert rule.id in kept.value.message
    book.remove(merchant.id, rule.id)
    assert lists.delete(caller, vip.id).deleted


def test_two_operators_editing_at_once_lose_nothing_silently(store: Store) -> None:
    merchant = create_merchant(store, "Busy Shop").merchant
    first, second = RuleBook(store), RuleBook(store)
    first.add(merchant.id, "Review if :amount_in_usd: > 500")
    seen: dict[str, Any] = {}

    class ReadEarly(Store):
        """The second operator's read, taken before the first operator's next write."""

        def get(self, pk: str, sk: str) -> dict[str, Any] | None:
            if "item" not in seen:
                seen["item"] = super().get(pk, sk)
                first.add(merchant.id, "Block if :card_brand: = 'amex'")
            return seen["item"]  # type: ignore[no-any-return]

    late = RuleBook(ReadEarly(store.table_name, store.client))
    with pytest.raises(ConflictError):
        late.add(merchant.id, "Block if :card_country: = 'XX'")
    assert len(second.rules(merchant.id)) == 2  # both of the first operator's, and only them


# ---- the rules on the charge path -------------------------------------------------------------


@pytest.fixture
def ruled(store: Store, processor: SandboxProcessor) -> dict[str, Any]:
    merchant = create_merchant(store, "Ruled Shop").merchant
    client = ProcessorClient(processor.url, timeout_seconds=2.0)
    charges = ChargeService(store, client)
    return {
        "merchant": merchant,
        "caller": Caller(merchant, "req_rules"),
        "charges": charges,
        "refunds": RefundService(store, client),
        "book": RuleBook(store),
        "processor": processor,
    }


def pay(ruled: dict[str, Any], key: str, **params: Any) -> Charge:
    charge: Charge = ruled["charges"].create(
        ruled["caller"],
        ChargeCreateParams(source="tok_visa", **{"amount": 2000, "currency": "usd", **params}),
        idempotency_key=key,
    )
    return charge


def sent(ruled: dict[str, Any], charge_id: str) -> bool:
    return any(a["reference"] == charge_id for a in ruled["processor"].authorizations())


def test_a_blocked_charge_fails_as_fraudulent_and_never_reaches_the_processor(
    store: Store, ruled: dict[str, Any]
) -> None:
    merchant, lists = ruled["merchant"], ValueListService(store)
    made = lists.create(
        ruled["caller"],
        ValueListCreateParams(alias="blocked_emails", name="Blocked", item_type="email"),
        idempotency_key="list",
    )
    lists.create_item(
        ruled["caller"],
        ValueListItemCreateParams(value_list=made.id, value="Thief@Example.com"),
        idempotency_key="item",
    )
    rule = ruled["book"].add(merchant.id, "Block if :email: in @blocked_emails")

    with pytest.raises(CardError) as refused:
        pay(ruled, "stolen", receipt_email="thief@example.com")
    assert (refused.value.code, refused.value.decline_code) == ("card_declined", "fraudulent")
    charge_id = refused.value.charge
    stored = store.get(f"CHARGE#{charge_id}", "CHARGE")
    assert stored is not None and stored["state"] == "failed"
    assert stored["outcome"]["type"] == "blocked"
    assert stored["outcome"]["network_status"] == "not_sent_to_network"
    assert stored["outcome"]["rule"]["id"] == rule.id
    assert stored["fraud_details"] == {"stripe_report": "fraudulent"}
    assert not sent(ruled, charge_id)
    with pytest.raises(CardError):  # its retry is the same answer, and still not sent
        pay(ruled, "stolen", receipt_email="thief@example.com")
    assert not sent(ruled, charge_id)

    honest = pay(ruled, "honest", receipt_email="buyer@example.com")
    assert honest.state == "captured" and honest.outcome is not None
    assert honest.outcome.type == "authorized"


def test_a_reviewed_charge_goes_through_marked_for_review(
    store: Store, ruled: dict[str, Any]
) -> None:
    record_rates(store)
    rule = ruled["book"].add(ruled["merchant"].id, "Review if :amount_in_usd: > 100")
    big = pay(ruled, "big", amount=15_000, currency="eur")  # about 163 dollars
    assert big.state == "captured" and big.outcome is not None
    assert (big.outcome.type, big.outcome.reason) == ("manual_review", "rule")
    assert big.outcome.rule == {"id": rule.id, "action": "review", "predicate": rule.predicate}
    small = pay(ruled, "small", amount=5_000, currency="eur")
    assert small.outcome is not None and small.outcome.type == "authorized"


def test_a_block_cut_short_after_its_write_ahead_is_finished_unsent(
    store: Store, ruled: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    record_rates(store)
    ruled["book"].add(ruled["merchant"].id, "Block if :currency: = 'gbp'")

    def crash(*_: Any) -> Any:
        raise RuntimeError("the execution environment died")

    monkeypatch.setattr(ChargeService, "_block", crash)
    with pytest.raises(RuntimeError):
        pay(ruled, "cut-short", currency="gbp")
    monkeypatch.undo()
    charge_id = derived_id("ch", ruled["merchant"].id, "cut-short")
    pending = store.get(f"CHARGE#{charge_id}", "CHARGE")
    assert pending is not None and pending["state"] == "pending"

    Resolver(ruled["charges"], ruled["refunds"]).run(int(time.time()) + 3600)
    finished = store.get(f"CHARGE#{charge_id}", "CHARGE")
    assert finished is not None and finished["state"] == "failed"
    assert finished["outcome"]["type"] == "blocked"
    assert not sent(ruled, charge_id)
