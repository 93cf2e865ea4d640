"""The async spine over the local stack: outbox events, signed webhooks with retries and
a dead-letter queue, the relay replaying a batch, scheduled captures and expiry with the
clock moved forward, charges left pending by processor timeouts or a processor that is
down, and each function's sample event (events/) through its handler.

Nothing here sleeps and then checks that nothing happened: each test waits, with a
deadline, for a sign that the work it checks is done (a delivery, an empty queue, a
report), then asserts."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import stripe

from clearline import ledger
from clearline.topology import CAPTURE_QUEUE, WEBHOOK_QUEUE
from clearline_local.environment import queue_url
from clearline_local.stack import aws_client
from clearline_local.triggers import as_lambda_record
from tests.polling import eventually

from .conftest import (
    CLEARLINE,
    PROCESSOR_TIMEOUT_SECONDS,
    Stack,
    journals_for,
)
from .receivers import Receiver

pytestmark = pytest.mark.integration


def key() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def shop(stack: Stack) -> Iterator[tuple[dict[str, Any], stripe.StripeClient]]:
    merchant = stack.create_merchant("Async Shop")
    yield merchant, stripe.StripeClient(merchant["secret_key"], base_addresses={"api": stack.url})


def subscribe(sdk: stripe.StripeClient, receiver: Receiver, events: list[str]) -> str:
    endpoint = sdk.v1.webhook_endpoints.create(
        params={"url": receiver.url, "enabled_events": events},  # type: ignore[typeddict-item]
        options={"idempotency_key": key()},
    )
    assert endpoint.secret and endpoint.secret.startswith("whsec_")
    receiver.secret = endpoint.secret
    return endpoint.id


def charge(sdk: stripe.StripeClient, **params: Any) -> stripe.Charge:
    return sdk.v1.charges.create(
        params={"amount": 2000, "currency": "usd", "source": "tok_visa", **params},
        options={"idempotency_key": key()},
    )


def queue_drained(stack: Stack, name: str) -> bool:
    """True when the queue holds no message, visible, in flight or delayed: the local
    stack's poller deletes a message only after its handler has returned."""
    sqs = aws_client("sqs", stack.info.aws_endpoint_url)
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url(stack.info.aws_endpoint_url, name),
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return all(int(count) == 0 for count in attributes.values())


def sentinel_delivered(stack: Stack, sdk: stripe.StripeClient, receiver: Receiver) -> str:
    """Sends a later event to the receiver's endpoint and waits until it has arrived and the
    webhook queue is empty. Anything queued for that endpoint before it (a retry, a
    duplicate publish) has been handled by then, so it would have arrived too."""
    made = charge(sdk)

    def arrived() -> str | None:
        with receiver.lock:
            ids = [e.id for e in receiver.accepted if e.data.object["id"] == made.id]
        return ids[0] if ids else None

    event_id = eventually(arrived, message="the sentinel delivery")
    eventually(lambda: queue_drained(stack, WEBHOOK_QUEUE.name), message="the webhook queue")
    return str(event_id)


def events_of(sdk: stripe.StripeClient, object_id: str) -> list[str]:
    return [
        e.type
        for e in sdk.v1.events.list(params={"limit": 100}).data
        if e.data.object["id"] == object_id
    ]


def test_events_for_every_change(shop: tuple[dict[str, Any], stripe.StripeClient]) -> None:
    _, sdk = shop
    held = charge(sdk, capture=False)
    sdk.v1.charges.capture(held.id, params={"amount": 1500}, options={"idempotency_key": key()})
    refund = sdk.v1.refunds.create(
        params={"charge": held.id, "amount": 500}, options={"idempotency_key": key()}
    )
    assert sorted(events_of(sdk, held.id)) == [
        "charge.captured",
        "charge.refunded",
        "charge.succeeded",
    ]
    assert sorted(events_of(sdk, refund.id)) == ["refund.created", "refund.updated"]
    captured = sdk.v1.events.list(params={"type": "charge.captured"}).data
    assert [e.data.object["id"] for e in captured] == [held.id]
    event = sdk.v1.events.retrieve(captured[0].id)
    assert (event.type, event.data.object["amount_captured"]) == ("charge.captured", 1500)
    later = sdk.v1.events.list(params={"created": {"gt": int(time.time()) + 60}}).data
    assert later == []


