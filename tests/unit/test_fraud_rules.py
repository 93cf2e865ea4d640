"""A merchant's fraud rules, as operators keep them: parsed on the way in, in order, and
never lost to a concurrent edit."""

from __future__ import annotations

from typing import Any

import pytest

from clearline.errors import ConflictError, InvalidRequestError, ResourceMissingError
from clearline.fraud_rules import RuleBook
from clearline.merchants import create_merchant
from clearline.store import Store


def test_rules_are_kept_in_order_and_removed_by_id(store: Store) -> None:
    merchant = create_merchant(store, "Careful Shop").merchant
    book = RuleBook(store)
    assert book.rules(merchant.id) == ()
    block = book.add(merchant.id, "Block if   :card_country: != :ip_country:")
    review = book.add(merchant.id, "Review if :amount_in_usd: > 1000")
    rules = book.rules(merchant.id)
    assert [(r.id, r.action) for r in rules] == [(block.id, "block"), (review.id, "review")]
    assert rules[0].predicate == ":card_country: != :ip_country:"  # whitespace tidied
    assert rules[0].matches({"card_country": "US", "ip_country": "FR"}, {})
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
                first.add(merchant.id, "Block if :card_bin: in @blocked_bins")
            return seen["item"]  # type: ignore[no-any-return]

    late = RuleBook(ReadEarly(store.table_name, store.client))
    with pytest.raises(ConflictError):
        late.add(merchant.id, "Block if :ip_country: = 'XX'")
    assert len(second.rules(merchant.id)) == 2  # both of the first operator's, and only them
