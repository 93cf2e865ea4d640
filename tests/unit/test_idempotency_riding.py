"""A request's idempotency record riding on its operation's transactions: the write-ahead
claims the key, the answering commit stores the answer, and every way the two can go wrong
ends as Powertools' own records would (a replay, a refusal, or the error itself)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from clearline.errors import ConflictError, IdempotencyError, InvalidRequestError
from clearline.idempotency import IdempotentRequests, Reply, StoredResponse
from clearline.models import Model
from clearline.store import Store
from clearline.topology import IDEMPOTENCY_TABLE
from clearline.transitions import Change, Transition, TransitionWriter
from clearline_local.lambda_runtime import LocalLambdaContext


class Parcel(Model):
    id: str
    state: str


class Calls:
    """Every DynamoDB call the client makes, by operation."""

    def __init__(self, client: Any) -> None:
        self.counted: Counter[str] = Counter()
        client.meta.events.register(
            "provide-client-params.dynamodb",
            lambda model, params, **_: self.counted.update([model.name]),
        )

    def since(self, before: Counter[str]) -> Counter[str]:
        return self.counted - before


@pytest.fixture
def requests(aws: Any) -> IdempotentRequests:
    requests = IdempotentRequests(IDEMPOTENCY_TABLE.name, aws)
    # A claim expires with the Lambda that made it, as in the api.
    requests.register_lambda_context(LocalLambdaContext("api", 1024, 29, "req_1"))
    return requests


@pytest.fixture
def writer(store: Store) -> TransitionWriter:
    return TransitionWriter(store)


def answer(model: Model) -> Reply:
    assert isinstance(model, Parcel)
    return Reply(200, {"id": model.id, "state": model.state})


def send(
    requests: IdempotentRequests,
    operation: Callable[[], Reply],
    *,
    key: str = "k1",
    params: dict[str, Any] | None = None,
    request_id: str = "req_1",
) -> StoredResponse:
    return requests.run(
        merchant_id="acct_1",
        key=key,
        method="POST",
        path="/v1/parcels",
        params=params or {"size": "1"},
        request_id=request_id,
        operation=operation,
        answer=answer,
    )


def ship(writer: TransitionWriter, parcel_id: str) -> Callable[[], Reply]:
    """An operation with the money path's shape: a write-ahead, then the answering commit."""

    def operation() -> Reply:
        if writer.commit(written_ahead(parcel_id)) is not None:
            raise ConflictError("written before")
        shipped = Parcel(id=parcel_id, state="shipped")
        done = Change(f"PARCEL#{parcel_id}", "PARCEL", parcel_id, "ship", "shipped", "pending")
        assert writer.commit(Transition([done], answer=shipped)) is None
        return answer(shipped)

    return operation


def written_ahead(parcel_id: str) -> Transition:
    item = {"pk": f"PARCEL#{parcel_id}", "sk": "PARCEL", "id": parcel_id}
    return Transition([Change(item["pk"], "PARCEL", parcel_id, "create", "pending", create=item)])


def records(aws: Any) -> list[dict[str, Any]]:
    return list(aws.scan(TableName=IDEMPOTENCY_TABLE.name)["Items"])


def test_the_record_rides_on_the_write_ahead_and_the_answer(
    aws: Any, store: Store, requests: IdempotentRequests, writer: TransitionWriter
) -> None:
    calls = Calls(aws)
    first = send(requests, ship(writer, "p1"))
    assert first == StoredResponse(200, {"id": "p1", "state": "shipped"}, "req_1")
    # Two transactions and nothing else: no put or update of the record of its own.
    assert calls.counted == Counter({"TransactWriteItems": 2})
    [record] = records(aws)
    assert record["status"]["S"] == "COMPLETED"

    before = Counter(calls.counted)
    again = send(requests, ship(writer, "p1"), request_id="req_2")
    assert again == first  # the first request's answer and request id
    assert calls.since(before) == Counter({"TransactWriteItems": 1, "GetItem": 1})
    assert store.get("PARCEL#p1", "PARCEL")["state"] == "shipped"


def test_a_retry_that_fails_before_writing_replays_the_finished_answer(
    aws: Any, requests: IdempotentRequests, writer: TransitionWriter
) -> None:
    send(requests, ship(writer, "p1"))

    def refused() -> Reply:  # as a capture of a captured charge refuses
        raise InvalidRequestError("already shipped", code="parcel_shipped")

    again = send(requests, refused, request_id="req_2")
    assert (again.body, again.request_id) == ({"id": "p1", "state": "shipped"}, "req_1")


