"""The local stack's faster moto queries answer exactly as stock moto does: the same items,
in the same order, paged at the same keys, for queries of the table and of an index, both
ways, with and without key conditions and limits."""

from __future__ import annotations

import random
from typing import Any

import pytest
from moto.dynamodb.models.table import Table

from clearline.store import serialize
from clearline.topology import MAIN_TABLE
from clearline_local import moto_queries


def seeded(aws: Any) -> None:
    rng = random.Random(7)
    for n in range(300):
        item = {"pk": f"P#{n % 7}", "sk": f"S#{rng.randrange(1000):04d}#{n}", "n": n}
        if n % 3:  # only some items are in the index, several to one sort key
            item |= {"due_pk": f"D#{n % 4}", "due_sk": f"{rng.randrange(20):03d}"}
        aws.put_item(TableName=MAIN_TABLE.name, Item=serialize(item))


QUERIES: list[dict[str, Any]] = [
    {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": "P#3"}},
    {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": "P#none"}},
    {
        "KeyConditionExpression": "pk = :p AND begins_with(sk, :s)",
        "ExpressionAttributeValues": {":p": "P#2", ":s": "S#0"},
        "ScanIndexForward": False,
    },
    {"KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": "P#1"}, "Limit": 9},
    {
        "IndexName": "by_due",
        "KeyConditionExpression": "due_pk = :d",
        "ExpressionAttributeValues": {":d": "D#1"},
    },
    {
        "IndexName": "by_due",
        "KeyConditionExpression": "due_pk = :d AND due_sk BETWEEN :a AND :b",
        "ExpressionAttributeValues": {":d": "D#2", ":a": "005", ":b": "012"},
        "ScanIndexForward": False,
        "Limit": 7,
    },
    {
        "IndexName": "by_due",
        "KeyConditionExpression": "due_pk = :d",
        "ExpressionAttributeValues": {":d": "D#none"},
    },
]


def every_page(aws: Any, query: dict[str, Any]) -> list[tuple[list[Any], Any]]:
    """Each page's items and the key it ended at, until the last page."""
    asked = {
        "TableName": MAIN_TABLE.name,
        **query,
        "ExpressionAttributeValues": serialize(query["ExpressionAttributeValues"]),
    }
    pages = []
    while True:
        answer = aws.query(**asked)
        pages.append((answer["Items"], answer.get("LastEvaluatedKey")))
        if "LastEvaluatedKey" not in answer:
            return pages
        asked["ExclusiveStartKey"] = answer["LastEvaluatedKey"]


@pytest.mark.parametrize("query", QUERIES)
def test_a_query_answers_as_stock_moto_does(
    aws: Any, monkeypatch: pytest.MonkeyPatch, query: dict[str, Any]
) -> None:
    seeded(aws)
    stock = every_page(aws, query)
    monkeypatch.setattr(Table, "query", moto_queries.query)
    monkeypatch.setattr(Table, "all_items", moto_queries.all_items)
    assert every_page(aws, query) == stock
    if not any("none" in value for value in query["ExpressionAttributeValues"].values()):
        assert stock[0][0]  # the query finds something, so the comparison says something
    # A scan still walks the table in its sorted order.
    monkeypatch.undo()
    scanned = aws.scan(TableName=MAIN_TABLE.name)["Items"]
    monkeypatch.setattr(Table, "all_items", moto_queries.all_items)
    assert aws.scan(TableName=MAIN_TABLE.name)["Items"] == scanned