def test_webhook_retried_through_500_and_timeout_arrives_once(
    stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient]
) -> None:
    _, sdk = shop
    receiver = Receiver(["500", "timeout"])
    subscribe(sdk, receiver, ["charge.succeeded"])
    made = charge(sdk)
    (event_id,) = eventually(lambda: list(receiver.ids()), message="a delivery to be accepted")
    sentinel = sentinel_delivered(stack, sdk, receiver)
    assert receiver.ids() == Counter({event_id: 1, sentinel: 1})
    assert receiver.accepted[0].data.object["id"] == made.id
    assert receiver.refused == 1

    shown = stack.clearline("webhooks", "attempts", event_id)
    lines = shown.stdout.strip().splitlines()
    assert len(lines) == 3, shown.stdout
    assert " 500 " in lines[0]
    assert "timed out" in lines[1].lower() or "timeout" in lines[1].lower()
    assert " 200 " in lines[2]


def test_permanent_failure_ends_in_the_dlq_and_redrive_delivers(
    stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient]
) -> None:
    _, sdk = shop
    receiver = Receiver(["500"] * 4)  # every attempt the queue allows
    subscribe(sdk, receiver, ["charge.succeeded"])
    charge(sdk)
    sqs = aws_client("sqs", stack.info.aws_endpoint_url)
    dlq = queue_url(stack.info.aws_endpoint_url, WEBHOOK_QUEUE.dlq_name)

    def in_dlq() -> int:
        attributes = sqs.get_queue_attributes(
            QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"]
        )
        return int(attributes["Attributes"]["ApproximateNumberOfMessages"])

    eventually(in_dlq, timeout=60, message="the event to reach the dead-letter queue")
    assert receiver.refused == 4 and not receiver.accepted
    done = stack.clearline("webhooks", "redrive")
    assert done.returncode == 0 and "redrove 1" in done.stdout, done.stdout
    eventually(lambda: receiver.accepted, message="the redriven delivery")
    assert len(receiver.accepted) == 1


def test_redeliver_sends_an_accepted_event_again(
    stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient]
) -> None:
    _, sdk = shop
    receiver = Receiver()
    subscribe(sdk, receiver, ["charge.succeeded"])
    charge(sdk)
    (event_id,) = eventually(lambda: list(receiver.ids()))
    assert stack.clearline("webhooks", "redeliver", event_id).returncode == 0
    eventually(lambda: receiver.ids()[event_id] == 2, message="the redelivery")


def _stream_records(stack: Stack, merchant_id: str) -> list[dict[str, Any]]:
    """This merchant's event inserts, as the table's stream holds them."""
    dynamodb = aws_client("dynamodb", stack.info.aws_endpoint_url)
    streams = aws_client("dynamodbstreams", stack.info.aws_endpoint_url)
    arn = dynamodb.describe_table(TableName=stack.info.main_table)["Table"]["LatestStreamArn"]
    records = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            for record in page["Records"]:
                image = record["dynamodb"].get("NewImage", {})
                if (
                    image.get("sk", {}).get("S") == "EVENT"
                    and image["merchant"]["S"] == merchant_id
                ):
                    records.append(as_lambda_record(record, arn))
            iterator = page.get("NextShardIterator") if page["Records"] else None
    return records


def test_a_relay_retry_after_a_partial_publish_delivers_nothing_twice(
    stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient], tmp_path: Path
) -> None:
    merchant, sdk = shop
    receiver = Receiver()
    subscribe(sdk, receiver, ["*"])
    for _ in range(3):
        charge(sdk)
    eventually(lambda: len(receiver.ids()) == 3, message="the first three deliveries")
    records = _stream_records(stack, merchant["id"])
    assert len(records) == 3
    # The relay published the first record of a batch, then crashed; Lambda retries the
    # whole batch from the start.
    for batch in (records[:1], records):
        event_file = tmp_path / "batch.json"
        event_file.write_text(json.dumps({"Records": batch}))
        done = stack.clearline("invoke", "relay", "--event", str(event_file))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.strip().splitlines()[-1]) == {"batchItemFailures": []}
    sentinel_delivered(stack, sdk, receiver)  # after the republished events went through
    assert set(receiver.ids().values()) == {1}
    assert len(receiver.ids()) == 4


