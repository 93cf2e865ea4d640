"""Lambda entry point for the card vault (its own API Gateway REST API, proxy integration)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Tracer
from vault_routes import handle, logger

tracer = Tracer()


# Neither events nor responses are logged or traced: requests carry card numbers.
@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, context)
