"""Dispute intake: the processor's signed notifications -> disputes opened and followed,
and issuers' early fraud warnings kept.

Served by an API of its own, never the merchant API. Each notification is believed only
when signed with the shared secret; then the dispute is brought to what it says (or the
warning stored), once.
The processor retries anything but a 2xx, so: a forged or unreadable notice is refused
for good (4xx), a notice we cannot apply now is a 503 (retried), and one about a charge
we do not have is logged for operations and acknowledged, since retrying cannot help.
"""

from __future__ import annotations

import os
import time
from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities import parameters

from clearline import processor_notifications as notices
from clearline.config import Settings
from clearline.disputes import DisputeService, UnknownDispute
from clearline.early_fraud_warnings import EarlyFraudWarnings, UnknownCharge
from clearline.errors import ApiError
from clearline.forms import body_bytes
from clearline.ledger import ShardPolicy
from clearline.logs import new_logger
from clearline.processor import ProcessorClient
from clearline.store import Store, StoreUnavailable
from clearline.topology import PROCESSOR_NOTIFICATION_SECRET_ENV

logger = new_logger()
metrics = Metrics()
app = APIGatewayRestResolver()
settings = Settings.from_env()
store = Store(settings.main_table)
disputes = DisputeService(
    store,
    ProcessorClient(settings.processor_url, settings.processor_timeout_seconds),
    ShardPolicy.from_env(),
)
warnings = EarlyFraudWarnings(store)
MAX_BODY_BYTES = 64 * 1024
SECRET_MAX_AGE_SECONDS = 300  # a rotated secret is picked up within five minutes


def _answer(status: int, message: str) -> Response[str]:
    return Response(status, "application/json", f'{{"message": "{message}"}}')


@app.post("/processor/notifications")
def receive() -> Response[str]:
    event = app.current_event
    try:
        body = body_bytes(event.body, bool(event.is_base64_encoded), MAX_BODY_BYTES)
        secret = parameters.get_secret(
            os.environ[PROCESSOR_NOTIFICATION_SECRET_ENV], max_age=SECRET_MAX_AGE_SECONDS
        )
        notices.verify(body, event.headers.get(notices.SIGNATURE_HEADER), secret, time.time())
        notice = notices.parse(body)
    except notices.NotAuthentic as exc:
        logger.warning("notification refused", extra={"reason": str(exc)})
        metrics.add_metric(name="ProcessorNotificationsRefused", unit=MetricUnit.Count, value=1)
        return _answer(401, "signature refused")
    except (notices.NotANotice, ApiError) as exc:
        logger.warning("notification unreadable", extra={"reason": str(exc)})
        return _answer(400, "not a notification")
    return _apply(notice)


def _apply(notice: notices.Notice) -> Response[str]:
    """Bring our dispute to what the notice says, or keep the warning it carries."""
    applied: dict[str, str]
    try:
        if notice.warning is not None:
            applied = {"warning": warnings.receive(notice.warning).id}
            kind = "EarlyFraudWarning"
        else:
            assert notice.dispute is not None
            dispute = disputes.receive(notice.dispute)
            applied = {"dispute": dispute.id, "status": dispute.status}
            kind = "Dispute"
    except (UnknownDispute, UnknownCharge) as exc:
        # Retrying cannot make the charge appear: operations look at it (the settlement
        # file's row for it is reported as missing in our ledger too).
        logger.error(
            "notification for an unknown charge",
            extra={"notice": notice.id, "type": notice.type, "reason": str(exc)},
        )
        metrics.add_metric(name="NoticesForUnknownCharges", unit=MetricUnit.Count, value=1)
        return _answer(200, "acknowledged; not applied")
    except (StoreUnavailable, ApiError) as exc:
        logger.warning(
            "notification not applied yet", extra={"notice": notice.id, "reason": str(exc)}
        )
        return _answer(503, "retry")
    logger.info("notification applied", extra={"notice": notice.id, "type": notice.type, **applied})
    metrics.add_metric(name=f"{kind}Notices", unit=MetricUnit.Count, value=1)
    return _answer(200, "applied")


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)
