"""Outbox relay: DynamoDB stream of the main table -> the EventBridge bus.

Records are published one by one and failures reported per record, so after a crash
Lambda retries from the first unpublished record; a record published twice carries the
same event id, which the webhook dispatcher uses to deliver it once.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from clearline.outbox import entry_for
from clearline.store import deserialize
from clearline.topology import EVENT_BUS, bus_env_var

logger = Logger()
processor = BatchProcessor(event_type=EventType.DynamoDBStreams)
events = boto3.client("events")
BUS_NAME = os.environ[bus_env_var(EVENT_BUS.key)]


class PublishFailed(Exception):
    pass


def publish(record: DynamoDBRecord) -> None:
    if record.raw_event.get("eventName") != "INSERT":
        return
    image = deserialize(record.raw_event["dynamodb"].get("NewImage", {}))
    entry = entry_for(image, BUS_NAME)
    if entry is None:
        return
    response = events.put_events(Entries=[entry])  # type: ignore[list-item]
    if response.get("FailedEntryCount"):
        raise PublishFailed(str(response["Entries"][0].get("ErrorMessage")))
    logger.info("published", extra={"event_id": image["id"], "type": image["type"]})


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return dict(
        process_partial_response(
            event=event, record_handler=publish, processor=processor, context=context
        )
    )
