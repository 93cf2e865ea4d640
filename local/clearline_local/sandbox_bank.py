"""A sandbox bank: an HTTP service on loopback that takes ACH-like credit transfers, the way
Clearline pays merchants out.

A transfer is accepted at once and settles later, on its arrival date, by the bank's own
clock (wall time plus an offset that tests move forward). Whether it is paid or returned is
decided by the account number, as with Stripe's test bank accounts. Like the sandbox
processor (both are `sandbox_http` services), every POST carries an `Idempotency-Key`, a
retried key replays the first committed response, and faults can be injected. All state is
in memory and guarded by one lock.

Request bodies are never logged, and an account number is never kept whole: a transfer keeps
its last four digits and the outcome the number decides, and a stored idempotency fingerprint
a keyed digest of it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

# The limits and fault modes every sandbox shares, importable from here as well.
from clearline_local.sandbox_http import FAULT_MODES as FAULT_MODES
from clearline_local.sandbox_http import MAX_AMOUNT as MAX_AMOUNT
from clearline_local.sandbox_http import MAX_BODY_BYTES as MAX_BODY_BYTES
from clearline_local.sandbox_http import MAX_IDEMPOTENCY_KEY_LENGTH as MAX_IDEMPOTENCY_KEY_LENGTH
from clearline_local.sandbox_http import MAX_LATENCY_MS as MAX_LATENCY_MS
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

TEST_ROUTING_NUMBER = "110000000"
SUCCEEDING_ACCOUNT = "000123456789"
# Stripe's test bank accounts that are returned, with the failure code of each return.
FAILING_ACCOUNTS: dict[str, str] = {
    "000111111116": "no_account",
    "000111111113": "account_closed",
    "000222222227": "insufficient_funds",
    "000333333335": "debit_not_authorized",
    "000444444440": "invalid_currency",
}
FAILURE_MESSAGES: dict[str, str] = {
    "no_account": "The bank account could not be located.",
    "account_closed": "The bank account has been closed.",
    "insufficient_funds": "The bank account has insufficient funds.",
    "debit_not_authorized": "The bank does not allow this debit.",
    "invalid_currency": "The bank account cannot accept this currency.",
}
REPORT_COLUMNS = [
    "report_date",
    "transfer_id",
    "reference",
    "status",
    "amount",
    "currency",
    "failure_code",
]

DEFAULT_ARRIVAL_SECONDS = 86_400
# Bounds that keep the bank's clock within what datetime can represent.
MAX_ARRIVAL_SECONDS = 366 * 86_400
MAX_ADVANCE_SECONDS = 366 * 86_400
MAX_REFERENCE_LENGTH = 255

TransferStatus = Literal["in_transit", "paid", "returned"]

_ACCOUNT_NUMBER_RE = re.compile(r"[0-9]{4,17}")


def _utc_date(timestamp: float) -> dt.date:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).date()


@dataclass
class _TransferRecord:
    """What the bank keeps of a transfer: never the account number."""

    id: str
    amount: int
    currency: str
    reference: str
    account_last4: str
    created: int
    arrival_date: int
    # (failure_code, failure_message) when the transfer is returned on arrival
    failure: tuple[str, str] | None
    reported: bool = False

    def resolved(self, now: float) -> bool:
        return now >= self.arrival_date

    def status(self, now: float) -> TransferStatus:
        if not self.resolved(now):
            return "in_transit"
        return "paid" if self.failure is None else "returned"

    def to_json(self, now: float) -> dict[str, Any]:
        status = self.status(now)
        # A return is only known once the transfer has arrived.
        failure = self.failure if status == "returned" else None
        return {
            "id": self.id,
            "object": "transfer",
            "status": status,
            "amount": self.amount,
            "currency": self.currency,
            "reference": self.reference,
            "account_last4": self.account_last4,
            "created": self.created,
            "arrival_date": self.arrival_date,
            "failure_code": failure[0] if failure else None,
            "failure_message": failure[1] if failure else None,
        }


# ---------------------------------------------------------------------------- body parsing


def _seconds(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number")
    # The bank's clock only moves forward, as the days of a real bank do.
    if not 0 <= value <= MAX_ADVANCE_SECONDS:
        raise ValueError(f"{name} must be between 0 and {MAX_ADVANCE_SECONDS}")
    return value


# ----------------------------------------------------------------------------------- bank


class SandboxBank(SandboxService):
    """An in-memory bank that takes ACH-like credit transfers, served over HTTP on a daemon
    thread."""

    name = "sandbox bank"
    server_version = "ClearlineSandboxBank/1.0"
    internal_error = ("bank_error", "The bank had an internal error.")
    logger = logger

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        arrival_seconds: int = DEFAULT_ARRIVAL_SECONDS,
        fault_delay_seconds: float = 3.0,
    ) -> None:
        super().__init__(host, port, fault_delay_seconds=fault_delay_seconds)
        self._arrival_seconds = self._validate_arrival(arrival_seconds)
        self._clock_offset = 0.0
        self._transfers: dict[str, _TransferRecord] = {}  # in creation order

    # -- the bank's clock -----------------------------------------------------------------

    def now(self) -> float:
        with self._lock:
            return self._now()

    def advance(self, seconds: float) -> float:
        """Move the bank's clock forward by `seconds`; returns the bank's new now."""
        seconds = _seconds(seconds, "seconds")
        with self._lock:
            self._clock_offset += seconds
            return self._now()

    def _now(self) -> float:
        return time.time() + self._clock_offset

    # -- test controls --------------------------------------------------------------------

    @property
    def arrival_seconds(self) -> int:
        with self._lock:
            return self._arrival_seconds

    @arrival_seconds.setter
    def arrival_seconds(self, value: int) -> None:
        value = self._validate_arrival(value)
        with self._lock:
            self._arrival_seconds = value

    def transfers(self) -> list[dict[str, Any]]:
        """Every transfer as it stands by the bank's clock, in creation order."""
        with self._lock:
            now = self._now()
            return [record.to_json(now) for record in self._transfers.values()]

    @staticmethod
    def _validate_arrival(value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError("arrival_seconds must be an integer")
        # At least a second: a transfer is always in transit when it is accepted.
        if not 1 <= value <= MAX_ARRIVAL_SECONDS:
            raise ValueError(f"arrival_seconds must be between 1 and {MAX_ARRIVAL_SECONDS}")
        return value

    # -- the bank's report ----------------------------------------------------------------

    def report_rows(self, day: dt.date) -> list[dict[str, Any]]:
        """The transfers due on `day` (UTC, by the bank's clock) that have resolved and were
        in no earlier report, in creation order. Each transfer is reported once, as in an
        acquirer's files; one still in transit waits for a later report."""
        rows = []
        with self._lock:
            now = self._now()
            for record in self._transfers.values():
                if (
                    record.reported
                    or not record.resolved(now)
                    or _utc_date(record.arrival_date) != day
                ):
                    continue
                record.reported = True
                rows.append(
                    {
                        "report_date": day.isoformat(),
                        "transfer_id": record.id,
                        "reference": record.reference,
                        "status": record.status(now),
                        "amount": record.amount,
                        "currency": record.currency,
                        "failure_code": record.failure[0] if record.failure else "",
                    }
                )
        return rows

    # -- request handling (transport-free) ------------------------------------------------

    def _settings(self) -> dict[str, Callable[[Any], Any]]:
        return {"arrival_seconds": self._validate_arrival}

    def _sandbox_route(self, method: str, path: str, body: dict[str, Any]) -> Response | None:
        if path == "/_sandbox/transfers" and method == "GET":
            return Response(200, {"data": self.transfers()})
        if path == "/_sandbox/clock":
            if method == "POST":
                try:
                    seconds = _seconds(body.get("advance_seconds"), "advance_seconds")
                except ValueError as exc:
                    raise RequestError(400, "invalid_clock", str(exc), "advance_seconds") from None
                return Response(200, {"now": self.advance(seconds)})
            if method == "GET":
                return Response(200, {"now": self.now()})
        if path == "/_sandbox/reports" and method == "POST":
            try:
                day = dt.date.fromisoformat(str(body.get("date")))
            except ValueError as exc:
                raise RequestError(400, "invalid_date", str(exc), "date") from None
            return Response(200, {"rows": self.report_rows(day)})
        return None

    def _read(self, parts: list[str]) -> dict[str, Any] | None:
        if len(parts) == 2 and parts[0] == "transfers":
            record = self._transfers.get(parts[1])
            if record is None:
                raise RequestError(404, "resource_missing", f"No such transfer: '{parts[1]}'")
            return record.to_json(self._now())
        return None

    def _fingerprint(self, method: str, path: str, body: dict[str, Any]) -> str:
        if "account_number" in body:
            # Kept for as long as the key: a keyed digest tells another account apart without
            # keeping its number.
            canonical = json.dumps(body["account_number"])
            body = {**body, "account_number": keyed_digest("request-account", canonical)}
        return request_fingerprint(method, path, body)

    def _route_post(self, parts: list[str]) -> Operation:
        # No cancel route: an ACH credit, once sent, cannot be recalled.
        if parts == ["transfers"]:
            return self._create_transfer
        raise RequestError(404, "not_found", "Unrecognized request URL.")

    # -- operations (called with the lock held) -------------------------------------------

    def _create_transfer(self, body: dict[str, Any]) -> dict[str, Any]:
        amount = require_int(body, "amount")
        currency = require_currency(body)
        routing_number = require_str(body, "routing_number")
        if routing_number != TEST_ROUTING_NUMBER:
            raise RequestError(
                400,
                "invalid_routing_number",
                "The routing number is not a valid sandbox routing number.",
                "routing_number",
            )
        account_number = require_str(body, "account_number")
        if not _ACCOUNT_NUMBER_RE.fullmatch(account_number):
            # The message never repeats the number.
            raise RequestError(
                400,
                "invalid_account_number",
                "The account number must be 4 to 17 digits.",
                "account_number",
            )
        reference = require_str(body, "reference")
        if len(reference) > MAX_REFERENCE_LENGTH:
            raise RequestError(
                400,
                "parameter_invalid",
                f"'reference' is at most {MAX_REFERENCE_LENGTH} characters.",
                "reference",
            )

        # The number is read here, and only its last four digits and outcome are kept.
        failure_code = FAILING_ACCOUNTS.get(account_number)
        now = self._now()
        created = int(now)
        record = _TransferRecord(
            id=random_id("tr_"),
            amount=amount,
            currency=currency,
            reference=reference,
            account_last4=account_number[-4:],
            created=created,
            arrival_date=created + self._arrival_seconds,
            failure=(
                (failure_code, FAILURE_MESSAGES[failure_code]) if failure_code is not None else None
            ),
        )
        self._transfers[record.id] = record
        return record.to_json(now)
