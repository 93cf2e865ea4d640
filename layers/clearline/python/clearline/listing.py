"""Stripe's list shape over a merchant's objects, newest first, with cursor pagination.

Every listable item carries `gsi1pk` (the merchant, the kind of object named by its id
prefix: ch, re, txn, evt, and one of its list shards) and `gsi1sk` (creation time in
milliseconds, then the id). The shards keep one merchant's peak (10,000 charges a
second) from landing on one index partition, ~300 writes a second each instead; a page
queries every shard and merges them, newest first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from clearline.errors import ResourceMissingError, store_unavailable
from clearline.store import Store, StoreUnavailable

INDEX = "by_merchant"
LIST_SHARDS = 32
# Each charge writes two or three events: their lists take twice the shards.
SHARDS_BY_KIND = {"evt": 64}


def list_shards(kind: str) -> int:
    return SHARDS_BY_KIND.get(kind, LIST_SHARDS)


_queries = ThreadPoolExecutor(max_workers=8, thread_name_prefix="list-shard")

# id prefix -> (pk prefix, sk, the name Stripe uses in "No such ...")
KINDS = {
    "ch": ("CHARGE#", "CHARGE", "charge"),
    "re": ("REFUND#", "REFUND", "refund"),
    "txn": ("TXN#", "TXN", "balance transaction"),
    "evt": ("EVENT#", "EVENT", "event"),
}


def object_key(object_id: str) -> tuple[str, str]:
    prefix = object_id.split("_", 1)[0]
    pk_prefix, sk, _ = KINDS.get(prefix, ("UNKNOWN#", "UNKNOWN", ""))
    return f"{pk_prefix}{object_id}", sk


def _list_partition(merchant_id: str, kind: str, shard: int) -> str:
    return f"MERCHANT#{merchant_id}#{kind}#{shard}"


def list_keys(merchant_id: str, kind: str, created_ms: int, object_id: str) -> dict[str, str]:
    """The index attributes that put an item in its merchant's list of `kind`."""
    digest = hashlib.sha256(object_id.encode()).digest()
    shard = int.from_bytes(digest[:4], "big") % list_shards(kind)
    return {
        "gsi1pk": _list_partition(merchant_id, kind, shard),
        "gsi1sk": f"{created_ms:013d}#{object_id}",
    }


_MAX_MS = 10**13 - 1  # the index key holds 13 digits of milliseconds


@dataclass(frozen=True)
class Created:
    """Stripe's `created[gt|gte|lt|lte]` filter, in Unix seconds."""

    gt: int | None = None
    gte: int | None = None
    lt: int | None = None
    lte: int | None = None

    def first_ms(self) -> int | None:
        """The earliest millisecond the filter admits."""
        starts = [s * 1000 for s in (self.gte,) if s is not None]
        starts += [(s + 1) * 1000 for s in (self.gt,) if s is not None]
        return min(max(max(starts), 0), _MAX_MS + 1) if starts else None

    def last_ms(self) -> int | None:
        """The latest millisecond the filter admits."""
        ends = [s * 1000 - 1 for s in (self.lt,) if s is not None]
        ends += [(s + 1) * 1000 - 1 for s in (self.lte,) if s is not None]
        return max(min(min(ends), _MAX_MS), -1) if ends else None

    def admits(self, created: int) -> bool:
        first, last = self.first_ms(), self.last_ms()
        ms = created * 1000
        return (first is None or ms >= first) and (last is None or ms <= last)

    def index_range(self) -> tuple[str | None, str | None]:
        """Inclusive bounds on `gsi1sk` (`{created_ms:013d}#{id}`); a highest of "" is a
        range nothing falls in."""
        first, last = self.first_ms(), self.last_ms()
        if (first is not None and first > _MAX_MS) or (last is not None and last < 0):
            return None, ""
        lowest = None if first is None else f"{first:013d}"
        highest = None if last is None else f"{last:013d}#~"
        return lowest, highest


def get_owned(
    store: Store, merchant_id: str, object_id: str, kind: str, param: str = "id"
) -> dict[str, Any]:
    """The merchant's object, or 404: another merchant's object does not exist for them."""
    try:
        item = store.get(*object_key(object_id))
    except StoreUnavailable as exc:
        raise store_unavailable() from exc
    if item is None or item.get("merchant") != merchant_id or not object_id.startswith(kind + "_"):
        raise ResourceMissingError(KINDS.get(kind, ("", "", "object"))[2], object_id, param=param)
    return item


def page(
    store: Store,
    merchant_id: str,
    kind: str,
    *,
    url: str,
    render: Callable[[dict[str, Any]], dict[str, Any]],
    limit: int,
    starting_after: str | None,
    ending_before: str | None,
    filters: list[tuple[str, str, Any]] | None = None,
    created: Created | None = None,
) -> dict[str, Any]:
    """A page of the merchant's objects of `kind`, newest first; `created` narrows the
    index range each shard is queried over, so a filter reads only what it returns."""
    lowest, highest = (created or Created()).index_range()
    before = after = None
    if starting_after:
        before = get_owned(store, merchant_id, starting_after, kind, "starting_after")["gsi1sk"]
    elif ending_before:
        after = get_owned(store, merchant_id, ending_before, kind, "ending_before")["gsi1sk"]
    newest_first = after is None

    def one_shard(shard: int) -> list[dict[str, Any]]:
        return store.query_index(
            INDEX,
            "gsi1pk",
            _list_partition(merchant_id, kind, shard),
            "gsi1sk",
            before=before,
            after=after,
            newest_first=newest_first,
            limit=limit + 1,
            filters=filters,
            lowest=lowest,
            highest=highest,
        )

    try:
        shards = list(_queries.map(one_shard, range(list_shards(kind))))
    except StoreUnavailable as exc:
        raise store_unavailable() from exc
    items = sorted(
        (i for shard in shards for i in shard), key=lambda i: str(i["gsi1sk"]), reverse=newest_first
    )
    has_more = len(items) > limit
    items = items[:limit]
    if after is not None:
        items.reverse()  # fetched oldest first, to find the page just before the cursor
    return list_object(url, [render(i) for i in items], has_more)


def list_object(url: str, data: Sequence[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "url": url, "has_more": has_more, "data": list(data)}


def page_in_memory(
    objects: list[dict[str, Any]],
    *,
    url: str,
    limit: int,
    starting_after: str | None,
    ending_before: str | None,
    created: Created | None = None,
) -> dict[str, Any]:
    """A page of a short list held in one item (a charge's refunds), newest first. Keys
    starting with an underscore order the list and are not shown."""
    if created is not None:
        objects = [o for o in objects if created.admits(o["created"])]
    newest_first = sorted(
        objects, key=lambda o: (o["created"], o.get("_at_ms", 0), o["id"]), reverse=True
    )
    ordered = [{k: v for k, v in o.items() if not k.startswith("_")} for o in newest_first]
    ids = [o["id"] for o in ordered]
    if starting_after:
        if starting_after not in ids:
            raise ResourceMissingError("refund", starting_after, param="starting_after")
        rest = ordered[ids.index(starting_after) + 1 :]
        return list_object(url, rest[:limit], len(rest) > limit)
    if ending_before:
        if ending_before not in ids:
            raise ResourceMissingError("refund", ending_before, param="ending_before")
        rest = ordered[: ids.index(ending_before)]
        return list_object(url, rest[-limit:], len(rest) > limit)
    return list_object(url, ordered[:limit], len(ordered) > limit)
