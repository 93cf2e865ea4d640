"""The relay publishes what it can and reports, one by one, the records it cannot: the
stream trigger then retries only those, so one bad event never holds up the others."""

from __future__ import annotations

import importlib
import json
import uuid
from collections.abc import Callable
from types import ModuleType
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import TypeSerializer

from clearline.models import Charge
from clearline.topology import EVENT_BUS, EVENT_SOURCE, RELAY_FUNCTION, bus_env_var
from clearline_local.lambda_runtime import LocalLambdaContext, load_handler

STREAM_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/clearline-main/stream/2026-11-25"
_serialize = TypeSerializer().serialize
_sequence = iter(range(100, 10_000))


def stream_record(item: dict[str, Any], event_name: str = "INSERT") -> dict[str, Any]:
    image = {name: _serialize(value) for name, value in item.items()}
    return {
        "eventID": uuid.uuid4().hex,
        "eventName": event_name,
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "Keys": {"pk": image["pk"], "sk": image["sk"]},
            "NewImage": image,
            "SequenceNumber": str(next(_sequence)),
            "StreamViewType": "NEW_IMAGE",
        },
        "eventSourceARN": STREAM_ARN,
    }


A_CHARGE = Charge(
    id="ch_1", merchant="acct_relay", state="captured", amount=5000, currency="usd", created=1
)


def event_item(event_id: str, **changes: Any) -> dict[str, Any]:
    item = {
        "pk": f"EVENT#{event_id}",
        "sk": "EVENT",
        "id": event_id,
        "merchant": "acct_relay",
        "type": "charge.succeeded",
        "created": 1795608000,
        "data": {"kind": "charge", "object": A_CHARGE.snapshot()},
        "request": {"id": "req_1", "idempotency_key": "k1"},
    }
    return {k: v for k, v in (item | changes).items() if v is not None}


def sequence_numbers(records: list[dict[str, Any]]) -> list[str]:
    return [r["dynamodb"]["SequenceNumber"] for r in records]


def context() -> LocalLambdaContext:
    return LocalLambdaContext("relay", 512, 30, str(uuid.uuid4()))


class Bus:
    """EventBridge as the relay sees it: moto's, counting calls, and refusing the entries of
    the `refused` events as PutEvents does under a partial outage (FailedEntryCount)."""

    def __init__(self, refused: set[str] | None = None) -> None:
        self.moto = boto3.client("events", region_name="us-east-1")
        self.refused = refused or set()
        self.calls = 0

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls += 1
        if json.loads(Entries[0]["Detail"])["event"]["id"] in self.refused:
            refusal = {"ErrorCode": "InternalFailure", "ErrorMessage": "try again later"}
            return {"FailedEntryCount": 1, "Entries": [refusal]}
        return dict(self.moto.put_events(Entries=Entries))


@pytest.fixture
def relay(aws: Any, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The relay's module, its real handler publishing to a moto bus."""
    monkeypatch.setenv(bus_env_var(EVENT_BUS.key), EVENT_BUS.name)
    load_handler(RELAY_FUNCTION)  # puts functions/relay on the path, imports it
    module = importlib.import_module("relay_handler")
    boto3.client("events", region_name="us-east-1").create_event_bus(Name=EVENT_BUS.name)
    monkeypatch.setattr(module, "BUS_NAME", EVENT_BUS.name)
    monkeypatch.setattr(module, "events", Bus())
    return module


@pytest.fixture
def published(relay: ModuleType) -> Callable[[], list[str]]:
    """The ids of the events that reached the bus, read through a rule and a queue."""
    sqs = boto3.client("sqs", region_name="us-east-1")
    events = boto3.client("events", region_name="us-east-1")
    url = sqs.create_queue(QueueName="relay-test")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(
        Name="all", EventBusName=EVENT_BUS.name, EventPattern=json.dumps({"source": [EVENT_SOURCE]})
    )
    events.put_targets(Rule="all", EventBusName=EVENT_BUS.name, Targets=[{"Id": "q", "Arn": arn}])

    def event_ids() -> list[str]:
        received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        return sorted(json.loads(m["Body"])["detail"]["event"]["id"] for m in received)

    return event_ids


def failures(response: dict[str, Any]) -> list[str]:
    return [failure["itemIdentifier"] for failure in response["batchItemFailures"]]


def test_good_records_publish_and_only_malformed_events_are_reported(
    relay: ModuleType, published: Callable[[], list[str]]
) -> None:
    without_image = stream_record(event_item("evt_keys_only"))
    del without_image["dynamodb"]["NewImage"]
    poison = [
        stream_record(event_item("evt_no_merchant", merchant=None)),
        stream_record(event_item("evt_no_type", type=None)),
        # A string set is stored fine but has no JSON form.
        stream_record(event_item("evt_set", data={"object": {"tags": {"a", "b"}}})),
        without_image,
    ]
    records = [
        stream_record(event_item("evt_first")),
        *poison[:2],
        stream_record({"pk": "CHARGE#ch_1", "sk": "CHARGE", "amount": 5000}),
        stream_record(event_item("evt_first", type="charge.refunded"), event_name="MODIFY"),
        *poison[2:],
        stream_record(event_item("evt_last")),
    ]

    response = relay.lambda_handler({"Records": records}, context())

    assert failures(response) == sequence_numbers(poison)
    assert published() == ["evt_first", "evt_last"]
    assert relay.events.calls == 2, "records that are not new events never reach EventBridge"


def test_a_refused_entry_is_a_retryable_failure_of_that_record_alone(
    relay: ModuleType, published: Callable[[], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay, "events", Bus(refused={"evt_refused"}))
    records = [stream_record(event_item(f"evt_{name}")) for name in ("a", "refused", "b")]

    response = relay.lambda_handler({"Records": records}, context())

    assert failures(response) == [records[1]["dynamodb"]["SequenceNumber"]]
    assert published() == ["evt_a", "evt_b"]
    assert isinstance(relay.processor.exceptions[0][1], relay.PublishFailed)


def test_when_every_record_fails_each_is_reported_rather_than_the_invocation(
    relay: ModuleType, published: Callable[[], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay, "events", Bus(refused={"evt_a", "evt_b"}))
    records = [stream_record(event_item(f"evt_{name}")) for name in ("a", "b")]
    records.append(stream_record({"pk": "CHARGE#ch_1", "sk": "CHARGE"}))

    response = relay.lambda_handler({"Records": records}, context())

    assert failures(response) == sequence_numbers(records[:2])
    assert published() == []
