"""Lambda entry point for the REST API (API Gateway proxy integration)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Tracer

from api_routes import handle, logger, metrics

tracer = Tracer()


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)  # responses may hold customer data
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, context)