def test_scheduled_capture_with_the_clock_moved_forward(
    stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient]
) -> None:
    _, sdk = shop
    capture_at = int(time.time()) + 3600
    held = charge(sdk, capture=False, capture_at=capture_at)
    assert held.captured is False
    early = stack.clearline("invoke", "scheduler", "--time", "+30m")
    assert early.returncode == 0, early.stderr
    eventually(lambda: queue_drained(stack, CAPTURE_QUEUE.name), message="the jobs queued early")
    assert sdk.v1.charges.retrieve(held.id).captured is False  # not due yet
    due = stack.clearline("invoke", "scheduler", "--time", "+61m")
    assert due.returncode == 0, due.stderr
    captured = eventually(
        lambda: (c := sdk.v1.charges.retrieve(held.id)).captured and c,
        message="the scheduled capture",
    )
    assert captured.amount_captured == 2000
    assert "charge.captured" in events_of(sdk, held.id)
    # The scheduler may queue it again; it is captured once.
    again = stack.clearline("invoke", "scheduler", "--time", "+62m")
    assert again.returncode == 0, again.stderr
    eventually(lambda: queue_drained(stack, CAPTURE_QUEUE.name), message="the jobs queued again")
    assert len([j for j in journals_for(stack, held.id) if j["operation"] == "charge.capture"]) == 1


def test_capture_at_must_be_in_the_window(shop: tuple[dict[str, Any], stripe.StripeClient]) -> None:
    _, sdk = shop
    for capture_at in (int(time.time()) - 10, int(time.time()) + 8 * 86400):
        with pytest.raises(stripe.InvalidRequestError) as raised:
            charge(sdk, capture=False, capture_at=capture_at)
        assert raised.value.param == "capture_at"


def test_authorizations_expire_after_the_window(
    stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient]
) -> None:
    merchant, sdk = shop
    held = charge(sdk, capture=False)
    done = stack.clearline("invoke", "scheduler", "--time", "+8d")
    assert done.returncode == 0, done.stderr
    expired = eventually(
        lambda: (c := sdk.v1.charges.retrieve(held.id)).refunded and c, message="the expiry"
    )
    assert (expired.captured, expired.amount_refunded) == (False, 2000)
    assert "charge.expired" in events_of(sdk, held.id)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        sdk.v1.charges.capture(held.id, options={"idempotency_key": key()})
    assert raised.value.code == "charge_expired_for_capture"
    hold = ledger.account_balance(stack.store(), ledger.merchant_payable(merchant["id"], "usd"))
    assert hold.credits_pending == hold.debits_pending


@pytest.mark.parametrize(
    ("mode", "settles_to"), [("timeout_after", "succeeded"), ("timeout_before", "failed")]
)
def test_processor_sync_settles_pending_charges(
    stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient], mode: str, settles_to: str
) -> None:
    _, sdk = shop
    stack.inject_processor_fault(mode)
    pending = charge(sdk)
    assert pending.status == "pending"
    assert "charge.pending" in events_of(sdk, pending.id)
    done = stack.clearline("invoke", "processor_sync", "--time", "+2m")
    assert done.returncode == 0, done.stderr
    settled = sdk.v1.charges.retrieve(pending.id)
    assert settled.status == settles_to
    journals = journals_for(stack, pending.id)
    assert len(journals) == (1 if settles_to == "succeeded" else 0)
    expected_event = "charge.succeeded" if settles_to == "succeeded" else "charge.failed"
    assert expected_event in events_of(sdk, pending.id)


def run_processor_sync(stack: Stack, at: str) -> dict[str, int]:
    done = stack.clearline("invoke", "processor_sync", "--time", at)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def set_processor_latency(stack: Stack, milliseconds: int) -> None:
    """Every answer of the sandbox processor takes this long (this request's own included)."""
    requests.post(
        f"{stack.info.processor_url}/_sandbox/config",
        json={"latency_ms": milliseconds},
        timeout=30,
    ).raise_for_status()


