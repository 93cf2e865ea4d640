"""Stripe-shaped API errors.

Every failure a caller can see is one of these; the API layer renders them as
`{"error": {...}}` with the matching HTTP status.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    status = 500
    type = "api_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        decline_code: str | None = None,
        charge: str | None = None,
        status: int | None = None,
        should_retry: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.decline_code = decline_code
        self.charge = charge
        if status is not None:
            self.status = status
        self.should_retry = should_retry

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "message": self.message}
        for name in ("code", "param", "decline_code", "charge"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        return {"error": body}


class InvalidRequestError(ApiError):
    status = 400
    type = "invalid_request_error"


class IdempotencyError(ApiError):
    status = 400
    type = "idempotency_error"


class AuthenticationError(ApiError):
    status = 401
    type = "invalid_request_error"


class CardError(ApiError):
    status = 402
    type = "card_error"


class PermissionDeniedError(ApiError):
    status = 403
    type = "invalid_request_error"


class ResourceMissingError(InvalidRequestError):
    status = 404

    def __init__(self, kind: str, object_id: str, param: str | None = "id") -> None:
        super().__init__(f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


class ConflictError(ApiError):
    """Another request with the same key is in flight, or a write lost a race: retry."""

    status = 409
    type = "invalid_request_error"

    def __init__(self, message: str, *, code: str = "lock_timeout") -> None:
        super().__init__(message, code=code, should_retry=True)


class ServiceUnavailableError(ApiError):
    """Consistency is in doubt (a dependency failed): refuse, and let the caller retry."""

    status = 503
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
