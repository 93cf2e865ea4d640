"""Money out, over its own local stack and the unmodified stripe SDK: disputes raised by the
sandbox processor's signed notifications, answered through /v1/disputes and decided by the
network; payouts of the settled balance to the sandbox bank, paid or returned on their
arrival date; and both reconciled from the processor's settlement file and the bank's
report."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import stripe
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
from clearline.processor_notifications import signature
from clearline.topology import PAYOUT_QUEUE
from clearline_local.sandbox_bank import FAILING_ACCOUNTS, SUCCEEDING_ACCOUNT
from clearline_local.sandbox_processor import SETTLEMENT_LAG_DAYS
from tests.polling import eventually

from .conftest import Stack, running_stack, settled_on
from .test_async import queue_drained
from .test_dashboard import signed_in
from .test_reconciliation import report_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Settlement files and the daily payout run take every merchant's day: this module's
    stack holds only its own."""
    with running_stack(tmp_path_factory) as started:
        yield started


@pytest.fixture(scope="module")
def shop(own_stack: Stack) -> tuple[dict[str, Any], stripe.StripeClient]:
    merchant = own_stack.create_merchant("Disputed Shop", fee_percent=3, fee_fixed=0)
    return merchant, stripe.StripeClient(
        merchant["secret_key"], base_addresses={"api": own_stack.url}, max_network_retries=2
    )


def key() -> str:
    return str(uuid.uuid4())


def charge(sdk: stripe.StripeClient, source: str, amount: int = 3000, **params: Any) -> Any:
    return sdk.v1.charges.create(
        params={"amount": amount, "currency": "usd", "source": source, **params},
        options={"idempotency_key": key()},
    )


def dispute_of(sdk: stripe.StripeClient, charge_id: str, status: str | None = None) -> Any:
    """The charge's dispute, once the processor's notification has opened it (in `status`)."""

    def found() -> Any:
        disputes = sdk.v1.disputes.list(params={"charge": charge_id}).data
        return next((d for d in disputes if status in (None, d.status)), None)

    return eventually(found, timeout=30, message=f"a dispute of {charge_id} in {status}")


def event_types(sdk: stripe.StripeClient, object_id: str) -> list[str]:
    events = sdk.v1.events.list(params={"limit": 100}).data
    return [e.type for e in reversed(events) if e.data.object.to_dict().get("id") == object_id]


# ---- disputes -------------------------------------------------------------------------------


def test_a_chargeback_through_the_sdk(shop: tuple[dict[str, Any], stripe.StripeClient]) -> None:
    _, sdk = shop
    paid = charge(sdk, "tok_createDispute", description="Walnut desk", receipt_email="a@b.co")
    dispute = dispute_of(sdk, paid.id)
    assert dispute.id.startswith("du_") and dispute.object == "dispute"
    assert (dispute.status, dispute.reason, dispute.amount) == (
        "needs_response",
        "fraudulent",
        3000,
    )
    assert dispute.network_reason_code == "10.4" and not dispute.is_charge_refundable
    assert dispute.evidence.product_description == "Walnut desk"
    assert dispute.evidence.customer_email_address == "a@b.co"
    (withdrawal,) = dispute.balance_transactions
    assert (withdrawal.type, withdrawal.reporting_category) == ("adjustment", "dispute")
    assert (withdrawal.amount, withdrawal.fee, withdrawal.net) == (-3000, 1500, -4500)
    assert withdrawal.fee_details[0].description == "Dispute fee"
    assert sdk.v1.charges.retrieve(paid.id).disputed is True
    assert sdk.v1.disputes.retrieve(dispute.id).id == dispute.id
    expanded = sdk.v1.disputes.retrieve(dispute.id, params={"expand": ["charge"]})
    assert expanded.charge.id == paid.id
    assert event_types(sdk, dispute.id)[:2] == [
        "charge.dispute.created",
        "charge.dispute.funds_withdrawn",
    ]

    with pytest.raises(stripe.InvalidRequestError) as refused:
        sdk.v1.refunds.create(params={"charge": paid.id}, options={"idempotency_key": key()})
    assert refused.value.code == "charge_disputed"


