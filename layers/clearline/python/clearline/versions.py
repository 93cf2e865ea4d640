"""API versions, Stripe's way: `YYYY-MM-DD` or `YYYY-MM-DD.name`, sent per request in the
`Stripe-Version` header or pinned per merchant, and echoed in every response.

Clearline renders one shape today, so the version changes nothing in a response yet; it
is still checked and echoed, so a client that sends a malformed one learns at once, and
each merchant's pinned version is on record for when shapes diverge.
"""

from __future__ import annotations

import re
from datetime import date

from clearline.errors import InvalidRequestError

# The version whose shapes Clearline follows, pinned to merchants created now.
CURRENT_VERSION = "2026-10-28.endive"
_FIRST = date(2011, 1, 1)  # no Stripe API version is older
VERSION_PATTERN = r"^(\d{4})-(\d{2})-(\d{2})(?:\.([a-z]{1,30}))?$"
_VERSION = re.compile(VERSION_PATTERN)


def checked_version(value: str) -> str:
    """`value` if it is a well-formed API version, else a 400."""
    match = _VERSION.match(value.strip())
    try:
        released = date(*(int(part) for part in match.groups()[:3])) if match else None
    except ValueError:
        released = None
    if released is None or released < _FIRST:
        raise InvalidRequestError(
            f"Invalid Stripe-Version: {value[:60]!r}. Send a version such as "
            f"{CURRENT_VERSION!r} (YYYY-MM-DD, optionally followed by .name), or none to use "
            "the account's default.",
            param="Stripe-Version",
            code="api_version_invalid",
        )
    return value.strip()
