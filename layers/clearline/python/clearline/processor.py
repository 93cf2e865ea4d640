"""Client for the card processor's HTTP API.

Every call that moves money carries an idempotency key, so a call whose outcome is
unknown (timeout, dropped connection, 5xx) can be retried with the same key and returns
the first result instead of moving money twice. The client never retries by itself: the
caller decides, because only it knows whether the charge must first be marked PROCESSING.

Standard library only (plus pydantic for the results), so it imports quickly on Lambda.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = [
    "Authorization",
    "Card",
    "ProcessorBusy",
    "ProcessorClient",
    "ProcessorDispute",
    "ProcessorError",
    "ProcessorRefund",
    "ProcessorRejected",
    "ProcessorUnavailable",
    "UnknownToken",
]

if TYPE_CHECKING:
    from clearline.processor_capacity import ProcessorCapacity
    from clearline.vault_client import VaultClient

_M = TypeVar("_M", bound=BaseModel)
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_IDEMPOTENCY_KEY_LENGTH = 255


class ProcessorError(Exception):
    """Base class of every processor failure."""


class ProcessorUnavailable(ProcessorError):
    """The processor could not be reached or answered 5xx.

    The outcome is unknown: the operation may or may not have been committed. Retrying
    with the same idempotency key is safe, or `ProcessorClient.lookup` tells what happened.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ProcessorBusy(ProcessorError):
    """The call was not processed, and it is known not to have been: the processor refused
    it for its rate limit (429), or Clearline did not send it for want of capacity.

    Not an outcome-unknown failure: nothing moved under the key, so retrying with the same
    key later is a first attempt. Kept apart from ProcessorUnavailable so that a charge
    refused this way is not left waiting as if the processor might have taken it.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UnknownToken(ProcessorError):
    """The processor does not know the card token (nothing was authorized)."""

    def __init__(self, token: str, message: str) -> None:
        super().__init__(message)
        self.token = token


class ProcessorRejected(ProcessorError):
    """The processor refused the request (4xx), e.g. an over-refund or a second capture."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class Card(BaseModel):
    model_config = ConfigDict(frozen=True)

    brand: str
    last4: str
    exp_month: int
    exp_year: int
    funding: str
    country: str | None = None
    # The same for every authorization of one card number, at this processor.
    fingerprint: str | None = None
    network: str | None = None
    cvc_check: str | None = None


class Authorization(BaseModel):
    """An authorization as the processor reports it (declines included)."""

    model_config = ConfigDict(frozen=True)

    id: str
    status: Literal["approved", "declined"]
    amount: int
    currency: str
    captured: bool
    amount_captured: int
    amount_refunded: int
    voided: bool = False
    reference: str | None = None
    card: Card
    code: str | None = None
    decline_code: str | None = None
    message: str | None = None
    network_transaction_id: str | None = None

    @property
    def approved(self) -> bool:
        return self.status == "approved"


