"""Errors as Stripe answers them: an HTTP status, and `{"error": {...}}` with a `doc_url`."""

from __future__ import annotations

from typing import Any

from clearline.errors import (
    ApiError,
    AuthenticationError,
    CardError,
    ConflictError,
    IdempotencyError,
    InvalidRequestError,
    PermissionDeniedError,
    RateLimitedError,
    ResourceMissingError,
    ServiceUnavailableError,
    UnknownUrlError,
)
from clearline.models import PaymentIntent
from presentation.links import Links
from presentation.payment_intents import render_payment_intent

# The status of an error with one of these codes, whatever its class.
STATUS_BY_CODE = {
    "method_not_allowed": 405,
    "request_too_large": 413,
}
# Most specific class first.
STATUS_BY_CLASS: tuple[tuple[type[ApiError], int], ...] = (
    (UnknownUrlError, 404),
    (ResourceMissingError, 404),  # an id in the URL (a missing token in a body is a 400)
    (CardError, 402),
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (ConflictError, 409),
    (RateLimitedError, 429),
    (ServiceUnavailableError, 503),
    (IdempotencyError, 400),
    (InvalidRequestError, 400),
)


def error_status(error: ApiError) -> int:
    if error.code in STATUS_BY_CODE:
        return STATUS_BY_CODE[error.code]
    for kind, status in STATUS_BY_CLASS:
        if isinstance(error, kind):
            return status
    return 500


def error_body(error: ApiError, links: Links) -> dict[str, Any]:
    body: dict[str, Any] = {"type": error.type, "message": error.message}
    for name in ("code", "param", "decline_code", "charge"):
        value = getattr(error, name)
        if value is not None:
            body[name] = value
    if error.code is not None and links.base_url:
        body["doc_url"] = links.error_code(error.code)
    intent = getattr(error, "payment_intent", None)
    if isinstance(intent, PaymentIntent):
        body["payment_intent"] = render_payment_intent(intent)
    return {"error": body}
