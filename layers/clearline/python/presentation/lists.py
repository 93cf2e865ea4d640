"""Stripe's list envelope."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def list_object(url: str, data: Sequence[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "url": url, "has_more": has_more, "data": list(data)}


def search_result(
    url: str, data: Sequence[dict[str, Any]], next_page: str | None
) -> dict[str, Any]:
    return {
        "object": "search_result",
        "url": url,
        "has_more": next_page is not None,
        "next_page": next_page,
        "data": list(data),
    }
