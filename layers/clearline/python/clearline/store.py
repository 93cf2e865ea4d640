"""DynamoDB access for the single main table: items in, items out, transactions.

Items are plain dicts of Python values; numbers come back as int. The low-level client
is used (not the resource API) because TransactWriteItems needs it anyway and it imports
faster on a cold start.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import ClientError

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()

# Fail fast and let the caller decide: the API answers a retryable error rather than
# holding a request open through long SDK back-off.
_CLIENT_CONFIG = Config(
    retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=2, read_timeout=5
)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, set):
        return {_plain(v) for v in value}
    return value


def serialize(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _serializer.serialize(v) for k, v in item.items() if v is not None}


def deserialize(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(_deserializer.deserialize(v)) for k, v in raw.items()}


class TransactionCancelled(Exception):
    """A TransactWriteItems was refused; `reasons` has one code per item, in order."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__(f"transaction cancelled: {reasons}")
        self.reasons = reasons

    @property
    def condition_failed(self) -> bool:
        return "ConditionalCheckFailed" in self.reasons

    def failed_at(self, index: int) -> bool:
        return index < len(self.reasons) and self.reasons[index] == "ConditionalCheckFailed"


class StoreUnavailable(Exception):
    """DynamoDB did not answer or refused for a reason other than a condition."""


class StoreRejected(Exception):
    """DynamoDB refused the request itself (a validation error): retrying cannot fix it."""


# Per-item cancellation reasons that no retry of the same transaction can get past.
_PERMANENT_REASONS = frozenset({"ValidationError", "ItemCollectionSizeLimitExceeded"})


@dataclass
class Write:
    """One item of a TransactWriteItems."""

    action: str  # Put | Update | ConditionCheck
    key: dict[str, Any] | None = None
    item: dict[str, Any] | None = None
    update: str | None = None
    condition: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    table: str | None = None  # another table than the store's (a request's own record)

    @classmethod
    def put_new(cls, item: dict[str, Any]) -> Write:
        """Put an item that must not exist yet: a retry can never write it twice."""
        return cls("Put", item=item, condition="attribute_not_exists(pk)")

    @classmethod
    def add(cls, key: dict[str, Any], counters: dict[str, int]) -> Write:
        names = {f"#c{i}": name for i, name in enumerate(counters)}
        values = {f":c{i}": amount for i, amount in enumerate(counters.values())}
        update = "ADD " + ", ".join(f"#c{i} :c{i}" for i in range(len(counters)))
        return cls("Update", key=key, update=update, values=values, names=names)


