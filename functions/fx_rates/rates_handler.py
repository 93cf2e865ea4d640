"""Exchange rates: on an EventBridge schedule, the provider's mid-market rates are pulled,
checked and stored for the api, which never calls the provider itself.

A failed pull (no answer, a malformed or stale sheet) stores nothing: the last good sheet
stays, and conversions stop only once it is older than the bound (fail closed). The
failure is logged, counted, and raised, so the schedule's retries and alarms see it."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from clearline.config import Settings
from clearline.fx import InvalidRateSheet, RateBook
from clearline.logs import new_logger
from clearline.processor import ProcessorError
from clearline.rate_provider import RateProviderClient
from clearline.store import Store
from clearline.topology import RATE_PROVIDER_URL_ENV

logger = new_logger()
metrics = Metrics()
settings = Settings.from_env()
book = RateBook(Store(settings.main_table))
provider = RateProviderClient(os.environ[RATE_PROVIDER_URL_ENV], settings.processor_timeout_seconds)


class RatePullFailed(Exception):
    pass


@metrics.log_metrics
@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        sheet = provider.rate_sheet()
        newest = book.record(sheet)
    except (ProcessorError, InvalidRateSheet) as exc:
        metrics.add_metric(name="RatePullFailed", unit=MetricUnit.Count, value=1)
        logger.error("rates not updated; the last good sheet stays", extra={"reason": str(exc)})
        raise RatePullFailed(str(exc)) from exc
    metrics.add_metric(name="RatesStored", unit=MetricUnit.Count, value=1)
    logger.info("rates stored", extra={"as_of": sheet.as_of, "latest": newest})
    return {"as_of": sheet.as_of, "latest": newest, "currencies": len(sheet.rates)}
