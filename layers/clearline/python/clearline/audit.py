"""The audit trail: one append-only item per state change, written in the change's transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clearline.merchants import Merchant


@dataclass(frozen=True)
class Caller:
    """Who is asking, for the audit trail."""

    merchant: Merchant
    request_id: str


def audit_item(
    object_pk: str,
    object_id: str,
    *,
    caller: Caller | None,
    operation: str,
    from_state: str | None,
    to_state: str,
    now: float,
) -> dict[str, Any]:
    """`operation` must be unique for the object (written with put_new: never twice)."""
    return {
        "pk": object_pk,
        "sk": f"AUDIT#{int(now * 1000):013d}#{operation}",
        "object": object_id,
        "operation": operation,
        "actor": caller.merchant.id if caller else "clearline",
        "request_id": caller.request_id if caller else None,
        "from_state": from_state,
        "to_state": to_state,
        "at": int(now * 1000),
    }
