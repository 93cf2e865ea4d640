"""The api function's logger and metrics: what its entry point's decorators need at import,
apart from the routes (which load on the first invocation)."""

from __future__ import annotations

from aws_lambda_powertools import Metrics

from clearline.logs import new_logger

logger = new_logger()
metrics = Metrics()
