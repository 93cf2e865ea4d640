"""The event object: the snapshot it stored, rendered as the object looked then."""

from __future__ import annotations

from typing import Any

from clearline.models import Event
from clearline.versions import CURRENT_VERSION
from presentation.links import Links
from presentation.objects import model_of, render


def previous_attributes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Stripe's `previous_attributes`: the old value of every field the change touched.
    In a hash (metadata), only the keys that changed, a key that was added as null."""
    changed: dict[str, Any] = {}
    for name in before.keys() | after.keys():
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict) and name == "metadata":
            changed[name] = {
                k: old.get(k) for k in old.keys() | new.keys() if old.get(k) != new.get(k)
            }
        else:
            changed[name] = old
    return changed


def render_event(event: Event, links: Links) -> dict[str, Any]:
    shown = render(model_of(event.object_kind, event.object), links)
    data: dict[str, Any] = {"object": shown}
    if event.previous is not None:
        before = render(model_of(event.object_kind, event.previous), links)
        data["previous_attributes"] = previous_attributes(before, shown)
    return {
        "id": event.id,
        "object": "event",
        "api_version": CURRENT_VERSION,
        "created": event.created,
        "data": data,
        "livemode": False,
        "pending_webhooks": 0,
        "request": {"id": event.request_id, "idempotency_key": event.idempotency_key},
        "type": event.type,
    }
