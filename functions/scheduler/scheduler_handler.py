"""Scheduler: on an EventBridge schedule, queue every authorization due for its scheduled
capture or its expiry. The schedule's own time is the clock."""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

import boto3

from clearline.config import Settings
from clearline.logs import new_logger
from clearline.scheduling import due_jobs
from clearline.store import Store
from clearline.topology import CAPTURE_QUEUE, queue_env_var

logger = new_logger()
store = Store(Settings.from_env().main_table)
sqs = boto3.client("sqs")
QUEUE_URL = os.environ[queue_env_var(CAPTURE_QUEUE.key)]


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    now = int(datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp())
    jobs = due_jobs(store, now)
    for start in range(0, len(jobs), 10):
        batch = jobs[start : start + 10]
        sqs.send_message_batch(
            QueueUrl=QUEUE_URL,
            Entries=[
                {"Id": str(i), "MessageBody": json.dumps(job.as_message())}
                for i, job in enumerate(batch)
            ],
        )
    logger.info("queued due authorizations", extra={"count": len(jobs), "as_of": now})
    return {"queued": len(jobs)}
