"""Stripe's list shape over a merchant's objects, newest first, with cursor pagination.

Every listable item carries `gsi1pk` (the merchant, the kind of object named by its id
prefix: ch, re, txn, evt, and one of its list shards) and `gsi1sk` (creation time in
milliseconds, then the id). The shards keep one merchant's peak (10,000 charges a
second) from landing on one index partition, ~300 writes a second each instead; a page
queries every shard and merges them, newest first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from clearline.errors import ResourceMissingError, store_unavailable
from clearline.models import Page
from clearline.store import Store, StoreUnavailable


class Listed(Protocol):
    """What a short in-memory list orders by."""

    @property
    def id(self) -> str: ...

    @property
    def created(self) -> int: ...


M = TypeVar("M", bound=Listed)
T = TypeVar("T")
R = TypeVar("R")

INDEX = "by_merchant"
FACET_INDEX = "by_facet"
FACET_SHARDS = 8  # per filter value: a popular event type must not be one hot partition
LIST_SHARDS = 32
# Each charge writes two or three events: their lists take twice the shards. Objects made
# far less often than charges (a dispute or a review for a small share of them, payouts a
# few times a day, value lists by hand) stay well under a partition's writes on four
# shards, and a page of them is four queries. A kind's count may only ever grow: its
# pages read every shard an item may have been written to.
LOW_VOLUME_SHARDS = 4
SHARDS_BY_KIND = {
    "evt": 64,
    **dict.fromkeys(("po", "du", "prv", "issfr", "rsl", "rsli"), LOW_VOLUME_SHARDS),
}


def list_shards(kind: str) -> int:
    return SHARDS_BY_KIND.get(kind, LIST_SHARDS)


_queries = ThreadPoolExecutor(max_workers=8, thread_name_prefix="list-shard")


def side_by_side(read: Callable[[T], R], keys: Iterable[T]) -> list[R]:
    """`read` of each key, the reads run side by side (each is a wait on the table), in the
    keys' order. A `read` must not list or call this itself: the pool is shared, and a read
    waiting on the pool from inside it could wait forever."""
    return list(_queries.map(read, keys))


# id prefix -> (pk prefix, sk, the name Stripe uses in "No such ...")
KINDS = {
    "rsl": ("VALUELIST#", "VALUELIST", "value list"),
    "rsli": ("VALUELISTITEM#", "VALUELISTITEM", "value list item"),
    "fxq": ("FXQUOTE#", "FXQUOTE", "fx_quote"),
    "ch": ("CHARGE#", "CHARGE", "charge"),
    "re": ("REFUND#", "REFUND", "refund"),
    "txn": ("TXN#", "TXN", "balance transaction"),
    "evt": ("EVENT#", "EVENT", "event"),
    "cus": ("CUSTOMER#", "CUSTOMER", "customer"),
    "pi": ("PI#", "PI", "payment_intent"),
    "pm": ("PM#", "PAYMENT_METHOD", "PaymentMethod"),
    "du": ("DISPUTE#", "DISPUTE", "dispute"),
    "po": ("PAYOUT#", "PAYOUT", "payout"),
    "prv": ("REVIEW#", "REVIEW", "review"),
    "issfr": ("EFW#", "EFW", "early fraud warning"),
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


def _facet_partition(merchant_id: str, kind: str, name: str, value: str, shard: int) -> str:
    return f"MERCHANT#{merchant_id}#{kind}#{name}={value}#{shard}"


def facet_items(
    merchant_id: str,
    kind: str,
    created_ms: int,
    object_key: tuple[str, str],
    object_id: str,
    facets: Mapping[str, str | None],
) -> list[dict[str, Any]]:
    """Index items that put an object in the filtered lists of each of its facets
    (`type=charge.succeeded`). They live in the object's own partition, are written in the
    transaction that writes it, and each carries every facet, so that a second filter is a
    condition of the same index query."""
    present = {name: value for name, value in facets.items() if value is not None}
    digest = hashlib.sha256(object_id.encode()).digest()
    shard = int.from_bytes(digest[:4], "big") % FACET_SHARDS
    pk, sk = object_key
    return [
        {
            "pk": pk,
            "sk": f"FACET#{name}",
            "gsi2pk": _facet_partition(merchant_id, kind, name, value, shard),
            "gsi2sk": f"{created_ms:013d}#{object_id}",
            "of_sk": sk,
            **{f"facet_{other}": v for other, v in present.items()},
        }
        for name, value in present.items()
    ]


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


def get_owned_many(
    store: Store, merchant_id: str, object_ids: list[str], kind: str
) -> dict[str, dict[str, Any]]:
    """The merchant's objects among `object_ids`, by id, in one batch read: those missing or
    another merchant's are left out."""
    wanted = {i for i in object_ids if i.startswith(kind + "_")}
    try:
        items = store.get_many([object_key(i) for i in sorted(wanted)])
    except StoreUnavailable as exc:
        raise store_unavailable() from exc
    return {
        str(item["id"]): item
        for item in items
        if item.get("merchant") == merchant_id and item.get("id") in wanted
    }