def test_processor_sync_leaves_a_charge_pending_while_the_processor_is_down(
    stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient]
) -> None:
    _, sdk = shop
    stack.clear_processor_faults()
    stack.inject_processor_fault("timeout_after")  # the card was charged; the answer was lost
    pending = charge(sdk)
    assert pending.status == "pending"

    # The processor is down: nothing it answers arrives within the functions' timeout.
    set_processor_latency(stack, int(PROCESSOR_TIMEOUT_SECONDS * 1000) + 1500)
    try:
        down = run_processor_sync(stack, "+2m")
    finally:
        set_processor_latency(stack, 0)
    assert down["unreachable"] >= 1, down
    assert sdk.v1.charges.retrieve(pending.id).status == "pending"
    assert journals_for(stack, pending.id) == []
    assert "charge.succeeded" not in events_of(sdk, pending.id)

    # It is back: the next run settles the charge as the processor decided.
    back = run_processor_sync(stack, "+3m")
    assert back["unreachable"] == 0 and back["settled"] >= 1, back
    assert sdk.v1.charges.retrieve(pending.id).status == "succeeded"
    assert len(journals_for(stack, pending.id)) == 1
    assert "charge.succeeded" in events_of(sdk, pending.id)


# ---- the sample events in events/, each through its handler with work to do ----------------

EVENTS = Path(__file__).resolve().parents[2] / "events"
SAMPLE_TIME = "2026-11-25T12:00:00Z"  # the schedule time in the scheduled samples


def sample_event(tmp_path: Path, function: str, replacements: dict[str, str]) -> Path:
    """events/<function>/'s sample, its placeholders (evt_sample, ch_sample, ...) replaced
    by objects of the test."""
    (sample,) = (EVENTS / function).glob("*.json")
    text = sample.read_text()
    for placeholder, value in replacements.items():
        assert placeholder in text, f"{sample} has no {placeholder}"
        text = text.replace(placeholder, value)
    path = tmp_path / sample.name
    path.write_text(text)
    return path


def invoke(stack: Stack, function: str, event: Path) -> Any:
    done = stack.clearline("invoke", function, "--event", str(event))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Delivered:
    """A charge's charge.succeeded event, delivered by the stack to the merchant's `first`
    endpoint while its `late` endpoint was disabled; `late` is enabled now, so whatever
    delivers the event to it is the handler under test."""

    merchant_id: str
    charge_id: str
    event_id: str
    first: Receiver
    late: Receiver
    late_endpoint: str

    def placeholders(self) -> dict[str, str]:
        return {
            "acct_sample": self.merchant_id,
            "ch_sample": self.charge_id,
            "evt_sample": self.event_id,
        }


@pytest.fixture
def delivered(stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient]) -> Delivered:
    merchant, sdk = shop
    first, late = Receiver(), Receiver()
    subscribe(sdk, first, ["charge.succeeded"])
    late_id = subscribe(sdk, late, ["charge.succeeded"])
    sdk.v1.webhook_endpoints.update(
        late_id, params={"disabled": True}, options={"idempotency_key": key()}
    )
    made = charge(sdk, amount=5000)  # what the samples' event describes
    (event_id,) = eventually(lambda: list(first.ids()), message="the first delivery")
    eventually(lambda: queue_drained(stack, WEBHOOK_QUEUE.name), message="the webhook queue")
    sdk.v1.webhook_endpoints.update(
        late_id, params={"disabled": False}, options={"idempotency_key": key()}
    )
    return Delivered(merchant["id"], made.id, event_id, first, late, late_id)


def test_the_relay_sample_publishes_its_event(
    stack: Stack, delivered: Delivered, tmp_path: Path
) -> None:
    event = sample_event(tmp_path, "relay", delivered.placeholders())
    assert not delivered.late.ids()
    assert invoke(stack, "relay", event) == {"batchItemFailures": []}
    eventually(lambda: delivered.late.ids(), message="the published event's delivery")
    eventually(lambda: queue_drained(stack, WEBHOOK_QUEUE.name), message="the webhook queue")
    assert delivered.late.ids() == Counter({delivered.event_id: 1})
    assert delivered.late.accepted[0].data.object["id"] == delivered.charge_id
    assert delivered.first.ids() == Counter({delivered.event_id: 1})  # served already


