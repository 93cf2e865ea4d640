"""Object ids: random where any id will do, derived where a retry must find the same one."""

from __future__ import annotations

import hashlib
import secrets

# Idempotency keys Clearline uses for the requests it makes itself (an intent's charges):
# merchants' keys may not start with it, so that none can take them.
RESERVED_KEY_PREFIX = "clearline:"

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _base62(data: bytes, length: int) -> str:
    number = int.from_bytes(data, "big")
    chars = []
    for _ in range(length):
        number, rem = divmod(number, 62)
        chars.append(_ALPHABET[rem])
    return "".join(chars)


def new_id(prefix: str) -> str:
    return f"{prefix}_{_base62(secrets.token_bytes(18), 24)}"


def derived_id(prefix: str, *parts: str) -> str:
    """The same parts always give the same id: a retried request lands on the same object."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return f"{prefix}_{_base62(digest, 24)}"
