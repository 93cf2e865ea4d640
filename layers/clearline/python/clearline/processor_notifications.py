"""Notifications from the card processor (disputes, early fraud warnings), as an acquirer
sends them: a JSON body signed with a secret both sides hold, in `Processor-Signature:
t=<unix>,v1=<hex>`, the HMAC-SHA256 of `<t>.<body>`. A notice is believed only if its
signature matches and it is recent, so a captured one cannot be replayed later to move
money."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from clearline.processor import ProcessorDispute, ProcessorFraudWarning

SIGNATURE_HEADER = "processor-signature"
TOLERANCE_SECONDS = 5 * 60
DISPUTE_NOTICES = frozenset({"dispute.created", "dispute.updated", "dispute.closed"})
WARNING_NOTICES = frozenset({"early_fraud_warning.created"})
NOTICE_TYPES = DISPUTE_NOTICES | WARNING_NOTICES


class NotAuthentic(ValueError):
    """Unsigned, signed with another secret, altered, or too old."""


class NotANotice(ValueError):
    """Authentic, but not a notice this intake understands."""


def signature(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str | None, secret: str, now: float) -> None:
    """Raises NotAuthentic unless `header` signs `body` with `secret`, recently."""
    if not secret:
        raise NotAuthentic("no notification secret is configured")
    parts: dict[str, list[str]] = {}
    for part in (header or "").split(","):
        name, _, value = part.strip().partition("=")
        parts.setdefault(name, []).append(value)
    try:
        timestamp = int(parts.get("t", [""])[0])
    except ValueError:
        raise NotAuthentic("the signature has no timestamp") from None
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        raise NotAuthentic("the signature is too old (or from the future)")
    expected = signature(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, given) for given in parts.get("v1", [])):
        raise NotAuthentic("the signature does not match")


@dataclass(frozen=True)
class Notice:
    """One notification: about a dispute, or an early fraud warning (exactly one of them)."""

    id: str
    type: str
    dispute: ProcessorDispute | None = None
    warning: ProcessorFraudWarning | None = None


def parse(body: bytes) -> Notice:
    try:
        data: Any = json.loads(body)
        if not isinstance(data, dict) or data.get("type") not in NOTICE_TYPES:
            raise NotANotice(f"not a notice: {str(data.get('type'))[:40]!r}")
        if data["type"] in WARNING_NOTICES:
            warning = ProcessorFraudWarning.model_validate(data["early_fraud_warning"])
            return Notice(str(data["id"]), data["type"], warning=warning)
        return Notice(
            str(data["id"]), data["type"], ProcessorDispute.model_validate(data["dispute"])
        )
    except (ValueError, KeyError, ValidationError) as exc:
        if isinstance(exc, NotANotice):
            raise
        raise NotANotice(f"unreadable notice: {type(exc).__name__}") from None