def test_the_webhooks_sample_delivers_its_event(
    stack: Stack, delivered: Delivered, tmp_path: Path
) -> None:
    event = sample_event(tmp_path, "webhooks", delivered.placeholders())
    assert not delivered.late.ids()
    assert invoke(stack, "webhooks", event) == {"batchItemFailures": []}
    assert delivered.late.ids() == Counter({delivered.event_id: 1})
    assert delivered.late.accepted[0].data.object["id"] == delivered.charge_id
    assert delivered.first.ids() == Counter({delivered.event_id: 1})  # served already
    shown = stack.clearline("webhooks", "attempts", delivered.event_id).stdout.strip()
    assert [" 200 " in line for line in shown.splitlines()] == [True, True], shown
    assert delivered.late_endpoint in shown


def test_the_scheduler_sample_queues_a_due_capture(
    stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient], tmp_path: Path
) -> None:
    _, sdk = shop
    capture_at = int(time.time()) + 3600
    held = charge(sdk, capture=False, capture_at=capture_at)
    event = sample_event(tmp_path, "scheduler", {SAMPLE_TIME: iso(capture_at + 60)})
    assert invoke(stack, "scheduler", event)["queued"] >= 1
    captured = eventually(
        lambda: (c := sdk.v1.charges.retrieve(held.id)).captured and c,
        message="the capture it queued",
    )
    assert captured.amount_captured == 2000


def test_the_capture_worker_sample_captures_its_charge(
    stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient], tmp_path: Path
) -> None:
    _, sdk = shop
    capture_at = int(time.time()) + 3600
    held = charge(sdk, capture=False, capture_at=capture_at)
    # 1795608000 is when the scheduler found the job due (and sent it): its capture time.
    event = sample_event(
        tmp_path, "capture_worker", {"ch_sample": held.id, "1795608000": str(capture_at)}
    )
    assert invoke(stack, "capture_worker", event) == {"batchItemFailures": []}
    captured = sdk.v1.charges.retrieve(held.id)
    assert (captured.captured, captured.amount_captured) == (True, 2000)
    assert len([j for j in journals_for(stack, held.id) if j["operation"] == "charge.capture"]) == 1
    assert "charge.captured" in events_of(sdk, held.id)


def test_the_processor_sync_sample_settles_a_pending_charge(
    stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient], tmp_path: Path
) -> None:
    _, sdk = shop
    stack.clear_processor_faults()
    stack.inject_processor_fault("timeout_after")
    pending = charge(sdk)
    assert pending.status == "pending"
    event = sample_event(tmp_path, "processor_sync", {SAMPLE_TIME: iso(time.time() + 120)})
    assert invoke(stack, "processor_sync", event)["settled"] >= 1
    assert sdk.v1.charges.retrieve(pending.id).status == "succeeded"
    assert len(journals_for(stack, pending.id)) == 1


def test_listen_forwards_signed_events_and_prints_each_delivery(
    stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient]
) -> None:
    merchant, sdk = shop
    receiver = Receiver()
    listen = subprocess.Popen(
        [
            CLEARLINE,
            "listen",
            "--forward-to",
            receiver.url,
            "--api-key",
            merchant["secret_key"],
            "--port",
            str(stack.info.port),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=stack.env,
    )
    try:
        assert listen.stdout is not None
        ready = listen.stdout.readline()
        receiver.secret = ready.strip().rsplit(" ", 1)[-1]
        assert receiver.secret.startswith("whsec_")
        listen.stdout.readline()  # "Forwarding events to ..."
        made = charge(sdk)
        line = listen.stdout.readline()
        assert "charge.succeeded" in line and "[200]" in line, line
        assert receiver.accepted[0].data.object["id"] == made.id
    finally:
        listen.terminate()
        assert listen.wait(timeout=30) == 0
    assert sdk.v1.webhook_endpoints.list().data == []  # the temporary endpoint is gone
