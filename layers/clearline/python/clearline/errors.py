"""The errors a caller can see, in Stripe's terms (type, code, param).

Every failure a caller can see is one of these; the edges render them (`presentation.
errors`) as `{"error": {...}}` with the HTTP status their class and code call for.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    type = "api_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        decline_code: str | None = None,
        charge: str | None = None,
        should_retry: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.decline_code = decline_code
        self.charge = charge
        self.should_retry = should_retry


class InvalidRequestError(ApiError):
    type = "invalid_request_error"


class IdempotencyError(ApiError):
    type = "idempotency_error"


class AuthenticationError(ApiError):
    type = "invalid_request_error"


class CardError(ApiError):
    type = "card_error"

    def __init__(self, message: str, *, payment_intent: Any = None, **details: Any) -> None:
        super().__init__(message, **details)
        # The intent a declined confirmation leaves, as Stripe's error carries it (a model).
        self.payment_intent = payment_intent


class RateLimitedError(InvalidRequestError):
    """Too many requests (a 429): `reason` is Stripe's Stripe-Rate-Limited-Reason."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, code="rate_limit", should_retry=False)
        self.reason = reason


class PermissionDeniedError(ApiError):
    type = "invalid_request_error"


class UnknownUrlError(InvalidRequestError):
    """No route answers this URL (a 404 without a code, as Stripe's)."""


class ResourceMissingError(InvalidRequestError):
    def __init__(self, kind: str, object_id: str, param: str | None = "id") -> None:
        super().__init__(f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


class ConflictError(ApiError):
    """Another request with the same key is in flight, or a write lost a race: retry."""

    type = "invalid_request_error"

    def __init__(self, message: str, *, code: str = "lock_timeout") -> None:
        super().__init__(message, code=code, should_retry=True)


class ServiceUnavailableError(ApiError):
    """Consistency is in doubt (a dependency failed): refuse, and let the caller retry."""

    type = "api_error"

    def __init__(self, message: str, *, code: str = "service_unavailable") -> None:
        super().__init__(message, code=code, should_retry=True)


def store_unavailable() -> ServiceUnavailableError:
    return ServiceUnavailableError("Clearline could not reach its data store; retry.")


def processor_unavailable() -> ServiceUnavailableError:
    return ServiceUnavailableError(
        "The card processor did not answer in time; retry with the same Idempotency-Key.",
        code="processor_unavailable",
    )
