"""Events (`evt_`): the outbox. Each state change writes its event item in the same
transaction as the change; the relay publishes new event items from the table's stream.

An event stores a snapshot of the domain model it announces (and, for an update, the
snapshot before it), not a rendering: the edges render it in Stripe's shape when it is
read or published.

Event ids derive from (object, operation), so an event can be written only once, and a
consumer that sees one twice (a relay retry) can tell.
"""

from __future__ import annotations

from typing import Any

from clearline import listing
from clearline.audit import Caller
from clearline.ids import derived_id
from clearline.models import Model
from clearline.store import Write


def event_facets(event_type: str, *, delivered: bool) -> dict[str, str]:
    """What an event's list can be filtered by: its type, and whether every subscribed
    webhook endpoint has accepted it (false until the dispatcher says so)."""
    return {"type": event_type, "delivery_success": "true" if delivered else "false"}


def event_writes(
    merchant_id: str,
    event_type: str,
    data_object: Model,
    *,
    operation: str,
    now: float,
    previous: Model | None = None,
    caller: Caller | None = None,
    idempotency_key: str | None = None,
) -> list[Write]:
    """The puts of one event item (and its index item by type), for the transaction that
    makes the change it announces."""
    snapshot = data_object.snapshot()
    # An object without an id (the balance) is the merchant's own.
    event_id = derived_id("evt", snapshot.get("id") or merchant_id, operation)
    data: dict[str, Any] = {"kind": snapshot["kind"], "object": snapshot}
    if previous is not None:
        data["previous"] = previous.snapshot()
    created_ms = int(now * 1000)
    key = (f"EVENT#{event_id}", "EVENT")
    by_type = listing.facet_items(
        merchant_id, "evt", created_ms, key, event_id, event_facets(event_type, delivered=False)
    )
    event = Write.put_new(
        {
            "pk": key[0],
            "sk": key[1],
            **listing.list_keys(merchant_id, "evt", created_ms, event_id),
            "id": event_id,
            "merchant": merchant_id,
            "type": event_type,
            "created": int(now),
            "data": data,
            "request": {
                "id": caller.request_id if caller else None,
                "idempotency_key": idempotency_key,
            },
        }
    )
    return [event, *(Write.put_new(item) for item in by_type)]
