"""Capture worker: SQS batches of due work -> each authorization captured or expired, and
each dispute past its evidence deadline answered, once.

Captures and expiries share the processor's rate limit with everything else. A job that
finds no capacity within a second is handed back to the queue (a batch item failure), not
failed: nothing was sent, its write-ahead keeps its key, and the queue brings it back (the
scheduler queues what is still due every minute, and the resolver settles an operation
left pending)."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from clearline.charges import ChargeService
from clearline.config import Settings
from clearline.disputes import DisputeService
from clearline.ledger import ShardPolicy
from clearline.logs import new_logger
from clearline.processor import ProcessorBusy, ProcessorClient
from clearline.processor_capacity import ProcessorCapacity
from clearline.refunds import RefundService
from clearline.scheduling import Job, run_job
from clearline.store import Store

# A worker waits at most this long for a permit: captures can wait, in the queue.
CAPACITY_WAIT_SECONDS = 1.0

logger = new_logger()
# Every record handed back is still a partial batch response, not a failed invocation.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
settings = Settings.from_env()
store = Store(settings.main_table)
processor_client = ProcessorClient(
    settings.processor_url,
    settings.processor_timeout_seconds,
    capacity=ProcessorCapacity.from_env(wait_seconds=CAPACITY_WAIT_SECONDS),
)
shards = ShardPolicy.from_env()
charges = ChargeService(store, processor_client, shards)
disputes = DisputeService(store, processor_client, shards)
refunds = RefundService(store, processor_client, shards)


def run(record: SQSRecord) -> None:
    job = Job(**json.loads(record.body))
    try:
        outcome = run_job(charges, store, job, disputes, refunds)
    except ProcessorBusy as exc:
        # Raising reports the record failed: it goes back to the queue, unsent.
        logger.info(
            "job handed back",
            extra={"charge": job.charge, "action": job.action, "reason": str(exc)},
        )
        raise
    logger.info("job", extra={"charge": job.charge, "action": job.action, "outcome": outcome})


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return dict(
        process_partial_response(
            event=event, record_handler=run, processor=processor, context=context
        )
    )
