"""Stripe's `expand[]`: ids in a response replaced by the objects they name.

A path is dotted (`balance_transaction`, `charge.balance_transaction`), starts with
`data.` on a list, and goes at most four fields deep. Paths are checked against what each
object type can expand before anything is fetched, so a path that cannot be expanded is a
400 naming it, never silence; ids are fetched as the caller's merchant, so only objects it
owns can appear.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from clearline.errors import InvalidRequestError

MAX_DEPTH = 4
# object type -> expandable field -> the types the field's id can name
EXPANDABLE: dict[str, dict[str, tuple[str, ...]]] = {
    "charge": {
        "customer": ("customer",),
        "payment_intent": ("payment_intent",),
        "balance_transaction": ("balance_transaction",),
        "failure_balance_transaction": ("balance_transaction",),
    },
    "refund": {
        "charge": ("charge",),
        "payment_intent": ("payment_intent",),
        "balance_transaction": ("balance_transaction",),
        "failure_balance_transaction": ("balance_transaction",),
    },
    "balance_transaction": {"source": ("charge", "refund", "dispute", "payout")},
    "dispute": {"charge": ("charge",), "payment_intent": ("payment_intent",)},
    "payout": {
        "balance_transaction": ("balance_transaction",),
        "failure_balance_transaction": ("balance_transaction",),
    },
    "payment_intent": {
        "customer": ("customer",),
        "latest_charge": ("charge",),
    },
}

Fetch = Callable[[str], dict[str, Any] | None]


def _refused(path: str, why: str) -> InvalidRequestError:
    return InvalidRequestError(f"This property cannot be expanded ({path}): {why}", param="expand")


def check_paths(root: str, paths: Iterable[str]) -> list[str]:
    """The paths, checked against the root object type (`list:charge` for a list)."""
    checked = []
    for path in paths:
        fields = path.split(".")
        types: tuple[str, ...] = (root,)
        if root.startswith("list:"):
            if fields[0] != "data":
                raise _refused(path, "paths on a list start with data.")
            types, fields = (root.removeprefix("list:"),), fields[1:]
        if not fields or len(fields) > MAX_DEPTH or not all(fields):
            raise _refused(path, f"a path names 1 to {MAX_DEPTH} fields, dot-separated.")
        for field in fields:
            targets = tuple(t for kind in types for t in EXPANDABLE.get(kind, {}).get(field, ()))
            if not targets:
                raise _refused(path, f"{field} is not an expandable field of {' or '.join(types)}.")
            types = targets
        checked.append(path)
    return checked


def expand(obj: dict[str, Any], paths: Iterable[str], fetch: Fetch) -> dict[str, Any]:
    """`obj` with every path expanded in place (paths already checked)."""
    for path in paths:
        _expand(obj, path.split("."), fetch)
    return obj


def _expand(obj: dict[str, Any], fields: list[str], fetch: Fetch) -> None:
    head, rest = fields[0], fields[1:]
    if obj.get("object") in ("list", "search_result") and head == "data":
        for element in obj["data"]:
            if rest:
                _expand(element, rest, fetch)
        return
    value = obj.get(head)
    if isinstance(value, str):
        value = fetch(value) or value
        obj[head] = value
    if rest and isinstance(value, dict):
        _expand(value, rest, fetch)
