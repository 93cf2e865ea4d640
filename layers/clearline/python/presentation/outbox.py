"""What the relay publishes: each new event item on the table's stream, rendered as a
Stripe event in one EventBridge entry. Consumers rely on the event id to ignore what they
have seen."""

from __future__ import annotations

import json
from typing import Any

from clearline.models import Event
from clearline.topology import EVENT_SOURCE
from presentation.events import render_event
from presentation.links import Links


def is_event_item(item: dict[str, Any]) -> bool:
    return str(item.get("pk", "")).startswith("EVENT#") and item.get("sk") == "EVENT"


def webhook_detail(item: dict[str, Any], links: Links) -> dict[str, Any]:
    """What a webhook delivery carries for an event item: its merchant and the event."""
    return {"merchant": item["merchant"], "event": render_event(Event.from_item(item), links)}


def entry_for(new_image: dict[str, Any], bus_name: str, links: Links) -> dict[str, Any] | None:
    """The PutEvents entry for a newly inserted item, or None if it is not an event."""
    if not is_event_item(new_image):
        return None
    return {
        "Source": EVENT_SOURCE,
        "DetailType": new_image["type"],
        "Detail": json.dumps(webhook_detail(new_image, links)),
        "EventBusName": bus_name,
    }
