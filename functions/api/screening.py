"""What is refused before a request is routed: a card number or a NUL character in its
path, query string or the headers Clearline keeps (stores, echoes or logs).

Routing would otherwise echo them first: a 404 repeats the path, a validation error its
input. Bodies are screened after they are parsed (see `body_params`), where the
parameter that holds the card number can be named.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from clearline.cards import card_number_refusal, contains_card_number
from clearline.errors import InvalidRequestError
from clearline.params import connect_not_supported
from clearline.versions import checked_version

# Idempotency-Key is stored with the request it guards; the Stripe-* headers are echoed.
KEPT_HEADERS = ("idempotency-key", "stripe-account", "stripe-version", "stripe-context")


def _nul_refusal(location: str) -> InvalidRequestError:
    return InvalidRequestError(
        "The request contains a NUL character, which no parameter may hold.",
        param=location,
        code="parameter_invalid",
    )


def _query_pairs(event: dict[str, Any]) -> list[tuple[str, str]]:
    multi = event.get("multiValueQueryStringParameters") or {}
    if multi:
        return [(name, value) for name, values in multi.items() for value in values or []]
    return list((event.get("queryStringParameters") or {}).items())


def _screen(location: str, text: str) -> InvalidRequestError | None:
    if "\x00" in text:
        return _nul_refusal(location)
    if contains_card_number(text):
        return card_number_refusal(location)
    return None


def refusal(event: dict[str, Any]) -> InvalidRequestError | None:
    """The error for a request that must not be routed, or None."""
    path = event.get("path") or ""
    # Screened as sent and as decoded: `%20` and `%2F` are how a URL spells separators.
    found = _screen("path", path) or _screen("path", unquote(path))
    for name, value in _query_pairs(event):
        # Named by the parameter (`type`), unless the name itself is what must not be echoed.
        top = name.split("[", 1)[0]
        clean = _screen("query", name) is None
        found = found or _screen(top if clean else "query", f"{name}={value}")
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    for name in KEPT_HEADERS:
        found = found or _screen(f"header:{name}", headers.get(name) or "")
    return found


def asked_version(event: dict[str, Any]) -> str | None:
    """The API version the request asks for (None: the merchant's default); a 400 for a
    malformed one, and for `Stripe-Account`: Connect is not supported, and acting on the
    platform's own account instead would be worse than refusing."""
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    if headers.get("stripe-account"):
        raise connect_not_supported("Stripe-Account")
    version = headers.get("stripe-version")
    return checked_version(version) if version else None
