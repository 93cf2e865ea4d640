"""The API against its own OpenAPI document: schemathesis, over HTTP, on a local stack.

Schemathesis reads GET /openapi.json from the running stack and sends every operation
generated requests (valid and invalid ones, undeclared methods, the document's links
followed from created objects), authenticated with a fresh merchant's secret key. Each
response must be what the document says: no 5xx, a documented status, content type,
headers and body, and a 405 for an undeclared method.

The run is bounded (a fixed number of examples per operation, a wall-clock limit),
seeded, and hermetic: it talks to the local stack only, with no proxies, no example
database on disk, and no remote references in the document. It runs as a subprocess of
this file (see the bottom), which sends form bodies the way the Stripe SDKs do.

The stack is one of its own, started like the session's: every list request queries
32 to 64 index shards, and moto reads the whole table for each, so on the session's
stack, full of the other tests' objects, the same run takes several times as long.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pytest
import requests

if TYPE_CHECKING:
    from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "unsupported_method",
)
EXAMPLES_PER_OPERATION = 25
SEED = 20261125
WORKERS = 2
# An idle two-core machine needs 90 to 130 s; the bound leaves room for a busy one, since a
# run cut short fails.
WALL_CLOCK_SECONDS = 420
# API Gateway's ANY method forwards these to the function (HEAD too, which has no body to
# check); TRACE, CONNECT and QUERY never reach the function in AWS.
UNDECLARED_METHODS = ("get", "put", "post", "delete", "patch", "options")
KEY_MAX_LENGTH = 255  # of an Idempotency-Key
# Cards the sandbox processor knows: approved, and declined with Stripe's codes.
TEST_TOKENS = ("tok_visa", "tok_mastercard", "pm_card_visa", "tok_chargeDeclined")
PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def stripe_form(value: Any) -> bytes:
    """A body as the Stripe SDKs encode it: nested values in bracket notation,
    `metadata[order]=6735`, `expand[0]=balance_transaction`, booleans as true/false."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if not isinstance(value, dict):  # a negative case that is no object at all
        return json.dumps(value).encode()
    pairs: list[tuple[str, str]] = []

    def add(name: str, item: Any) -> None:
        if isinstance(item, dict):
            for key, inner in item.items():
                add(f"{name}[{key}]", inner)
        elif isinstance(item, list):
            for index, inner in enumerate(item):
                add(f"{name}[{index}]", inner)
        elif isinstance(item, bool):
            pairs.append((name, "true" if item else "false"))
        elif item is not None:  # a form cannot say null: the parameter is left out
            pairs.append((name, str(item)))

    for key, item in value.items():
        add(str(key), item)
    return urlencode(pairs, errors="surrogatepass").encode()


def config_toml(secret_key: str, report: Path) -> str:
    return "\n".join(
        [
            f"seed = {SEED}",
            f"workers = {WORKERS}",
            "request-timeout = 20",
            f"headers = {{ Authorization = {json.dumps('Bearer ' + secret_key)} }}",
            "[reports.json]",
            "enabled = true",
            f"path = {json.dumps(str(report))}",
            "[generation]",
            f"max-examples = {EXAMPLES_PER_OPERATION}",
            'database = "none"',  # nothing kept between runs: each run stands alone
            "[checks]",
            "enabled = false",
            *(f"{check}.enabled = true" for check in CHECKS),
            "[phases.coverage]",
            f"unexpected-methods = {json.dumps(list(UNDECLARED_METHODS))}",
            "",
        ]
    )


