"""A merchant's objects read by id, one at a time or many at once: another merchant's, or a
missing one, is not theirs to see."""

from __future__ import annotations

import pytest

from clearline import listing
from clearline.errors import ResourceMissingError
from clearline.store import Store

MINE, THEIRS = "acct_mine", "acct_theirs"


def put_charge(store: Store, charge_id: str, merchant: str) -> None:
    store.put({"pk": f"CHARGE#{charge_id}", "sk": "CHARGE", "id": charge_id, "merchant": merchant})


def test_many_are_read_at_once_and_only_the_merchants_own_come_back(store: Store) -> None:
    for n in range(130):  # more than one BatchGetItem holds
        put_charge(store, f"ch_mine{n:03d}", MINE)
    put_charge(store, "ch_theirs", THEIRS)
    asked = [f"ch_mine{n:03d}" for n in range(130)] + ["ch_theirs", "ch_missing", "ch_mine000"]
    found = listing.get_owned_many(store, MINE, asked, "ch")
    assert sorted(found) == [f"ch_mine{n:03d}" for n in range(130)]
    assert found["ch_mine007"]["merchant"] == MINE
    assert listing.get_owned_many(store, THEIRS, asked, "ch").keys() == {"ch_theirs"}


def test_an_id_of_another_kind_is_not_read_as_this_kind(store: Store) -> None:
    put_charge(store, "ch_mine", MINE)
    assert listing.get_owned_many(store, MINE, ["re_mine", "ch_mine"], "re") == {}
    assert listing.get_owned_many(store, MINE, [], "ch") == {}


def test_one_read_by_id_is_a_404_for_another_merchant(store: Store) -> None:
    put_charge(store, "ch_theirs", THEIRS)
    assert listing.get_owned(store, THEIRS, "ch_theirs", "ch")["id"] == "ch_theirs"
    with pytest.raises(ResourceMissingError):
        listing.get_owned(store, MINE, "ch_theirs", "ch")
