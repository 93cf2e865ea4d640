"""A local stack started once for the integration tests, driven over HTTP.

The stack is the real `clearline up` in a subprocess, as a developer runs it; tests talk
to it with the stripe SDK and plain HTTP, and read moto directly only to check what was
(or was not) written.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import stripe

from clearline.ip_geolocation import IP_COUNTRIES_ENV
from clearline.ledger import verify
from clearline.rate_limits import DEFAULT_RATE_ENV, FAILED_AUTH_LIMIT_ENV
from clearline.store import Store
from clearline_local.sandbox_processor import SETTLEMENT_LAG_DAYS
from clearline_local.stack import aws_client, free_port
from clearline_local.state import StackInfo

from .recording import start_recording

start_recording()  # every body the stripe SDK receives is kept for test_conformance.py

CLEARLINE = str(Path(sys.executable).with_name("clearline"))
PROCESSOR_TIMEOUT_SECONDS = 1.5  # shorter than the sandbox's injected-fault delay (3 s)
WEBHOOK_TIMEOUT_SECONDS = 2
WEBHOOK_MAX_ATTEMPTS = 4  # retried after 1, 2 and 4 s, then the dead-letter queue

# Where the stack places these client addresses (`:ip_country:`); the rest are nowhere.
LOOPBACK_COUNTRIES = {"127.0.0.2": "GB", "127.0.0.3": "US"}


@dataclass
class Stack:
    info: StackInfo
    log_path: Path
    env: dict[str, str]

    @property
    def url(self) -> str:
        return self.info.api_url

    def store(self) -> Store:
        return Store(self.info.main_table, aws_client("dynamodb", self.info.aws_endpoint_url))

    def dynamodb(self) -> Any:
        return aws_client("dynamodb", self.info.aws_endpoint_url)

    def clearline(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLEARLINE, *args, "--port", str(self.info.port)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def create_merchant(
        self,
        name: str,
        *,
        fee_percent: float = 2.9,
        fee_fixed: int = 30,
        settlement_currencies: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        held = [arg for code in settlement_currencies for arg in ("--settlement-currency", code)]
        done = self.clearline(
            "merchants",
            "create",
            name,
            "--json",
            "--fee-percent",
            str(fee_percent),
            "--fee-fixed",
            str(fee_fixed),
            *held,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def item_counts(self) -> dict[str, int]:
        """The items that hold state, per table: all but the request log's, which keeps a
        note of every refused request on purpose (support reads it by Request-Id)."""
        client = self.dynamodb()
        return {
            table: client.scan(
                TableName=table,
                Select="COUNT",
                FilterExpression="NOT begins_with(pk, :log)",
                ExpressionAttributeValues={":log": {"S": "REQLOG#"}},
            )["Count"]
            for table in (self.info.main_table, self.info.idempotency_table)
        }

    def inject_processor_fault(self, mode: str, count: int = 1) -> None:
        requests.post(
            f"{self.info.processor_url}/_sandbox/faults",
            json={"mode": mode, "count": count},
            timeout=5,
        ).raise_for_status()

    def processor_authorizations(self) -> list[dict[str, Any]]:
        """What the sandbox processor holds: every authorization, with its refunds."""
        response = requests.get(f"{self.info.processor_url}/_sandbox/authorizations", timeout=5)
        response.raise_for_status()
        return list(response.json()["data"])

    def clear_processor_faults(self) -> None:
        requests.delete(f"{self.info.processor_url}/_sandbox/faults", timeout=5).raise_for_status()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_stack(
    tmp_path_factory: pytest.TempPathFactory,
    *,
    stripes_limits: bool = False,
    settings: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """`clearline up` in a subprocess, as a developer runs it, with compressed retries.
    Many tests share a merchant key and one client address, and some send bad keys on
    purpose, so the stack's limits are raised unless `stripes_limits` asks for Stripe's.
    `settings` are more environment variables for it and its functions."""
    state_dir = tmp_path_factory.mktemp("state")
    log_path = tmp_path_factory.mktemp("logs") / "stack.log"
    limits = (DEFAULT_RATE_ENV, FAILED_AUTH_LIMIT_ENV)
    env = {k: v for k, v in os.environ.items() if k not in limits}
    env["CLEARLINE_STATE_DIR"] = str(state_dir)
    if not stripes_limits:
        env.update({DEFAULT_RATE_ENV: "1000", FAILED_AUTH_LIMIT_ENV: "100000"})
    # Every client here is on the loopback network: these of its addresses stand for
    # browsers in known countries (a test binds its requests to one).
    countries = state_dir / "ip_countries.csv"
    countries.write_text(
        "".join(f"{address}/32,{country}\n" for address, country in LOOPBACK_COUNTRIES.items())
    )
    env[IP_COUNTRIES_ENV] = str(countries)
    env.update(settings or {})
    port = free_port()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                CLEARLINE,
                "up",
                "--port",
                str(port),
                # The ports beside it may be taken: the vault and the demo shop take any.
                "--vault-port",
                "0",
                "--checkout-port",
                "0",
                "--workers",
                "3",
                "--processor-timeout",
                str(PROCESSOR_TIMEOUT_SECONDS),
                "--webhook-retry-base",
                "1",
                "--webhook-timeout",
                str(WEBHOOK_TIMEOUT_SECONDS),
                "--webhook-max-attempts",
                str(WEBHOOK_MAX_ATTEMPTS),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    state_file = state_dir / f"{port}.json"
    deadline = time.monotonic() + 120
    while not state_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the local stack did not start:\n{log_path.read_text()}")
        time.sleep(0.2)
    info = StackInfo(**json.loads(state_file.read_text()))
    yield Stack(info, log_path, env)
    process.terminate()  # what Ctrl-C does: a clean stop
    try:
        code = process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGUSR1)  # where each of its threads is stuck, in its log
        time.sleep(2)
        process.kill()
        pytest.fail(f"the local stack did not stop:\n{log_path.read_text()[-20000:]}")
    assert code == 0, log_path.read_text()[-3000:]
    assert not state_file.exists(), "a stopped stack must remove its state file"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory) as started:
        yield started


@pytest.fixture(scope="session")
def merchant(stack: Stack) -> dict[str, Any]:
    return stack.create_merchant("Integration Shop", fee_percent=3, fee_fixed=0)


@pytest.fixture(scope="session")
def client(stack: Stack, merchant: dict[str, Any]) -> stripe.StripeClient:
    return stripe.StripeClient(
        merchant["secret_key"], base_addresses={"api": stack.url}, max_network_retries=2
    )


@pytest.fixture(autouse=True)
def ledger_balances_after_each_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever a scenario did, the ledger must still balance and match its shards."""
    yield
    if "stack" not in request.fixturenames:
        return
    report = verify(request.getfixturevalue("stack").store())
    assert report.ok, report.violations
    for currency, totals in report.totals.items():
        assert totals["debits"] == totals["credits"], currency


