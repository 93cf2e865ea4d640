"""Webhook dispatcher: SQS batches of events from the bus -> signed POSTs to endpoints.

A record whose delivery failed for some endpoint stays on the queue, hidden for an
exponentially growing delay; after the queue's maxReceiveCount it moves to the DLQ.
"""

from __future__ import annotations

import json
import os
from typing import Any

import boto3
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from clearline.config import Settings
from clearline.egress import EgressPolicy
from clearline.logs import new_logger
from clearline.secrets import SecretBox
from clearline.store import Store
from clearline.topology import WEBHOOK_QUEUE, queue_env_var
from clearline.webhooks import Dispatcher, retry_delay

logger = new_logger()
processor = BatchProcessor(event_type=EventType.SQS)
settings = Settings.from_env()
sqs = boto3.client("sqs")
QUEUE_URL = os.environ[queue_env_var(WEBHOOK_QUEUE.key)]
RETRY_BASE_SECONDS = float(os.environ.get("CLEARLINE_WEBHOOK_RETRY_BASE_SECONDS", "60"))
dispatcher = Dispatcher(
    Store(settings.main_table),
    secrets=SecretBox(settings.webhook_secrets_key),
    egress=EgressPolicy.from_settings(settings),
    timeout_seconds=float(os.environ.get("CLEARLINE_WEBHOOK_TIMEOUT_SECONDS", "10")),
)


class DeliveryFailed(Exception):
    pass


def deliver(record: SQSRecord) -> None:
    detail = json.loads(record.body)["detail"]
    event = detail["event"]
    attempts = dispatcher.deliver(detail["merchant"], event, force=detail.get("force", False))
    for attempt in attempts:
        logger.info(
            "delivery",
            extra={
                "event_id": event["id"],
                "endpoint": attempt.endpoint,
                "status": attempt.status,
                "ms": attempt.latency_ms,
                "error": attempt.error,
            },
        )
    failed = [a for a in attempts if not a.ok]
    if failed:
        receives = int(record.attributes.approximate_receive_count)
        sqs.change_message_visibility(
            QueueUrl=QUEUE_URL,
            ReceiptHandle=record.receipt_handle,
            VisibilityTimeout=retry_delay(receives, RETRY_BASE_SECONDS),
        )
        raise DeliveryFailed(f"{event['id']}: {len(failed)} endpoint(s) failed")


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return dict(
        process_partial_response(
            event=event, record_handler=deliver, processor=processor, context=context
        )
    )
