"""Waiting on a positive signal, never on a sleep: for work done in the background."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def eventually(
    check: Callable[[], Any], timeout: float = 40, message: str = "", interval: float = 0.05
) -> Any:
    """Polls until check() is truthy and returns what it returned; fails at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out waiting: {message}")