def journals_for(stack: Stack, charge_id: str) -> list[dict[str, Any]]:
    return stack.store().query_partition(f"CHARGE#{charge_id}", "JOURNAL#")


T = TypeVar("T")


def settled_on(business: Callable[[], T]) -> tuple[T, str]:
    """Runs `business` and names the date the processor settles its movements on (T+2).
    The processor settles by UTC business day, so a run that spans midnight is done again
    on the new day: its movements would otherwise fall into two days' batches."""
    while True:
        day = dt.datetime.now(dt.UTC).date()
        done = business()
        if dt.datetime.now(dt.UTC).date() == day:
            return done, (day + dt.timedelta(days=SETTLEMENT_LAG_DAYS)).isoformat()


def charges_with_key(stack: Stack, merchant_id: str, key: str) -> list[dict[str, Any]]:
    return [
        c
        for c in stack.store().scan("CHARGE#")
        if c["sk"] == "CHARGE" and c["merchant"] == merchant_id and c["idempotency_key"] == key
    ]


# Every card number the tests send, and the Stripe test cards they might: searched for
# digit by digit, independently of the detector the API uses.
SENT_CARD_NUMBERS = (
    "4242424242424242",
    "5555555555554444",
    "378282246310005",
    "6011111111111117",
    "4000056655665556",
    "6759649826438453",
    "4000000000000002",
    "4000000000000259",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `after_everything` run last, once every other test has used the stack."""
    last = [item for item in items if item.get_closest_marker("after_everything")]
    items[:] = [item for item in items if item not in last] + last
