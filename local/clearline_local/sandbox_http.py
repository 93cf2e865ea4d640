"""What the sandbox services (the card processor, the bank) share: an HTTP server on loopback,
idempotent POSTs, injected faults and latency, and the checks of common request parameters.

Every POST to /v1/* carries an `Idempotency-Key`; a retried key replays the first committed
response, marked `Idempotent-Replayed: true`, and a key used again with other parameters is
refused. A refusal commits nothing and is not stored, and a key not yet used can be revoked
so that a request still on its way with it is refused. Faults (timeouts before or after the
commit, 5xx answers) queue in order and each takes one POST to /v1/*. A service keeps its
domain: it routes the POSTs to its operations, answers its own GETs and /_sandbox/* controls,
and says how a request's fingerprint hides what must not be kept.

Request bodies are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import string
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Literal, Self
from urllib.parse import unquote, urlsplit

logger = logging.getLogger(__name__)

FaultMode = Literal["timeout_before", "timeout_after", "error_500"]
FAULT_MODES: tuple[str, ...] = ("timeout_before", "timeout_after", "error_500")

MAX_AMOUNT = 99_999_999  # Stripe's ceiling: eight digits in the minor unit
MAX_LATENCY_MS = 60_000
MAX_BODY_BYTES = 64 * 1024
MAX_IDEMPOTENCY_KEY_LENGTH = 255

_ID_ALPHABET = string.ascii_letters + string.digits
_CURRENCY_RE = re.compile(r"^[a-z]{3}$")
# Random per process: a fingerprint or digest cannot be matched against hashes of guessed
# numbers computed anywhere else, and nothing derived from a number outlives the sandbox.
_SANDBOX_SECRET = secrets.token_bytes(32)


def keyed_digest(purpose: str, data: str) -> str:
    message = f"{purpose}:{data}".encode()
    return hmac.new(_SANDBOX_SECRET, message, hashlib.sha256).hexdigest()


def random_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def error_body(code: str, message: str, param: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if param is not None:
        error["param"] = param
    return {"error": error}


def request_fingerprint(method: str, path: str, body: dict[str, Any]) -> str:
    """What a key's first request is told apart by. Kept for as long as the key: a service
    replaces what may not be kept (a card or account number) before calling this."""
    return json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))


@dataclass
class Response:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class RequestError(Exception):
    """Refuses a request before anything is committed (nothing is stored for its key)."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.response = Response(status, error_body(code, message, param))


Operation = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class StoredResponse:
    fingerprint: str
    status: int
    body: dict[str, Any]


# ---------------------------------------------------------------------------- body parsing


def require_int(
    body: dict[str, Any], name: str, *, default: int | None = None, minimum: int = 1
) -> int:
    value = body.get(name, default)
    # bool is an int subclass; `true` is never an amount
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(400, "parameter_invalid_integer", f"'{name}' must be an integer.", name)
    if value < minimum or value > MAX_AMOUNT:
        raise RequestError(
            400,
            "parameter_invalid_integer",
            f"'{name}' must be between {minimum} and {MAX_AMOUNT}.",
            name,
        )
    return value