def test_staged_then_winning_evidence_wins_and_reinstates(
    shop: tuple[dict[str, Any], stripe.StripeClient],
) -> None:
    _, sdk = shop
    paid = charge(sdk, "tok_createDisputeProductNotReceived", amount=5000)
    dispute = dispute_of(sdk, paid.id)
    assert dispute.reason == "product_not_received"
    staged = sdk.v1.disputes.update(
        dispute.id,
        params={"evidence": {"shipping_tracking_number": "1Z999"}, "submit": False},
    )
    assert (staged.status, staged.evidence_details.has_evidence) == ("needs_response", True)
    submitted = sdk.v1.disputes.update(
        dispute.id,
        params={"evidence": {"uncategorized_text": "winning_evidence"}, "metadata": {"case": "7"}},
    )
    assert submitted.status == "under_review"
    assert submitted.evidence_details.submission_count == 1
    assert submitted.evidence.shipping_tracking_number == "1Z999"
    won = dispute_of(sdk, paid.id, "won")
    assert won.is_charge_refundable and won.metadata["case"] == "7"
    assert [t.reporting_category for t in won.balance_transactions] == [
        "dispute",
        "dispute_reversal",
    ]
    types = event_types(sdk, dispute.id)
    assert types.index("charge.dispute.funds_reinstated") < types.index("charge.dispute.closed")
    with pytest.raises(stripe.InvalidRequestError, match="already closed"):
        sdk.v1.disputes.close(dispute.id)
    refund = sdk.v1.refunds.create(params={"charge": paid.id}, options={"idempotency_key": key()})
    assert refund.status == "succeeded"


def test_losing_evidence_and_closing_lose(shop: tuple[dict[str, Any], stripe.StripeClient]) -> None:
    _, sdk = shop
    paid = charge(sdk, "tok_createDispute")
    dispute = dispute_of(sdk, paid.id)
    sdk.v1.disputes.update(
        dispute.id, params={"evidence": {"uncategorized_text": "losing_evidence"}}
    )
    lost = dispute_of(sdk, paid.id, "lost")
    assert len(lost.balance_transactions) == 1

    accepted = charge(sdk, "tok_createDispute")
    closed = sdk.v1.disputes.close(dispute_of(sdk, accepted.id).id)
    assert closed.status == "lost"
    assert "charge.dispute.closed" in event_types(sdk, closed.id)


def test_an_inquiry_moves_no_money_and_stays_refundable(
    shop: tuple[dict[str, Any], stripe.StripeClient],
) -> None:
    _, sdk = shop
    paid = charge(sdk, "tok_createDisputeInquiry")
    inquiry = dispute_of(sdk, paid.id)
    assert inquiry.status == "warning_needs_response"
    assert inquiry.balance_transactions == [] and inquiry.is_charge_refundable
    assert inquiry.payment_method_details.card.case_type == "inquiry"
    closed = sdk.v1.disputes.close(inquiry.id)
    assert closed.status == "warning_closed"
    refund = sdk.v1.refunds.create(params={"charge": paid.id}, options={"idempotency_key": key()})
    assert refund.status == "succeeded"


def test_a_stored_card_of_a_dispute_test_number_is_disputed_too(
    shop: tuple[dict[str, Any], stripe.StripeClient],
) -> None:
    _, sdk = shop
    intent = sdk.v1.payment_intents.create(
        params={
            "amount": 2500,
            "currency": "usd",
            "payment_method": "pm_card_createDispute",
            "confirm": True,
        },
        options={"idempotency_key": key()},
    )
    assert intent.status == "succeeded"
    dispute = dispute_of(sdk, intent.latest_charge)
    listed = sdk.v1.disputes.list(params={"payment_intent": intent.id}).data
    assert [d.id for d in listed] == [dispute.id]


