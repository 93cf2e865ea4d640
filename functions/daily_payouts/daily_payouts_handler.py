"""Daily payouts: once a day, by an EventBridge schedule, every merchant's available balance
is paid out to their bank account, and each payout queued for the bank. The schedule's own
time names the day, so a rerun of the same day makes nothing twice."""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

import boto3

from clearline.bank_accounts import BankAccounts
from clearline.config import Settings
from clearline.ledger import ShardPolicy
from clearline.logs import new_logger
from clearline.payout_jobs import PayoutJob
from clearline.payouts import PENDING, PayoutService
from clearline.secrets import SecretBox
from clearline.store import Store
from clearline.topology import PAYOUT_QUEUE, queue_env_var

logger = new_logger()
store = Store(Settings.from_env().main_table)
# The run reads no account number: it only needs to know who has an account.
payouts = PayoutService(store, BankAccounts(store, SecretBox("")), None, ShardPolicy.from_env())
sqs = boto3.client("sqs")
QUEUE_URL = os.environ[queue_env_var(PAYOUT_QUEUE.key)]


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    day = datetime.fromisoformat(event["time"].replace("Z", "+00:00")).date()
    made = payouts.pay_out_available(day)
    # A payout whose message is lost is sent by the scheduler's sweep instead.
    to_send = [p for p in made if p.status == PENDING]
    for start in range(0, len(to_send), 10):
        sqs.send_message_batch(
            QueueUrl=QUEUE_URL,
            Entries=[
                {"Id": str(i), "MessageBody": json.dumps(PayoutJob(p.id, "send").as_message())}
                for i, p in enumerate(to_send[start : start + 10])
            ],
        )
    logger.info("automatic payouts", extra={"day": day.isoformat(), "payouts": len(made)})
    return {"payouts": len(made), "amounts": {p.id: p.amount for p in made}}
