"""The vault's table: Clearline's `Store`, plus the single-item updates the vault needs
(counters that answer their new value, and conditional state changes)."""

from __future__ import annotations

from typing import Any

from clearline.store import Store, deserialize, serialize


class VaultStore(Store):
    def update(
        self,
        pk: str,
        sk: str,
        expression: str,
        values: dict[str, Any] | None = None,
        *,
        names: dict[str, str] | None = None,
        condition: str | None = None,
    ) -> dict[str, Any]:
        """Updates one item and answers its attributes as they are afterwards. A failed
        `condition` raises `TransactionCancelled` (as every write of the store does)."""
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": serialize({"pk": pk, "sk": sk}),
            "UpdateExpression": expression,
            "ReturnValues": "ALL_NEW",
        }
        if values:
            kwargs["ExpressionAttributeValues"] = serialize(values)
        if names:
            kwargs["ExpressionAttributeNames"] = names
        if condition:
            kwargs["ConditionExpression"] = condition
        response = self._call("update_item", **kwargs)
        return deserialize(response.get("Attributes", {}))


def live(item: dict[str, Any] | None, now: float) -> dict[str, Any] | None:
    """The item unless its TTL has passed: DynamoDB deletes expired items only within a
    day or two, and until then reads still find them."""
    if item is None:
        return None
    expires_at = item.get("expires_at")
    return None if expires_at is not None and expires_at <= now else item
