"""Raw card numbers must never enter the system: find them so the request can be refused."""

from __future__ import annotations

import re
from typing import Any

# 13 to 19 digits, optionally grouped by single spaces or dashes, as people type them.
_CANDIDATE = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")


def _luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def contains_card_number(text: str) -> bool:
    for match in _CANDIDATE.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if _luhn_valid(digits):
            return True
    return False


def find_card_number_param(params: Any, path: str = "") -> str | None:
    """The name of the first parameter (bracket notation) whose value holds a card number."""
    if isinstance(params, dict):
        for key, value in params.items():
            name = f"{path}[{key}]" if path else str(key)
            if contains_card_number(str(key)):
                return name
            found = find_card_number_param(value, name)
            if found:
                return found
    elif isinstance(params, list):
        for i, value in enumerate(params):
            found = find_card_number_param(value, f"{path}[{i}]")
            if found:
                return found
    elif params is not None and contains_card_number(str(params)):
        return path or "body"
    return None