def test_a_notification_not_signed_by_the_processor_is_refused_and_changes_nothing(
    own_stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient]
) -> None:
    merchant, sdk = shop
    paid = charge(sdk, "tok_visa")
    authorization = next(
        a for a in own_stack.processor_authorizations() if a["reference"] == paid.id
    )
    now = int(time.time())
    body = json.dumps(
        {
            "id": "ntf_forged",
            "type": "dispute.created",
            "created": now,
            "dispute": {
                "id": "dp_forged",
                "authorization": authorization["id"],
                "reference": paid.id,
                "amount": 3000,
                "currency": "usd",
                "reason": "fraudulent",
                "status": "needs_response",
                "created": now,
            },
        }
    ).encode()
    url = own_stack.info.notifications_url
    for header in (None, f"t={now},v1={signature('not the secret', now, body)}", "t=1,v1=00"):
        headers = {"Content-Type": "application/json"}
        if header is not None:
            headers["Processor-Signature"] = header
        answer = requests.post(url, data=body, headers=headers, timeout=10)
        assert answer.status_code == 401, answer.text
    assert sdk.v1.disputes.list(params={"charge": paid.id}).data == []
    assert sdk.v1.charges.retrieve(paid.id).disputed is False
    # ... and the merchant API does not take notifications at all: without a key its
    # gateway refuses them, and with a merchant's key there is no such route.
    on_merchant_api = own_stack.url + "/processor/notifications"
    assert requests.post(on_merchant_api, data=body, timeout=10).status_code == 401
    with_key = requests.post(
        on_merchant_api, data=body, auth=(merchant["secret_key"], ""), timeout=10
    )
    assert with_key.status_code == 404, with_key.text


def test_past_its_deadline_a_dispute_without_evidence_is_lost(
    own_stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient]
) -> None:
    _, sdk = shop
    paid = charge(sdk, "tok_createDispute")
    dispute = dispute_of(sdk, paid.id)
    early = own_stack.clearline("invoke", "scheduler", "--time", "+7d")
    assert early.returncode == 0, early.stderr
    assert sdk.v1.disputes.retrieve(dispute.id).status == "needs_response"
    due = own_stack.clearline("invoke", "scheduler", "--time", "+9d")
    assert due.returncode == 0, due.stderr
    lost = dispute_of(sdk, paid.id, "lost")
    assert lost.evidence_details.past_due is True


def test_the_settlement_file_carries_dispute_rows_that_post_once(
    own_stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient], tmp_path: Any
) -> None:
    _, sdk = shop

    def disputed_and_won() -> tuple[Any, Any]:
        paid = charge(sdk, "tok_createDispute", amount=4000)
        dispute = dispute_of(sdk, paid.id)
        sdk.v1.disputes.update(
            dispute.id, params={"evidence": {"uncategorized_text": "winning_evidence"}}
        )
        dispute_of(sdk, paid.id, "won")
        return paid, dispute

    (paid, dispute), settlement_date = settled_on(disputed_and_won)
    output = tmp_path / "settlement.csv"
    done = own_stack.clearline(
        "settlements", "generate", "--date", settlement_date, "--output", str(output)
    )
    assert done.returncode == 0, done.stderr
    rows = [r for r in output.read_text().splitlines() if paid.id in r]
    assert sorted(r.split(",")[3] for r in rows) == ["capture", "dispute", "dispute_reversal"]
    s3_key = done.stdout.strip().splitlines()[-1].split("/", 3)[3]
    report = report_for(own_stack, s3_key)
    assert report["counts"].get("missing_in_ledger", 0) == 0, report["mismatches"]
    settled = sdk.v1.disputes.retrieve(dispute.id).balance_transactions
    assert all(t.status == "pending" for t in settled)  # the snapshots in the dispute...
    for txn in settled:  # ... and the transactions themselves, now settled
        assert sdk.v1.balance_transactions.retrieve(txn.id).status == "available"


# ---- payouts --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def payee(own_stack: Stack) -> tuple[dict[str, Any], stripe.StripeClient]:
    """A merchant with settled funds and a bank account that is paid."""
    merchant = own_stack.create_merchant("Payout Shop", fee_percent=0, fee_fixed=0)
    sdk = stripe.StripeClient(merchant["secret_key"], base_addresses={"api": own_stack.url})
    _, settles_on = settled_on(lambda: [charge(sdk, "tok_visa", amount=a) for a in (20000, 30000)])
    settle(own_stack, settles_on)
    set_account(own_stack, merchant["id"], SUCCEEDING_ACCOUNT)
    return merchant, sdk


def settle(stack: Stack, settles_on: str) -> None:
    """The processor's settlement batch for `settles_on`, dropped and reconciled."""
    done = stack.clearline("settlements", "generate", "--date", settles_on)
    assert done.returncode == 0, done.stderr
    report_for(stack, done.stdout.strip().splitlines()[-1].split("/", 3)[3])


