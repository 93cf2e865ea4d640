"""Stripe's idempotency semantics on Powertools idempotency records in DynamoDB.

A POST runs at most once per (merchant, Idempotency-Key) for 24 hours. The stored
result is the response (status and body) the first request got, so a retry replays it
exactly. The payload hash covers method, path and parameters: the same key sent to
another endpoint or with other parameters is refused, as Stripe refuses it.

A response may carry a secret (a webhook endpoint's signing secret, on create): a
`ResponseSealer` seals it before the record is stored and opens it on a replay, so no
record holds one in the clear.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyInconsistentStateError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)

from clearline.errors import (
    ConflictError,
    IdempotencyError,
    InvalidRequestError,
    ServiceUnavailableError,
)
from clearline.ids import RESERVED_KEY_PREFIX
from clearline.secrets import SecretUnavailable, digest

KEY_MAX_LENGTH = 255
EXPIRES_AFTER_SECONDS = 24 * 60 * 60


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: dict[str, Any]
    request_id: str  # of the request that produced it: differs from the current one on a replay


@dataclass(frozen=True)
class Reply:
    """What an operation answered, rendered by the edge that ran it. Not `final` (a charge
    still pending at the processor): not stored, so a retry runs again and can answer
    with the settled result."""

    status: int
    body: dict[str, Any]
    final: bool = True


def check_key(key: str | None) -> str:
    if not key:
        raise InvalidRequestError(
            "An Idempotency-Key header is required on every POST request, so that a retry can "
            "never move money twice. Send a unique value (for example a UUID) per operation.",
            param="Idempotency-Key",
            code="idempotency_key_required",
        )
    if key.startswith(RESERVED_KEY_PREFIX):
        raise InvalidRequestError(
            f"Idempotency keys starting with '{RESERVED_KEY_PREFIX}' are reserved.",
            param="Idempotency-Key",
            code="idempotency_key_invalid",
        )
    if len(key) > KEY_MAX_LENGTH:
        raise InvalidRequestError(
            f"Idempotency-Key must be at most {KEY_MAX_LENGTH} characters long.",
            param="Idempotency-Key",
            code="idempotency_key_invalid",
        )
    return key


class ResponseSealer(Protocol):
    """Seals what must not be stored in the clear in a response body, and opens it again."""

    def seal(self, body: dict[str, Any], context: Mapping[str, str]) -> dict[str, Any]: ...

    def open(self, body: dict[str, Any], context: Mapping[str, str]) -> dict[str, Any]: ...


def _record_context(request: dict[str, Any]) -> dict[str, str]:
    """What a sealed part of a record belongs to: its merchant and key (hashed: KMS logs
    contexts in the clear), so it opens in no other record."""
    return {
        "record": "idempotency",
        "merchant": request["merchant"],
        "idempotency_key_sha256": digest(request["key"]),
    }


class _NotFinal(Exception):
    """A result that must not be replayed: a pending charge settles on a later retry."""

    def __init__(self, response: StoredResponse) -> None:
        super().__init__("not final")
        self.response = response


class IdempotentRequests:
    def __init__(
        self, table_name: str, client: Any = None, sealer: ResponseSealer | None = None
    ) -> None:
        self.sealer = sealer
        self.config = IdempotencyConfig(
            event_key_jmespath="[merchant, key]",
            payload_validation_jmespath="[method, path, params]",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=EXPIRES_AFTER_SECONDS,
        )
        persistence = DynamoDBPersistenceLayer(table_name=table_name, boto3_client=client)

        @idempotent_function(
            data_keyword_argument="request", config=self.config, persistence_store=persistence
        )
        def run_once(
            *, request: dict[str, Any], operation: Callable[[], StoredResponse]
        ) -> dict[str, Any]:
            outcome = operation()
            body = outcome.body
            if sealer is not None:  # what is returned here is what the record stores
                body = sealer.seal(body, _record_context(request))
            return {"status": outcome.status, "body": body, "request_id": outcome.request_id}

        self._run_once = run_once

    def register_lambda_context(self, context: Any) -> None:
        # Lets an in-flight record expire when the Lambda that wrote it has timed out.
        self.config.register_lambda_context(context)

    def run(
        self,
        *,
        merchant_id: str,
        key: str,
        method: str,
        path: str,
        params: dict[str, Any],
        request_id: str,
        operation: Callable[[], Reply],
    ) -> StoredResponse:
        """Run operation once per key; replay its stored response on a retry. An error the
        operation raises is not stored: the request did nothing, and may be retried."""
        fresh: list[StoredResponse] = []  # the response, when this request ran the operation

        def respond() -> StoredResponse:
            reply = operation()
            response = StoredResponse(reply.status, reply.body, request_id)
            if not reply.final:
                # Raising makes Powertools drop the record, so the retry runs again and can
                # return the settled charge instead of a replay of "pending".
                raise _NotFinal(response)
            fresh.append(response)
            return response

        request = {
            "merchant": merchant_id,
            "key": key,
            "method": method,
            "path": path,
            "params": params,
        }
        try:
            stored = self._run_once(request=request, operation=respond)
        except _NotFinal as pending:
            return pending.response
        except IdempotencyValidationError as exc:
            raise IdempotencyError(
                "Keys for idempotent requests can only be used with the same parameters they were "
                f"first used with. Try using a key other than '{key}' if you meant to execute a "
                "different request.",
                param="Idempotency-Key",
            ) from exc
        except IdempotencyAlreadyInProgressError as exc:
            raise ConflictError(
                "There is currently another in-progress request using this Idempotent Key (that "
                "probably means you submitted twice, and the other request is still going "
                "through). Please try again later.",
                code="idempotency_key_in_use",
            ) from exc
        except (IdempotencyPersistenceLayerError, IdempotencyInconsistentStateError) as exc:
            raise ServiceUnavailableError("Idempotency records are unavailable; retry.") from exc
        except SecretUnavailable as exc:
            raise ServiceUnavailableError("The response could not be sealed; retry.") from exc
        if fresh:  # the stored copy may be sealed; this request has the response itself
            return fresh[0]
        body = stored["body"]
        if self.sealer is not None:
            try:
                body = self.sealer.open(body, _record_context(request))
            except SecretUnavailable as exc:
                raise ServiceUnavailableError(
                    "The stored response could not be opened; retry."
                ) from exc
        return StoredResponse(stored["status"], body, stored["request_id"])
