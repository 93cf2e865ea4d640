"""Scheduler: on an EventBridge schedule, queue what has come due: authorizations for their
scheduled capture or expiry and disputes past their evidence deadline (the capture
worker's), payouts to send or to settle on arrival (the payout worker's). The schedule's
own time is the clock."""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

import boto3

from clearline.config import Settings
from clearline.logs import new_logger
from clearline.payout_jobs import due_payout_jobs
from clearline.scheduling import due_jobs
from clearline.store import Store
from clearline.topology import CAPTURE_QUEUE, PAYOUT_QUEUE, queue_env_var

logger = new_logger()
store = Store(Settings.from_env().main_table)
sqs = boto3.client("sqs")
QUEUE_URL = os.environ[queue_env_var(CAPTURE_QUEUE.key)]
PAYOUT_QUEUE_URL = os.environ[queue_env_var(PAYOUT_QUEUE.key)]


def send(queue_url: str, messages: list[dict[str, Any]]) -> None:
    for start in range(0, len(messages), 10):
        sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "MessageBody": json.dumps(message)}
                for i, message in enumerate(messages[start : start + 10])
            ],
        )


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    now = int(datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp())
    jobs = due_jobs(store, now)
    send(QUEUE_URL, [job.as_message() for job in jobs])
    payout_jobs = due_payout_jobs(store, now)
    send(PAYOUT_QUEUE_URL, [job.as_message() for job in payout_jobs])
    logger.info(
        "queued due work", extra={"count": len(jobs), "payouts": len(payout_jobs), "as_of": now}
    )
    return {"queued": len(jobs), "payouts": len(payout_jobs)}
