"""Runs a topology function's real handler the way Lambda does: in its own processes, under
supervision.

Each function gets `concurrency` worker processes (Lambda's execution environments). A
worker imports the handler once with the function's environment, then serves one event at
a time with a context whose remaining time counts down from the function's timeout.

As on Lambda, an environment that dies (killed, crashed, out of memory) fails the one
invocation it was serving, and one still running at the timeout is stopped and fails it
too. Either way the failure is logged once, naming the function, and a new environment
takes the old one's place; an environment that dies while idle is replaced as well.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, cast

from clearline.topology import FunctionSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = "123456789012"
# Lambda allows 10 s for init; two shared cores starting every worker at once need longer.
INIT_TIMEOUT_SECONDS = 60.0
# How long past a timeout an answer may take to arrive before the worker is stopped (the
# handler's own context already counts down from the function's timeout).
TIMEOUT_GRACE_SECONDS = 1.0
# How often idle workers are checked for having died.
WATCH_INTERVAL_SECONDS = 0.5

log = logging.getLogger("clearline.local")
# spawn, not fork: the parent runs server threads that a fork would copy mid-flight.
_spawn = multiprocessing.get_context("spawn")
_spawn_lock = threading.Lock()


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
        self.invoked_function_arn = function_arn(self.function_name)
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = f"local/{os.getpid()}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def function_arn(key: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{key}"


def load_handler(spec: FunctionSpec) -> Any:
    code_dir = str(REPO_ROOT / spec.code_dir)
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    module_name, _, function_name = spec.handler.rpartition(".")
    return getattr(importlib.import_module(module_name), function_name)


class FunctionError(Exception):
    """The invocation failed: the handler raised, or its execution environment died."""


class FunctionTimeout(FunctionError):
    """The invocation ran past the function's timeout; its environment was stopped."""


# --- inside a worker process -------------------------------------------------------------


def _error_reply() -> tuple[str, dict[str, Any]]:
    """The exception being handled, as Lambda reports a failed invocation."""
    error_type, error, _ = sys.exc_info()
    return "error", {
        "errorType": error_type.__name__ if error_type else "Error",
        "errorMessage": str(error),
        "stackTrace": traceback.format_exc().splitlines(),
    }


def _serve(spec: FunctionSpec, environment: dict[str, str], connection: Connection) -> None:
    """A worker's life: import the handler, say so, then answer one event at a time."""
    # Ctrl-C reaches the whole process group; the stack, not the user, stops its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(environment)
    try:
        handler = load_handler(spec)
    except Exception:
        connection.send(_error_reply())
        with contextlib.suppress(EOFError):  # stay until replaced, so as not to look dead
            connection.recv_bytes()
        return
    connection.send(("ready", None))
    while True:
        try:
            event = connection.recv()
        except EOFError:  # the supervisor let go of this environment
            return
        context = LocalLambdaContext(
            spec.key, spec.memory_mb, spec.timeout_seconds, str(uuid.uuid4())
        )
        try:
            reply: tuple[str, Any] = ("ok", handler(event, context))
        except Exception:
            reply = _error_reply()
        try:
            connection.send(reply)
        except Exception:  # the result does not pickle: Lambda's Runtime.MarshalError
            connection.send(_error_reply())


# --- in the stack's process --------------------------------------------------------------


def _exit_description(exitcode: int | None) -> str:
    if exitcode is None:
        return "stopped"
    if exitcode < 0:
        return f"killed by {signal.Signals(-exitcode).name}"
    return f"exited with status {exitcode}"


class _Lost(Exception):
    """The execution environment is gone; `error` is what the invocation fails with."""

    def __init__(self, error: FunctionError) -> None:
        super().__init__(str(error))
        self.error = error


class _Environment:
    """One worker process and the pipe to it."""

    def __init__(self, spec: FunctionSpec, environment: dict[str, str]) -> None:
        self.spec = spec
        self.connection, child_end = _spawn.Pipe()
        self.process = _spawn.Process(
            target=_serve,
            args=(spec, environment, child_end),
            name=f"lambda:{spec.key}",
            daemon=True,
        )
        with _spawn_lock:
            self.process.start()
        child_end.close()  # so that the worker's death reads as the end of the pipe here
        self.initialized = False
        # Its supervisor and a closing stack may both stop it at once (a stack stopped by a
        # signal sent to the whole process group): the pipe must be closed only once.
        self._stop_lock = threading.Lock()

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)

    def receive(self, timeout: float, doing: str) -> tuple[str, Any]:
        """The worker's next reply; raises _Lost if it died or was still silent at timeout."""
        name = self.spec.key
        try:
            if not self.connection.poll(timeout + TIMEOUT_GRACE_SECONDS):
                self.stop()
                raise _Lost(
                    FunctionTimeout(
                        f"{name}: timed out after {timeout:g}s {doing}; "
                        f"execution environment pid {self.pid} stopped"
                    )
                )
            kind, payload = self.connection.recv()
            return kind, payload
        except (EOFError, OSError):
            self.process.join(timeout=5)
            raise _Lost(
                FunctionError(
                    f"{name}: execution environment pid {self.pid} "
                    f"{_exit_description(self.process.exitcode)} {doing} (Runtime.ExitError)"
                )
            ) from None

    def stop(self) -> None:
        with self._stop_lock:
            if self.process.is_alive():
                self.process.kill()
            self.process.join(timeout=5)
            self.connection.close()  # a second close finds it closed and does nothing


