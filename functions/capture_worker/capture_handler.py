"""Capture worker: SQS batches of due work -> each authorization captured or expired, and
each dispute past its evidence deadline answered, once."""

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
from clearline.processor import ProcessorClient
from clearline.scheduling import Job, run_job
from clearline.store import Store

logger = new_logger()
processor = BatchProcessor(event_type=EventType.SQS)
settings = Settings.from_env()
store = Store(settings.main_table)
processor_client = ProcessorClient(settings.processor_url, settings.processor_timeout_seconds)
shards = ShardPolicy.from_env()
charges = ChargeService(store, processor_client, shards)
disputes = DisputeService(store, processor_client, shards)


def run(record: SQSRecord) -> None:
    job = Job(**json.loads(record.body))
    outcome = run_job(charges, store, job, disputes)
    logger.info("job", extra={"charge": job.charge, "action": job.action, "outcome": outcome})


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return dict(
        process_partial_response(
            event=event, record_handler=run, processor=processor, context=context
        )
    )
