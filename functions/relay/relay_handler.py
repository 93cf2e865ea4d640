"""Outbox relay: DynamoDB stream of the main table -> the EventBridge bus.

Records are published one by one and each failure is reported on its own (a partial batch
response), so the rest of the batch publishes and the stream trigger retries only what
failed; a record published twice carries the same event id, which the webhook dispatcher
uses to deliver it once.

Records that are not event items are skipped on their keys alone. An event item that
cannot become an EventBridge entry (a missing field, data that does not serialize) fails
like an entry EventBridge refuses: the trigger retries it a bounded number of times, then
sends its position to the alarmed on-failure queue. Nothing is dropped silently.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from clearline.logs import new_logger
from clearline.store import deserialize
from clearline.topology import EVENT_BUS, bus_env_var
from presentation.links import Links
from presentation.outbox import entry_for

logger = new_logger()
# Failures are reported per record even when every record of a batch fails, so the trigger
# always learns which record to retry rather than seeing the whole invocation fail.
processor = BatchProcessor(
    event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False
)
events = boto3.client("events")
BUS_NAME = os.environ[bus_env_var(EVENT_BUS.key)]
LINKS = Links.from_env()
EVENT_PK_PREFIX = "EVENT#"


class PublishFailed(Exception):
    """EventBridge refused the entry (FailedEntryCount): worth retrying."""


class MalformedEvent(Exception):
    """An event item that cannot be turned into an EventBridge entry."""


def event_id_of(keys: dict[str, Any]) -> str | None:
    """The event id if a stream record's keys (DynamoDB JSON) are an event item's."""
    pk = keys.get("pk", {}).get("S", "")
    if pk.startswith(EVENT_PK_PREFIX) and keys.get("sk", {}).get("S") == "EVENT":
        return str(pk[len(EVENT_PK_PREFIX) :])
    return None


def entry(event_id: str, new_image: dict[str, Any] | None) -> dict[str, Any]:
    if not new_image:
        raise MalformedEvent(f"{event_id}: the stream record carries no new image")
    try:
        built = entry_for(deserialize(new_image), BUS_NAME, LINKS)
    except (KeyError, TypeError, ValueError) as exc:  # a pydantic ValidationError too
        raise MalformedEvent(f"{event_id}: {type(exc).__name__}: {exc}") from exc
    if built is None:
        raise MalformedEvent(f"{event_id}: the new image is not an event item")
    return built


def publish(record: DynamoDBRecord) -> None:
    change = record.raw_event
    event_id = event_id_of(change["dynamodb"].get("Keys", {}))
    if change.get("eventName") != "INSERT" or event_id is None:
        return  # most of the stream: charges, journals, balances, updates
    try:
        published = entry(event_id, change["dynamodb"].get("NewImage"))
        response = events.put_events(Entries=[published])  # type: ignore[list-item]
        if response.get("FailedEntryCount"):
            refused = response["Entries"][0]
            raise PublishFailed(f"{refused.get('ErrorCode')}: {refused.get('ErrorMessage')}")
    except Exception:
        logger.exception(
            "event not published",
            extra={"event_id": event_id, "sequence_number": change["dynamodb"]["SequenceNumber"]},
        )
        raise
    logger.info("published", extra={"event_id": event_id, "type": published["DetailType"]})


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return dict(
        process_partial_response(
            event=event, record_handler=publish, processor=processor, context=context
        )
    )
