"""A sandbox card processor: an HTTP service on loopback with Stripe's test tokens and test
card numbers.

It behaves like the processors Clearline talks to in production: every POST carries an
`Idempotency-Key`, a retried key replays the first committed response, and faults can be
injected (timeouts before or after the commit, 5xx answers) so the exactly-once paths of
the API can be exercised end to end (that machinery is `sandbox_http`'s, shared with the
sandbox bank). All state is in memory and guarded by one lock.

Request bodies are never logged: they carry tokens, amounts and, from the card vault, card
numbers. A card number is never kept whole: an authorization keeps its last four digits
and a keyed fingerprint, and a stored idempotency fingerprint a keyed digest of the card
(the CVC is not kept in any form).

As an acquirer does, it raises disputes: money captured on one of Stripe's dispute test
cards is contested a little later, and every change of a dispute is posted to the
platform as a signed notification, retried until it is answered. The platform answers a
dispute with evidence or accepts it; the network's decision follows from the evidence.

It can enforce a rate limit (`tps_limit`, set when it starts, or by POST /_sandbox/rate_limit
with {"tps_limit": n}; 0 is none): at most that many money-moving calls (authorize, capture,
void, refund) in each second of its clock; the others are refused with 429 before anything
is committed, and counted (GET /_sandbox/rate_limit; DELETE starts the count again).
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import hashlib
import hmac
import http.client
import json
import logging
import math
import re
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Self
from urllib.parse import unquote, urlsplit

from clearline.cards import luhn_valid

# The limits and fault modes both sandboxes share, imported from here by their callers.
from clearline_local.sandbox_http import FAULT_MODES as FAULT_MODES
from clearline_local.sandbox_http import MAX_AMOUNT as MAX_AMOUNT
from clearline_local.sandbox_http import MAX_BODY_BYTES as MAX_BODY_BYTES
from clearline_local.sandbox_http import MAX_IDEMPOTENCY_KEY_LENGTH as MAX_IDEMPOTENCY_KEY_LENGTH
from clearline_local.sandbox_http import MAX_LATENCY_MS as MAX_LATENCY_MS
from clearline_local.sandbox_http import FaultMode as FaultMode
from clearline_local.sandbox_http import (
    Operation,
    RequestError,
    Response,
    SandboxService,
    keyed_digest,
    random_id,
    request_fingerprint,
    require_currency,
    require_int,
    require_str,
)

logger = logging.getLogger(__name__)

SETTLEMENT_LAG_DAYS = 2  # a day's captures and refunds settle two days later (T+2)
PROCESSOR_FEE_BASIS_POINTS = 150  # what the processor charges us on each capture
DISPUTE_FEE = 1500  # what the acquirer charges on each chargeback, in the minor unit
EVIDENCE_WINDOW_SECONDS = 8 * 24 * 3600  # how long the merchant has to answer a dispute
MAX_DELAY_SECONDS = 3600.0
SIGNATURE_HEADER = "Processor-Signature"
NOTIFICATION_TIMEOUT_SECONDS = 5.0
NOTIFICATION_FIRST_BACKOFF_SECONDS = 0.2
NOTIFICATION_MAX_BACKOFF_SECONDS = 5.0

# Dispute statuses, as Stripe names them: a chargeback's, then an inquiry's (`warning_`).
NEEDS_RESPONSE, UNDER_REVIEW, WON, LOST = "needs_response", "under_review", "won", "lost"
WARNING_NEEDS_RESPONSE, WARNING_UNDER_REVIEW, WARNING_CLOSED = (
    "warning_needs_response",
    "warning_under_review",
    "warning_closed",
)
DISPUTE_CLOSED_STATUSES = frozenset({WON, LOST, WARNING_CLOSED})

# Twelve or more digits, possibly grouped: what a card number pasted as a token looks like.
_PAN_LIKE_RE = re.compile(r"(?:\d[ -]?){12,19}")
_CARD_NUMBER_RE = re.compile(r"[0-9]{12,19}")
_CVC_RE = re.compile(r"[0-9]{3,4}")
MAX_AUTHENTICATION_ID_LENGTH = 255
MAX_TPS_LIMIT = 100_000
# The calls its rate limit counts: those that move money, as an acquirer's transaction
# limit does. Reads, key lookups and revocations, and dispute responses are not counted.
RATE_LIMITED_OPERATIONS = frozenset({"authorize", "capture", "void", "refund"})


def _validate_tps_limit(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("tps_limit must be an integer")
    if not 0 <= value <= MAX_TPS_LIMIT:
        raise ValueError(f"tps_limit must be between 0 (no limit) and {MAX_TPS_LIMIT}")
    return value


def rate_limited_operation(method: str, parts: list[str]) -> str | None:
    """Which money-moving call a /v1/<parts> request is, or None if it moves no money."""
    if method != "POST":
        return None
    if parts == ["authorizations"]:
        return "authorize"
    if parts == ["refunds"]:
        return "refund"
    if len(parts) == 3 and parts[0] == "authorizations" and parts[2] in ("capture", "void"):
        return parts[2]
    return None


def card_number_fingerprint(number: str) -> str:
    """The same for every authorization of one card number, in this process."""
    return keyed_digest("card-fingerprint", number)[:16]


@dataclass(frozen=True)
class _DisputeKind:
    """The dispute a test card's cardholder raises once money on the card is captured."""

    reason: str
    network_reason_code: str | None
    inquiry: bool = False


_FRAUDULENT = _DisputeKind("fraudulent", "10.4")
_PRODUCT_NOT_RECEIVED = _DisputeKind("product_not_received", "13.1")
_INQUIRY = _DisputeKind("general", None, inquiry=True)


@dataclass(frozen=True)
class _TestCard:
    brand: str
    last4: str
    funding: str = "credit"
    country: str = "US"
    # (code, decline_code, message) when the card declines every authorization
    decline: tuple[str, str, str] | None = None
    dispute: _DisputeKind | None = None
    cvc_fails: bool = False  # approved, but the issuer says the CVC did not match
    fraud_warning: bool = False  # approved, then the issuer reports fraud on it

    @property
    def fingerprint(self) -> str:
        """One per card: every token of the same test card number shares it (a processor
        derives it from the number, which the sandbox stands in for by brand, last four
        and funding)."""
        identity = f"{self.brand}:{self.last4}:{self.funding}".encode()
        return hashlib.sha256(b"sandbox-fingerprint:" + identity).hexdigest()[:16]


