"""Radar's value lists, their items, reviews and early fraud warnings in Stripe's shapes."""

from __future__ import annotations

from typing import Any

from clearline.models import EarlyFraudWarning, Review, ValueList, ValueListItem


def render_value_list_item(item: ValueListItem) -> dict[str, Any]:
    if item.deleted:
        return {"id": item.id, "object": "radar.value_list_item", "deleted": True}
    return {
        "id": item.id,
        "object": "radar.value_list_item",
        "created": item.created,
        "created_by": "",  # an API key, not a dashboard user
        "livemode": False,
        "value": item.value,
        "value_list": item.value_list,
    }


def render_value_list(value_list: ValueList) -> dict[str, Any]:
    if value_list.deleted:
        return {"id": value_list.id, "object": "radar.value_list", "deleted": True}
    return {
        "id": value_list.id,
        "object": "radar.value_list",
        "alias": value_list.alias,
        "created": value_list.created,
        "created_by": "",
        "item_type": value_list.item_type,
        "list_items": {
            "object": "list",
            "data": [render_value_list_item(i) for i in value_list.list_items],
            "has_more": value_list.has_more_items,
            "url": f"/v1/radar/value_list_items?value_list={value_list.id}",
        },
        "livemode": False,
        "metadata": dict(value_list.metadata),
        "name": value_list.name,
    }


def _location(country: str | None) -> dict[str, Any] | None:
    # Clearline places an address in its country, no nearer.
    if country is None:
        return None
    fields = ("city", "latitude", "longitude", "region")
    return {"country": country, **dict.fromkeys(fields)}


def render_review(review: Review) -> dict[str, Any]:
    return {
        "id": review.id,
        "object": "review",
        "billing_zip": None,
        "charge": review.charge,
        "closed_reason": review.closed_reason,
        "created": review.created,
        # The browser's that gave the card, when one did (a server's own card has none).
        "ip_address": review.ip_address,
        "ip_address_location": _location(review.ip_country),
        "livemode": False,
        "open": review.open,
        "opened_reason": review.opened_reason,
        "payment_intent": review.payment_intent,
        "reason": review.reason,
        "session": None,
    }


def render_early_fraud_warning(warning: EarlyFraudWarning) -> dict[str, Any]:
    return {
        "id": warning.id,
        "object": "radar.early_fraud_warning",
        "actionable": warning.actionable,
        "charge": warning.charge,
        "created": warning.created,
        "fraud_type": warning.fraud_type,
        "livemode": False,
        "payment_intent": warning.payment_intent,
    }
