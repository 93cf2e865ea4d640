"""Random sequences of money operations, with retries, races and processor faults.

After every step, for every charge the sequence made: the API agrees with the model and
with the ledger, every journal balances, captured <= authorized, refunded <= captured,
and the merchant's balance equals the sum of its entries.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from clearline import ledger

from .conftest import Stack

pytestmark = pytest.mark.integration


@dataclass
class ModelCharge:
    id: str
    amount: int
    state: str  # authorized, captured, canceled, failed
    captured: int = 0
    refunded: int = 0


class LedgerMachine(RuleBasedStateMachine):
    charges = Bundle("charges")

    def __init__(self, stack: Stack) -> None:
        super().__init__()
        self.stack = stack
        self.shop = stack.create_merchant("Property Shop", fee_percent=2.9, fee_fixed=30)
        self.model: dict[str, ModelCharge] = {}
        self.last: tuple[str, dict[str, Any], str, requests.Response] | None = None

    # ---- HTTP ----------------------------------------------------------------------------

    def post(self, path: str, data: dict[str, Any], idem: str | None = None) -> requests.Response:
        idem = idem or str(uuid.uuid4())
        response = requests.post(
            f"{self.stack.url}{path}",
            data=data,
            timeout=30,
            auth=(self.shop["secret_key"], ""),
            headers={"Idempotency-Key": idem},
        )
        if response.status_code != 503:
            self.last = (path, data, idem, response)
        return response

    def get(self, path: str) -> dict[str, Any]:
        response = requests.get(
            f"{self.stack.url}{path}", auth=(self.shop["secret_key"], ""), timeout=30
        )
        assert response.status_code == 200, response.text
        return response.json()

    def apply(self, path: str, data: dict[str, Any], response: requests.Response) -> None:
        """Fold one successful or refused response into the model."""
        body = response.json()
        if path == "/v1/charges":
            if response.status_code in (200, 402):
                charge_id = body["id"] if response.status_code == 200 else body["error"]["charge"]
                state = (
                    "failed"
                    if response.status_code == 402
                    else "captured"
                    if body["captured"]
                    else "authorized"
                )
                self.model.setdefault(
                    charge_id,
                    ModelCharge(
                        charge_id,
                        data["amount"],
                        state,
                        data["amount"] if state == "captured" else 0,
                    ),
                )
            return
        if path.endswith("/capture"):
            charge = self.model[path.split("/")[3]]
            if response.status_code == 200:
                charge.state, charge.captured = "captured", body["amount_captured"]
            else:
                assert response.status_code == 400, body
                assert charge.state != "authorized" or data.get("amount", 0) > charge.amount
            return
        charge = self.model[data["charge"]]
        if response.status_code == 200:
            if charge.state == "authorized":
                charge.state = "canceled"
            else:
                charge.refunded += body["amount"]
        else:
            assert response.status_code == 400, body
            left = charge.captured - charge.refunded
            assert charge.state != "captured" or left == 0 or data.get("amount", left) > left, (
                body,
                charge,
            )

    # ---- rules ---------------------------------------------------------------------------

    @rule(
        target=charges,
        amount=st.integers(50, 50_000),
        capture=st.booleans(),
        token=st.sampled_from(["tok_visa"] * 4 + ["tok_chargeDeclinedInsufficientFunds"]),
    )
    def create(self, amount: int, capture: bool, token: str) -> str:
        data = {
            "amount": amount,
            "currency": "usd",
            "source": token,
            "capture": str(capture).lower(),
        }
        response = self.post("/v1/charges", data)
        assert response.status_code in (200, 402), response.text
        self.apply("/v1/charges", data, response)
        body = response.json()
        return body["id"] if response.status_code == 200 else body["error"]["charge"]

    @rule(charge_id=charges, fraction=st.sampled_from([None, 0.5, 1.0, 1.5]))
    def capture(self, charge_id: str, fraction: float | None) -> None:
        charge = self.model[charge_id]
        data = {} if fraction is None else {"amount": max(1, int(charge.amount * fraction))}
        path = f"/v1/charges/{charge_id}/capture"
        self.apply(path, data, self.post(path, data))

    @rule(charge_id=charges, fraction=st.sampled_from([None, 0.25, 0.5, 1.1]))
    def refund(self, charge_id: str, fraction: float | None) -> None:
        charge = self.model[charge_id]
        data: dict[str, Any] = {"charge": charge_id}
        if fraction is not None:
            data["amount"] = max(1, int(charge.amount * fraction))
        self.apply("/v1/refunds", data, self.post("/v1/refunds", data))

    @rule()
    def retry_last(self) -> None:
        """The same key, endpoint and parameters again: the first answer, replayed."""
        if self.last is None:
            return
        path, data, idem, first = self.last
        again = self.post(path, data, idem)
        assert again.status_code == first.status_code
        if first.status_code in (200, 402):
            assert again.json() == first.json()
            assert again.headers["Idempotent-Replayed"] == "true"

    @rule(charge_id=charges)
    def concurrent_refunds_with_one_key(self, charge_id: str) -> None:
        data = {"charge": charge_id, "amount": 60}
        idem = str(uuid.uuid4())
        with ThreadPoolExecutor(max_workers=3) as pool:
            responses = list(pool.map(lambda _: self.post("/v1/refunds", data, idem), range(3)))
        done = [r for r in responses if r.status_code == 200]
        assert len({r.json()["id"] for r in done}) <= 1
        assert all(r.status_code in (200, 400, 409) for r in responses)
        if done:
            self.apply("/v1/refunds", data, done[0])
        elif responses[0].status_code == 400:
            self.apply("/v1/refunds", data, responses[0])
        else:  # only in-flight refusals: settle it with one more retry
            self.apply("/v1/refunds", data, self.post("/v1/refunds", data, idem))

    @rule(charge_id=charges, mode=st.sampled_from(["timeout_before", "timeout_after", "error_500"]))
    def processor_fault_then_retry(self, charge_id: str, mode: str) -> None:
        charge = self.model[charge_id]
        if charge.state == "authorized":
            path, data = f"/v1/charges/{charge_id}/capture", {}
        else:
            path, data = "/v1/refunds", {"charge": charge_id, "amount": 50}
        idem = str(uuid.uuid4())
        self.stack.inject_processor_fault(mode)
        failed = self.post(path, data, idem)
        if failed.status_code != 503:  # refused before the processor was called
            self.stack.clear_processor_faults()
            self.apply(path, data, failed)
            return
        self.apply(path, data, self.post(path, data, idem))

    # ---- invariants ----------------------------------------------------------------------

    @invariant()
    def api_agrees_with_model_and_ledger(self) -> None:
        entries_by_account: dict[str, ledger.AccountBalance] = defaultdict(
            lambda: ledger.AccountBalance("")
        )
        store = self.stack.store()
        for charge in self.model.values():
            api = self.get(f"/v1/charges/{charge.id}")
            assert api["amount_captured"] == charge.captured
            assert api["amount_captured"] <= api["amount"]
            refunded_from_refunds = (
                sum(r["amount"] for r in api["refunds"]["data"] if r["status"] == "succeeded")
                if charge.state != "canceled"
                else 0
            )
            assert refunded_from_refunds == charge.refunded <= charge.captured
            journals = store.query_partition(f"CHARGE#{charge.id}", "JOURNAL#")
            captured = refunded = 0
            for journal in journals:
                for pending in (False, True):
                    debits = sum(
                        e["amount"]
                        for e in journal["entries"]
                        if e["pending"] == pending and e["direction"] == "debit"
                    )
                    credits = sum(
                        e["amount"]
                        for e in journal["entries"]
                        if e["pending"] == pending and e["direction"] == "credit"
                    )
                    assert debits == credits, journal
                for e in journal["entries"]:
                    entries_by_account[e["account"]].add(
                        {
                            f"{e['direction']}s_{'pending' if e['pending'] else 'posted'}": e[
                                "amount"
                            ]
                        }
                    )
                    if e["account"] == ledger.processor_receivable("usd") and not e["pending"]:
                        if e["direction"] == "debit":
                            captured += e["amount"]
                        elif journal["operation"] == "refund":
                            refunded += e["amount"]
            assert (captured, refunded) == (charge.captured, charge.refunded)
        account = ledger.merchant_payable(self.shop["id"], "usd")
        shards = ledger.account_balance(store, account)
        expected = entries_by_account[account]
        assert (
            shards.debits_posted,
            shards.credits_posted,
            shards.debits_pending,
            shards.credits_pending,
        ) == (
            expected.debits_posted,
            expected.credits_posted,
            expected.debits_pending,
            expected.credits_pending,
        )


def test_random_money_operations_keep_the_ledger_right(stack: Stack) -> None:
    run_state_machine_as_test(
        lambda: LedgerMachine(stack),
        settings=settings(
            max_examples=8,
            stateful_step_count=10,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