def run_schemathesis(
    api_url: str, secret_key: str, workdir: Path
) -> tuple[dict[str, Any] | None, str, bool]:
    """The JSON report (None if there is none), the terminal output, and whether the run
    was stopped at the wall-clock limit."""
    report = workdir / "report.json"
    config = workdir / "schemathesis.toml"
    config.write_text(config_toml(secret_key, report))
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("SCHEMATHESIS_") and name.lower() not in PROXY_VARIABLES
    }
    command = [sys.executable, __file__, "--config-file", str(config), "run", "--no-color"]
    process = subprocess.Popen(
        [*command, f"{api_url}/openapi.json"],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    stopped = False
    try:
        output, _ = process.communicate(timeout=WALL_CLOCK_SECONDS)
    except subprocess.TimeoutExpired:
        stopped = True
        process.send_signal(signal.SIGINT)  # schemathesis stops and still writes its report
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    return (json.loads(report.read_text()) if report.exists() else None), output, stopped


def summary(report: dict[str, Any]) -> str:
    cases = report["test_cases"]
    phases = ", ".join(f"{name} {phase['status']}" for name, phase in report["phases"].items())
    lines = [
        "",
        f"schemathesis {report['schemathesis_version']}: seed {report['seed']}, "
        f"{EXAMPLES_PER_OPERATION} examples per operation, {report['running_time']:.0f} s, "
        f"stopped: {report['stop_reason']}",
        f"  operations tested: {report['operations']['tested']} of {report['operations']['total']}",
        f"  cases run: {cases['generated']}, with failures: {cases['with_failures']}, "
        f"errored: {cases['errored']}",
        f"  phases: {phases}",
    ]
    if not report["failures"]:
        lines.append("  failures: none")
    for group in report["failures"]:
        lines.append(f"  failures: {group['code']} {group['title']}: {group['count']}")
        lines += [f"    {operation}" for operation in group["operations"]]
    lines += [f"  error: {error['title']}: {error['count']}" for error in report["errors"]]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from tests.integration.conftest import running_stack

    with running_stack(tmp_path_factory) as started:
        yield started


@pytest.mark.timeout(WALL_CLOCK_SECONDS + 180)  # the fuzz, plus starting its stack
def test_the_api_conforms_to_its_openapi_document(
    fuzz_stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from clearline.ledger import verify

    document = requests.get(f"{fuzz_stack.url}/openapi.json", timeout=10).json()
    operations = sum(len(item) for item in document["paths"].values())
    merchant = fuzz_stack.create_merchant("Fuzz Shop")
    report, output, stopped = run_schemathesis(fuzz_stack.url, merchant["secret_key"], tmp_path)
    with capsys.disabled():
        if report is not None:
            print(summary(report))
        if report is None or report["failures"] or report["errors"] or stopped:
            print(output[-20_000:])  # each failure, with a curl command to reproduce it

    assert not stopped, f"the fuzz was stopped at the {WALL_CLOCK_SECONDS} s limit"
    assert report is not None, "schemathesis wrote no report"
    assert report["complete"], report["stop_reason"]
    assert report["operations"]["tested"] == operations
    # A run that reached nothing would pass vacuously: each operation got its examples.
    assert report["test_cases"]["generated"] >= operations * EXAMPLES_PER_OPERATION
    assert report["failures"] == []
    assert report["errors"] == []
    assert report["exit_code"] == 0
    # Whatever the fuzz got the API to do, the books still balance.
    ledger = verify(fuzz_stack.store())
    assert ledger.ok, ledger.violations


if __name__ == "__main__":
    # The fuzz process: schemathesis' command line, and three things a real client does that
    # generated data rarely would. Form bodies are encoded as the Stripe SDKs encode them.
    # Every well-formed Idempotency-Key gets a serial number: generated keys repeat ("0",
    # "00"), and a key reused with other parameters is refused (rightly, with a 400) before
    # anything else is looked at. And a charge's `source` is often one of the sandbox
    # processor's test tokens, which a random string never is, so charges get created (and
    # declined) and the links from them lead somewhere.
    import itertools

    import schemathesis
    import schemathesis.cli
    from hypothesis import strategies as st

    schemathesis.serializer("application/x-www-form-urlencoded")(
        lambda _, value: stripe_form(value)
    )
    serials = itertools.count(1)

    @schemathesis.hook
    def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
        key = (case.headers or {}).get("Idempotency-Key")
        if isinstance(key, str) and 0 < len(key) <= KEY_MAX_LENGTH:  # not a refusal's case
            suffix = f".{next(serials)}"
            case.headers["Idempotency-Key"] = key[: KEY_MAX_LENGTH - len(suffix)] + suffix

    @schemathesis.hook
    def flatmap_body(context: Any, body: Any) -> Any:
        operation = context.operation
        if operation is None or operation.label != "POST /v1/charges":
            return st.just(body)
        if not isinstance(body, dict) or not isinstance(body.get("source", ""), str):
            return st.just(body)
        return st.sampled_from([*TEST_TOKENS, None]).map(
            lambda token: body if token is None else {**body, "source": token}
        )

    schemathesis.cli.schemathesis(prog_name="st")