@dataclass(frozen=True)
class _CardOnRecord:
    """What an authorization keeps of the card it was made with: never the number."""

    brand: str
    last4: str
    funding: str
    country: str
    fingerprint: str
    cvc_check: str | None


_DECLINED = "Your card was declined."

# Stripe's test tokens, with the last four digits of the card numbers they stand for.
TEST_TOKENS: dict[str, _TestCard] = {
    "tok_visa": _TestCard("visa", "4242"),
    "tok_visa_debit": _TestCard("visa", "5556", funding="debit"),
    "tok_mastercard": _TestCard("mastercard", "4444"),
    "tok_amex": _TestCard("amex", "8431"),
    "pm_card_visa": _TestCard("visa", "4242"),
    "pm_card_mastercard": _TestCard("mastercard", "4444"),
    "tok_chargeDeclined": _TestCard(
        "visa", "0002", decline=("card_declined", "generic_decline", _DECLINED)
    ),
    "tok_chargeDeclinedInsufficientFunds": _TestCard(
        "visa",
        "9995",
        decline=("card_declined", "insufficient_funds", "Your card has insufficient funds."),
    ),
    "tok_chargeDeclinedExpiredCard": _TestCard(
        "visa", "0069", decline=("expired_card", "expired_card", "Your card has expired.")
    ),
    "tok_chargeDeclinedIncorrectCvc": _TestCard(
        "visa",
        "0127",
        decline=("incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect."),
    ),
    "tok_chargeDeclinedProcessingError": _TestCard(
        "visa",
        "0119",
        decline=(
            "processing_error",
            "processing_error",
            "An error occurred while processing your card. Try again in a little bit.",
        ),
    ),
    "tok_chargeDeclinedFraudulent": _TestCard(
        "visa", "0019", decline=("card_declined", "fraudulent", _DECLINED)
    ),
    "tok_chargeDeclinedLostCard": _TestCard(
        "visa", "9987", decline=("card_declined", "lost_card", _DECLINED)
    ),
    "tok_chargeDeclinedStolenCard": _TestCard(
        "visa", "9979", decline=("card_declined", "stolen_card", _DECLINED)
    ),
    # Radar's risk test cards: the issuer approves them; Clearline's screening decides.
    "tok_riskLevelElevated": _TestCard("visa", "9235"),
    "tok_riskLevelHighest": _TestCard("visa", "4954"),
    "tok_cvcCheckFail": _TestCard("visa", "0101", cvc_fails=True),
    "tok_createIssuerFraudRecord": _TestCard("visa", "5423", fraud_warning=True),
    "tok_radarBlock": _TestCard("visa", "0019", decline=("card_declined", "fraudulent", _DECLINED)),
    "tok_createDispute": _TestCard("visa", "0259", dispute=_FRAUDULENT),
    "tok_visa_createDispute": _TestCard("visa", "0259", dispute=_FRAUDULENT),
    "tok_createDisputeProductNotReceived": _TestCard("visa", "2685", dispute=_PRODUCT_NOT_RECEIVED),
    "tok_createDisputeInquiry": _TestCard("visa", "1976", dispute=_INQUIRY),
}

# Stripe's test card numbers, each behaving as the token of the same card does.
TEST_CARD_NUMBERS: dict[str, _TestCard] = {
    "4242424242424242": TEST_TOKENS["tok_visa"],
    "4000056655665556": TEST_TOKENS["tok_visa_debit"],
    "5555555555554444": TEST_TOKENS["tok_mastercard"],
    "378282246310005": _TestCard("amex", "0005"),
    "4000000000000002": TEST_TOKENS["tok_chargeDeclined"],
    "4000000000009995": TEST_TOKENS["tok_chargeDeclinedInsufficientFunds"],
    "4000000000000069": TEST_TOKENS["tok_chargeDeclinedExpiredCard"],
    "4000000000000127": TEST_TOKENS["tok_chargeDeclinedIncorrectCvc"],
    "4000000000000119": TEST_TOKENS["tok_chargeDeclinedProcessingError"],
    "4100000000000019": TEST_TOKENS["tok_chargeDeclinedFraudulent"],
    "4000000000009987": TEST_TOKENS["tok_chargeDeclinedLostCard"],
    "4000000000009979": TEST_TOKENS["tok_chargeDeclinedStolenCard"],
    "4000000000009235": TEST_TOKENS["tok_riskLevelElevated"],
    "4000000000004954": TEST_TOKENS["tok_riskLevelHighest"],
    "4000000000000101": TEST_TOKENS["tok_cvcCheckFail"],
    "4000000000005423": TEST_TOKENS["tok_createIssuerFraudRecord"],
    "4000000000000259": TEST_TOKENS["tok_createDispute"],
    "4000000000002685": TEST_TOKENS["tok_createDisputeProductNotReceived"],
    "4000000000001976": TEST_TOKENS["tok_createDisputeInquiry"],
}
# Stripe's 3-D Secure test cards: declined unless the request shows the cardholder
# authenticated.
THREE_D_SECURE_REQUIRED_NUMBERS = frozenset(
    {"4000002500003155", "4000002760003184", "4000000000003220"}
)
AUTHENTICATION_REQUIRED = (
    "card_declined",
    "authentication_required",
    "Your card was declined. This transaction requires authentication.",
)
_EXPIRED = TEST_TOKENS["tok_chargeDeclinedExpiredCard"].decline


def card_brand(number: str) -> str:
    """The brand of a card number by its issuer identification prefix."""
    if number.startswith("4"):
        return "visa"
    if 51 <= int(number[:2]) <= 55 or 2221 <= int(number[:4]) <= 2720:
        return "mastercard"
    if number.startswith(("34", "37")):
        return "amex"
    if number.startswith(("6011", "65")):
        return "discover"
    return "unknown"


