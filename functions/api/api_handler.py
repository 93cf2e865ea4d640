"""Lambda entry point for the REST API (API Gateway proxy integration).

The routes are built at init, once; what only some routes need loads when one is first
called, and the X-Ray SDK only where tracing is on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Tracer
from telemetry import logger, metrics

from api_routes import handle

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def _traced(handler: Handler) -> Handler:
    """The handler in an X-Ray subsegment where tracing is on. Where it is off, the handler
    itself: a Tracer would import the X-Ray SDK (~100 ms of a cold start) to turn it off."""
    if Tracer._is_tracer_disabled():  # the Tracer's own rule: the env var, or not in Lambda
        return handler
    # Built at import, as a Tracer is, so that it patches boto3 before any client exists.
    tracer = Tracer()
    # Responses may hold customer data: not captured.
    return tracer.capture_lambda_handler(handler, capture_response=False)


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
@_traced
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, context)
