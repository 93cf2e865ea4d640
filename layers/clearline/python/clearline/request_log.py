"""The request log: what support looks up by a request's id (its `Request-Id` header, and
the target of an error's `request_log_url`).

Every request that changes something (any method but GET) and every request refused is
kept for 30 days: who (the merchant), what (method, path, idempotency key), the answer's
status and, for a refusal, its error. Reads that succeeded are not kept: they change
nothing and are most of the traffic. Nothing a request carried is kept beyond that, so no
card number or secret can reach the log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from clearline import listing
from clearline.store import Store

KEPT_SECONDS = 30 * 86400
KIND = "req"


@dataclass(frozen=True)
class LoggedRequest:
    id: str
    merchant: str
    method: str
    path: str
    status: int
    created_ms: int
    milliseconds: int
    idempotency_key: str | None = None
    error_type: str | None = None
    error_code: str | None = None
    error_message: str | None = None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> LoggedRequest:
        return cls(
            str(item["id"]),
            str(item["merchant"]),
            str(item["method"]),
            str(item["path"]),
            int(item["status"]),
            int(item["created_ms"]),
            int(item.get("milliseconds") or 0),
            item.get("idempotency_key"),
            item.get("error_type"),
            item.get("error_code"),
            item.get("error_message"),
        )


def worth_keeping(method: str, status: int) -> bool:
    return method.upper() != "GET" or status >= 400


class RequestLog:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def record(self, request: LoggedRequest) -> None:
        """Kept once: a request id names one request (an item already there is left)."""
        created_ms = request.created_ms
        item = {
            "pk": f"REQLOG#{request.id}",
            "sk": "REQUEST",
            **listing.list_keys(request.merchant, KIND, created_ms, request.id),
            **{k: v for k, v in asdict(request).items() if v is not None},
            "created": created_ms // 1000,
            "ttl": int(self.clock()) + KEPT_SECONDS,
        }
        self.store.put(item, if_new=True)

    def find(self, merchant_id: str, request_id: str) -> LoggedRequest | None:
        """The merchant's request of that id; another merchant's is not found."""
        item = self.store.get(f"REQLOG#{request_id}", "REQUEST")
        if item is None or item.get("merchant") != merchant_id:
            return None
        return LoggedRequest.from_item(item)

    def recent(self, merchant_id: str, limit: int = 20) -> list[LoggedRequest]:
        items = listing.page(
            self.store, merchant_id, KIND, limit=limit, starting_after=None, ending_before=None
        ).items
        return [LoggedRequest.from_item(item) for item in items]
