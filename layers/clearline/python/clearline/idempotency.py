"""Stripe's idempotency semantics on Powertools idempotency records in DynamoDB.

A POST runs at most once per (merchant, Idempotency-Key) for 24 hours. The stored
result is the response (status and body) the first request got, so a retry replays it
exactly. The payload hash covers method, path and parameters: the same key sent to
another endpoint or with other parameters is refused, as Stripe refuses it.

A response may carry a secret (a webhook endpoint's signing secret, on create): a
`ResponseSealer` seals it before the record is stored and opens it on a replay, so no
record holds one in the clear.

A request that says how its answer would be rendered (the money routes) costs no writes of
its own: its record rides on the transactions its operation makes. The first claims the key
(the write-ahead: it fails if the key was claimed first, and the request replays or is
refused as Powertools would), and the one that commits the answer stores it. A request that
fails before it wrote anything looks the key up then, so that a retry of a finished request
still replays its answer rather than an error.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from aws_lambda_powertools.shared.json_encoder import Encoder
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyInconsistentStateError,
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import (
    STATUS_CONSTANTS,
    DataRecord,
)

from clearline.errors import (
    ConflictError,
    IdempotencyError,
    InvalidRequestError,
    ServiceUnavailableError,
)
from clearline.ids import RESERVED_KEY_PREFIX
from clearline.models import Model
from clearline.secrets import SecretUnavailable, digest
from clearline.store import TransactionCancelled, Write
from clearline.transitions import Transition, riding

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


class KeyClaimed(Exception):
    """Another request (or an earlier try of this one) claimed the key first."""


def _claim_condition() -> tuple[str, dict[str, Any]]:
    """Powertools' condition for claiming a key: no record, an expired one, or one left in
    progress by a Lambda that timed out."""
    now = time.time()
    return (
        "attribute_not_exists(#id) OR #expiry < :now OR (#status = :inprogress AND "
        "attribute_exists(#in_progress_expiry) AND #in_progress_expiry < :now_in_millis)",
        {
            ":now": int(now),
            ":now_in_millis": int(now * 1000),
            ":inprogress": STATUS_CONSTANTS["INPROGRESS"],
        },
    )


class _RidingRecord:
    """A request's idempotency record riding on its operation's transactions."""

    def __init__(
        self, persistence: _RidingPersistence, answer: Callable[[Model], dict[str, Any] | None]
    ) -> None:
        self.persistence = persistence
        self.answer = answer  # the record's data for a model the request answers with
        self.claim: DataRecord | None = None  # the in-progress record Powertools would put
        self.claimed = False  # the record is in the table, this request's
        self.answered: str | None = None  # the response data stored with the answer
        self._asked: tuple[bool, str | None] = (False, None)

    def writes(self, transition: Transition) -> list[Write]:
        if self.claim is None:
            return []
        answered = None
        if transition.answer is not None and self.answered is None:
            data = self.answer(transition.answer)
            if data is not None:
                answered = json.dumps(data, cls=Encoder, sort_keys=True)
        self._asked = (not self.claimed, answered)
        if answered is None:
            return [] if self.claimed else [self._put(self.claim, answered=None)]
        if not self.claimed:  # claimed and answered at once
            return [self._put(self.claim, answered=answered)]
        return [self._answer(answered)]

    def committed(self) -> None:
        claimed, answered = self._asked
        self.claimed = self.claimed or claimed
        self.answered = answered or self.answered

    def cancelled(self, cancelled: TransactionCancelled, first: int) -> None:
        if any(cancelled.failed_at(i) for i in range(first, len(cancelled.reasons))):
            raise KeyClaimed()

    def _put(self, claim: DataRecord, answered: str | None) -> Write:
        store = self.persistence
        item: dict[str, Any] = {
            store.key_attr: claim.idempotency_key,
            store.expiry_attr: claim.expiry_timestamp,
            store.status_attr: STATUS_CONSTANTS["COMPLETED" if answered else "INPROGRESS"],
        }
        if claim.in_progress_expiry_timestamp is not None:
            item[store.in_progress_expiry_attr] = claim.in_progress_expiry_timestamp
        if store.payload_validation_enabled and claim.payload_hash:
            item[store.validation_key_attr] = claim.payload_hash
        if answered is not None:
            item[store.data_attr] = answered
        condition, values = _claim_condition()
        return Write(
            "Put",
            item=item,
            condition=condition,
            names={
                "#id": store.key_attr,
                "#expiry": store.expiry_attr,
                "#in_progress_expiry": store.in_progress_expiry_attr,
                "#status": store.status_attr,
            },
            values=values,
            table=store.table_name,
        )

    def _answer(self, answered: str) -> Write:
        """What Powertools' own update of a finished request writes."""
        assert self.claim is not None
        store = self.persistence
        return Write(
            "Update",
            key={store.key_attr: self.claim.idempotency_key},
            update="SET #data = :data, #status = :completed, #expiry = :expiry",
            names={
                "#data": store.data_attr,
                "#status": store.status_attr,
                "#expiry": store.expiry_attr,
            },
            values={
                ":data": answered,
                ":completed": STATUS_CONSTANTS["COMPLETED"],
                ":expiry": store.expiry_timestamp(),
            },
            table=store.table_name,
        )


