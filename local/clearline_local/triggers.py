"""What invokes the non-API functions locally, as Lambda's event sources do on AWS:
a DynamoDB stream poller, SQS pollers (with partial batch failures) and schedules.

Each runs in a daemon thread and hands the function the same event shape AWS would.
Pollers never wait inside moto (no long polling): the local moto server answers one
request at a time, and a long poll would hold everyone else up.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import Any

from clearline.topology import Topology
from clearline_local.lambda_runtime import (
    ACCOUNT,
    REGION,
    FunctionError,
    LocalFunction,
    function_arn,
)

log = logging.getLogger("clearline.local")
# A stream record that keeps failing is retried after 0.2 s, 0.4 s, ... up to 2 s between
# tries: quick enough to ride out a passing fault, slow enough not to spin.
STREAM_RETRY_DELAY_SECONDS = 0.2
STREAM_RETRY_DELAY_CAP_SECONDS = 2.0


def scheduled_event(rule_name: str, at: datetime) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{rule_name}"],
        "detail": {},
    }


class Trigger(threading.Thread):
    def __init__(self, name: str, interval: float) -> None:
        super().__init__(name=name, daemon=True)
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        failing = False
        while not self.stopping.is_set():
            try:
                busy = self.poll()
                failing = False
            except FunctionError:  # logged by the runtime; the work is retried, as on AWS
                busy = False
            except Exception:
                if not failing:  # once per spell of failures, not on every poll
                    log.exception("%s failed; retrying until it recovers", self.name)
                failing = True
                busy = False
            if not busy:
                self.stopping.wait(self.interval)

    def poll(self) -> bool:
        raise NotImplementedError

    def stop(self) -> None:
        self.stopping.set()


def as_lambda_record(record: dict[str, Any], stream_arn: str) -> dict[str, Any]:
    """A stream record as Lambda delivers it: with its source ARN, times as epoch seconds."""
    dynamodb = dict(record["dynamodb"])
    created = dynamodb.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        dynamodb["ApproximateCreationDateTime"] = created.timestamp()
    return {**record, "dynamodb": dynamodb, "eventSourceARN": stream_arn}


def _iso(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def on_failure_message(
    function_key: str,
    stream_arn: str,
    shard_id: str,
    records: list[dict[str, Any]],
    invocations: int,
    function_error: bool,
) -> dict[str, Any]:
    """What Lambda sends to a stream trigger's on-failure destination: where the records
    lie in the stream, not the records themselves."""
    first, last = records[0]["dynamodb"], records[-1]["dynamodb"]
    return {
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": function_arn(function_key),
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": invocations,
        },
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            **({"functionError": "Unhandled"} if function_error else {}),
        },
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "DDBStreamBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": first["SequenceNumber"],
            "endSequenceNumber": last["SequenceNumber"],
            "approximateArrivalOfFirstRecord": _iso(first.get("ApproximateCreationDateTime", 0)),
            "approximateArrivalOfLastRecord": _iso(last.get("ApproximateCreationDateTime", 0)),
            "batchSize": len(records),
            "streamArn": stream_arn,
        },
    }


class StreamPoller(Trigger):
    """Reads every shard of a table's stream in order and hands batches to the function as
    Lambda's DynamoDB event source mapping does, with partial batch responses:

    - the records before the first one the function reports failed are done;
    - a failing batch of several records is halved (bisect), without counting a retry,
      until the failing record is alone;
    - a failing batch that cannot be halved is retried after a growing pause, at most
      `maximum_retry_attempts` times; then its position goes to the on-failure queue
      and the records behind it flow again.
    """

    def __init__(
        self,
        function: LocalFunction,
        streams: Any,
        stream_arn: str,
        sqs: Any,
        on_failure_url: str,
        *,
        retry_delay: float = STREAM_RETRY_DELAY_SECONDS,
    ) -> None:
        super().__init__(f"stream->{function.spec.key}", 0.2)
        if function.spec.stream_failures is None:
            raise ValueError(f"function {function.spec.key} has no stream_failures")
        self.function = function
        self.policy = function.spec.stream_failures
        self.streams = streams
        self.stream_arn = stream_arn
        self.sqs = sqs
        self.on_failure_url = on_failure_url
        self.retry_delay = retry_delay
        self.iterators: dict[str, str] = {}
        # Per shard: the batches to hand over, in stream order (halves of a failed batch
        # first), the failed invocations of the first batch, and when to retry it.
        self.batches: dict[str, deque[list[dict[str, Any]]]] = {}
        self.failures: dict[str, int] = {}
        self.retry_at: dict[str, float] = {}

    def poll(self) -> bool:
        shards = self.streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"][
            "Shards"
        ]
        busy = False
        for shard in shards:
            shard_id = shard["ShardId"]
            batches = self.batches.setdefault(shard_id, deque())
            if not batches:
                self._read(shard_id, batches)
            if batches and time.monotonic() >= self.retry_at.get(shard_id, 0.0):
                self._deliver(shard_id, batches)
                busy = True
        return busy

    def _read(self, shard_id: str, batches: deque[list[dict[str, Any]]]) -> None:
        if shard_id not in self.iterators:
            self.iterators[shard_id] = self.streams.get_shard_iterator(
                StreamArn=self.stream_arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
        page = self.streams.get_records(ShardIterator=self.iterators[shard_id], Limit=100)
        self.iterators[shard_id] = page["NextShardIterator"]
        records = [as_lambda_record(r, self.stream_arn) for r in page["Records"]]
        size = self.function.spec.batch_size
        batches.extend(records[i : i + size] for i in range(0, len(records), size))

    def _deliver(self, shard_id: str, batches: deque[list[dict[str, Any]]]) -> None:
        batch = batches[0]
        try:
            failed_from = self._first_failure(batch, self.function.invoke({"Records": batch}))
            function_error = False
        except FunctionError:  # the runtime has logged it
            failed_from, function_error = 0, True
        if failed_from is None:
            batches.popleft()
            self.failures.pop(shard_id, None)
            return
        failing = batch[failed_from:]
        if self.policy.bisect_batch_on_error and len(failing) > 1:
            middle = len(failing) // 2
            batches[0] = failing[middle:]
            batches.appendleft(failing[:middle])
            self.failures.pop(shard_id, None)
            return
        batches[0] = failing
        # Counted from this batch's first failure; records done before it reset the count.
        failures = (0 if failed_from else self.failures.get(shard_id, 0)) + 1
        if failures <= self.policy.maximum_retry_attempts:
            self.failures[shard_id] = failures
            pause = min(STREAM_RETRY_DELAY_CAP_SECONDS, self.retry_delay * 2 ** (failures - 1))
            self.retry_at[shard_id] = time.monotonic() + pause
            return
        self._give_up(shard_id, failing, failures, function_error)
        batches.popleft()
        self.failures.pop(shard_id, None)

    @staticmethod
    def _first_failure(batch: list[dict[str, Any]], response: Any) -> int | None:
        """Where a partial batch response says the batch failed, or None if it did not."""
        reported = response.get("batchItemFailures") if isinstance(response, dict) else None
        if not reported:
            return None
        failed = {item.get("itemIdentifier") for item in reported}
        positions = [
            i for i, record in enumerate(batch) if record["dynamodb"]["SequenceNumber"] in failed
        ]
        # Lambda takes an identifier it cannot place as the whole batch failing.
        return positions[0] if positions and len(positions) == len(failed) else 0

    def _give_up(
        self, shard_id: str, records: list[dict[str, Any]], invocations: int, function_error: bool
    ) -> None:
        message = on_failure_message(
            self.function.spec.key, self.stream_arn, shard_id, records, invocations, function_error
        )
        self.sqs.send_message(QueueUrl=self.on_failure_url, MessageBody=json.dumps(message))
        log.error(
            "%s: gave up on %d stream record(s) from sequence number %s after %d invocations; "
            "their position is in the on-failure queue %s",
            self.function.spec.key,
            len(records),
            records[0]["dynamodb"]["SequenceNumber"],
            invocations,
            self.on_failure_url.rsplit("/", 1)[-1],
        )


class QueuePoller(Trigger):
    def __init__(self, function: LocalFunction, sqs: Any, queue_url: str, queue_arn: str) -> None:
        super().__init__(f"sqs->{function.spec.key}", 0.2)
        self.function = function
        self.sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = queue_arn

    def poll(self) -> bool:
        received = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(10, self.function.spec.batch_size),
            WaitTimeSeconds=0,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not received:
            return False
        records = [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": self.queue_arn,
                "awsRegion": REGION,
            }
            for m in received
        ]
        response = self.function.invoke({"Records": records})
        failed = {f["itemIdentifier"] for f in (response or {}).get("batchItemFailures", [])}
        done = [r for r in records if r["messageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": r["receiptHandle"]} for i, r in enumerate(done)
                ],
            )
        return True


class Schedule(Trigger):
    def __init__(self, function: LocalFunction) -> None:
        minutes = function.spec.schedule_minutes or 1
        super().__init__(f"schedule->{function.spec.key}", minutes * 60)
        self.function = function

    def poll(self) -> bool:
        self.function.invoke(
            scheduled_event(f"{self.function.spec.key}-schedule", datetime.now(UTC))
        )
        return False


def start_triggers(
    topology: Topology,
    functions: dict[str, LocalFunction],
    clients: dict[str, Any],
    queue_arns: dict[str, str],
    aws_endpoint_url: str,
) -> list[Trigger]:
    from clearline_local.environment import queue_url

    triggers: list[Trigger] = []
    for spec in topology.functions:
        function = functions[spec.key]
        if spec.stream_from:
            if spec.stream_failures is None:
                # Without a bound on retries, one bad record would hold up its shard forever.
                raise ValueError(f"function {spec.key} streams without stream_failures")
            table = topology.table(spec.stream_from).name
            arn = clients["dynamodb"].describe_table(TableName=table)["Table"]["LatestStreamArn"]
            on_failure = topology.queue(spec.stream_failures.on_failure_queue)
            triggers.append(
                StreamPoller(
                    function,
                    clients["dynamodbstreams"],
                    arn,
                    clients["sqs"],
                    queue_url(aws_endpoint_url, on_failure.name),
                )
            )
        if spec.queue_trigger:
            queue = topology.queue(spec.queue_trigger)
            if queue.max_receive_count is None:
                # As on AWS: a message its function keeps failing must reach a dead-letter queue.
                raise ValueError(
                    f"queue {queue.key} triggers a function but has no dead-letter queue"
                )
            triggers.append(
                QueuePoller(
                    function,
                    clients["sqs"],
                    queue_url(aws_endpoint_url, queue.name),
                    queue_arns[spec.queue_trigger],
                )
            )
        if spec.schedule_minutes:
            triggers.append(Schedule(function))
    for trigger in triggers:
        trigger.start()
    return triggers
