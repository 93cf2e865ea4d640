"""A processor with a low rate limit, over its own local stack and the unmodified stripe SDK:
a burst of ten times its limit in concurrent charges, and refunds beside them, completes
with no 429 from the processor, one charge per idempotency key, every charge succeeded,
every refund succeeded (those the limit held back, finished by the resolver), and a
ledger that verifies. Bounded in time; nothing here measures it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import stripe

from clearline import ledger
from clearline.config import PROCESSOR_TPS_ENV
from tests.polling import eventually

from .conftest import Stack, charges_with_key, running_stack

pytestmark = pytest.mark.integration

PROCESSOR_TPS = 5
CHARGES = 10 * PROCESSOR_TPS
REFUNDS = 15
# Enough for a request to outlast the burst: each retry waits up to 5 s, and each attempt
# up to 2 s for capacity.
SDK_RETRIES = 25
BURST_TIMEOUT_SECONDS = 300


@pytest.fixture(scope="module")
def limited_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Every function knows the processor's limit (the stack's environment reaches them),
    and the sandbox processor enforces it itself."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv(PROCESSOR_TPS_ENV, str(PROCESSOR_TPS))
        with running_stack(tmp_path_factory) as started:
            limit = f"{started.info.processor_url}/_sandbox/rate_limit"
            requests.post(limit, json={"tps_limit": PROCESSOR_TPS}, timeout=5).raise_for_status()
            yield started


def processor_throttled(stack: Stack) -> int:
    response = requests.get(f"{stack.info.processor_url}/_sandbox/rate_limit", timeout=5)
    response.raise_for_status()
    stats = response.json()
    assert stats["tps_limit"] == PROCESSOR_TPS
    return int(stats["throttled"])


def resolve(stack: Stack) -> dict[str, int]:
    """One resolver pass, two minutes on: past the grace of everything written so far."""
    done = stack.clearline("invoke", "processor_sync", "--time", "+2m")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.splitlines()[-1]))


def test_a_burst_of_ten_times_the_limit_completes_with_no_429_and_every_charge_once(
    limited_stack: Stack,
) -> None:
    stack = limited_stack
    shop = stack.create_merchant("Burst Shop", fee_percent=3, fee_fixed=0)
    sdk = stripe.StripeClient(
        shop["secret_key"], base_addresses={"api": stack.url}, max_network_retries=SDK_RETRIES
    )
    keys = [str(uuid.uuid4()) for _ in range(CHARGES)]

    def charge(key: str) -> stripe.Charge:
        return sdk.v1.charges.create(
            params={"amount": 5000, "currency": "usd", "source": "tok_visa"},
            options={"idempotency_key": key},
        )

    # The first charges' refunds go out while the rest of the burst is still charging.
    first, rest = keys[:REFUNDS], keys[REFUNDS:]
    with ThreadPoolExecutor(max_workers=CHARGES) as pool:
        early = [pool.submit(charge, key) for key in first]
        refunded = [future.result(timeout=BURST_TIMEOUT_SECONDS) for future in early]
        later = [pool.submit(charge, key) for key in rest]
        refund_keys = [str(uuid.uuid4()) for _ in refunded]
        refunds = [
            pool.submit(
                sdk.v1.refunds.create,
                params={"charge": charged.id, "amount": 1200},
                options={"idempotency_key": refund_key},
            )
            for charged, refund_key in zip(refunded, refund_keys, strict=True)
        ]
        charged_later = [future.result(timeout=BURST_TIMEOUT_SECONDS) for future in later]
        asked = [future.result(timeout=BURST_TIMEOUT_SECONDS) for future in refunds]
    charges = refunded + charged_later

    assert processor_throttled(stack) == 0  # the processor never had to refuse a call
    assert [c.status for c in charges] == ["succeeded"] * CHARGES
    assert all(c.captured and c.paid for c in charges)
    # Exactly one charge per key, and one authorization of it at the processor.
    for key, charged in zip(keys, charges, strict=True):
        (stored,) = charges_with_key(stack, shop["id"], key)
        assert (stored["id"], stored["state"]) == (charged.id, "captured")
    references = [a["reference"] for a in stack.processor_authorizations()]
    assert sorted(r for r in references if r in {c.id for c in charges}) == sorted(
        c.id for c in charges
    )

    # A refund the limit held back is answered pending; the resolver finishes it.
    assert {r.status for r in asked} <= {"pending", "succeeded"}

    def every_refund_succeeded() -> bool:
        if any(sdk.v1.refunds.retrieve(r.id).status != "succeeded" for r in asked):
            resolve(stack)
            return False
        return True

    eventually(every_refund_succeeded, timeout=120, interval=1, message="refunds settle")
    by_charge = {a["reference"]: a for a in stack.processor_authorizations()}
    for charged in refunded:
        assert by_charge[charged.id]["refunds"] == [1200]  # refunded once
        assert sdk.v1.charges.retrieve(charged.id).amount_refunded == 1200
    assert processor_throttled(stack) == 0

    report = ledger.verify(stack.store())
    assert report.ok, report.violations
    for currency, totals in report.totals.items():
        assert totals["debits"] == totals["credits"], currency
    verified = stack.clearline("ledger", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_the_limit_is_the_processors_own_too(limited_stack: Stack) -> None:
    """Past the limit, the sandbox refuses (the stack's functions never go past it)."""
    url = limited_stack.info.processor_url
    before = processor_throttled(limited_stack)
    answers: list[int] = []
    limit = f"{url}/_sandbox/rate_limit"
    requests.post(limit, json={"tps_limit": 1}, timeout=5).raise_for_status()
    try:
        for n in range(3):
            answers.append(
                requests.post(
                    f"{url}/v1/authorizations",
                    json={
                        "token": "tok_visa",
                        "amount": 100,
                        "currency": "usd",
                        "capture": True,
                        "reference": f"direct-{n}",
                    },
                    headers={"Idempotency-Key": f"direct-{uuid.uuid4()}"},
                    timeout=5,
                ).status_code
            )
    finally:
        requests.post(limit, json={"tps_limit": PROCESSOR_TPS}, timeout=5).raise_for_status()
    # Three calls at once fit in one second, or straddle two: at least one is refused.
    assert answers.count(429) >= 1
    assert processor_throttled(limited_stack) == before + answers.count(429)
    requests.delete(f"{url}/_sandbox/rate_limit", timeout=5).raise_for_status()
    assert processor_throttled(limited_stack) == 0
