"""The second look at succeeded charges: charge.succeeded events from the bus, through a
queue, each looked at once more with what the authorization told (post_authorization)."""

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
from clearline.ledger import ShardPolicy
from clearline.logs import new_logger
from clearline.post_authorization import AfterAuthorization
from clearline.processor import ProcessorClient
from clearline.refunds import RefundService
from clearline.store import Store

logger = new_logger()
processor = BatchProcessor(event_type=EventType.SQS)
settings = Settings.from_env()
store = Store(settings.main_table)
processor_client = ProcessorClient(settings.processor_url, settings.processor_timeout_seconds)
shards = ShardPolicy.from_env()
after_authorization = AfterAuthorization(
    ChargeService(store, processor_client, shards), RefundService(store, processor_client, shards)
)


class NotAChargeEvent(ValueError):
    """A record that is not a charge event: it fails alone and goes to the dead-letter queue."""


def look(record: SQSRecord) -> None:
    try:
        event = json.loads(record.body)["detail"]["event"]
        charge_id = event["data"]["object"]["id"]
    except (KeyError, TypeError, ValueError) as exc:
        raise NotAChargeEvent(f"{record.message_id}: {type(exc).__name__}: {exc}") from exc
    if not str(charge_id).startswith("ch_"):
        raise NotAChargeEvent(f"{record.message_id}: {charge_id!r} is not a charge")
    verdict = after_authorization.look(charge_id)
    logger.info("looked again", extra={"charge": charge_id, "verdict": verdict})


@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return dict(
        process_partial_response(
            event=event, record_handler=look, processor=processor, context=context
        )
    )
