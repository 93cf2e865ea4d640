"""The webhook endpoint object."""

from __future__ import annotations

from typing import Any

from clearline.models import WebhookEndpoint


def render_webhook_endpoint(endpoint: WebhookEndpoint) -> dict[str, Any]:
    if endpoint.deleted:
        return {"id": endpoint.id, "object": "webhook_endpoint", "deleted": True}
    rendered: dict[str, Any] = {
        "id": endpoint.id,
        "object": "webhook_endpoint",
        "api_version": endpoint.api_version,
        "application": None,
        "created": endpoint.created,
        "description": endpoint.description,
        "enabled_events": list(endpoint.enabled_events),
        "livemode": endpoint.livemode,
        "metadata": dict(endpoint.metadata),
        "status": endpoint.status,
        "url": endpoint.url,
    }
    if endpoint.secret is not None:  # shown once, in the answer to the create
        rendered["secret"] = endpoint.secret
    return rendered
