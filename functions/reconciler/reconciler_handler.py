"""Reconciler: S3 ObjectCreated (through SQS) -> a settlement file matched to the ledger.

A file up to CLEARLINE_RECONCILE_CHUNK_BYTES is streamed from S3 line by line. A larger
one is fanned out: its chunks go back on the settlement queue, and each is read with a
ranged GET of the version that was planned (If-Match its ETag), so instances settle them
in parallel. The report goes back to S3 under reports/ (chunks leave their results under
chunks/); each mismatch goes to the operations queue (and, from the library, to an event).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
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
from clearline.reconciliation import (
    DEFAULT_CHUNK_BYTES,
    Chunk,
    Mismatch,
    Reconciler,
    Report,
    plan_chunks,
)
from clearline.store import Store
from clearline.topology import (
    MISMATCH_QUEUE,
    SETTLEMENT_BUCKET,
    SETTLEMENT_QUEUE,
    bucket_env_var,
    queue_env_var,
)

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

logger = new_logger()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)
s3 = boto3.client("s3")
sqs = boto3.client("sqs")
BUCKET = os.environ[bucket_env_var(SETTLEMENT_BUCKET.key)]
MISMATCH_QUEUE_URL = os.environ[queue_env_var(MISMATCH_QUEUE.key)]
SETTLEMENT_QUEUE_URL = os.environ[queue_env_var(SETTLEMENT_QUEUE.key)]
CHUNK_BYTES = int(os.environ.get("CLEARLINE_RECONCILE_CHUNK_BYTES", DEFAULT_CHUNK_BYTES))
REPORT_PREFIX = "reports/"
CHUNK_RESULT_PREFIX = "chunks/"


def to_operations(mismatches: list[Mismatch]) -> None:
    for mismatch in mismatches:
        sqs.send_message(QueueUrl=MISMATCH_QUEUE_URL, MessageBody=json.dumps(mismatch.__dict__))
        metrics.add_metric(name="ReconciliationMismatches", unit=MetricUnit.Count, value=1)


reconciler = Reconciler(
    Store(Settings.from_env().main_table), ShardPolicy.from_env(), on_mismatch=to_operations
)


def reconcile(record: SQSRecord) -> None:
    message = json.loads(record.body)
    if message.get("Event") == "s3:TestEvent":  # sent once when notifications are set up
        return
    if "chunk" in message:
        reconcile_chunk(message["chunk"])
        return
    for s3_record in message.get("Records", []):
        key = unquote_plus(s3_record["s3"]["object"]["key"])
        reconcile_file(key, s3_record["s3"]["object"].get("eTag", ""))


def reconcile_file(key: str, etag: str) -> None:
    settlement_file = s3.get_object(Bucket=BUCKET, Key=key)
    body = settlement_file["Body"]
    if settlement_file["ContentLength"] > CHUNK_BYTES:
        if settlement_file["ETag"].strip('"') != etag:
            # Chunks read the announced version by its ETag: a plan of another would not fit.
            raise RuntimeError(f"{key} was replaced since ETag {etag} was announced")
        chunks = reconciler.fan_out(
            key, etag, lambda: plan_chunks(body.iter_lines(1 << 16, keepends=True), CHUNK_BYTES)
        )
        if chunks is not None:
            send_chunks(key, etag, chunks)
            return
        # A whole run of this file began before: it is resumed whole.
        body = s3.get_object(Bucket=BUCKET, Key=key, IfMatch=etag)["Body"]
    lines = (line.decode("utf-8") for line in body.iter_lines())
    report = reconciler.reconcile(lines, file=key, etag=etag)
    if not report.already_reconciled:
        put_report(report)
    log_report(report)


def send_chunks(key: str, etag: str, chunks: list[Chunk]) -> None:
    for first in range(0, len(chunks), 10):  # SQS takes ten messages to a batch
        entries: list[SendMessageBatchRequestEntryTypeDef] = [
            {"Id": str(chunk.index), "MessageBody": chunk_message(key, etag, chunk)}
            for chunk in chunks[first : first + 10]
        ]
        sent = sqs.send_message_batch(QueueUrl=SETTLEMENT_QUEUE_URL, Entries=entries)
        if sent.get("Failed"):  # the notification is redelivered, and sends them all again
            raise RuntimeError(f"chunks of {key} not sent: {sent['Failed']}")
    logger.info("fanned out", extra={"file": key, "chunks": len(chunks)})


def chunk_message(key: str, etag: str, chunk: Chunk) -> str:
    return json.dumps({"chunk": {"file": key, "etag": etag, **chunk.to_dict()}})


def reconcile_chunk(message: dict[str, Any]) -> None:
    key, etag, chunk = message["file"], message["etag"], Chunk.from_dict(message)
    report = reconciler.reconcile_chunk(
        chunk_lines(key, etag, chunk),
        file=key,
        etag=etag,
        chunk=chunk,
        results=ChunkResultsInS3(key, etag),
    )
    if report is not None:  # this chunk completed the file
        put_report(report)
        log_report(report)


def chunk_lines(key: str, etag: str, chunk: Chunk) -> Iterator[str]:
    """The chunk's lines, read when first asked for: from the version it was planned on."""
    body = s3.get_object(
        Bucket=BUCKET, Key=key, IfMatch=etag, Range=f"bytes={chunk.start}-{chunk.end}"
    )["Body"]
    for line in body.iter_lines():
        yield line.decode("utf-8")


class ChunkResultsInS3:
    def __init__(self, key: str, etag: str) -> None:
        self.prefix = f"{CHUNK_RESULT_PREFIX}{key.removeprefix('settlements/')}/{etag}/"

    def save(self, index: int, partial: dict[str, Any]) -> None:
        s3.put_object(
            Bucket=BUCKET,
            Key=f"{self.prefix}{index:06d}.json",
            Body=json.dumps(partial),
            ContentType="application/json",
        )

    def load(self, index: int) -> dict[str, Any]:
        body = s3.get_object(Bucket=BUCKET, Key=f"{self.prefix}{index:06d}.json")["Body"]
        return dict(json.loads(body.read()))


def put_report(report: Report) -> None:
    s3.put_object(
        Bucket=BUCKET,
        Key=REPORT_PREFIX + report.file.removeprefix("settlements/") + ".json",
        Body=json.dumps(report.to_dict()),
        ContentType="application/json",
    )


def log_report(report: Report) -> None:
    logger.info(
        "reconciled",
        extra={
            "file": report.file,
            "rows": report.rows,
            "chunks": report.chunks,
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
