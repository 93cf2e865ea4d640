"""Raw card numbers must never enter the system: find them so the request can be refused,
and redact them from anything that is written down (logs) in case a refusal was missed.

A card number (PAN) is 12 to 19 digits that pass the Luhn check, starting with a payment
card's major industry identifier (2 to 6: Mastercard 2/5, Amex/Diners/JCB 3, Visa 4,
Discover/UnionPay/Maestro 6). People and systems write them with any run of spaces,
dashes, dots or slashes between the groups, and sometimes glue the CVC or expiry to the
end; every one of those forms is found.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from clearline.errors import InvalidRequestError

MIN_DIGITS, MAX_DIGITS = 12, 19
_INDUSTRY_IDENTIFIERS = frozenset("23456")
_GLUED_SUFFIXES = (0, 3, 4)  # nothing, a CVC (3 or 4 digits), or an expiry (MMYY)
_GLUED_MIN_DIGITS = 15  # a glued suffix is looked for behind the common 15- and 16-digit cards

# Digit groups joined by runs of separators: "4242 4242-4242.4242", "4242/4242/4242/4242".
_CANDIDATE = re.compile(r"\d+(?:[ \-./]+\d+)*")
_GROUP = re.compile(r"\d+")
# A UUID's dash-separated hex groups often line up into a Luhn-valid digit run; UUIDs are
# what clients generate for idempotency keys and ids, never how a card number is written.
_UUID = re.compile(
    r"(?<![0-9a-fA-F])[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}(?![0-9a-fA-F])"
)
# Hashes and hex ids (32 hex digits or more) hold digit runs by chance, not card numbers.
_HEX_TOKEN = re.compile(r"(?<![0-9a-zA-Z])[0-9a-fA-F]{32,}(?![0-9a-zA-Z])")

REDACTED = "[redacted card number]"


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _windows(groups: list[str]) -> Iterator[str]:
    """Digit strings that could be a whole card number: each starts where a group starts and
    ends where a group ends, or a CVC or expiry before it."""
    for start in range(len(groups)):
        digits = ""
        for group in groups[start:]:
            digits += group
            if len(digits) - max(_GLUED_SUFFIXES) > MAX_DIGITS:
                break
            for suffix in _GLUED_SUFFIXES:
                window = digits[: len(digits) - suffix]
                if suffix == 0:
                    if MIN_DIGITS <= len(window) <= MAX_DIGITS:
                        yield window
                elif suffix < len(group) and _GLUED_MIN_DIGITS <= len(window) <= MAX_DIGITS:
                    yield window  # glued: the suffix is inside the last group


def _is_card_number(candidate: str) -> bool:
    groups = _GROUP.findall(candidate)
    if sum(len(g) for g in groups) < MIN_DIGITS:
        return False
    return any(
        window[0] in _INDUSTRY_IDENTIFIERS and luhn_valid(window) for window in _windows(groups)
    )


def _blank(match: re.Match[str]) -> str:
    return "_" * len(match.group())


def _masked(text: str) -> str:
    """`text` with UUIDs and long hex tokens blanked out, every other position kept."""
    if "-" in text:
        text = _UUID.sub(_blank, text)
    return _HEX_TOKEN.sub(_blank, text) if len(text) >= 32 else text


def contains_card_number(text: str) -> bool:
    return any(_is_card_number(match.group()) for match in _CANDIDATE.finditer(_masked(text)))


def redact(text: str) -> str:
    """`text` with every run that could hold a card number replaced by a marker."""
    masked = _masked(text)  # same length: match positions hold for `text`
    pieces, end = [], 0
    for match in _CANDIDATE.finditer(masked):
        if _is_card_number(match.group()):
            pieces += [text[end : match.start()], REDACTED]
            end = match.end()
    return "".join([*pieces, text[end:]])


def redact_value(value: Any) -> Any:
    """A copy of a JSON-like value with card numbers redacted from every string, key and
    long integer: what a log line may carry."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) >= 10 ** (MIN_DIGITS - 1):
        return REDACTED if contains_card_number(str(value)) else value
    if isinstance(value, dict):
        return {redact(str(k)): redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value


def holds_card_number(value: Any) -> bool:
    """Whether a parsed value (a string, a number, or nested dicts and lists) holds one."""
    if isinstance(value, dict):
        return any(holds_card_number(str(k)) or holds_card_number(v) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_card_number(v) for v in value)
    return value is not None and contains_card_number(str(value))


def card_number_location(params: dict[str, Any]) -> str | None:
    """Where in the parameters a card number is, named without echoing it: the top-level
    parameter that holds it (`metadata`), or `body` when a top-level name is one itself."""
    for key, value in params.items():
        if contains_card_number(str(key)):
            return "body"
        if holds_card_number(value):
            return str(key)
    return None


def card_number_refusal(location: str) -> InvalidRequestError:
    """The 400 for a request that carries a card number: it names where, never what."""
    return InvalidRequestError(
        "Sending card numbers directly to the Clearline API is not allowed. Collect card "
        "details with the processor's tokenization and send the token (tok_... or pm_...).",
        param=location,
        code="card_number_in_request",
    )
