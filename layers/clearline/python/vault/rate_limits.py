"""Limits on what browsers (publishable keys) may ask of the vault.

Publishable-key endpoints are where stolen card lists are tested: a script posts number
after number with a harvested key. So every publishable request counts, refused ones
included, against its key and against its client address, in fixed one-minute windows:
one counter item per scope and window, incremented atomically (UpdateItem ADD), and
deleted by the table's TTL soon after its window ends.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from clearline.errors import InvalidRequestError
from vault.storage import VaultStore

WINDOW_SECONDS = 60


@dataclass(frozen=True)
class Scope:
    kind: str  # "key" or "ip": named in the refusal
    value: str
    limit: int


class RateLimited(InvalidRequestError):
    """A 429: too many requests for one key or client address in this window."""

    def __init__(self, scope: str, retry_after: int) -> None:
        super().__init__(
            f"Too many requests for this {scope} in a short time; retry in {retry_after} seconds.",
            code="rate_limit",
        )
        self.retry_after = retry_after


class RateLimiter:
    def __init__(self, store: VaultStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def hit(self, *scopes: Scope) -> None:
        """Counts one request against each scope; raises RateLimited if any is now over."""
        now = self.clock()
        window = int(now // WINDOW_SECONDS)
        window_end = (window + 1) * WINDOW_SECONDS
        over: Scope | None = None
        for scope in scopes:
            # Keys are hashed: the table need not hold them. Addresses too, for symmetry.
            digest = hashlib.sha256(f"{scope.kind}:{scope.value}".encode()).hexdigest()
            counted = self.store.update(
                f"RATE#{scope.kind}#{digest}",
                str(window),
                "ADD hits :one SET expires_at = if_not_exists(expires_at, :expires)",
                {":one": 1, ":expires": window_end + WINDOW_SECONDS},
            )
            if over is None and counted.get("hits", 0) > scope.limit:
                over = scope
        if over is not None:
            retry_after = max(1, math.ceil(window_end - now))
            raise RateLimited("publishable key" if over.kind == "key" else "client", retry_after)