class ProcessorRefund(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    status: str
    amount: int
    authorization: str


class ProcessorFraudWarning(BaseModel):
    """An issuer's early warning of fraud on an authorization, before any dispute."""

    model_config = ConfigDict(frozen=True)

    id: str
    authorization: str
    reference: str | None = None  # our charge id
    fraud_type: str
    created: int


class ProcessorDispute(BaseModel):
    """A dispute as the processor (the card network, through it) reports it."""

    model_config = ConfigDict(frozen=True)

    id: str
    authorization: str
    reference: str | None = None  # our charge id
    amount: int
    currency: str
    reason: str
    network_reason_code: str | None = None
    status: str
    evidence_due_by: int | None = None
    created: int

    @property
    def inquiry(self) -> bool:
        return self.status.startswith("warning_")


class JsonApiClient:
    """Synchronous JSON-over-HTTP transport for a payment partner's API (the processor, the
    bank): idempotency keys on the calls that move money, and failures sorted into
    unavailable (outcome unknown: retry with the key) and rejected (nothing happened)."""

    def __init__(self, base_url: str, timeout_seconds: float = 10.0) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"partner URL must be http(s)://host[:port], got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        # A proxy from the environment must not capture calls to a processor on loopback
        # (the local stack); remote processors keep the usual proxy settings.
        handlers: list[urllib.request.BaseHandler] = []
        if parsed.hostname in _LOOPBACK_HOSTS:
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)

    # -- keys -----------------------------------------------------------------------------

    def revoke(self, idempotency_key: str) -> bool:
        """Ask the processor never to commit a request with this key. True when it is
        revoked (nothing was committed, and nothing will be); False when a request with it
        was committed already. Revoking twice is safe."""
        _check_key(idempotency_key)
        try:
            self._request("POST", f"/v1/idempotency/{_segment(idempotency_key)}/revoke", {})
        except ProcessorRejected as exc:
            if exc.status == 409 and exc.code == "already_committed":
                return False
            raise
        return True

    def lookup(self, idempotency_key: str) -> dict[str, Any] | None:
        """The response the processor committed for one of our idempotency keys, or None
        if it never committed anything under that key (so retrying it is a first attempt).
        """
        _check_key(idempotency_key)
        try:
            return self._request("GET", f"/v1/idempotency/{_segment(idempotency_key)}")
        except ProcessorRejected as exc:
            if exc.status == 404:
                return None
            raise

    # -- transport ------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        *,
        token: str | None = None,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            _check_key(idempotency_key)
            headers["Idempotency-Key"] = idempotency_key
        request = urllib.request.Request(
            self.base_url + path, data=data, headers=headers, method=method
        )
        try:
            with self._opener.open(request, timeout=self.timeout_seconds) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise _http_error(exc, token) from None
        except (http.client.HTTPException, OSError) as exc:  # URLError is an OSError
            # Refused, reset, dropped or timed out: the request may have been committed.
            raise ProcessorUnavailable(f"{method} {path}: {_reason(exc)}") from exc
        try:
            parsed = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            # A 2xx we cannot read: the operation may have happened, so its outcome is unknown.
            raise ProcessorUnavailable(f"{method} {path}: response is not JSON") from exc
        if not isinstance(parsed, dict):
            raise ProcessorUnavailable(f"{method} {path}: response is not a JSON object")
        return parsed

    @staticmethod
    def _parse(model: type[_M], data: dict[str, Any]) -> _M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            # The processor committed something we cannot understand: a contract breach,
            # not a transient failure, so it is not reported as retryable.
            raise ProcessorError(
                f"unexpected {model.__name__} from processor: {exc.error_count()} errors"
            ) from exc


_FROM_ENVIRONMENT: Any = object()


