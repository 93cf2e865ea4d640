"""A sandbox bank: an HTTP service on loopback that takes ACH-like credit transfers, the way
Clearline pays merchants out.

A transfer is accepted at once and settles later, on its arrival date, by the bank's own
clock (wall time plus an offset that tests move forward). Whether it is paid or returned is
decided by the account number, as with Stripe's test bank accounts. Like the sandbox
processor, every POST carries an `Idempotency-Key`, a retried key replays the first committed
response, and faults can be injected. All state is in memory and guarded by one lock.

Request bodies are never logged, and an account number is never kept whole: a transfer keeps
its last four digits and the outcome the number decides, and a stored idempotency fingerprint
a keyed digest of it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
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
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from clearline_local.sandbox_processor import (
    FAULT_MODES,
    MAX_AMOUNT,
    MAX_BODY_BYTES,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_LATENCY_MS,
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

_ID_ALPHABET = string.ascii_letters + string.digits
_CURRENCY_RE = re.compile(r"^[a-z]{3}$")
_ACCOUNT_NUMBER_RE = re.compile(r"[0-9]{4,17}")
# Random per process: a digest cannot be matched against digests of guessed numbers made
# anywhere else, and nothing derived from a number outlives the sandbox.
_SANDBOX_SECRET = secrets.token_bytes(32)


def _keyed_digest(purpose: str, data: str) -> str:
    message = f"{purpose}:{data}".encode()
    return hmac.new(_SANDBOX_SECRET, message, hashlib.sha256).hexdigest()


def _random_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def _error(code: str, message: str, param: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if param is not None:
        error["param"] = param
    return {"error": error}


def _utc_date(timestamp: float) -> dt.date:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).date()


@dataclass
class _Response:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class _RequestError(Exception):
    """Refuses a request before anything is committed (nothing is stored for its key)."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.response = _Response(status, _error(code, message, param))


_Operation = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class _StoredResponse:
    fingerprint: str
    status: int
    body: dict[str, Any]


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


def _require_str(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise _RequestError(400, "parameter_missing", f"Missing required param: {name}.", name)
    return value


def _require_amount(body: dict[str, Any]) -> int:
    value = body.get("amount")
    # bool is an int subclass; `true` is never an amount
    if not isinstance(value, int) or isinstance(value, bool):
        raise _RequestError(
            400, "parameter_invalid_integer", "'amount' must be an integer.", "amount"
        )
    if not 1 <= value <= MAX_AMOUNT:
        raise _RequestError(
            400,
            "parameter_invalid_integer",
            f"'amount' must be between 1 and {MAX_AMOUNT}.",
            "amount",
        )
    return value


def _fingerprint(method: str, path: str, body: dict[str, Any]) -> str:
    if "account_number" in body:
        # Kept for as long as the key: a keyed digest tells another account apart without
        # keeping its number.
        canonical = json.dumps(body["account_number"])
        body = {**body, "account_number": _keyed_digest("request-account", canonical)}
    return json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))


