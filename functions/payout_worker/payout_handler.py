"""Payout worker: SQS batches of payout work -> each payout sent to the bank, or settled on
its arrival date, once. A message that fails is retried by SQS (the bank is asked again
under the same key), and after its retries goes to the dead-letter queue, alone."""

from __future__ import annotations

import json
import os
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from clearline.bank import BankClient
from clearline.bank_accounts import BankAccounts
from clearline.config import Settings
from clearline.ledger import ShardPolicy
from clearline.logs import new_logger
from clearline.payout_jobs import PayoutJob, run_payout_job
from clearline.payouts import PayoutService
from clearline.secrets import SecretBox
from clearline.store import Store
from clearline.topology import BANK_ACCOUNTS_KEY_ENV, BANK_URL_ENV

logger = new_logger()
processor = BatchProcessor(event_type=EventType.SQS)
settings = Settings.from_env()
store = Store(settings.main_table)
payouts = PayoutService(
    store,
    BankAccounts(store, SecretBox(os.environ.get(BANK_ACCOUNTS_KEY_ENV, ""))),
    BankClient(os.environ[BANK_URL_ENV], settings.processor_timeout_seconds),
    ShardPolicy.from_env(),
)


def run(record: SQSRecord) -> None:
    job = PayoutJob(**json.loads(record.body))
    outcome = run_payout_job(payouts, job)
    logger.info(
        "payout job", extra={"payout": job.payout, "action": job.action, "outcome": outcome}
    )


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return dict(
        process_partial_response(
            event=event, record_handler=run, processor=processor, context=context
        )
    )
