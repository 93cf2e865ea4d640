"""Reconciler: S3 ObjectCreated (through SQS) -> a settlement file matched to the ledger.

The file is streamed from S3 line by line; the report goes back to S3 under reports/;
each mismatch goes to the operations queue (and, from the library, to an event).
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import unquote_plus

import boto3
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from clearline.config import Settings
from clearline.ledger import ShardPolicy
from clearline.logs import new_logger
from clearline.reconciliation import Mismatch, Reconciler
from clearline.store import Store
from clearline.topology import (
    MISMATCH_QUEUE,
    SETTLEMENT_BUCKET,
    bucket_env_var,
    queue_env_var,
)

logger = new_logger()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)
s3 = boto3.client("s3")
sqs = boto3.client("sqs")
BUCKET = os.environ[bucket_env_var(SETTLEMENT_BUCKET.key)]
MISMATCH_QUEUE_URL = os.environ[queue_env_var(MISMATCH_QUEUE.key)]
REPORT_PREFIX = "reports/"


def to_operations(mismatches: list[Mismatch]) -> None:
    for mismatch in mismatches:
        sqs.send_message(QueueUrl=MISMATCH_QUEUE_URL, MessageBody=json.dumps(mismatch.__dict__))
        metrics.add_metric(name="ReconciliationMismatches", unit=MetricUnit.Count, value=1)


reconciler = Reconciler(
    Store(Settings.from_env().main_table), ShardPolicy.from_env(), on_mismatch=to_operations
)


def reconcile(record: SQSRecord) -> None:
    notification = json.loads(record.body)
    if notification.get("Event") == "s3:TestEvent":  # sent once when notifications are set up
        return
    for s3_record in notification.get("Records", []):
        key = unquote_plus(s3_record["s3"]["object"]["key"])
        etag = s3_record["s3"]["object"].get("eTag", "")
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"]
        lines = (line.decode("utf-8") for line in body.iter_lines())
        report = reconciler.reconcile(lines, file=key, etag=etag)
        if not report.already_reconciled:
            report_key = REPORT_PREFIX + key.removeprefix("settlements/") + ".json"
            s3.put_object(
                Bucket=BUCKET,
                Key=report_key,
                Body=json.dumps(report.to_dict()),
                ContentType="application/json",
            )
        logger.info(
            "reconciled",
            extra={
                "file": key,
                "rows": report.rows,
                "counts": dict(report.counts),
                "already_reconciled": report.already_reconciled,
            },
        )


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return dict(
        process_partial_response(
            event=event, record_handler=reconcile, processor=processor, context=context
        )
    )