def _network_transaction_id() -> str:
    return "".join(secrets.choice(string.digits) for _ in range(15))


def sign_notification(secret: str, body: bytes, timestamp: int) -> str:
    """The `Processor-Signature` header of a notification: the time it was signed at and
    an HMAC-SHA256 of that time and the exact body bytes, so a receiver can refuse both
    forgeries and old notifications replayed."""
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _validate_delay(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number")
    if not 0 <= value <= MAX_DELAY_SECONDS:
        raise ValueError(f"{name} must be between 0 and {MAX_DELAY_SECONDS:g}")
    return float(value)


@dataclass
class _AuthorizationRecord:
    id: str
    status: Literal["approved", "declined"]
    amount: int
    currency: str
    reference: str | None
    card: _CardOnRecord
    exp_month: int
    exp_year: int
    three_d_secure: dict[str, Any] | None = None
    code: str | None = None
    decline_code: str | None = None
    message: str | None = None
    network_transaction_id: str | None = None
    captured: bool = False
    amount_captured: int = 0
    amount_refunded: int = 0
    voided: bool = False
    created: int = field(default_factory=lambda: int(time.time()))
    # Kept off the JSON: what the card's holder will contest once it is captured.
    dispute_kind: _DisputeKind | None = None
    fraud_warning: bool = False  # the issuer will report fraud on it

    def to_json(self) -> dict[str, Any]:
        card: dict[str, Any] = {
            "brand": self.card.brand,
            "last4": self.card.last4,
            "exp_month": self.exp_month,
            "exp_year": self.exp_year,
            "funding": self.card.funding,
            "country": self.card.country,
            "fingerprint": self.card.fingerprint,
            "network": self.card.brand,
            "cvc_check": self.card.cvc_check,
        }
        if self.three_d_secure is not None:
            card["three_d_secure"] = dict(self.three_d_secure)
        return {
            "id": self.id,
            "object": "authorization",
            "status": self.status,
            "amount": self.amount,
            "currency": self.currency,
            "captured": self.captured,
            "amount_captured": self.amount_captured,
            "amount_refunded": self.amount_refunded,
            "voided": self.voided,
            "reference": self.reference,
            "card": card,
            "code": self.code,
            "decline_code": self.decline_code,
            "message": self.message,
            "network_transaction_id": self.network_transaction_id,
            "created": self.created,
        }


@dataclass
class _DisputeRecord:
    id: str
    authorization: str
    reference: str | None
    amount: int
    currency: str
    reason: str
    network_reason_code: str | None
    status: str
    evidence_due_by: int
    created: int
    evidence_submissions: int = 0
    evidence: dict[str, str] | None = None

    @property
    def inquiry(self) -> bool:
        return self.status.startswith("warning_")

    @property
    def closed(self) -> bool:
        return self.status in DISPUTE_CLOSED_STATUSES

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)  # a deep copy: the evidence is not shared with the caller
        return {"id": data.pop("id"), "object": "dispute", **data}


_Movement = Literal["capture", "refund", "dispute", "dispute_reversal"]


@dataclass(frozen=True)
class _Settlement:
    """How a kind of money movement settles: the way the amount goes, and the fee on it."""

    sign: int
    fee: Callable[[int], int]


_SETTLEMENTS: dict[str, _Settlement] = {
    "capture": _Settlement(
        1, lambda amount: (amount * PROCESSOR_FEE_BASIS_POINTS + 5_000) // 10_000
    ),
    "refund": _Settlement(-1, lambda amount: 0),
    # A chargeback takes the amount back and costs a fee; winning it returns the amount only.
    "dispute": _Settlement(-1, lambda amount: DISPUTE_FEE),
    "dispute_reversal": _Settlement(1, lambda amount: 0),
}


# ---------------------------------------------------------------------------- body parsing


@dataclass(frozen=True)
class _PresentedCard:
    """What an authorization request shows of a card, and how the card answers."""

    card: _CardOnRecord
    exp_month: int
    exp_year: int
    decline: tuple[str, str, str] | None
    three_d_secure: dict[str, Any] | None = None
    dispute: _DisputeKind | None = None
    fraud_warning: bool = False


def _token_card(token: str) -> _PresentedCard:
    card = TEST_TOKENS.get(token)
    if card is None:
        # Never echo what looks like a card number back: error messages end up in logs.
        shown = "" if _PAN_LIKE_RE.search(token) else f": '{token}'"
        raise RequestError(404, "unknown_token", f"No such token{shown}", "token")
    incorrect_cvc = card.cvc_fails or (
        card.decline is not None and card.decline[1] == "incorrect_cvc"
    )
    return _PresentedCard(
        card=_CardOnRecord(
            brand=card.brand,
            last4=card.last4,
            funding=card.funding,
            country=card.country,
            fingerprint=card.fingerprint,
            cvc_check="fail" if incorrect_cvc else "pass",
        ),
        # Test cards expire at the end of next year, as Stripe's tokens are always valid.
        exp_month=12,
        exp_year=dt.datetime.now(dt.UTC).year + 1,
        decline=card.decline,
        dispute=card.dispute,
        fraud_warning=card.fraud_warning,
    )


def _expiry(card: dict[str, Any]) -> tuple[int, int]:
    month, year = card.get("exp_month"), card.get("exp_year")
    if not isinstance(month, int) or isinstance(month, bool) or not 1 <= month <= 12:
        raise RequestError(
            400,
            "invalid_expiry_month",
            "Your card's expiration month is invalid.",
            "card[exp_month]",
        )
    if isinstance(year, int) and not isinstance(year, bool) and 0 <= year <= 99:
        year += 2000  # two digits, as printed on the card
    if not isinstance(year, int) or isinstance(year, bool) or not 2000 <= year <= 2099:
        raise RequestError(
            400, "invalid_expiry_year", "Your card's expiration year is invalid.", "card[exp_year]"
        )
    return month, year


