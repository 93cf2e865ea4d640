"""Events (`evt_`): the outbox. Each state change writes its event item in the same
transaction as the change; the relay publishes new event items from the table's stream.

Event ids derive from (object, operation), so an event can be written only once, and a
consumer that sees one twice (a relay retry) can tell.
"""

from __future__ import annotations

from typing import Any

from clearline import listing
from clearline.audit import Caller
from clearline.ids import derived_id
from clearline.store import Write

API_VERSION = "2026-10-29"


def event_write(
    merchant_id: str,
    event_type: str,
    data_object: dict[str, Any],
    *,
    operation: str,
    now: float,
    caller: Caller | None = None,
    idempotency_key: str | None = None,
) -> Write:
    """The put of one event item, for the transaction that makes the change it announces."""
    event_id = derived_id("evt", data_object["id"], operation)
    return Write.put_new(
        {
            "pk": f"EVENT#{event_id}",
            "sk": "EVENT",
            **listing.list_keys(merchant_id, "evt", int(now * 1000), event_id),
            "id": event_id,
            "merchant": merchant_id,
            "type": event_type,
            "created": int(now),
            "data": {"object": data_object},
            "request": {
                "id": caller.request_id if caller else None,
                "idempotency_key": idempotency_key,
            },
        }
    )


def event_object(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": item["id"],
        "object": "event",
        "api_version": API_VERSION,
        "created": item["created"],
        "data": item["data"],
        "livemode": False,
        "pending_webhooks": 0,
        "request": item["request"],
        "type": item["type"],
    }