class Store:
    def __init__(self, table_name: str, client: Any = None) -> None:
        self.table_name = table_name
        self.client = client or boto3.client("dynamodb", config=_CLIENT_CONFIG)

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, operation)(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "TransactionCanceledException":
                reasons = [
                    r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])
                ]
                if _PERMANENT_REASONS & set(reasons):
                    raise StoreRejected(f"{operation} refused: {reasons}") from exc
                raise TransactionCancelled(reasons or ["Unknown"]) from exc
            if code == "ConditionalCheckFailedException":
                raise TransactionCancelled(["ConditionalCheckFailed"]) from exc
            if code == "ValidationException":
                raise StoreRejected(f"{operation} refused: {exc}") from exc
            raise StoreUnavailable(f"{operation} failed: {code}") from exc
        except UnicodeError as exc:  # a string no encoding can carry: no retry will help
            raise StoreRejected(f"{operation} refused: {exc}") from exc
        except Exception as exc:  # connection errors, timeouts
            raise StoreUnavailable(f"{operation} failed: {type(exc).__name__}") from exc

    def get(self, pk: str, sk: str) -> dict[str, Any] | None:
        response = self._call(
            "get_item",
            TableName=self.table_name,
            Key=serialize({"pk": pk, "sk": sk}),
            ConsistentRead=True,
        )
        raw = response.get("Item")
        return deserialize(raw) if raw else None

    def get_many(self, keys: list[tuple[str, str]]) -> list[dict[str, Any]]:
        keys = list(dict.fromkeys(keys))  # BatchGetItem refuses a key given twice
        found: list[dict[str, Any]] = []
        for start in range(0, len(keys), 100):
            pending: dict[str, Any] = {
                self.table_name: {
                    "Keys": [
                        serialize({"pk": pk, "sk": sk}) for pk, sk in keys[start : start + 100]
                    ],
                    "ConsistentRead": True,
                }
            }
            while pending:
                response = self._call("batch_get_item", RequestItems=pending)
                found.extend(deserialize(r) for r in response["Responses"].get(self.table_name, []))
                pending = response.get("UnprocessedKeys") or {}
        return found

    def put(self, item: dict[str, Any], *, if_new: bool = False) -> None:
        kwargs: dict[str, Any] = {"TableName": self.table_name, "Item": serialize(item)}
        if if_new:
            kwargs["ConditionExpression"] = "attribute_not_exists(pk)"
        self._call("put_item", **kwargs)

    def query_index(
        self,
        index: str,
        pk_name: str,
        pk: str,
        sk_name: str,
        *,
        before: str | None = None,
        after: str | None = None,
        newest_first: bool = True,
        limit: int = 10,
        filters: list[tuple[str, str, Any]] | None = None,
        lowest: str | None = None,
        highest: str | None = None,
    ) -> list[dict[str, Any]]:
        """Up to `limit` items of one index partition, optionally filtered by
        (attribute, operator, value) conditions, reading on past filtered-out items.
        `before`/`after` bound the sort key exclusively (a cursor), `lowest`/`highest`
        inclusively (a range); all of them go into the key condition."""
        condition = "#pk = :pk"
        names = {"#pk": pk_name}
        values: dict[str, Any] = {":pk": pk}
        if after is not None:
            # Sort keys are fixed-shape strings, so the next one after `after` is at least
            # `after` + " " (no key extends another).
            lowest = max(lowest or "", after + " ")
        if before is not None:
            # ... and every key below `before` is at most its last character less one,
            # followed by "~" (which sorts after every character a key holds).
            below = before[:-1] + chr(ord(before[-1]) - 1) + "~"
            highest = below if highest is None else min(highest, below)
        if highest == "" or (lowest and highest is not None and lowest > highest):
            return []  # an empty range: DynamoDB refuses BETWEEN with its ends reversed
        if lowest and highest is not None:
            condition += " AND #sk BETWEEN :lowest AND :highest"
            values.update({":lowest": lowest, ":highest": highest})
        elif lowest:
            condition += " AND #sk >= :lowest"
            values[":lowest"] = lowest
        elif highest is not None:
            condition += " AND #sk <= :highest"
            values[":highest"] = highest
        if lowest or highest is not None:
            names["#sk"] = sk_name
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": index,
            "KeyConditionExpression": condition,
            "ScanIndexForward": not newest_first,
            "Limit": limit,
        }
        if filters:
            clauses = []
            for i, (attribute, operator, value) in enumerate(filters):
                names[f"#f{i}"] = attribute
                values[f":f{i}"] = value
                clauses.append(f"#f{i} {operator} :f{i}")
            kwargs["FilterExpression"] = " AND ".join(clauses)
        kwargs["ExpressionAttributeNames"] = names
        kwargs["ExpressionAttributeValues"] = serialize(values)
        items: list[dict[str, Any]] = []
        while len(items) < limit:
            response = self._call("query", **kwargs)
            items.extend(deserialize(raw) for raw in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                break
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return items[:limit]

    def add_to_sets(self, pk: str, sk: str, members: Mapping[str, str], *, expires_at: int) -> None:
        """Add one member to each named string set of an item (created if missing), and set
        when it expires: atomic, and adding a member twice changes nothing."""
        names = {f"#s{i}": name for i, name in enumerate(members)}
        values = {f":s{i}": {"SS": [value]} for i, value in enumerate(members.values())}
        adds = ", ".join(f"#s{i} :s{i}" for i in range(len(members)))
        self._call(
            "update_item",
            TableName=self.table_name,
            Key=serialize({"pk": pk, "sk": sk}),
            UpdateExpression=f"ADD {adds} SET expires_at = :expires_at",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={**values, ":expires_at": {"N": str(expires_at)}},
        )

    def delete(self, pk: str, sk: str) -> None:
        self._call("delete_item", TableName=self.table_name, Key=serialize({"pk": pk, "sk": sk}))

    def query_partition(
        self, pk: str, sk_prefix: str = "", limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Every item of one partition (whose sk starts with sk_prefix), strongly consistent;
        with `limit`, the first that many in sort-key order."""
        condition = "pk = :pk" + (" AND begins_with(sk, :sk)" if sk_prefix else "")
        values = {":pk": pk, **({":sk": sk_prefix} if sk_prefix else {})}
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": serialize(values),
            "ConsistentRead": True,
            **({"Limit": limit} if limit else {}),
        }
        items: list[dict[str, Any]] = []
        while True:
            response = self._call("query", **kwargs)
            items.extend(deserialize(raw) for raw in response.get("Items", []))
            if "LastEvaluatedKey" not in response or (limit and len(items) >= limit):
                return items[:limit] if limit else items
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def scan(self, prefix: str | None = None) -> Iterator[dict[str, Any]]:
        """Every item whose pk starts with prefix: for verification tools, not request paths."""
        kwargs: dict[str, Any] = {"TableName": self.table_name}
        if prefix:
            kwargs["FilterExpression"] = "begins_with(pk, :p)"
            kwargs["ExpressionAttributeValues"] = serialize({":p": prefix})
        while True:
            response = self._call("scan", **kwargs)
            for raw in response.get("Items", []):
                yield deserialize(raw)
            if "LastEvaluatedKey" not in response:
                return
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def transact(self, writes: list[Write]) -> None:
        items = []
        for write in writes:
            body: dict[str, Any] = {"TableName": write.table or self.table_name}
            if write.item is not None:
                body["Item"] = serialize(write.item)
            if write.key is not None:
                body["Key"] = serialize(write.key)
            if write.update:
                body["UpdateExpression"] = write.update
            if write.condition:
                body["ConditionExpression"] = write.condition
            if write.values:
                body["ExpressionAttributeValues"] = serialize(write.values)
            if write.names:
                body["ExpressionAttributeNames"] = write.names
            items.append({write.action: body})
        self._call("transact_write_items", TransactItems=items)


def commit(store: Store, writes: list[Write]) -> TransactionCancelled | None:
    """Write all or nothing. Returns None when written, or the cancellation when a
    condition failed (the caller knows which business rule that was). A conflict with a
    concurrent transaction, or an unreachable store, is refused as retryable: never guessed.
    A transaction the store refuses outright raises StoreRejected.
    """
    from clearline.errors import ConflictError, store_unavailable

    try:
        store.transact(writes)
        return None
    except TransactionCancelled as exc:
        if exc.condition_failed:
            return exc
        raise ConflictError("The object was being changed by another request; retry.") from exc
    except StoreUnavailable as exc:
        raise store_unavailable() from exc