def require_str(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise RequestError(400, "parameter_missing", f"Missing required param: {name}.", name)
    return value


def require_currency(body: dict[str, Any]) -> str:
    currency = require_str(body, "currency").lower()
    if not _CURRENCY_RE.match(currency):
        raise RequestError(
            400, "invalid_currency", "currency must be a three-letter ISO code.", "currency"
        )
    return currency


def _not_found(method: str, path: str) -> RequestError:
    return RequestError(404, "not_found", f"Unrecognized request URL ({method}: {path}).")


# -------------------------------------------------------------------------------- service


class SandboxService(ABC):
    """An in-memory service served over HTTP on a daemon thread. All its state is guarded by
    `_lock`."""

    # How the service names itself: in errors, thread names and the `Server` header.
    name: ClassVar[str]
    server_version: ClassVar[str]
    # The (code, message) of an injected `error_500`.
    internal_error: ClassVar[tuple[str, str]]
    # Where its requests and faults are logged.
    logger: ClassVar[logging.Logger] = logger

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: int = 0,
        fault_delay_seconds: float = 3.0,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._fault_delay_seconds = fault_delay_seconds
        self._lock = threading.Lock()
        self._latency_ms = self._validate_latency(latency_ms)
        self._faults: deque[str] = deque()
        self._idempotency: dict[str, StoredResponse] = {}
        self._revoked: set[str] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns self so it can be chained."""
        if self._server is not None:
            raise RuntimeError(f"{self.name} already started")
        server = _Server((self._host, self._requested_port), self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"{self.name.replace(' ', '-')}-{self.port}",
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{self.name} is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

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

    @staticmethod
    def _validate_latency(value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError("latency_ms must be an integer")
        if not 0 <= value <= MAX_LATENCY_MS:
            raise ValueError(f"latency_ms must be between 0 and {MAX_LATENCY_MS}")
        return value

    def _take_fault(self) -> str | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _settings(self) -> dict[str, Callable[[Any], Any]]:
        """The service's own settings beside `latency_ms`, each a property, with the check
        a new value must pass (ValueError when it does not)."""
        return {}

    def _config(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            **{name: getattr(self, name) for name in self._settings()},
        }

    def _configure(self, body: dict[str, Any]) -> None:
        # Every given setting is checked before any is applied: a refused request changes
        # nothing.
        checks: dict[str, Callable[[Any], Any]] = {
            "latency_ms": self._validate_latency,
            **self._settings(),
        }
        values: dict[str, Any] = {}
        for name, check in checks.items():
            try:
                values[name] = check(body.get(name, getattr(self, name)))
            except ValueError as exc:
                raise RequestError(400, "invalid_config", str(exc), name) from None
        for name, value in values.items():
            setattr(self, name, value)

    # -- what each service answers (called without the lock unless said) -----------------

    @abstractmethod
    def _sandbox_route(self, method: str, path: str, body: dict[str, Any]) -> Response | None:
        """The service's own /_sandbox/* controls; None when `path` is none of them."""

    @abstractmethod
    def _read(self, parts: list[str]) -> dict[str, Any] | None:
        """The resource a GET to /v1/<parts> names; None when it names none. Called with
        the lock held."""

    @abstractmethod
    def _route_post(self, parts: list[str]) -> Operation:
        """The operation a POST to /v1/<parts> commits (run with the lock held)."""

    @abstractmethod
    def _fingerprint(self, method: str, path: str, body: dict[str, Any]) -> str:
        """The request's fingerprint, with nothing in it that may not be kept."""

    # -- request handling (transport-free) ------------------------------------------------

    def _handle(
        self, method: str, path: str, headers: dict[str, str], body: dict[str, Any]
    ) -> Response:
        try:
            if path.startswith("/_sandbox/"):
                return self._handle_sandbox(method, path, body)
            if path.startswith("/v1/"):
                return self._handle_v1(method, path, headers, body)
            raise _not_found(method, path)
        except RequestError as exc:
            return exc.response

    def _handle_sandbox(self, method: str, path: str, body: dict[str, Any]) -> Response:
        if path == "/_sandbox/health" and method == "GET":
            return Response(200, {"status": "ok"})
        if path == "/_sandbox/config":
            if method == "POST":
                self._configure(body)
            if method in ("GET", "POST"):
                return Response(200, self._config())
        if path == "/_sandbox/faults":
            if method == "POST":
                try:
                    self.inject_fault(str(body.get("mode")), body.get("count", 1))
                except ValueError as exc:
                    raise RequestError(400, "invalid_fault", str(exc)) from None
                return Response(200, {"faults": self.pending_faults()})
            if method == "DELETE":
                self.clear_faults()
                return Response(200, {"faults": []})
            if method == "GET":
                return Response(200, {"faults": self.pending_faults()})
        response = self._sandbox_route(method, path, body)
        if response is None:
            raise _not_found(method, path)
        return response

    def _handle_v1(
        self, method: str, path: str, headers: dict[str, str], body: dict[str, Any]
    ) -> Response:
        parts = [unquote(p) for p in path.strip("/").split("/")[1:]]
        if method == "GET":
            with self._lock:
                if len(parts) == 2 and parts[0] == "idempotency":
                    stored = self._idempotency.get(parts[1])
                    if stored is None:
                        raise RequestError(
                            404, "resource_missing", "No response stored for this key."
                        )
                    return Response(stored.status, stored.body)
                resource = self._read(parts)
                if resource is not None:
                    return Response(200, resource)
            raise _not_found(method, path)
        if method != "POST":
            raise RequestError(405, "method_not_allowed", f"{method} is not allowed here.")
        if len(parts) == 3 and parts[0] == "idempotency" and parts[2] == "revoke":
            return self._revoke(parts[1])

        key = headers.get("idempotency-key", "")
        if not key:
            raise RequestError(
                400, "idempotency_key_missing", "An Idempotency-Key header is required."
            )
        if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            raise RequestError(
                400,
                "idempotency_key_too_long",
                f"Idempotency keys are at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters.",
            )
        operation = self._route_post(parts)
        return self.idempotent(key, self._fingerprint(method, path, body), lambda: operation(body))

    def idempotent(
        self, key: str, fingerprint: str, operation: Callable[[], dict[str, Any]]
    ) -> Response:
        """Commit `operation` once under `key`: a retry with the same fingerprint replays
        its response, one with another is refused. Called without the lock."""
        # The lock spans the replay check, the operation and storing its response, so two
        # concurrent requests with one key can never both commit.
        with self._lock:
            if key in self._revoked:
                raise RequestError(
                    409, "idempotency_key_revoked", "This key was revoked before it was used."
                )
            stored = self._idempotency.get(key)
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    raise RequestError(
                        422,
                        "idempotency_mismatch",
                        "Keys for idempotent requests can only be used with the same "
                        "parameters they were first used with.",
                    )
                return Response(stored.status, stored.body, {"Idempotent-Replayed": "true"})
            # Refusals raise before this point is passed and are not stored, as with Stripe:
            # only a request that committed something owns its key.
            result = operation()
            self._idempotency[key] = StoredResponse(fingerprint, 200, result)
            return Response(200, result)

    def _revoke(self, key: str) -> Response:
        """Promise never to commit anything under `key` (so that a request still on its
        way with it is refused), unless something was committed already: then say so,
        with what it was. Revoking twice is revoking once."""
        with self._lock:
            stored = self._idempotency.get(key)
            if stored is not None:
                refusal = error_body(
                    "already_committed", "A request with this key was already committed."
                )
                return Response(409, {**refusal, "committed": stored.body})
            self._revoked.add(key)
            return Response(200, {"revoked": key})


# --------------------------------------------------------------------------------- HTTP


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the default listen backlog (5) resets bursts of clients

    def __init__(self, address: tuple[str, int], service: SandboxService) -> None:
        self.service = service
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    sys_version = ""

    def version_string(self) -> str:
        return f"{self.server.service.server_version} {self.sys_version}"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        service = self.server.service
        log = service.logger
        path = urlsplit(self.path).path
        body = self._read_body()

        latency_ms = service.latency_ms
        if latency_ms:
            time.sleep(latency_ms / 1000)

        fault = service._take_fault() if method == "POST" and path.startswith("/v1/") else None
        if fault == "timeout_before":
            log.info("sandbox fault timeout_before on %s %s", method, path)
            self._drop_after(service._fault_delay_seconds)
            return
        if fault == "error_500":
            log.info("sandbox fault error_500 on %s %s", method, path)
            self._send(Response(500, error_body(*service.internal_error)))
            return

        headers = {k.lower(): v for k, v in self.headers.items()}
        if body is not None:
            response = service._handle(method, path, headers, body)
        else:
            response = Response(
                400, error_body("invalid_json", "The request body must be a JSON object.")
            )

        if fault == "timeout_after":
            # The operation is committed and its response stored; only the answer is lost.
            log.info("sandbox fault timeout_after on %s %s", method, path)
            self._drop_after(service._fault_delay_seconds)
            return
        self._send(response)

    def _read_body(self) -> dict[str, Any] | None:
        """The JSON object sent, {} when there is no body, None when it is not valid."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        if length <= 0:
            return {}  # a bodiless POST (a void, say) means no parameters
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

    def _send(self, response: Response) -> None:
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
        self.server.service.logger.debug("%s - %s", self.address_string(), format % args)