def _seconds(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number")
    # The bank's clock only moves forward, as the days of a real bank do.
    if not 0 <= value <= MAX_ADVANCE_SECONDS:
        raise ValueError(f"{name} must be between 0 and {MAX_ADVANCE_SECONDS}")
    return value


# ----------------------------------------------------------------------------------- bank


class SandboxBank:
    """An in-memory bank that takes ACH-like credit transfers, served over HTTP on a daemon
    thread."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        arrival_seconds: int = DEFAULT_ARRIVAL_SECONDS,
        fault_delay_seconds: float = 3.0,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._fault_delay_seconds = fault_delay_seconds
        self._lock = threading.Lock()
        self._arrival_seconds = self._validate_arrival(arrival_seconds)
        self._latency_ms = 0
        self._clock_offset = 0.0
        self._faults: deque[str] = deque()
        self._transfers: dict[str, _TransferRecord] = {}  # in creation order
        self._idempotency: dict[str, _StoredResponse] = {}
        self._revoked: set[str] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> SandboxBank:
        """Bind and serve in a daemon thread; returns self so it can be chained."""
        if self._server is not None:
            raise RuntimeError("sandbox bank already started")
        server = _Server((self._host, self._requested_port), _Handler, self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"sandbox-bank-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port. Handlers still sleeping in a fault are
        daemon threads and are abandoned rather than waited for."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> SandboxBank:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("sandbox bank is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

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
    def latency_ms(self) -> int:
        with self._lock:
            return self._latency_ms

    @latency_ms.setter
    def latency_ms(self, value: int) -> None:
        value = self._validate_latency(value)
        with self._lock:
            self._latency_ms = value

    @property
    def arrival_seconds(self) -> int:
        with self._lock:
            return self._arrival_seconds

    @arrival_seconds.setter
    def arrival_seconds(self, value: int) -> None:
        value = self._validate_arrival(value)
        with self._lock:
            self._arrival_seconds = value

    def inject_fault(self, mode: str, count: int = 1) -> None:
        """Make the next `count` POSTs to /v1/* fail with `mode`. Faults queue in order."""
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; expected one of {FAULT_MODES}")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError("count must be a positive integer")
        with self._lock:
            self._faults.extend([mode] * count)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending_faults(self) -> list[str]:
        with self._lock:
            return list(self._faults)

    def transfers(self) -> list[dict[str, Any]]:
        """Every transfer as it stands by the bank's clock, in creation order."""
        with self._lock:
            now = self._now()
            return [record.to_json(now) for record in self._transfers.values()]

    @staticmethod
    def _validate_latency(value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError("latency_ms must be an integer")
        if not 0 <= value <= MAX_LATENCY_MS:
            raise ValueError(f"latency_ms must be between 0 and {MAX_LATENCY_MS}")
        return value

    @staticmethod
    def _validate_arrival(value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError("arrival_seconds must be an integer")
        # At least a second: a transfer is always in transit when it is accepted.
        if not 1 <= value <= MAX_ARRIVAL_SECONDS:
            raise ValueError(f"arrival_seconds must be between 1 and {MAX_ARRIVAL_SECONDS}")
        return value

    def _take_fault(self) -> str | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

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

    def _handle(
        self, method: str, path: str, headers: dict[str, str], body: dict[str, Any]
    ) -> _Response:
        try:
            if path.startswith("/_sandbox/"):
                return self._handle_sandbox(method, path, body)
            if path.startswith("/v1/"):
                return self._handle_v1(method, path, headers, body)
            raise _RequestError(404, "not_found", f"Unrecognized request URL ({method}: {path}).")
        except _RequestError as exc:
            return exc.response

    def _handle_sandbox(self, method: str, path: str, body: dict[str, Any]) -> _Response:
        if path == "/_sandbox/health" and method == "GET":
            return _Response(200, {"status": "ok"})
        if path == "/_sandbox/transfers" and method == "GET":
            return _Response(200, {"data": self.transfers()})
        if path == "/_sandbox/clock":
            if method == "POST":
                try:
                    seconds = _seconds(body.get("advance_seconds"), "advance_seconds")
                except ValueError as exc:
                    raise _RequestError(400, "invalid_clock", str(exc), "advance_seconds") from None
                return _Response(200, {"now": self.advance(seconds)})
            if method == "GET":
                return _Response(200, {"now": self.now()})
        if path == "/_sandbox/config":
            if method == "POST":
                self._configure(body)
            if method in ("GET", "POST"):
                return _Response(
                    200, {"latency_ms": self.latency_ms, "arrival_seconds": self.arrival_seconds}
                )
        if path == "/_sandbox/reports" and method == "POST":
            try:
                day = dt.date.fromisoformat(str(body.get("date")))
            except ValueError as exc:
                raise _RequestError(400, "invalid_date", str(exc), "date") from None
            return _Response(200, {"rows": self.report_rows(day)})
        if path == "/_sandbox/faults":
            if method == "POST":
                try:
                    self.inject_fault(str(body.get("mode")), body.get("count", 1))
                except ValueError as exc:
                    raise _RequestError(400, "invalid_fault", str(exc)) from None
                return _Response(200, {"faults": self.pending_faults()})
            if method == "DELETE":
                self.clear_faults()
                return _Response(200, {"faults": []})
            if method == "GET":
                return _Response(200, {"faults": self.pending_faults()})
        raise _RequestError(404, "not_found", f"Unrecognized request URL ({method}: {path}).")

    def _configure(self, body: dict[str, Any]) -> None:
        # Every given setting is checked before any is applied: a refused request changes
        # nothing.
        try:
            latency = self._validate_latency(body.get("latency_ms", self.latency_ms))
        except ValueError as exc:
            raise _RequestError(400, "invalid_config", str(exc), "latency_ms") from None
        try:
            arrival = self._validate_arrival(body.get("arrival_seconds", self.arrival_seconds))
        except ValueError as exc:
            raise _RequestError(400, "invalid_config", str(exc), "arrival_seconds") from None
        self.latency_ms = latency
        self.arrival_seconds = arrival

    def _handle_v1(
        self, method: str, path: str, headers: dict[str, str], body: dict[str, Any]
    ) -> _Response:
        parts = [unquote(p) for p in path.strip("/").split("/")[1:]]
        if method == "GET":
            with self._lock:
                if len(parts) == 2 and parts[0] == "transfers":
                    record = self._transfers.get(parts[1])
                    if record is None:
                        raise _RequestError(
                            404, "resource_missing", f"No such transfer: '{parts[1]}'"
                        )
                    return _Response(200, record.to_json(self._now()))
                if len(parts) == 2 and parts[0] == "idempotency":
                    stored = self._idempotency.get(parts[1])
                    if stored is None:
                        raise _RequestError(
                            404, "resource_missing", "No response stored for this key."
                        )
                    return _Response(stored.status, stored.body)
            raise _RequestError(404, "not_found", f"Unrecognized request URL ({method}: {path}).")
        if method != "POST":
            raise _RequestError(405, "method_not_allowed", f"{method} is not allowed here.")
        if len(parts) == 3 and parts[0] == "idempotency" and parts[2] == "revoke":
            return self._revoke(parts[1])

        key = headers.get("idempotency-key", "")
        if not key:
            raise _RequestError(
                400, "idempotency_key_missing", "An Idempotency-Key header is required."
            )
        if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            raise _RequestError(
                400,
                "idempotency_key_too_long",
                f"Idempotency keys are at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters.",
            )
        operation = self._route_post(parts)
        fingerprint = _fingerprint(method, path, body)
        # The lock spans the replay check, the operation and storing its response, so two
        # concurrent requests with one key can never both commit.
        with self._lock:
            if key in self._revoked:
                raise _RequestError(
                    409, "idempotency_key_revoked", "This key was revoked before it was used."
                )
            stored = self._idempotency.get(key)
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    raise _RequestError(
                        422,
                        "idempotency_mismatch",
                        "Keys for idempotent requests can only be used with the same "
                        "parameters they were first used with.",
                    )
                return _Response(stored.status, stored.body, {"Idempotent-Replayed": "true"})
            # Refusals raise before this point is passed and are not stored: only a request
            # that committed something owns its key.
            result = operation(body)
            self._idempotency[key] = _StoredResponse(fingerprint, 200, result)
            return _Response(200, result)

    def _revoke(self, key: str) -> _Response:
        """Promise never to commit anything under `key` (so that a request still on its
        way with it is refused), unless something was committed already: then say so,
        with what it was. Revoking twice is revoking once."""
        with self._lock:
            stored = self._idempotency.get(key)
            if stored is not None:
                return _Response(
                    409,
                    {
                        "error": {
                            "code": "already_committed",
                            "message": "A request with this key was already committed.",
                        },
                        "committed": stored.body,
                    },
                )
            self._revoked.add(key)
            return _Response(200, {"revoked": key})

    def _route_post(self, parts: list[str]) -> _Operation:
        # No cancel route: an ACH credit, once sent, cannot be recalled.
        if parts == ["transfers"]:
            return self._create_transfer
        raise _RequestError(404, "not_found", "Unrecognized request URL.")

    # -- operations (called with the lock held) -------------------------------------------

    def _create_transfer(self, body: dict[str, Any]) -> dict[str, Any]:
        amount = _require_amount(body)
        currency = _require_str(body, "currency").lower()
        if not _CURRENCY_RE.match(currency):
            raise _RequestError(
                400, "invalid_currency", "currency must be a three-letter ISO code.", "currency"
            )
        routing_number = _require_str(body, "routing_number")
        if routing_number != TEST_ROUTING_NUMBER:
            raise _RequestError(
                400,
                "invalid_routing_number",
                "The routing number is not a valid sandbox routing number.",
                "routing_number",
            )
        account_number = _require_str(body, "account_number")
        if not _ACCOUNT_NUMBER_RE.fullmatch(account_number):
            # The message never repeats the number.
            raise _RequestError(
                400,
                "invalid_account_number",
                "The account number must be 4 to 17 digits.",
                "account_number",
            )
        reference = _require_str(body, "reference")
        if len(reference) > MAX_REFERENCE_LENGTH:
            raise _RequestError(
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
            id=_random_id("tr_"),
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


# --------------------------------------------------------------------------------- HTTP


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the default listen backlog (5) resets bursts of clients

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        bank: SandboxBank,
    ) -> None:
        self.bank = bank
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "ClearlineSandboxBank/1.0"
    sys_version = ""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        bank = self.server.bank
        path = urlsplit(self.path).path
        body = self._read_body()

        latency_ms = bank.latency_ms
        if latency_ms:
            time.sleep(latency_ms / 1000)

        fault = bank._take_fault() if method == "POST" and path.startswith("/v1/") else None
        if fault == "timeout_before":
            logger.info("sandbox fault timeout_before on %s %s", method, path)
            self._drop_after(bank._fault_delay_seconds)
            return
        if fault == "error_500":
            logger.info("sandbox fault error_500 on %s %s", method, path)
            self._send(_Response(500, _error("bank_error", "The bank had an internal error.")))
            return

        headers = {k.lower(): v for k, v in self.headers.items()}
        if body is not None:
            response = bank._handle(method, path, headers, body)
        else:
            response = _Response(
                400, _error("invalid_json", "The request body must be a JSON object.")
            )

        if fault == "timeout_after":
            # The transfer is committed and its response stored; only the answer is lost.
            logger.info("sandbox fault timeout_after on %s %s", method, path)
            self._drop_after(bank._fault_delay_seconds)
            return
        self._send(response)

    def _read_body(self) -> dict[str, Any] | None:
        """The JSON object sent, {} when there is no body, None when it is not valid."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        if length <= 0:
            return {}
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the unread body would corrupt the next request
            return None
        raw = self.rfile.read(length)
        try:
            parsed = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        return parsed if isinstance(parsed, dict) else None

    def _drop_after(self, seconds: float) -> None:
        """Hold the connection silently, then close it without answering."""
        time.sleep(seconds)
        self.close_connection = True

    def _send(self, response: _Response) -> None:
        payload = json.dumps(response.body).encode()
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # The request line only (method, path, status): bodies are never logged.
        logger.debug("%s - %s", self.address_string(), format % args)