def _cursor(store: Store, merchant_id: str, object_id: str, kind: str, param: str) -> str:
    """Where a cursor's object sits in the list: 404 for one no longer listed (deleted)."""
    position = get_owned(store, merchant_id, object_id, kind, param).get("gsi1sk")
    if position is None:
        raise ResourceMissingError(KINDS.get(kind, ("", "", "object"))[2], object_id, param=param)
    return str(position)


def page(
    store: Store,
    merchant_id: str,
    kind: str,
    *,
    limit: int,
    starting_after: str | None,
    ending_before: str | None,
    filters: list[tuple[str, str, Any]] | None = None,
    created: Created | None = None,
    facets: Mapping[str, Sequence[str]] | None = None,
) -> ItemPage:
    """A page of the merchant's objects of `kind`, newest first; `created` narrows the
    index range each shard is queried over, so a filter reads only what it returns."""
    lowest, highest = (created or Created()).index_range()
    before = after = None
    if starting_after:
        before = _cursor(store, merchant_id, starting_after, kind, "starting_after")
    elif ending_before:
        after = _cursor(store, merchant_id, ending_before, kind, "ending_before")
    newest_first = after is None

    # Without a facet, each shard of the merchant's list; with one, each shard of the list of
    # each value asked for (the first facet), the other facets as conditions.
    partitions: list[tuple[str, str, str, list[tuple[str, str, Any]]]]
    if facets:
        (name, values), *others = [(n, v) for n, v in facets.items() if v]
        conditions = [*(filters or [])]
        for other, other_values in others:
            if len(other_values) != 1:
                raise ValueError("only the first facet may ask for several values")
            conditions.append((f"facet_{other}", "=", other_values[0]))
        partitions = [
            (FACET_INDEX, "gsi2pk", _facet_partition(merchant_id, kind, name, v, shard), conditions)
            for v in dict.fromkeys(values)
            for shard in range(FACET_SHARDS)
        ]
    else:
        partitions = [
            (INDEX, "gsi1pk", _list_partition(merchant_id, kind, shard), filters or [])
            for shard in range(list_shards(kind))
        ]

    def one_partition(partition: tuple[str, str, str, list[tuple[str, str, Any]]]) -> Any:
        index, pk_name, pk, conditions = partition
        return store.query_index(
            index,
            pk_name,
            pk,
            "gsi2sk" if index == FACET_INDEX else "gsi1sk",
            before=before,
            after=after,
            newest_first=newest_first,
            limit=limit + 1,
            filters=conditions or None,
            lowest=lowest,
            highest=highest,
        )

    try:
        found = side_by_side(one_partition, partitions)
        sort_key = "gsi2sk" if facets else "gsi1sk"
        items = sorted(
            (i for part in found for i in part),
            key=lambda i: str(i[sort_key]),
            reverse=newest_first,
        )
        has_more = len(items) > limit
        items = items[:limit]
        if facets:  # facet items point at their objects: fetch them, in the same order
            objects = {
                (o["pk"], o["sk"]): o
                for o in store.get_many([(i["pk"], i["of_sk"]) for i in items])
            }
            items = [
                objects[(i["pk"], i["of_sk"])] for i in items if (i["pk"], i["of_sk"]) in objects
            ]
    except StoreUnavailable as exc:
        raise store_unavailable() from exc
    if after is not None:
        items.reverse()  # fetched oldest first, to find the page just before the cursor
    return ItemPage(items, has_more)


@dataclass(frozen=True)
class ItemPage:
    """A page of stored items, newest first."""

    items: list[dict[str, Any]]
    has_more: bool

    def of(self, model: Callable[[dict[str, Any]], M]) -> Page[M]:
        return Page(items=tuple(model(i) for i in self.items), has_more=self.has_more)


def page_in_memory(
    objects: Sequence[M],
    *,
    limit: int,
    starting_after: str | None,
    ending_before: str | None,
    created: Created | None = None,
    kind: str = "object",
) -> Page[M]:
    """A page of a short list held in one item (a charge's refunds), newest first."""
    if created is not None:
        objects = [o for o in objects if created.admits(o.created)]
    ordered = sorted(
        objects,
        key=lambda o: (o.created, getattr(o, "created_ms", 0), o.id),
        reverse=True,
    )
    ids = [o.id for o in ordered]
    if starting_after:
        if starting_after not in ids:
            raise ResourceMissingError(kind, starting_after, param="starting_after")
        rest = ordered[ids.index(starting_after) + 1 :]
        return Page(items=tuple(rest[:limit]), has_more=len(rest) > limit)
    if ending_before:
        if ending_before not in ids:
            raise ResourceMissingError(kind, ending_before, param="ending_before")
        rest = ordered[: ids.index(ending_before)]
        return Page(items=tuple(rest[-limit:]), has_more=len(rest) > limit)
    return Page(items=tuple(ordered[:limit]), has_more=len(ordered) > limit)
