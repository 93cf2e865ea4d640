"""The api handler's cold import next to what any such function imports (prints; asserts
nothing).

The baseline is boto3, Powertools' idempotency utility and its REST event handler: what a
Powertools API on DynamoDB imports before any code of its own. Each import runs in a fresh
interpreter, baseline and handler taking turns, so that whatever else the machine is
doing weighs on both alike; the ratio is of the medians.

With tracing off, as the local stack runs, the handler does not import the X-Ray SDK; with
tracing on (Lambda's active tracing), it does, and patches what it traces. The routes are
built at import; each service's modules load on the function's first invocation that
needs them: the last line says what that costs a first charge.

Usage: python bench/cold_start.py [--pairs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

API_DIR = Path(__file__).resolve().parents[1] / "functions" / "api"
LIBRARY_DIR = Path(__file__).resolve().parents[1] / "layers" / "clearline" / "python"
BASELINE = (
    "import boto3; "
    "from aws_lambda_powertools.utilities.idempotency import "
    "idempotent_function, DynamoDBPersistenceLayer, IdempotencyConfig; "
    "from aws_lambda_powertools.event_handler import APIGatewayRestResolver"
)
# The same with the resolver's request validation on, as the api's is: what pydantic and
# Powertools' OpenAPI models cost before any route of ours exists.
VALIDATING = f"{BASELINE}; APIGatewayRestResolver(enable_validation=True)"
HANDLER = "import api_handler"
# What a first charge imports after the handler: the routes, and its service's modules.
# The request and response models build their validators on first use: a charge's, here.
FIRST_CHARGE = (
    "import api_routes; from clearline import charges, secrets, vault_client; "
    "from clearline.params import ChargeCreateParams; from clearline.models import Charge; "
    "ChargeCreateParams.model_rebuild(force=True); Charge.model_rebuild(force=True)"
)
TRACING_OFF = {"POWERTOOLS_TRACE_DISABLED": "true"}
# Outside Lambda the Tracer turns itself off; its task root is what tells it it is inside.
TRACING_ON = {"POWERTOOLS_TRACE_DISABLED": "false", "LAMBDA_TASK_ROOT": str(API_DIR)}


def seconds(
    statement: str, environment: dict[str, str], after: str = "", path: tuple[Path, ...] = ()
) -> float:
    """How long `statement` takes in a fresh interpreter (after `after`, untimed, if given),
    with `path` first on sys.path."""
    code = (
        f"import sys, time; sys.path[:0] = {[str(p) for p in (*path, API_DIR)]!r}; "
        f"{after or 'pass'}; t = time.perf_counter(); {statement}; "
        "print(time.perf_counter() - t)"
    )
    env = {**os.environ, **environment}
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    # Every module is timed from its bytecode cache, as the installed packages are, unless
    # the environment asks otherwise.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(environment)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    return float(done.stdout)


def alternating(
    pairs: int, environment: dict[str, str], first: str, second: str, after: str = ""
) -> tuple[float, float]:
    """Medians of `first` and `second`, run in turn, each in a fresh interpreter."""
    first_times: list[float] = []
    second_times: list[float] = []
    for _ in range(pairs):
        first_times.append(seconds(first, environment))
        second_times.append(seconds(second, environment, after))
    return statistics.median(first_times), statistics.median(second_times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=7)
    args = parser.parse_args()
    n = args.pairs

    # Bytecode caches written before anything is timed.
    seconds(f"{BASELINE}; {HANDLER}; {FIRST_CHARGE}", TRACING_OFF)
    lines = []
    imports = {}
    for label, environment in (("tracing off", TRACING_OFF), ("tracing on", TRACING_ON)):
        baseline, imports[label] = alternating(n, environment, BASELINE, HANDLER)
        lines.append(
            f"cold import: baseline (boto3 + Powertools idempotency + event handler) "
            f"{baseline * 1000:.0f} ms, api handler {imports[label] * 1000:.0f} ms, ratio "
            f"{imports[label] / baseline:.2f}x "
            f"(median of {n} alternating fresh interpreters, {label})"
        )
    validating, _ = alternating(n, TRACING_OFF, VALIDATING, HANDLER)
    lines.append(
        f"the baseline with request validation on: {validating * 1000:.0f} ms; the api "
        f"handler is {imports['tracing off'] / validating:.2f}x that (tracing off)"
    )
    _, first = alternating(n, TRACING_OFF, BASELINE, FIRST_CHARGE, after=HANDLER)
    lines.append(
        f"first invocation, a charge: the charge path's modules load and its models build in "
        f"{first * 1000:.0f} ms, {(imports['tracing off'] + first) * 1000:.0f} ms with the "
        f"import (median of {n} fresh interpreters, tracing off)"
    )
    lines.append(compiled_from_source(n))
    print("\n".join(lines))


def compiled_from_source(n: int) -> str:
    """The import as Lambda ran it before the assets carried bytecode: a copy of the api's
    folder and of the library, without caches and never writing one, first on the path."""
    with tempfile.TemporaryDirectory() as scratch:
        copies = (Path(scratch) / "api", Path(scratch) / "python")
        for source, copy in zip((API_DIR, LIBRARY_DIR), copies, strict=True):
            shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
        uncached = {**TRACING_OFF, "PYTHONDONTWRITEBYTECODE": "1"}
        took = statistics.median(seconds(HANDLER, uncached, path=copies) for _ in range(n))
    return (
        f"api handler with Clearline's modules compiled on import (no bytecode caches, as "
        f"Lambda ran it before its assets carried them): {took * 1000:.0f} ms "
        f"(median of {n}, tracing off)"
    )


if __name__ == "__main__":
    main()
