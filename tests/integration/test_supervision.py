"""The local stack recovers from a dead api worker as Lambda does from a dead execution
environment: the invocation it was serving fails with a Stripe-shaped error, the death is
logged once with the function's name, a new worker takes its place, and the next request
is served. The stack is shared by every integration test, so each test leaves it with its
full complement of healthy workers."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
import stripe

from clearline.topology import TOPOLOGY
from clearline_local.stack import read_worker_pids
from tests.polling import eventually

from .conftest import Stack

pytestmark = pytest.mark.integration

API = TOPOLOGY.api.function
PROC_NET_TCP = Path("/proc/net/tcp")


@pytest.fixture(scope="module")
def shop(stack: Stack) -> tuple[dict[str, Any], stripe.StripeClient]:
    merchant = stack.create_merchant("Supervision Shop", fee_percent=3, fee_fixed=0)
    sdk = stripe.StripeClient(
        merchant["secret_key"], base_addresses={"api": stack.url}, max_network_retries=2
    )
    return merchant, sdk


def api_pids(stack: Stack) -> list[int]:
    directory = Path(stack.env["CLEARLINE_STATE_DIR"])
    return read_worker_pids(stack.info.port, directory)[API]


def replaced(stack: Stack, victim: int, count: int) -> list[int]:
    """The api workers once the stack lists a new one in the victim's place."""
    return list(
        eventually(
            lambda: victim not in (pids := api_pids(stack)) and len(pids) == count and pids,
            message=f"a worker in place of pid {victim}",
        )
    )


def log_lines_about(stack: Stack, pid: int) -> list[str]:
    return [line for line in stack.log_text().splitlines() if f"pid {pid} " in line]


def charge(sdk: stripe.StripeClient) -> stripe.Charge:
    return sdk.v1.charges.create(
        params={"amount": 1500, "currency": "usd", "source": "tok_visa"},
        options={"idempotency_key": str(uuid.uuid4())},
    )


def test_a_killed_api_worker_is_replaced_and_the_next_request_succeeds(
    stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient]
) -> None:
    _, sdk = shop
    before = api_pids(stack)
    victim = before[0]

    os.kill(victim, signal.SIGKILL)

    def served_until_the_death_is_logged() -> list[str]:
        assert charge(sdk).status == "succeeded", "no request fails for an idle worker's death"
        return log_lines_about(stack, victim)

    (line,) = eventually(served_until_the_death_is_logged, message="the log line")
    assert f"{API}: execution environment pid {victim} killed by SIGKILL" in line
    after = replaced(stack, victim, len(before))
    assert set(after) - set(before), "a new process, not a reused one"
    assert charge(sdk).status == "succeeded"
    assert len(log_lines_about(stack, victim)) == 1, "logged once, no flood"


def worker_connected_to(port: int, pids: list[int]) -> int | None:
    """Which of `pids` holds an open TCP connection to `port`: the api worker whose
    request is waiting on the sandbox processor (each processor call opens its own)."""
    sockets = set()
    for line in PROC_NET_TCP.read_text().splitlines()[1:]:
        fields = line.split()
        remote_port, state, inode = int(fields[2].split(":")[1], 16), fields[3], fields[9]
        if remote_port == port and state == "01":  # ESTABLISHED
            sockets.add(f"socket:[{inode}]")
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            with contextlib.suppress(OSError):  # closed while we look
                if os.readlink(fd) in sockets:
                    return pid
    return None


@pytest.mark.skipif(not PROC_NET_TCP.exists(), reason="finds the busy worker through /proc")
def test_a_request_whose_worker_dies_gets_a_stripe_shaped_502_at_once(
    stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient]
) -> None:
    merchant, sdk = shop
    before = api_pids(stack)
    answered: dict[str, Any] = {}

    def post_charge() -> None:
        answered["response"] = requests.post(
            f"{stack.url}/v1/charges",
            auth=(merchant["secret_key"], ""),
            headers={"Idempotency-Key": str(uuid.uuid4())},
            data={"amount": 2500, "currency": "usd", "source": "tok_visa"},
            timeout=60,
        )
        answered["at"] = time.monotonic()

    # The processor holds the call unanswered, so the request stays in its worker while
    # the test finds that worker and kills it.
    stack.inject_processor_fault("timeout_before")
    request = threading.Thread(target=post_charge, daemon=True)
    try:
        request.start()
        processor_port = int(stack.info.processor_url.rsplit(":", 1)[1])
        victim = eventually(
            lambda: worker_connected_to(processor_port, before), message="the busy worker"
        )
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        request.join(timeout=30)
    finally:
        stack.clear_processor_faults()

    response = answered["response"]
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "api_error"
    assert answered["at"] - killed_at < 5, "answered when the worker died, not at a timeout"
    (line,) = eventually(lambda: log_lines_about(stack, victim), message="the log line")
    assert f"{API}: execution environment pid {victim} killed by SIGKILL" in line
    assert "during an invocation" in line
    assert set(before) - {victim} <= set(replaced(stack, victim, len(before)))
    assert charge(sdk).status == "succeeded"
    assert len(log_lines_about(stack, victim)) == 1
    # The charge whose request died was left pending: settle it now, as the schedule would.
    done = stack.clearline("invoke", "processor_sync", "--time", "+2m")
    assert done.returncode == 0, done.stderr