class ProcessorClient(JsonApiClient):
    """The card processor's API.

    The calls that move money (authorize, capture, void, refund) each take a permit from
    `capacity`, the processor's rate limit shared by every function, before they are sent;
    without one they raise ProcessorBusy, sending nothing. Unless given a limiter (or None),
    a client takes the one its function's environment sets (CLEARLINE_PROCESSOR_TPS), so
    every function that calls the processor counts against the same limit."""

    def __init__(
        self,
        base_url: str,
        timeout_seconds: float = 10.0,
        *,
        vault: VaultClient | None = None,
        capacity: ProcessorCapacity | None = _FROM_ENVIRONMENT,
    ) -> None:
        super().__init__(base_url, timeout_seconds)
        # Stored cards are authorized through the vault, which alone can send their number.
        self.vault = vault
        if capacity is _FROM_ENVIRONMENT:
            from clearline.processor_capacity import ProcessorCapacity

            capacity = ProcessorCapacity.from_env()
        self.capacity: ProcessorCapacity | None = capacity

    def _take_capacity(self, operation: str) -> None:
        if self.capacity is not None:
            self.capacity.acquire(operation)

    # -- money-moving calls ---------------------------------------------------------------

    def authorize(
        self,
        *,
        idempotency_key: str,
        token: str,
        amount: int,
        currency: str,
        capture: bool,
        reference: str,
        stored_card_of: str | None = None,
        authentication: str | None = None,
    ) -> Authorization:
        """Authorize (and with `capture`, capture) `amount`. A decline is a result, not an
        error: check `Authorization.approved`.

        `token` is a processor token; or, with `stored_card_of` (the merchant), a payment
        method in the vault, which sends the card in its place under the same key, with
        the outcome of a 3-D Secure `authentication` of it if there was one."""
        body: dict[str, Any] = {
            "amount": amount,
            "currency": currency,
            "capture": capture,
            "reference": reference,
        }
        _check_key(idempotency_key)  # a call refused for its key takes no permit
        if stored_card_of is not None and self.vault is None:
            # A function set up without the vault cannot know what happened to this card:
            # the charge stays pending (never failed) until one that can asks.
            raise ProcessorUnavailable(f"no vault is configured to authorize {token}")
        self._take_capacity("authorize")
        if stored_card_of is None:
            data = self._request(
                "POST", "/v1/authorizations", {"token": token, **body}, idempotency_key, token=token
            )
            return self._parse(Authorization, data)
        assert self.vault is not None
        forwarded = {
            "merchant": stored_card_of,
            "payment_method": token,
            "authentication": authentication,
            **body,
        }
        data = self.vault.forward_authorization(idempotency_key=idempotency_key, body=forwarded)
        return self._parse(Authorization, data)

    def capture(self, *, idempotency_key: str, authorization_id: str, amount: int) -> Authorization:
        """Capture `amount` (at most the authorized amount) of an approved authorization."""
        path = f"/v1/authorizations/{_segment(authorization_id)}/capture"
        self._take_capacity("capture")
        data = self._request("POST", path, {"amount": amount}, idempotency_key)
        return self._parse(Authorization, data)

    def void(self, *, idempotency_key: str, authorization_id: str) -> Authorization:
        """Release an uncaptured authorization."""
        path = f"/v1/authorizations/{_segment(authorization_id)}/void"
        self._take_capacity("void")
        data = self._request("POST", path, {}, idempotency_key)
        return self._parse(Authorization, data)

    def refund(
        self,
        *,
        idempotency_key: str,
        authorization_id: str,
        amount: int,
        reference: str | None = None,
    ) -> ProcessorRefund:
        """Refund `amount` of what was captured and not yet refunded. `reference` (our
        refund id) comes back on the settlement file's row for this refund."""
        body: dict[str, Any] = {"authorization": authorization_id, "amount": amount}
        if reference is not None:
            body["reference"] = reference
        self._take_capacity("refund")
        data = self._request("POST", "/v1/refunds", body, idempotency_key)
        return self._parse(ProcessorRefund, data)

    def submit_dispute_evidence(
        self, *, idempotency_key: str, dispute_id: str, evidence: dict[str, str]
    ) -> ProcessorDispute:
        """Send the merchant's evidence to the network; the decision comes later."""
        path = f"/v1/disputes/{_segment(dispute_id)}/evidence"
        data = self._request("POST", path, {"evidence": evidence}, idempotency_key)
        return self._parse(ProcessorDispute, data)

    def close_dispute(self, *, idempotency_key: str, dispute_id: str) -> ProcessorDispute:
        """Accept the dispute: it is lost (an inquiry is closed)."""
        path = f"/v1/disputes/{_segment(dispute_id)}/close"
        data = self._request("POST", path, {}, idempotency_key)
        return self._parse(ProcessorDispute, data)

    # -- reads ----------------------------------------------------------------------------

    def get_dispute(self, dispute_id: str) -> ProcessorDispute:
        data = self._request("GET", f"/v1/disputes/{_segment(dispute_id)}")
        return self._parse(ProcessorDispute, data)

    def get_authorization(self, authorization_id: str) -> Authorization:
        """The processor's current view of an authorization."""
        data = self._request("GET", f"/v1/authorizations/{_segment(authorization_id)}")
        return self._parse(Authorization, data)


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _check_key(idempotency_key: str) -> None:
    if not idempotency_key or len(idempotency_key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ValueError(
            f"idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters long"
        )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc.reason, str):
        exc = exc.reason
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"


def _http_error(exc: urllib.error.HTTPError, token: str | None) -> ProcessorError:
    status = exc.code
    try:
        payload = json.loads(exc.read() or b"{}")
    except (OSError, http.client.HTTPException, ValueError):
        payload = {}
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        error = {}
    code = str(error.get("code") or f"http_{status}")
    message = str(error.get("message") or exc.reason or "")
    # 429: refused for the rate limit, before anything was done.
    if status == 429:
        return ProcessorBusy(f"processor answered {status} {code}", status=status)
    # 5xx: the processor failed somewhere in the middle; the same key may be retried.
    if status >= 500:
        return ProcessorUnavailable(f"processor answered {status} {code}", status=status)
    if status == 404 and code == "unknown_token":
        return UnknownToken(token or "", message)
    return ProcessorRejected(code, message, status)
