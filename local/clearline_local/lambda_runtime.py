"""Runs a topology function's real handler the way Lambda does: in its own processes.

Each function gets a pool of worker processes (Lambda's execution environments). A
worker imports the handler once with the function's environment, then serves one event
at a time with a context whose remaining time counts down from the function's timeout.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import sys
import time
import traceback
import uuid
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clearline.topology import FunctionSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = "123456789012"


@dataclass
class LocalLambdaContext:
    """The attributes and method of Lambda's context object that handlers and Powertools use."""

    function_name: str
    memory_limit_in_mb: int
    timeout_seconds: int
    aws_request_id: str
    function_version: str = "$LATEST"

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds
        self.invoked_function_arn = (
            f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"
        )
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = f"local/{os.getpid()}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_handler(spec: FunctionSpec) -> Any:
    code_dir = str(REPO_ROOT / spec.code_dir)
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    module_name, _, function_name = spec.handler.rpartition(".")
    return getattr(importlib.import_module(module_name), function_name)


# Worker-process state: one handler per worker, as one per Lambda execution environment.
_worker: dict[str, Any] = {}


def _init_worker(spec: FunctionSpec, environment: dict[str, str]) -> None:
    os.environ.update(environment)
    _worker["spec"] = spec
    _worker["handler"] = load_handler(spec)


def _invoke_in_worker(event: dict[str, Any]) -> Any:
    spec: FunctionSpec = _worker["spec"]
    context = LocalLambdaContext(spec.key, spec.memory_mb, spec.timeout_seconds, str(uuid.uuid4()))
    try:
        return _worker["handler"](event, context)
    except Exception as exc:  # as Lambda reports a failed invocation: type, message, trace
        return {
            _ERROR: {
                "errorType": type(exc).__name__,
                "errorMessage": str(exc),
                "stackTrace": traceback.format_exc().splitlines(),
            }
        }


_ERROR = "__clearline_invocation_error__"


class FunctionTimeout(Exception):
    pass


class FunctionError(Exception):
    """The handler raised: Lambda would report the invocation as failed."""


class LocalFunction:
    def __init__(
        self, spec: FunctionSpec, environment: dict[str, str], concurrency: int = 2
    ) -> None:
        self.spec = spec
        self.concurrency = concurrency
        env = {
            "AWS_LAMBDA_FUNCTION_NAME": spec.key,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon on a laptop
            **environment,
        }
        # spawn, not fork: the parent runs server threads that a fork would copy mid-flight.
        self._pool = ProcessPoolExecutor(
            max_workers=concurrency,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(spec, env),
        )

    def warm(self) -> None:
        """Start every worker now so the first requests do not pay for imports."""
        futures = [self._pool.submit(time.sleep, 0.2) for _ in range(self.concurrency)]
        for future in futures:
            future.result()

    def invoke(self, event: dict[str, Any]) -> Any:
        future = self._pool.submit(_invoke_in_worker, event)
        try:
            result = future.result(timeout=self.spec.timeout_seconds + 1)
        except FutureTimeout as exc:
            raise FunctionTimeout(
                f"{self.spec.key} timed out after {self.spec.timeout_seconds}s"
            ) from exc
        if isinstance(result, dict) and _ERROR in result:
            error = result[_ERROR]
            raise FunctionError(f"{self.spec.key}: {error['errorType']}: {error['errorMessage']}")
        return result

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