class LocalFunction:
    """A function's pool of execution environments: at most `concurrency` invocations run at
    once, the others wait for an environment to come free."""

    def __init__(
        self,
        spec: FunctionSpec,
        environment: dict[str, str],
        concurrency: int = 2,
        on_environments_changed: Callable[[], None] | None = None,
    ) -> None:
        self.spec = spec
        self.concurrency = concurrency
        self._worker_environment = {
            "AWS_LAMBDA_FUNCTION_NAME": spec.key,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon on a laptop
            **environment,
        }
        self._on_environments_changed = on_environments_changed
        self._environments = [self._start() for _ in range(concurrency)]
        self._idle = list(self._environments)
        self._available = threading.Condition()
        self._closed = threading.Event()
        self._watcher = threading.Thread(
            target=self._watch_idle, name=f"supervisor:{spec.key}", daemon=True
        )
        self._watcher.start()

    def pids(self) -> list[int]:
        with self._available:
            return [environment.pid for environment in self._environments]

    def warm(self) -> None:
        """Wait until every worker has imported its handler, so first requests do not."""
        held = [self._acquire() for _ in range(self.concurrency)]
        failed: _Lost | None = None
        for i, environment in enumerate(held):
            try:
                self._initialize(environment)
            except _Lost as lost:
                held[i], failed = self._recover(environment, lost), lost
        for environment in held:
            self._release(environment)
        if failed is not None:
            raise failed.error

    def invoke(self, event: dict[str, Any]) -> Any:
        environment = self._acquire()
        try:
            self._initialize(environment)
            with contextlib.suppress(OSError):  # if the worker is gone, receive() says how
                environment.connection.send(event)
            kind, payload = environment.receive(self.spec.timeout_seconds, "during an invocation")
        except _Lost as lost:
            self._release(self._recover(environment, lost))
            raise lost.error from None
        self._release(environment)
        if kind == "error":
            message = f"{self.spec.key}: {payload['errorType']}: {payload['errorMessage']}"
            log.error("%s (invocation failed)", message)
            raise FunctionError(message)
        return payload

    def closing(self) -> None:
        """No more replacements of environments that die from here on (the stack is
        stopping): said of every function before any is closed."""
        self._closed.set()

    def close(self) -> None:
        self._closed.set()
        with self._available:
            self._available.notify_all()
            environments = list(self._environments)
        for environment in environments:
            environment.stop()

    def _initialize(self, environment: _Environment) -> None:
        if environment.initialized:
            return
        kind, payload = environment.receive(INIT_TIMEOUT_SECONDS, "while starting")
        environment.initialized = True
        if kind == "error":  # Lambda, too, starts a fresh environment after a failed init
            raise _Lost(
                FunctionError(
                    f"{self.spec.key}: init failed: {payload['errorType']}: "
                    f"{payload['errorMessage']} (Runtime.InitError)"
                )
            )

    def _start(self) -> _Environment:
        return _Environment(self.spec, self._worker_environment)

    def _acquire(self) -> _Environment:
        with self._available:
            while not self._idle:
                if self._closed.is_set():
                    raise FunctionError(f"{self.spec.key}: the local stack is stopping")
                self._available.wait()
            environment = self._idle.pop(0)
        if not environment.process.is_alive():
            environment = self._replace_dead_idle(environment)
        return environment

    def _release(self, environment: _Environment) -> None:
        with self._available:
            self._idle.append(environment)
            self._available.notify()

    def _recover(self, environment: _Environment, lost: _Lost) -> _Environment:
        """Logs, once, why an environment was lost, and starts the one that replaces it."""
        if not self._closed.is_set():
            log.error("%s; starting a new execution environment", lost)
        return self._replace(environment)

    def _replace(self, environment: _Environment) -> _Environment:
        environment.stop()
        if self._closed.is_set():
            return environment
        fresh = self._start()
        with self._available:
            if self._closed.is_set():  # closed while it started: it must not outlive the stack
                fresh.stop()
                return environment
            self._environments[self._environments.index(environment)] = fresh
        if self._on_environments_changed is not None:
            self._on_environments_changed()
        return fresh

    def _replace_dead_idle(self, environment: _Environment) -> _Environment:
        environment.process.join(timeout=5)
        log.error(
            "%s: execution environment pid %d %s while idle; starting a new execution environment",
            self.spec.key,
            environment.pid,
            _exit_description(environment.process.exitcode),
        )
        return self._replace(environment)

    def _watch_idle(self) -> None:
        while not self._closed.is_set():
            # Only started ones: one that dies while starting is found when next used, so a
            # handler that crashes on import cannot drive a restart loop.
            with self._available:
                idle = {e.process.sentinel: e for e in self._idle if e.initialized}
            if not idle:
                self._closed.wait(WATCH_INTERVAL_SECONDS)
                continue
            for sentinel in wait(list(idle), timeout=WATCH_INTERVAL_SECONDS):
                environment = idle[cast(int, sentinel)]  # sentinels are file descriptors
                with self._available:
                    if self._closed.is_set() or environment not in self._idle:
                        continue  # in use now: its invocation reports the death
                    self._idle.remove(environment)
                self._release(self._replace_dead_idle(environment))