def set_account(stack: Stack, merchant_id: str, account: str) -> dict[str, Any]:
    done = stack.clearline(
        "merchants", "bank-account", merchant_id, "--account-number", account, "--json"
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def available_usd(sdk: stripe.StripeClient) -> int:
    return next(a.amount for a in sdk.v1.balance.retrieve().available if a.currency == "usd")


def in_status(sdk: stripe.StripeClient, payout_id: str, status: str) -> Any:
    return eventually(
        lambda: (p := sdk.v1.payouts.retrieve(payout_id)).status == status and p,
        timeout=30,
        message=f"{payout_id} {status}",
    )


def bank_now(stack: Stack) -> dt.datetime:
    now = requests.get(f"{stack.info.bank_url}/_sandbox/clock", timeout=5).json()["now"]
    return dt.datetime.fromtimestamp(now, dt.UTC)


def arrive(stack: Stack) -> None:
    """A day passes at the bank, and the scheduler, on the bank's time, asks it about the
    payouts due by then."""
    assert stack.clearline("bank", "advance", "--days", "1").returncode == 0
    when = bank_now(stack).strftime("%Y-%m-%dT%H:%M:%SZ")
    due = stack.clearline("invoke", "scheduler", "--time", when)
    assert due.returncode == 0, due.stderr


def test_a_manual_payout_is_sent_and_paid(
    own_stack: Stack, payee: tuple[dict[str, Any], stripe.StripeClient]
) -> None:
    _, sdk = payee
    before = available_usd(sdk)
    assert before >= 50000
    payout = sdk.v1.payouts.create(
        params={"amount": 12000, "currency": "usd", "description": "Rent"},
        options={"idempotency_key": key()},
    )
    assert (payout.status, payout.automatic, payout.method) == ("pending", False, "standard")
    assert available_usd(sdk) == before - 12000
    txn = sdk.v1.balance_transactions.retrieve(payout.balance_transaction)
    assert (txn.type, txn.amount, txn.source) == ("payout", -12000, payout.id)
    in_transit = in_status(sdk, payout.id, "in_transit")
    assert in_transit.arrival_date >= payout.created
    with pytest.raises(stripe.InvalidRequestError) as refused:
        sdk.v1.payouts.cancel(payout.id)
    assert refused.value.code == "payout_not_cancelable"
    arrive(own_stack)
    in_status(sdk, payout.id, "paid")
    assert event_types(sdk, payout.id)[0] == "payout.created"
    assert "payout.paid" in event_types(sdk, payout.id)
    assert [p.id for p in sdk.v1.payouts.list(params={"status": "paid"}).data] == [payout.id]


def test_a_payout_above_the_available_balance_is_refused(
    payee: tuple[dict[str, Any], stripe.StripeClient],
) -> None:
    _, sdk = payee
    with pytest.raises(stripe.InvalidRequestError) as refused:
        sdk.v1.payouts.create(
            params={"amount": available_usd(sdk) + 1, "currency": "usd"},
            options={"idempotency_key": key()},
        )
    assert refused.value.code == "balance_insufficient"
    with pytest.raises(stripe.InvalidRequestError) as no_account:
        sdk.v1.payouts.create(
            params={"amount": 100, "currency": "eur"}, options={"idempotency_key": key()}
        )
    assert no_account.value.code == "payouts_not_allowed"


@pytest.mark.parametrize("account, code", sorted(FAILING_ACCOUNTS.items()))
def test_a_payout_to_a_failing_account_fails_and_returns_the_money(
    own_stack: Stack, account: str, code: str
) -> None:
    merchant = own_stack.create_merchant(f"Returned {code}", fee_percent=0, fee_fixed=0)
    sdk = stripe.StripeClient(merchant["secret_key"], base_addresses={"api": own_stack.url})
    _, settles_on = settled_on(lambda: charge(sdk, "tok_visa", amount=7000))
    settle(own_stack, settles_on)
    set_account(own_stack, merchant["id"], account)
    payout = sdk.v1.payouts.create(
        params={"amount": 7000, "currency": "usd"}, options={"idempotency_key": key()}
    )
    in_status(sdk, payout.id, "in_transit")
    arrive(own_stack)
    failed = in_status(sdk, payout.id, "failed")
    assert failed.failure_code == code and failed.failure_message
    returned = sdk.v1.balance_transactions.retrieve(failed.failure_balance_transaction)
    assert (returned.type, returned.amount) == ("payout_failure", 7000)
    assert available_usd(sdk) == 7000
    assert "payout.failed" in event_types(sdk, payout.id)


def test_the_bank_account_is_shown_by_its_last_four_digits_only(own_stack: Stack) -> None:
    merchant = own_stack.create_merchant("Private Shop")
    shown = set_account(own_stack, merchant["id"], SUCCEEDING_ACCOUNT)
    assert shown["last4"] == "6789" and SUCCEEDING_ACCOUNT not in json.dumps(shown)
    assert SUCCEEDING_ACCOUNT not in own_stack.log_text()
    unsigned = requests.post(
        f"{own_stack.url}/admin/merchants/{merchant['id']}/bank_accounts",
        json={"currency": "usd", "routing_number": "110000000", "account_number": "000123456789"},
        timeout=10,
    )
    assert unsigned.status_code == 403


def test_the_daily_run_pays_out_everything_available_and_the_banks_report_agrees(
    own_stack: Stack, payee: tuple[dict[str, Any], stripe.StripeClient]
) -> None:
    _, sdk = payee
    available = available_usd(sdk)
    assert available > 0
    run = own_stack.clearline("invoke", "daily_payouts")
    assert run.returncode == 0, run.stderr
    automatic = eventually(
        lambda: next((p for p in sdk.v1.payouts.list().data if p.automatic), None),
        message="the automatic payout",
    )
    assert automatic.amount == available and available_usd(sdk) == 0
    covered = sdk.v1.balance_transactions.list(params={"payout": automatic.id}).data
    assert sorted(t.type for t in covered) == ["charge", "charge", "payout"]
    assert eventually(
        lambda: sdk.v1.payouts.retrieve(automatic.id).reconciliation_status == "completed"
    )
    again = own_stack.clearline("invoke", "daily_payouts")
    assert json.loads(again.stdout.strip().splitlines()[-1])["payouts"] == 0
    in_status(sdk, automatic.id, "in_transit")
    eventually(lambda: queue_drained(own_stack, PAYOUT_QUEUE.name), message="the payout queue")
    assert own_stack.clearline("bank", "advance", "--days", "1").returncode == 0
    bank_day = bank_now(own_stack).date()
    uploaded = own_stack.clearline("bank", "report", "--date", bank_day.isoformat())
    assert uploaded.returncode == 0, uploaded.stderr
    report = report_for(own_stack, uploaded.stdout.strip().splitlines()[-1].split("/", 3)[3])
    assert report["counts"]["matched"] >= 1, report
    assert report["mismatches"] == []
    in_status(sdk, automatic.id, "paid")  # settled from the report, before anyone asked

    # The dashboard shows the payout among the balance's, with the movements it covered;
    # another merchant's session does not find it.
    merchant, _ = payee
    client = signed_in(own_stack, merchant["id"])
    balance_page = client.get(f"{own_stack.url}/dashboard/balance")[2]
    assert f'/dashboard/payouts/{automatic.id}"' in balance_page and ">paid<" in balance_page
    status, _, page = client.get(f"{own_stack.url}/dashboard/payouts/{automatic.id}")
    assert status == 200 and page.count("<td>charge</td>") == 2 and "<td>payout</td>" in page
    assert all(t.source in page for t in covered)
    outsider = signed_in(own_stack, own_stack.create_merchant("Not The Payee")["id"])
    assert outsider.get(f"{own_stack.url}/dashboard/payouts/{automatic.id}")[0] == 404


# ---- random sequences -----------------------------------------------------------------------


class MoneyOutMachine(RuleBasedStateMachine):
    """Charges (some of them disputed), refunds, settlement, responses to disputes, payouts
    manual and automatic, and days passing at the bank, in any order. After every step the
    ledger verifies, the merchant's balance is the sum of its balance transactions, and
    what is in transit to the bank is what its unfinished payouts add up to."""

    charges = Bundle("charges")

    def __init__(self, stack: Stack) -> None:
        super().__init__()
        self.stack = stack
        merchant = stack.create_merchant("Random Money Out", fee_percent=2.9, fee_fixed=30)
        self.merchant_id = merchant["id"]
        self.sdk = stripe.StripeClient(merchant["secret_key"], base_addresses={"api": stack.url})
        set_account(stack, self.merchant_id, SUCCEEDING_ACCOUNT)

    @rule(
        target=charges,
        amount=st.integers(500, 20_000),
        token=st.sampled_from(["tok_visa"] * 3 + ["tok_createDispute", "tok_createDisputeInquiry"]),
    )
    def charge(self, amount: int, token: str) -> str:
        made = charge(self.sdk, token, amount=amount)
        if token != "tok_visa":
            dispute_of(self.sdk, made.id)  # opened before anything else happens to it
        return str(made.id)

    @rule(charge_id=charges)
    def refund(self, charge_id: str) -> None:
        try:
            self.sdk.v1.refunds.create(
                params={"charge": charge_id, "amount": 100}, options={"idempotency_key": key()}
            )
        except stripe.InvalidRequestError as refused:
            assert refused.code in (
                "charge_disputed",
                "amount_too_large",
                "charge_already_refunded",
            )

    @rule(
        charge_id=charges, answer=st.sampled_from(["winning_evidence", "losing_evidence", "close"])
    )
    def answer_dispute(self, charge_id: str, answer: str) -> None:
        disputes = self.sdk.v1.disputes.list(params={"charge": charge_id}).data
        if not disputes or disputes[0].status not in ("needs_response", "warning_needs_response"):
            return
        dispute = disputes[0]
        if answer == "close":
            assert self.sdk.v1.disputes.close(dispute.id).status in ("lost", "warning_closed")
            return
        self.sdk.v1.disputes.update(dispute.id, params={"evidence": {"uncategorized_text": answer}})
        closed = ("won", "lost", "warning_closed")
        eventually(lambda: self.sdk.v1.disputes.retrieve(dispute.id).status in closed)

    @rule()
    def settle(self) -> None:
        # Today's movements; any from before midnight stay unsettled, which the
        # invariants allow.
        today = dt.datetime.now(dt.UTC).date()
        settle(self.stack, (today + dt.timedelta(days=SETTLEMENT_LAG_DAYS)).isoformat())

    @rule(fraction=st.sampled_from([0.5, 1.0, 1.5]))
    def pay_out(self, fraction: float) -> None:
        available = available_usd(self.sdk)
        if available <= 0:
            return
        amount = max(1, int(available * fraction))
        try:
            self.sdk.v1.payouts.create(
                params={"amount": amount, "currency": "usd"}, options={"idempotency_key": key()}
            )
        except stripe.InvalidRequestError as refused:
            assert refused.code == "balance_insufficient" and amount > available

    @rule()
    def a_day_passes(self) -> None:
        eventually(lambda: queue_drained(self.stack, PAYOUT_QUEUE.name))
        arrive(self.stack)
        eventually(lambda: queue_drained(self.stack, PAYOUT_QUEUE.name))

    @invariant()
    def the_books_agree(self) -> None:
        def agree() -> bool:
            before = self.sdk.v1.balance.retrieve()
            nets = sum(
                t.net
                for t in self.sdk.v1.balance_transactions.list(
                    params={"limit": 100}
                ).auto_paging_iter()
            )
            after = self.sdk.v1.balance.retrieve()
            total = sum(a.amount for a in [*after.available, *after.pending] if a.currency == "usd")
            return before == after and nets == total

        eventually(agree, timeout=20, message="the balance is the sum of its transactions")
        unfinished = sum(
            p.amount
            for p in self.sdk.v1.payouts.list(params={"limit": 100}).auto_paging_iter()
            if p.status in ("pending", "in_transit")
        )
        store = self.stack.store()
        account = ledger.payouts_in_transit(self.merchant_id, "usd")
        assert ledger.account_balance(store, account).credit_balance == unfinished
        assert ledger.verify(store).ok


def test_random_money_out_keeps_the_books(own_stack: Stack) -> None:
    run_state_machine_as_test(
        lambda: MoneyOutMachine(own_stack),
        settings=settings(
            max_examples=3,
            stateful_step_count=8,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
