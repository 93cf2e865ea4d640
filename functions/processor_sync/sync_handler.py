"""Processor sync: on a schedule, settle charges left pending by processor timeouts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aws_lambda_powertools import Logger

from clearline.charges import ChargeService
from clearline.config import Settings
from clearline.ledger import ShardPolicy
from clearline.processor import ProcessorClient
from clearline.scheduling import sync_pending
from clearline.store import Store

logger = Logger()
settings = Settings.from_env()
store = Store(settings.main_table)
charges = ChargeService(
    store,
    ProcessorClient(settings.processor_url, settings.processor_timeout_seconds),
    ShardPolicy.from_env(),
)


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    now = int(datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp())
    outcome = sync_pending(charges, store, now)
    logger.info("processor sync", extra={**outcome, "as_of": now})
    return outcome