def test_an_error_before_any_write_is_raised_and_stores_nothing(
    aws: Any, requests: IdempotentRequests
) -> None:
    def refused() -> Reply:
        raise InvalidRequestError("bad size", param="size")

    with pytest.raises(InvalidRequestError):
        send(requests, refused)
    assert records(aws) == []


def test_a_key_claimed_by_a_request_still_going_on_is_refused(
    aws: Any, store: Store, requests: IdempotentRequests, writer: TransitionWriter
) -> None:
    def twin() -> Reply:
        # The twin's write-ahead lands while the first request is between its two steps.
        with pytest.raises(ConflictError) as raised:
            send(requests, ship(writer, "p1"), request_id="req_2")
        assert raised.value.code == "idempotency_key_in_use"
        return Reply(200, {"twin": "refused"})

    def first() -> Reply:
        assert writer.commit(written_ahead("p1")) is None
        return twin()

    send(requests, first)
    assert store.get("PARCEL#p1", "PARCEL")["state"] == "pending"


def test_the_same_key_with_other_parameters_is_an_idempotency_error(
    aws: Any, requests: IdempotentRequests, writer: TransitionWriter
) -> None:
    send(requests, ship(writer, "p1"))
    with pytest.raises(IdempotencyError):
        send(requests, ship(writer, "p1"), params={"size": "2"}, request_id="req_2")

    def refused() -> Reply:
        raise InvalidRequestError("already shipped")

    with pytest.raises(IdempotencyError):  # also when it fails before writing
        send(requests, refused, params={"size": "2"}, request_id="req_3")


def test_an_answer_without_a_transaction_is_stored_by_itself(
    aws: Any, requests: IdempotentRequests
) -> None:
    calls = Calls(aws)
    first = send(requests, lambda: Reply(200, {"id": "p9", "state": "known"}))
    assert calls.counted == Counter({"PutItem": 1, "UpdateItem": 1})
    again = send(requests, lambda: Reply(200, {"id": "other"}), request_id="req_2")
    assert again == first


def test_an_answer_other_than_the_committed_one_is_what_the_record_keeps(
    aws: Any, requests: IdempotentRequests, writer: TransitionWriter
) -> None:
    shipped = ship(writer, "p1")

    def decorated() -> Reply:
        reply = shipped()
        return Reply(200, {**reply.body, "note": "added after the commit"})

    calls = Calls(aws)
    first = send(requests, decorated)
    assert calls.counted == Counter({"TransactWriteItems": 2, "UpdateItem": 1})
    again = send(requests, lambda: Reply(200, {}), request_id="req_2")
    assert (
        again.body
        == first.body
        == {"id": "p1", "state": "shipped", "note": "added after the commit"}
    )


def test_a_crash_after_the_write_ahead_leaves_the_retry_to_finish_it(
    aws: Any, store: Store, requests: IdempotentRequests, writer: TransitionWriter
) -> None:
    def cut_short() -> Reply:
        assert writer.commit(written_ahead("p1")) is None
        raise ConflictError("processor away")  # answered 409/503: a retry finishes it

    with pytest.raises(ConflictError):
        send(requests, cut_short)
    assert records(aws) == []  # dropped, as Powertools drops a failed request's record

    def finish() -> Reply:
        done = Change("PARCEL#p1", "PARCEL", "p1", "ship", "shipped", "pending")
        shipped = Parcel(id="p1", state="shipped")
        assert writer.commit(Transition([done], answer=shipped)) is None
        return answer(shipped)

    calls = Calls(aws)
    finished = send(requests, finish, request_id="req_2")
    assert finished.body == {"id": "p1", "state": "shipped"}
    # The claim and the answer in the one transaction that finished it.
    assert calls.counted == Counter({"TransactWriteItems": 1})
    assert records(aws)[0]["status"]["S"] == "COMPLETED"


def test_a_transaction_refused_by_its_own_guard_leaves_the_claim_to_the_next(
    aws: Any, store: Store, requests: IdempotentRequests, writer: TransitionWriter
) -> None:
    assert writer.commit(written_ahead("p1")) is None  # written by an earlier try

    def follow() -> Reply:
        assert writer.commit(written_ahead("p1")) is not None  # the object's guard, not the key
        assert records(aws) == []
        done = Change("PARCEL#p1", "PARCEL", "p1", "ship", "shipped", "pending")
        shipped = Parcel(id="p1", state="shipped")
        assert writer.commit(Transition([done], answer=shipped)) is None
        return answer(shipped)

    send(requests, follow)
    assert records(aws)[0]["status"]["S"] == "COMPLETED"
