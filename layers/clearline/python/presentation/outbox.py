"""What the relay publishes: each new event item on the table's stream, as one
EventBridge entry. Consumers rely on the event id to ignore what they have seen."""

from __future__ import annotations

import json
from typing import Any

from clearline.events import event_object
from clearline.topology import EVENT_SOURCE


def entry_for(new_image: dict[str, Any], bus_name: str) -> dict[str, Any] | None:
    """The PutEvents entry for a newly inserted item, or None if it is not an event."""
    if not str(new_image.get("pk", "")).startswith("EVENT#") or new_image.get("sk") != "EVENT":
        return None
    return {
        "Source": EVENT_SOURCE,
        "DetailType": new_image["type"],
        "Detail": json.dumps({"merchant": new_image["merchant"], "event": event_object(new_image)}),
        "EventBusName": bus_name,
    }
