"""What invokes the non-API functions locally, as Lambda's event sources do on AWS:
a DynamoDB stream poller, SQS pollers (with partial batch failures) and schedules.

Each runs in a daemon thread and hands the function the same event shape AWS would.
Pollers never wait inside moto (no long polling): the local moto server answers one
request at a time, and a long poll would hold everyone else up.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from clearline.topology import Topology
from clearline_local.lambda_runtime import ACCOUNT, REGION, FunctionError, LocalFunction

log = logging.getLogger("clearline.local")


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
        while not self.stopping.is_set():
            try:
                busy = self.poll()
            except FunctionError as exc:  # the whole batch failed: it is retried, as on AWS
                log.warning("%s: %s", self.name, exc)
                busy = False
            except Exception:
                log.exception("%s failed; retrying", self.name)
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


class StreamPoller(Trigger):
    """Reads every shard of a table's stream in order; a failed record is retried before
    any later one, as Lambda's stream event source does with partial batch responses."""

    def __init__(self, function: LocalFunction, streams: Any, stream_arn: str) -> None:
        super().__init__(f"stream->{function.spec.key}", 0.2)
        self.function = function
        self.streams = streams
        self.stream_arn = stream_arn
        self.iterators: dict[str, str] = {}
        self.backlog: dict[str, list[dict[str, Any]]] = {}

    def poll(self) -> bool:
        shards = self.streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"][
            "Shards"
        ]
        busy = False
        for shard in shards:
            shard_id = shard["ShardId"]
            if shard_id not in self.iterators:
                self.iterators[shard_id] = self.streams.get_shard_iterator(
                    StreamArn=self.stream_arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
            backlog = self.backlog.setdefault(shard_id, [])
            if not backlog:
                page = self.streams.get_records(ShardIterator=self.iterators[shard_id], Limit=100)
                self.iterators[shard_id] = page["NextShardIterator"]
                backlog.extend(as_lambda_record(r, self.stream_arn) for r in page["Records"])
            if backlog:
                busy = True
                batch = backlog[: self.function.spec.batch_size]
                response = self.function.invoke({"Records": batch})
                failures = [
                    f["itemIdentifier"] for f in (response or {}).get("batchItemFailures", [])
                ]
                if failures:  # keep the first failed record and everything after it
                    first = next(
                        i
                        for i, r in enumerate(batch)
                        if r["dynamodb"]["SequenceNumber"] in failures
                    )
                    del backlog[:first]
                    time.sleep(0.5)
                else:
                    del backlog[: len(batch)]
        return busy


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
            table = topology.table(spec.stream_from).name
            arn = clients["dynamodb"].describe_table(TableName=table)["Table"]["LatestStreamArn"]
            triggers.append(StreamPoller(function, clients["dynamodbstreams"], arn))
        if spec.queue_trigger:
            queue = topology.queue(spec.queue_trigger)
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
