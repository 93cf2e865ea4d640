"""The resolver function: on a schedule, settle every money operation left pending."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from clearline.bank import BankClient
from clearline.bank_accounts import BankAccounts
from clearline.charges import ChargeService
from clearline.config import Settings
from clearline.ledger import ShardPolicy
from clearline.logs import new_logger
from clearline.payouts import PayoutService
from clearline.processor import ProcessorClient
from clearline.refunds import RefundService
from clearline.resolver import Resolver
from clearline.secrets import SecretBox
from clearline.store import Store
from clearline.topology import (
    BANK_ACCOUNTS_KEY_ENV,
    BANK_URL_ENV,
    METRICS_NAMESPACE,
    UNRESOLVED_PENDING_OPERATIONS_METRIC,
)
from clearline.vault_client import VaultClient

logger = new_logger()
metrics = Metrics(namespace=METRICS_NAMESPACE)
settings = Settings.from_env()
store = Store(settings.main_table)
# The resolver asks again, under the same key, for charges of stored cards too: via the vault.
processor = ProcessorClient(
    settings.processor_url,
    settings.processor_timeout_seconds,
    vault=VaultClient.from_env(settings.processor_timeout_seconds),
)
shards = ShardPolicy.from_env()
resolver = Resolver(
    ChargeService(store, processor, shards),
    RefundService(store, processor, shards),
    PayoutService(
        store,
        BankAccounts(store, SecretBox(os.environ.get(BANK_ACCOUNTS_KEY_ENV, ""))),
        BankClient(os.environ[BANK_URL_ENV], settings.processor_timeout_seconds),
        shards,
    ),
)


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # The schedule's time, not the clock: a test moves time by sending a later one.
    now = int(datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp())
    outcome = resolver.run(now)
    # Alarmed when above zero: a pending operation nothing could settle needs a person.
    metrics.add_metric(
        UNRESOLVED_PENDING_OPERATIONS_METRIC, MetricUnit.Count, outcome["unresolved"]
    )
    logger.info("resolver", extra={**outcome, "as_of": now})
    return outcome