def _three_d_secure(body: dict[str, Any]) -> dict[str, Any] | None:
    value = body.get("three_d_secure")
    if value is None:
        return None
    authenticated = value.get("authenticated", False) if isinstance(value, dict) else None
    authentication = value.get("authentication") if isinstance(value, dict) else None
    valid_id = authentication is None or (
        isinstance(authentication, str)
        and len(authentication) <= MAX_AUTHENTICATION_ID_LENGTH
        # It is echoed in the authorization, so it may not smuggle a card number in.
        and not _PAN_LIKE_RE.search(authentication)
    )
    if not isinstance(authenticated, bool) or not valid_id:
        raise RequestError(
            400,
            "parameter_invalid",
            "'three_d_secure' must be an object with a boolean 'authenticated' and an "
            "optional 'authentication' id.",
            "three_d_secure",
        )
    return {"authenticated": authenticated, "authentication": authentication}


def _numbered_card(body: dict[str, Any]) -> _PresentedCard:
    """The card of a request that sends its number. The number is read here, and only its
    last four digits, brand and fingerprint leave this function."""
    card = body.get("card")
    if not isinstance(card, dict):
        raise RequestError(
            400,
            "parameter_invalid",
            "'card' must be an object with number, exp_month and exp_year.",
            "card",
        )
    number = card.get("number")
    if not (isinstance(number, str) and _CARD_NUMBER_RE.fullmatch(number) and luhn_valid(number)):
        # The message never repeats the number.
        raise RequestError(
            400, "incorrect_number", "Your card number is incorrect.", "card[number]"
        )
    exp_month, exp_year = _expiry(card)
    cvc = card.get("cvc")
    if cvc is not None and not (isinstance(cvc, str) and _CVC_RE.fullmatch(cvc)):
        raise RequestError(400, "invalid_cvc", "Your card's security code is invalid.", "card[cvc]")
    three_d_secure = _three_d_secure(body)

    known = TEST_CARD_NUMBERS.get(number)
    now = dt.datetime.now(dt.UTC)
    # A card is good through the last day of its expiry month.
    if (exp_year, exp_month) < (now.year, now.month):
        decline = _EXPIRED
    elif known is not None:
        decline = known.decline
    elif number in THREE_D_SECURE_REQUIRED_NUMBERS and not (
        three_d_secure is not None and three_d_secure["authenticated"]
    ):
        decline = AUTHENTICATION_REQUIRED
    else:
        decline = None
    # As Stripe's: a CVC check fails only when a CVC was given.
    incorrect_cvc = (known is not None and known.cvc_fails and cvc is not None) or (
        decline is not None and decline[1] == "incorrect_cvc"
    )
    return _PresentedCard(
        card=_CardOnRecord(
            brand=known.brand if known is not None else card_brand(number),
            last4=number[-4:],
            funding=known.funding if known is not None else "credit",
            country="US",
            fingerprint=card_number_fingerprint(number),
            cvc_check="fail" if incorrect_cvc else ("pass" if cvc is not None else None),
        ),
        exp_month=exp_month,
        exp_year=exp_year,
        decline=decline,
        three_d_secure=three_d_secure,
        dispute=known.dispute if known is not None else None,
        fraud_warning=known is not None and known.fraud_warning,
    )


# ------------------------------------------------------------------------------ processor


