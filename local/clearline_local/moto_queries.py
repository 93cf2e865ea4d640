"""Queries for the local stack's moto server, without sorting the whole table each time.

moto answers every Query by sorting every item of the table by its primary key (DynamoType
comparisons, in Python) and then keeping those of the asked partition. Once the main table
holds a few thousand items, that sort is most of a query's time: a list page queries 32
index partitions, and reconciliation queries a day's due movements. The query sorts what it
keeps by the keys it reads in afterwards, primary key included as the tie-break, so the
first sort decides nothing; without it a query of the table reads its one partition, and a
query of an index looks at each item once. Scans keep the sorted order their pages walk.
"""

from __future__ import annotations

import threading
from typing import Any

from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import Table

_query = Table.query
_all_items = Table.all_items
# The items the query running on this thread looks at, in place of the sorted table.
_querying = threading.local()


def _partition(table: Table, hash_key: DynamoType) -> list[Item]:
    found = table.items.get(hash_key)  # not [], which would add an empty partition
    if found is None:
        return []
    return list(found.values()) if table.range_key_attr else [found]  # type: ignore[list-item]


def _every_item(table: Table) -> list[Item]:
    if not table.range_key_attr:
        return list(table.items.values())  # type: ignore[arg-type]
    return [item for partition in table.items.values() for item in partition.values()]


def query(
    self: Table,
    hash_key: DynamoType | None,
    range_comparison: str | None,
    range_objs: list[DynamoType],
    limit: int,
    exclusive_start_key: dict[str, Any],
    scan_index_forward: bool,
    projection_expressions: list[list[str]] | None,
    index_name: str | None = None,
    *args: Any,
    **kwargs: Any,
) -> Any:
    if index_name is None and hash_key is not None:
        items = _partition(self, hash_key)
    else:
        items = _every_item(self)
    _querying.table, _querying.items = self, items
    try:
        return _query(
            self,
            hash_key,
            range_comparison,
            range_objs,
            limit,
            exclusive_start_key,
            scan_index_forward,
            projection_expressions,
            index_name,
            *args,
            **kwargs,
        )
    finally:
        _querying.table = _querying.items = None


def all_items(self: Table) -> list[Item]:
    if getattr(_querying, "table", None) is self:
        return list(_querying.items)
    return _all_items(self)


def install() -> None:
    Table.query = query  # type: ignore[method-assign]
    Table.all_items = all_items  # type: ignore[method-assign]
