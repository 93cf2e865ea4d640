"""The audit trail: one append-only item per state change, written in the change's transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # merchants record their own creation through the transition writer
    from clearline.merchants import Merchant


@dataclass(frozen=True)
class Caller:
    """Who is asking, for the audit trail: a merchant's API key, or (`actor`) a person
    acting for the merchant, such as a dashboard session."""

    merchant: Merchant
    request_id: str
    actor: str | None = None


def audit_item(
    object_pk: str,
    object_id: str,
    *,
    caller: Caller | None,
    operation: str,
    from_state: str | None,
    to_state: str,
    now: float,
    item_sk: str = "",
) -> dict[str, Any]:
    """(item, operation, millisecond) must be unique: the item is written once, by put_new.
    `item_sk` names which item of the object's partition changed (an operation record)."""
    return {
        "pk": object_pk,
        "sk": f"AUDIT#{int(now * 1000):013d}#{item_sk}#{operation}",
        "object": object_id,
        "operation": operation,
        "actor": (caller.actor or caller.merchant.id) if caller else "clearline",
        "request_id": caller.request_id if caller else None,
        "from_state": from_state,
        "to_state": to_state,
        "at": int(now * 1000),
    }