_record: ContextVar[_RidingRecord | None] = ContextVar("idempotency_record", default=None)


class _RidingPersistence(DynamoDBPersistenceLayer):
    """Powertools' DynamoDB records, whose writes ride on the operation's transactions when
    the request at hand has a riding record; written as Powertools writes them otherwise."""

    def expiry_timestamp(self) -> int:
        return self._get_expiry_timestamp()

    def stored(self, claim: DataRecord) -> DataRecord | None:
        """The record of a claim's key as it is stored now, or None."""
        try:
            return self._get_record(claim.idempotency_key)
        except IdempotencyItemNotFoundError:
            return None

    def _put_record(self, data_record: DataRecord) -> None:
        rider = _record.get()
        if rider is None:
            super()._put_record(data_record)
            return
        rider.claim = data_record  # claimed by the operation's first transaction

    def _update_record(self, data_record: DataRecord) -> None:
        rider = _record.get()
        if rider is None or rider.claim is None:
            super()._update_record(data_record)
            return
        if rider.answered == data_record.response_data:
            return  # stored with the answer, in the transaction that committed it
        if not rider.claimed:  # the operation answered without writing anything
            try:
                super()._put_record(rider.claim)
            except (IdempotencyItemAlreadyExistsError, IdempotencyValidationError) as exc:
                raise KeyClaimed() from exc
            rider.claimed = True
        super()._update_record(data_record)

    def _delete_record(self, data_record: DataRecord) -> None:
        rider = _record.get()
        if rider is not None and not rider.claimed:
            return  # nothing of this request's is stored
        super()._delete_record(data_record)


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
        self.persistence = _RidingPersistence(table_name=table_name, boto3_client=client)

        @idempotent_function(
            data_keyword_argument="request", config=self.config, persistence_store=self.persistence
        )
        def run_once(
            *, request: dict[str, Any], operation: Callable[[], StoredResponse]
        ) -> dict[str, Any]:
            # What is returned here is what the record stores.
            return self._record_data(request, operation())

        self._run_once = run_once

    def _record_data(self, request: dict[str, Any], response: StoredResponse) -> dict[str, Any]:
        body = response.body
        if self.sealer is not None:
            body = self.sealer.seal(body, _record_context(request))
        return {"status": response.status, "body": body, "request_id": response.request_id}

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
        answer: Callable[[Model], Reply | None] | None = None,
    ) -> StoredResponse:
        """Run operation once per key; replay its stored response on a retry. An error the
        operation raises is not stored: the request did nothing, and may be retried.

        `answer` says how the operation's answer would be rendered, given the object it
        commits as its answer (None: not known yet): the record then rides on the
        operation's transactions."""
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
        rider = None
        if answer is not None:

            def answered(model: Model) -> dict[str, Any] | None:
                reply = answer(model)
                if reply is None or not reply.final:
                    return None
                response = StoredResponse(reply.status, reply.body, request_id)
                return self._record_data(request, response)

            rider = _RidingRecord(self.persistence, answered)
        records, riders = _record.set(rider), riding.set(rider)
        try:
            stored = self._run_once(request=request, operation=respond)
        except _NotFinal as pending:
            return pending.response
        except KeyClaimed:
            assert rider is not None
            return self._claimed(request, rider, None)
        except IdempotencyValidationError as exc:
            raise _other_parameters(key) from exc
        except IdempotencyAlreadyInProgressError as exc:
            raise _in_progress() from exc
        except (IdempotencyPersistenceLayerError, IdempotencyInconsistentStateError) as exc:
            if rider is not None and isinstance(exc.__cause__, KeyClaimed):
                return self._claimed(request, rider, None)
            raise ServiceUnavailableError("Idempotency records are unavailable; retry.") from exc
        except SecretUnavailable as exc:
            raise ServiceUnavailableError("The response could not be sealed; retry.") from exc
        except Exception as exc:
            if rider is None or rider.claimed or rider.claim is None:
                raise
            # Failed before writing anything: a retry of a finished request replays it.
            return self._claimed(request, rider, exc)
        finally:
            _record.reset(records)
            riding.reset(riders)
        if fresh:  # the stored copy may be sealed; this request has the response itself
            return fresh[0]
        return self._opened(request, stored)

    def _opened(self, request: dict[str, Any], stored: dict[str, Any]) -> StoredResponse:
        body = stored["body"]
        if self.sealer is not None:
            try:
                body = self.sealer.open(body, _record_context(request))
            except SecretUnavailable as exc:
                raise ServiceUnavailableError(
                    "The stored response could not be opened; retry."
                ) from exc
        return StoredResponse(stored["status"], body, stored["request_id"])

    def _claimed(
        self, request: dict[str, Any], rider: _RidingRecord, error: Exception | None
    ) -> StoredResponse:
        """The answer to a request whose key another request claimed, as Powertools gives it
        when its own claim fails: that request's stored response, or a refusal. `error` is
        what this request raised before claiming anything: raised when the key is free."""
        assert rider.claim is not None
        try:
            record = self.persistence.stored(rider.claim)
        except Exception as exc:
            raise ServiceUnavailableError("Idempotency records are unavailable; retry.") from exc
        live = record is not None and record.status != STATUS_CONSTANTS["EXPIRED"]
        timed_out = (
            record is not None
            and record.status == STATUS_CONSTANTS["INPROGRESS"]
            and record.in_progress_expiry_timestamp is not None
            and record.in_progress_expiry_timestamp < int(time.time() * 1000)
        )
        if record is None or not live or timed_out:
            if error is not None:
                raise error
            raise _in_progress()  # gone meanwhile: a retry claims it
        try:
            self.persistence._validate_payload(rider.claim, record)
        except IdempotencyValidationError as exc:
            raise _other_parameters(request["key"]) from exc
        stored = record.response_json_as_dict()
        if record.status == STATUS_CONSTANTS["INPROGRESS"] or stored is None:
            raise _in_progress()
        return self._opened(request, stored)


def _other_parameters(key: str) -> IdempotencyError:
    return IdempotencyError(
        "Keys for idempotent requests can only be used with the same parameters they were "
        f"first used with. Try using a key other than '{key}' if you meant to execute a "
        "different request.",
        param="Idempotency-Key",
    )


def _in_progress() -> ConflictError:
    return ConflictError(
        "There is currently another in-progress request using this Idempotent Key (that "
        "probably means you submitted twice, and the other request is still going "
        "through). Please try again later.",
        code="idempotency_key_in_use",
    )
