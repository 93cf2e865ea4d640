"""created[gt|gte|lt|lte] narrows the index range each list shard is queried over, and
composes with Stripe's cursors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from clearline import listing
from clearline.listing import Created
from clearline.store import Store

MERCHANT = "acct_created"
BASE = 1_795_000_000  # Unix seconds


@pytest.fixture
def charges(store: Store) -> list[str]:
    """Two charges in each of five consecutive seconds, written as the charge path does."""
    ids = []
    for second in range(5):
        for n in range(2):
            charge_id = f"ch_{second}{n}{'x' * 20}"
            created_ms = (BASE + second) * 1000 + n * 300
            store.put(
                {
                    "pk": f"CHARGE#{charge_id}",
                    "sk": "CHARGE",
                    "id": charge_id,
                    "merchant": MERCHANT,
                    "created": created_ms // 1000,
                    **listing.list_keys(MERCHANT, "ch", created_ms, charge_id),
                }
            )
            ids.append(charge_id)
    return ids


@dataclass(frozen=True)
class Listed:
    id: str
    created: int


def listed(store: Store, created: Created, **cursor: Any) -> list[str]:
    page = listing.page(
        store,
        MERCHANT,
        "ch",
        limit=cursor.pop("limit", 100),
        starting_after=cursor.get("starting_after"),
        ending_before=cursor.get("ending_before"),
        created=created,
    )
    return [item["id"] for item in page.items]


@pytest.mark.parametrize(
    ("created", "seconds"),
    [
        (Created(), [4, 3, 2, 1, 0]),
        (Created(gte=BASE + 2), [4, 3, 2]),
        (Created(gt=BASE + 2), [4, 3]),
        (Created(lt=BASE + 2), [1, 0]),
        (Created(lte=BASE + 2), [2, 1, 0]),
        (Created(gt=BASE, lt=BASE + 4), [3, 2, 1]),
        (Created(gte=BASE + 3, lte=BASE + 3), [3]),
        (Created(gt=BASE + 3, lt=BASE + 3), []),  # an empty range
        (Created(lt=-5), []),
        (Created(gte=10**12), []),
    ],
)
def test_each_bound(store: Store, charges: list[str], created: Created, seconds: list[int]) -> None:
    expected = [c for s in seconds for c in reversed(charges[2 * s : 2 * s + 2])]
    assert listed(store, created) == expected


def test_the_filter_and_the_cursors_compose(store: Store, charges: list[str]) -> None:
    window = Created(gte=BASE + 1, lte=BASE + 3)  # charges[2:8], newest first
    newest_first = list(reversed(charges[2:8]))
    first = listed(store, window, limit=4)
    assert first == newest_first[:4]
    rest = listed(store, window, limit=4, starting_after=first[-1])
    assert rest == newest_first[4:]
    assert listed(store, window, limit=2, ending_before=rest[0]) == newest_first[2:4]


def test_in_memory_lists_filter_alike() -> None:
    objects = [Listed(f"re_{i}", BASE + i) for i in range(4)]
    page = listing.page_in_memory(
        objects,
        limit=10,
        starting_after=None,
        ending_before=None,
        created=Created(gt=BASE, lte=BASE + 2),
    )
    assert [o.id for o in page.items] == ["re_2", "re_1"]