class SandboxProcessor(SandboxService):
    """An in-memory card processor served over HTTP on a daemon thread."""

    name = "sandbox processor"
    server_version = "ClearlineSandboxProcessor/1.0"
    internal_error = ("processor_error", "The processor had an internal error.")
    logger = logger

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: int = 0,
        fault_delay_seconds: float = 3.0,
        dispute_delay_seconds: float = 0.5,
        decision_delay_seconds: float = 1.0,
        notification_url: str | None = None,
        notification_secret: str | None = None,
        notification_attempts: int = 8,
        tps_limit: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(notification_attempts, int) or isinstance(notification_attempts, bool):
            raise ValueError("notification_attempts must be an integer")
        if notification_attempts < 1:
            raise ValueError("notification_attempts must be at least 1")
        super().__init__(host, port, latency_ms, fault_delay_seconds)
        self._dispute_delay_seconds = _validate_delay(
            dispute_delay_seconds, "dispute_delay_seconds"
        )
        self._decision_delay_seconds = _validate_delay(
            decision_delay_seconds, "decision_delay_seconds"
        )
        # Money-moving calls a second (fixed one-second windows of `clock`); 0: no limit.
        self._tps_limit = _validate_tps_limit(tps_limit)
        self._clock = clock
        self._window_second: int | None = None
        self._window_calls = 0
        self._throttled = 0  # 429s served, for tests to read
        self._authorizations: dict[str, _AuthorizationRecord] = {}
        self._refunds: dict[str, dict[str, Any]] = {}
        self._disputes: dict[str, _DisputeRecord] = {}
        # Money that moved (captures, refunds, disputes), in order: what settlement files
        # report.
        self._settleable: list[dict[str, Any]] = []
        self._batches = 0
        # Dispute events still to come (openings, decisions); stop() cancels them.
        self._timers: set[threading.Timer] = set()
        # Notifications not yet answered by the platform, oldest first. The delivery thread
        # waits on the condition for one to be queued or a receiver to be configured.
        self._outbox: deque[dict[str, Any]] = deque()
        self._outbox_changed = threading.Condition(self._lock)
        self._delivered = 0
        self._notification_attempts = notification_attempts
        self._notification_url: str | None = None
        self._notification_secret: str | None = None
        self._delivery: threading.Thread | None = None
        self._delivery_stop = threading.Event()
        if notification_url is not None or notification_secret is not None:
            self.configure_notifications(notification_url or "", notification_secret or "")

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Self:
        super().start()
        # Each run has its own stop signal: a delivery thread abandoned by stop() mid-attempt
        # never mistakes a later start for its own.
        self._delivery_stop = threading.Event()
        self._delivery = threading.Thread(
            target=self._deliver_notifications,
            args=(self._delivery_stop,),
            name=f"sandbox-processor-notifications-{self.port}",
            daemon=True,
        )
        self._delivery.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port, cancel the dispute events still to come and
        stop delivering notifications (undelivered ones stay queued). Handlers still
        sleeping in a fault, and a delivery attempt in flight, are daemon threads and are
        abandoned rather than waited for."""
        delivery, self._delivery = self._delivery, None
        if self._server is None:
            return
        with self._lock:
            for timer in self._timers:
                timer.cancel()
            self._timers.clear()
            self._delivery_stop.set()
            self._outbox_changed.notify_all()
        super().stop()
        if delivery is not None:
            delivery.join(timeout=1)

    # -- test controls --------------------------------------------------------------------

    @property
    def dispute_delay_seconds(self) -> float:
        """How long after a capture the cardholder of a dispute test card contests it."""
        with self._lock:
            return self._dispute_delay_seconds

    @dispute_delay_seconds.setter
    def dispute_delay_seconds(self, value: float) -> None:
        value = _validate_delay(value, "dispute_delay_seconds")
        with self._lock:
            self._dispute_delay_seconds = value

    @property
    def decision_delay_seconds(self) -> float:
        """How long after evidence is submitted the network decides."""
        with self._lock:
            return self._decision_delay_seconds

    @decision_delay_seconds.setter
    def decision_delay_seconds(self, value: float) -> None:
        value = _validate_delay(value, "decision_delay_seconds")
        with self._lock:
            self._decision_delay_seconds = value

    @property
    def tps_limit(self) -> int:
        """Money-moving calls taken a second; above it they are refused with 429. 0: none."""
        with self._lock:
            return self._tps_limit

    @tps_limit.setter
    def tps_limit(self, value: int) -> None:
        value = _validate_tps_limit(value)
        with self._lock:
            self._tps_limit = value

    def rate_limit_stats(self) -> dict[str, int]:
        """How many calls were refused for the rate limit (429s served), and the limit."""
        with self._lock:
            return {"throttled": self._throttled, "tps_limit": self._tps_limit}

    def reset_rate_limit_stats(self) -> None:
        with self._lock:
            self._throttled = 0

    def _admit(self, operation: str) -> None:
        """Count a money-moving call against its second, or refuse it (429) when the second
        is full. A refused call commits nothing and is not stored under its key."""
        with self._lock:
            if self._tps_limit == 0:
                return
            second = math.floor(self._clock())
            if second != self._window_second:
                self._window_second, self._window_calls = second, 0
            if self._window_calls >= self._tps_limit:
                self._throttled += 1
                logger.info("sandbox rate limit: %s refused (429)", operation)
                raise RequestError(
                    429,
                    "rate_limited",
                    f"Too many requests: at most {self._tps_limit} a second.",
                )
            self._window_calls += 1

    def _handle_v1(
        self, method: str, path: str, headers: dict[str, str], body: dict[str, Any]
    ) -> Response:
        parts = [unquote(p) for p in path.strip("/").split("/")[1:]]
        operation = rate_limited_operation(method, parts)
        if operation is not None:
            self._admit(operation)
        return super()._handle_v1(method, path, headers, body)

    def configure_notifications(self, url: str, secret: str) -> None:
        """Where dispute notifications go and the secret they are signed with. The
        receiver's URL is often known only once it binds: until then they queue."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("notification_url must be an http or https URL")
        if not secret:
            raise ValueError("notification_secret is required to sign notifications")
        with self._lock:
            self._notification_url, self._notification_secret = url, secret
            self._outbox_changed.notify_all()

    def notifications_pending(self) -> list[dict[str, Any]]:
        """The notifications not yet answered by the platform, oldest first."""
        with self._lock:
            return copy.deepcopy(list(self._outbox))

    def redeliver(self, dispute_id: str) -> dict[str, Any]:
        """Send the dispute's current state once more, as networks sometimes do: receivers
        must take a notification twice without acting twice. KeyError if it is unknown."""
        with self._lock:
            dispute = self._disputes.get(dispute_id)
            if dispute is None:
                raise KeyError(dispute_id)
            kind = "dispute.closed" if dispute.closed else "dispute.updated"
            return copy.deepcopy(self._notify(dispute, kind))

    def disputes(self) -> list[dict[str, Any]]:
        """Every dispute, oldest first."""
        with self._lock:
            return [dispute.to_json() for dispute in self._disputes.values()]

    def authorizations(self) -> list[dict[str, Any]]:
        """Every authorization with the amounts of its refunds: what the processor believes
        happened, for tests that hold Clearline's ledger against it."""
        with self._lock:
            refunds: dict[str, list[int]] = {}
            for refund in self._refunds.values():
                refunds.setdefault(str(refund["authorization"]), []).append(int(refund["amount"]))
            return [
                {**record.to_json(), "refunds": refunds.get(record.id, [])}
                for record in self._authorizations.values()
            ]

    # -- request handling (transport-free) ------------------------------------------------

    def _settings(self) -> dict[str, Callable[[Any], Any]]:
        return {
            name: functools.partial(_validate_delay, name=name)
            for name in ("dispute_delay_seconds", "decision_delay_seconds")
        }

    def _sandbox_route(self, method: str, path: str, body: dict[str, Any]) -> Response | None:
        if path == "/_sandbox/authorizations" and method == "GET":
            return Response(200, {"data": self.authorizations()})
        if path == "/_sandbox/notifications" and method == "GET":
            with self._lock:  # one moment's view: a delivery moves one from one to the other
                pending, delivered = copy.deepcopy(list(self._outbox)), self._delivered
            return Response(200, {"pending": pending, "delivered": delivered})
        if path == "/_sandbox/disputes" and method == "GET":
            return Response(200, {"data": self.disputes()})
        if path == "/_sandbox/rate_limit":
            if method == "POST" and "tps_limit" in body:
                try:
                    self.tps_limit = body["tps_limit"]
                except ValueError as exc:
                    raise RequestError(400, "invalid_config", str(exc), "tps_limit") from None
            if method == "DELETE":  # the count starts again
                self.reset_rate_limit_stats()
            if method in ("GET", "POST", "DELETE"):
                return Response(200, self.rate_limit_stats())
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if len(parts) == 4 and parts[1] == "disputes" and method == "POST":
            if parts[3] == "decide":
                return Response(200, self._decide_now(parts[2], body))
            if parts[3] == "notify":
                try:
                    return Response(200, self.redeliver(parts[2]))
                except KeyError:
                    raise RequestError(
                        404, "resource_missing", f"No such dispute: '{parts[2]}'"
                    ) from None
        if path == "/_sandbox/settlements" and method == "POST":
            try:
                day = dt.date.fromisoformat(str(body.get("date")))
                lag = int(body.get("lag_days", SETTLEMENT_LAG_DAYS))
            except ValueError as exc:
                raise RequestError(400, "invalid_date", str(exc), "date") from None
            return Response(200, {"rows": self.settlement_rows(day, lag)})
        return None

    def _read(self, parts: list[str]) -> dict[str, Any] | None:
        if len(parts) == 2 and parts[0] == "authorizations":
            return self._get_authorization(parts[1]).to_json()
        if len(parts) == 2 and parts[0] == "disputes":
            return self._get_dispute(parts[1]).to_json()
        return None

    def _fingerprint(self, method: str, path: str, body: dict[str, Any]) -> str:
        if "card" in body:
            # Kept for as long as the key: a keyed digest tells a different card apart without
            # keeping its number. The CVC is left out: it may not be kept in any form, and the
            # vault discards it once the processor has answered, so a retry comes without it.
            card = body["card"]
            if isinstance(card, dict):
                card = {name: value for name, value in card.items() if name != "cvc"}
            canonical = json.dumps(card, sort_keys=True, separators=(",", ":"))
            body = {**body, "card": keyed_digest("request-card", canonical)}
        return request_fingerprint(method, path, body)

    def _route_post(self, parts: list[str]) -> Operation:
        if parts == ["authorizations"]:
            return self._authorize
        if parts == ["refunds"]:
            return self._refund
        if len(parts) == 3 and parts[0] == "authorizations":
            authorization_id = parts[1]
            if parts[2] == "capture":
                return lambda body: self._capture(authorization_id, body)
            if parts[2] == "void":
                return lambda body: self._void(authorization_id)
        if len(parts) == 3 and parts[0] == "disputes":
            dispute_id = parts[1]
            if parts[2] == "evidence":
                return lambda body: self._submit_evidence(dispute_id, body)
            if parts[2] == "close":
                return lambda body: self._close_dispute(dispute_id)
        raise RequestError(404, "not_found", "Unrecognized request URL.")

    # -- operations (called with the lock held) -------------------------------------------

    def _get_authorization(self, authorization_id: str) -> _AuthorizationRecord:
        record = self._authorizations.get(authorization_id)
        if record is None:
            raise RequestError(
                404, "resource_missing", f"No such authorization: '{authorization_id}'"
            )
        return record

    def _authorize(self, body: dict[str, Any]) -> dict[str, Any]:
        # Either a processor token or, from the card vault, the card itself.
        if "card" in body and "token" in body:
            raise RequestError(
                400, "parameters_exclusive", "Pass either 'token' or 'card', not both.", "card"
            )
        token = None if "card" in body else require_str(body, "token")
        amount = require_int(body, "amount")
        currency = require_currency(body)
        capture = body.get("capture", True)
        if not isinstance(capture, bool):
            raise RequestError(400, "parameter_invalid", "'capture' must be a boolean.", "capture")
        reference = body.get("reference")
        if reference is not None and not isinstance(reference, str):
            raise RequestError(
                400, "parameter_invalid", "'reference' must be a string.", "reference"
            )

        presented = _numbered_card(body) if token is None else _token_card(token)

        record = _AuthorizationRecord(
            id=random_id("pa_"),
            status="approved" if presented.decline is None else "declined",
            amount=amount,
            currency=currency,
            reference=reference,
            card=presented.card,
            exp_month=presented.exp_month,
            exp_year=presented.exp_year,
            three_d_secure=presented.three_d_secure,
            dispute_kind=presented.dispute,
            fraud_warning=presented.fraud_warning,
        )
        if presented.decline is not None:
            record.code, record.decline_code, record.message = presented.decline
        else:
            record.network_transaction_id = _network_transaction_id()
            if capture:
                self._record_capture(record, amount)
            if record.fraud_warning:  # the issuer's report follows the approval
                self._later(self._dispute_delay_seconds, lambda: self._warn(record))
        self._authorizations[record.id] = record
        return record.to_json()

    def _capture(self, authorization_id: str, body: dict[str, Any]) -> dict[str, Any]:
        record = self._get_authorization(authorization_id)
        if record.status != "approved":
            raise RequestError(
                400, "authorization_declined", "A declined authorization cannot be captured."
            )
        if record.voided:
            raise RequestError(409, "authorization_voided", "This authorization has been voided.")
        if record.captured:
            raise RequestError(
                409, "already_captured", f"Authorization {record.id} has already been captured."
            )
        amount = require_int(body, "amount", default=record.amount)
        if amount > record.amount:
            raise RequestError(
                400,
                "amount_too_large",
                f"Cannot capture {amount}: only {record.amount} was authorized.",
                "amount",
            )
        # A partial capture releases the remainder of the hold, as card networks do.
        self._record_capture(record, amount)
        return record.to_json()

    def _record_capture(self, record: _AuthorizationRecord, amount: int) -> None:
        record.captured = True
        record.amount_captured = amount
        self._settle_later(record, "capture", amount)
        kind = record.dispute_kind
        if kind is not None:
            # Only captured money is contested, never a hold.
            self._later(self._dispute_delay_seconds, lambda: self._open_dispute(record, kind))

    def _void(self, authorization_id: str) -> dict[str, Any]:
        record = self._get_authorization(authorization_id)
        if record.status != "approved":
            raise RequestError(
                400, "authorization_declined", "A declined authorization cannot be voided."
            )
        if record.captured:
            raise RequestError(
                409, "already_captured", f"Authorization {record.id} has already been captured."
            )
        if record.voided:
            raise RequestError(409, "already_voided", f"Authorization {record.id} is voided.")
        record.voided = True
        return record.to_json()

    def _refund(self, body: dict[str, Any]) -> dict[str, Any]:
        authorization_id = require_str(body, "authorization")
        record = self._get_authorization(authorization_id)
        if not record.captured:
            raise RequestError(
                400, "not_captured", f"Authorization {record.id} has not been captured."
            )
        refundable = record.amount_captured - record.amount_refunded
        amount = require_int(body, "amount", default=refundable)
        if amount > refundable:
            raise RequestError(
                400,
                "amount_too_large",
                f"Cannot refund {amount}: only {refundable} of the captured amount "
                "has not been refunded yet.",
                "amount",
            )
        record.amount_refunded += amount
        refund = {
            "id": random_id("pr_"),
            "object": "refund",
            "status": "succeeded",
            "amount": amount,
            "currency": record.currency,
            "authorization": record.id,
            "reference": record.reference,
            "created": int(time.time()),
        }
        self._refunds[str(refund["id"])] = refund
        our_refund = body.get("reference")
        self._settle_later(
            record,
            "refund",
            amount,
            str(refund["id"]),
            our_refund if isinstance(our_refund, str) else "",
        )
        return dict(refund)

    # -- disputes (called with the lock held) ---------------------------------------------

    def _get_dispute(self, dispute_id: str) -> _DisputeRecord:
        dispute = self._disputes.get(dispute_id)
        if dispute is None:
            raise RequestError(404, "resource_missing", f"No such dispute: '{dispute_id}'")
        return dispute

    def _open_dispute(self, record: _AuthorizationRecord, kind: _DisputeKind) -> None:
        now = int(time.time())
        dispute = _DisputeRecord(
            id=random_id("dp_"),
            authorization=record.id,
            reference=record.reference,
            amount=record.amount_captured,
            currency=record.currency,
            reason=kind.reason,
            network_reason_code=kind.network_reason_code,
            status=WARNING_NEEDS_RESPONSE if kind.inquiry else NEEDS_RESPONSE,
            evidence_due_by=now + EVIDENCE_WINDOW_SECONDS,
            created=now,
        )
        self._disputes[dispute.id] = dispute
        if not dispute.inquiry:
            # A chargeback takes the money back at once; an inquiry only asks questions.
            self._settle_later(record, "dispute", dispute.amount, dispute.id)
        self._notify(dispute, "dispute.created")

    def _submit_evidence(self, dispute_id: str, body: dict[str, Any]) -> dict[str, Any]:
        dispute = self._get_dispute(dispute_id)
        evidence = body.get("evidence")
        if not isinstance(evidence, dict) or not all(
            isinstance(value, str) for value in evidence.values()
        ):
            raise RequestError(
                400,
                "parameter_invalid",
                "'evidence' must be an object whose values are strings.",
                "evidence",
            )
        self._require_open(dispute)
        if dispute.status not in (NEEDS_RESPONSE, WARNING_NEEDS_RESPONSE):
            raise RequestError(
                409,
                "dispute_under_review",
                f"Dispute {dispute.id} is under review: evidence was already submitted.",
            )
        dispute.evidence = dict(evidence)
        dispute.evidence_submissions += 1
        dispute.status = WARNING_UNDER_REVIEW if dispute.inquiry else UNDER_REVIEW
        self._notify(dispute, "dispute.updated")
        submission = dispute.evidence_submissions
        self._later(self._decision_delay_seconds, lambda: self._review(dispute, submission))
        return dispute.to_json()

    def _close_dispute(self, dispute_id: str) -> dict[str, Any]:
        """The merchant accepts the dispute: a chargeback is lost, an inquiry closed."""
        dispute = self._get_dispute(dispute_id)
        self._require_open(dispute)
        self._decide(dispute, WARNING_CLOSED if dispute.inquiry else LOST)
        return dispute.to_json()

    @staticmethod
    def _require_open(dispute: _DisputeRecord) -> None:
        if dispute.closed:
            raise RequestError(
                409, "dispute_closed", f"Dispute {dispute.id} is closed ({dispute.status})."
            )

    def _review(self, dispute: _DisputeRecord, submission: int) -> None:
        """The network's decision on the evidence of one submission, read from its
        `uncategorized_text` as Stripe's test values are."""
        if dispute.evidence_submissions != submission or dispute.status not in (
            UNDER_REVIEW,
            WARNING_UNDER_REVIEW,
        ):
            return  # decided (or closed) meanwhile
        text = (dispute.evidence or {}).get("uncategorized_text", "")
        if "winning_evidence" in text:
            self._decide(dispute, WARNING_CLOSED if dispute.inquiry else WON)
        elif "losing_evidence" in text:
            self._decide(dispute, WARNING_CLOSED if dispute.inquiry else LOST)
        elif "escalate_inquiry_evidence" in text and dispute.inquiry:
            self._escalate(dispute)
        # Anything else stays under review: the sandbox's network never decides it.

    def _decide(self, dispute: _DisputeRecord, status: str) -> None:
        dispute.status = status
        if status == WON:
            record = self._authorizations[dispute.authorization]
            self._settle_later(record, "dispute_reversal", dispute.amount, dispute.id)
        self._notify(dispute, "dispute.closed")

    def _escalate(self, dispute: _DisputeRecord) -> None:
        """The inquiry becomes a chargeback: the money goes, and a new deadline starts."""
        dispute.status = NEEDS_RESPONSE
        dispute.evidence_due_by = int(time.time()) + EVIDENCE_WINDOW_SECONDS
        record = self._authorizations[dispute.authorization]
        self._settle_later(record, "dispute", dispute.amount, dispute.id)
        self._notify(dispute, "dispute.updated")

    def _decide_now(self, dispute_id: str, body: dict[str, Any]) -> dict[str, Any]:
        status = body.get("status")
        if not isinstance(status, str) or status not in DISPUTE_CLOSED_STATUSES:
            raise RequestError(
                400,
                "parameter_invalid",
                "'status' must be one of 'won', 'lost' or 'warning_closed'.",
                "status",
            )
        with self._lock:
            dispute = self._get_dispute(dispute_id)
            self._require_open(dispute)
            if (status == WARNING_CLOSED) != dispute.inquiry:
                raise RequestError(
                    400,
                    "parameter_invalid",
                    "An inquiry closes as 'warning_closed'; a chargeback is 'won' or 'lost'.",
                    "status",
                )
            self._decide(dispute, status)
            return dispute.to_json()

    # -- timers and notifications ----------------------------------------------------------

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        """Run `action` with the lock held `delay` seconds from now, on a timer thread.
        Called with the lock held."""

        def fire() -> None:
            with self._lock:
                if timer not in self._timers:
                    return  # cancelled by stop() as it fired
                self._timers.discard(timer)
                action()

        timer = threading.Timer(delay, fire)
        timer.daemon = True
        self._timers.add(timer)
        timer.start()

    def _warn(self, record: _AuthorizationRecord) -> None:
        """The issuer's early fraud warning on an approved authorization: notified once,
        through the same outbox as disputes. Called with the lock held."""
        notification = {
            "id": random_id("ntf_"),
            "type": "early_fraud_warning.created",
            "created": int(time.time()),
            "early_fraud_warning": {
                "id": random_id("efw_"),
                "authorization": record.id,
                "reference": record.reference,
                "fraud_type": "made_with_stolen_card",
                "created": int(time.time()),
            },
        }
        self._outbox.append(notification)
        self._outbox_changed.notify_all()

    def _notify(self, dispute: _DisputeRecord, kind: str) -> dict[str, Any]:
        """Queue a notification of the dispute as it now is. Called with the lock held."""
        notification = {
            "id": random_id("ntf_"),
            "type": kind,
            "created": int(time.time()),
            "dispute": dispute.to_json(),
        }
        self._outbox.append(notification)
        self._outbox_changed.notify_all()
        return notification

    def _deliver_notifications(self, stop: threading.Event) -> None:
        """The delivery thread: the outbox in creation order, each notification until the
        platform answers it with a 2xx or its attempts run out."""
        while True:
            with self._outbox_changed:
                self._outbox_changed.wait_for(
                    lambda: (
                        stop.is_set() or (bool(self._outbox) and self._notification_url is not None)
                    )
                )
                if stop.is_set():
                    return
                notification = self._outbox[0]
            # Sent without the lock: a slow receiver must not hold up the processor.
            outcome = self._deliver(notification, stop)
            if outcome == "stopped":
                return
            with self._lock:
                if self._outbox and self._outbox[0] is notification:
                    self._outbox.popleft()
                if outcome == "delivered":
                    self._delivered += 1

    def _deliver(
        self, notification: dict[str, Any], stop: threading.Event
    ) -> Literal["delivered", "dropped", "stopped"]:
        body = json.dumps(notification, separators=(",", ":")).encode()
        backoff = NOTIFICATION_FIRST_BACKOFF_SECONDS
        for attempt in range(1, self._notification_attempts + 1):
            with self._lock:
                # Read for each attempt: a receiver configured anew takes the next one.
                url, secret = self._notification_url, self._notification_secret
            if url is not None and secret is not None and _post_notification(url, secret, body):
                return "delivered"
            if attempt < self._notification_attempts:
                if stop.wait(backoff):
                    return "stopped"
                backoff = min(backoff * 2, NOTIFICATION_MAX_BACKOFF_SECONDS)
        logger.warning(
            "sandbox notification %s (%s) dropped after %d attempts",
            notification["id"],
            notification["type"],
            self._notification_attempts,
        )
        return "dropped"

    # -- settlement ------------------------------------------------------------------------

    def _settle_later(
        self,
        record: _AuthorizationRecord,
        kind: _Movement,
        amount: int,
        processor_reference: str | None = None,
        refund_id: str = "",
    ) -> None:
        self._settleable.append(
            {
                "processor_reference": processor_reference or record.id,
                "type": kind,
                "amount": amount,
                "currency": record.currency,
                "charge_id": record.reference or "",
                "refund_id": refund_id,
                "at": time.time(),
            }
        )

    def settlement_rows(
        self, settlement_date: dt.date, lag_days: int = SETTLEMENT_LAG_DAYS
    ) -> list[dict[str, Any]]:
        """The next settlement batch for `settlement_date`: the captures, refunds and
        dispute movements of the business day `lag_days` before it (T+2 by default) not in
        an earlier batch, with the processor's fees. Each movement settles in exactly one
        batch, as with acquirers."""
        business_day = settlement_date - dt.timedelta(days=lag_days)
        rows = []
        with self._lock:
            self._batches += 1
            batch_id = f"batch_{settlement_date:%Y%m%d}_{self._batches}"
            for op in self._settleable:
                if (
                    op.get("batch")
                    or dt.datetime.fromtimestamp(op["at"], dt.UTC).date() != business_day
                ):
                    continue
                op["batch"] = batch_id
                settlement = _SETTLEMENTS[op["type"]]
                fee = settlement.fee(op["amount"])
                rows.append(
                    {
                        "settlement_date": settlement_date.isoformat(),
                        "batch_id": batch_id,
                        "processor_reference": op["processor_reference"],
                        "type": op["type"],
                        "amount": op["amount"],
                        "fee": fee,
                        "net": settlement.sign * op["amount"] - fee,
                        "currency": op["currency"],
                        "charge_id": op["charge_id"],
                        "refund_id": op["refund_id"],
                    }
                )
        return rows


# --------------------------------------------------------------------------------- HTTP


def _post_notification(url: str, secret: str, body: bytes) -> bool:
    """One delivery attempt: True when the receiver answered with a 2xx. Straight to the
    receiver (no proxy, no redirects), and the header named exactly as documented."""
    parts = urlsplit(url)
    connection_class: type[http.client.HTTPConnection] = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(
        parts.hostname or "", parts.port, timeout=NOTIFICATION_TIMEOUT_SECONDS
    )
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign_notification(secret, body, int(time.time())),
    }
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", target, body, headers)
        response = connection.getresponse()
        response.read()
    except (OSError, http.client.HTTPException) as exc:
        logger.info("sandbox notification to %s failed: %r", parts.hostname, exc)
        return False
    finally:
        connection.close()
    if not 200 <= response.status < 300:
        logger.info("sandbox notification to %s answered %d", parts.hostname, response.status)
        return False
    return True
