"""Reconciliation over its own local stack: a day of charges, captures and refunds through
the stripe SDK, the processor's settlement file dropped in the bucket, and the reconciler's
report checked row by row, for a clean file and for each injected fault."""

from __future__ import annotations

import csv
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from clearline import ledger
from clearline.ids import derived_id
from clearline.topology import SETTLEMENT_BUCKET, SETTLEMENT_QUEUE
from clearline_local.environment import queue_url
from clearline_local.stack import aws_client

from .conftest import Stack, running_stack, settled_on
from .test_async import eventually, invoke, queue_drained, sample_event
from .test_checkout_browser import browser
from .test_dashboard import SCREENSHOTS

pytestmark = pytest.mark.integration
__all__ = ["browser"]  # the fixture, shared with the checkout's browser tests


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Settlement batches hold every movement of the day: this module's stack has only its own."""
    with running_stack(tmp_path_factory) as started:
        yield started


@pytest.fixture(scope="module")
def shop(own_stack: Stack) -> tuple[dict[str, Any], stripe.StripeClient]:
    merchant = own_stack.create_merchant("Settling Shop", fee_percent=3, fee_fixed=0)
    return merchant, stripe.StripeClient(
        merchant["secret_key"], base_addresses={"api": own_stack.url}
    )


def key() -> str:
    return str(uuid.uuid4())


def a_day_of_business(sdk: stripe.StripeClient) -> tuple[dict[str, list[str]], str]:
    """The day's movements that should settle, and the date they settle on."""
    return settled_on(lambda: business(sdk))


def business(sdk: stripe.StripeClient) -> dict[str, list[str]]:
    """Three captured charges, one captured later in part, one refund, one decline and one
    authorization left open: the movements that should settle are the captures and the refund."""
    captured = [
        sdk.v1.charges.create(
            params={"amount": 1000 + i, "currency": "usd", "source": "tok_visa"},
            options={"idempotency_key": key()},
        ).id
        for i in range(3)
    ]
    held = sdk.v1.charges.create(
        params={"amount": 5000, "currency": "usd", "source": "tok_visa", "capture": False},
        options={"idempotency_key": key()},
    )
    sdk.v1.charges.capture(held.id, params={"amount": 4000}, options={"idempotency_key": key()})
    refund = sdk.v1.refunds.create(
        params={"charge": captured[0], "amount": 300}, options={"idempotency_key": key()}
    )
    with pytest.raises(stripe.CardError):
        sdk.v1.charges.create(
            params={"amount": 700, "currency": "usd", "source": "tok_chargeDeclined"},
            options={"idempotency_key": key()},
        )
    sdk.v1.charges.create(
        params={"amount": 900, "currency": "usd", "source": "tok_visa", "capture": False},
        options={"idempotency_key": key()},
    )
    return {"captures": [*captured, held.id], "refunds": [refund.id]}


def drop_settlement_file(
    stack: Stack, tmp_path: Path, settles_on: str, *faults: str
) -> tuple[str, list[dict[str, str]]]:
    """`clearline settlements generate`, uploaded; returns the S3 key and the file's rows."""
    output = tmp_path / "settlement.csv"
    done = stack.clearline(
        "settlements", "generate", "--date", settles_on, "--output", str(output), *faults
    )
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip().splitlines()[-1].split(f"s3://{SETTLEMENT_BUCKET.name}/")[1]
    with output.open() as source:
        return key, list(csv.DictReader(source))


def report_for(stack: Stack, key: str, timeout: float = 60) -> dict[str, Any]:
    s3 = aws_client("s3", stack.info.aws_endpoint_url)
    report_key = "reports/" + key.removeprefix("settlements/") + ".json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            body = s3.get_object(Bucket=SETTLEMENT_BUCKET.name, Key=report_key)["Body"].read()
            return dict(json.loads(body))
        except s3.exceptions.NoSuchKey:
            time.sleep(0.3)
    raise AssertionError(f"no report for {key}")


def txn_of(row: dict[str, str]) -> str:
    if row["type"] == "capture":
        return derived_id("txn", row["charge_id"], "capture")
    return derived_id("txn", row["refund_id"], "refund")


def settlement_journals(stack: Stack, charge_ids: set[str]) -> list[dict[str, Any]]:
    return [
        j
        for c in charge_ids
        for j in stack.store().query_partition(f"CHARGE#{c}", "JOURNAL#")
        if j["operation"] == "settlement"
    ]


def mismatches_of(report: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [m for m in report["mismatches"] if m["kind"] == kind]


def test_a_clean_file_settles_every_row_once(
    own_stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient], tmp_path: Path
) -> None:
    _, sdk = shop
    day, settles_on = a_day_of_business(sdk)
    key, rows = drop_settlement_file(own_stack, tmp_path, settles_on)
    assert sorted(r["charge_id"] for r in rows if r["type"] == "capture") == sorted(day["captures"])
    assert [r["refund_id"] for r in rows if r["type"] == "refund"] == day["refunds"]
    report = report_for(own_stack, key)
    assert report["mismatches"] == []
    assert report["counts"] == {"matched": len(rows)}
    assert report["rows"] == len(rows)

    # Row by row: each movement has its settlement journal, and left the settlement's due
    # index for the one of money awaiting a payout.
    journals = settlement_journals(own_stack, {r["charge_id"] for r in rows})
    assert sorted(j["source"] for j in journals) == sorted(txn_of(r) for r in rows)
    for row in rows:
        txn = own_stack.store().get(f"TXN#{txn_of(row)}", "TXN")
        assert txn is not None and txn["settled_by"] == key and txn["settlement"] == "settled"
        assert txn["due_pk"].startswith("UNPAID#")

    # The merchant's share moved from pending to available.
    balance = sdk.v1.balance.retrieve()
    expected_net = sum(round(int(r["amount"]) * 0.97) for r in rows if r["type"] == "capture") - 300
    assert [b.amount for b in balance.available] == [expected_net]
    assert [b.amount for b in balance.pending] == [0]
    fees = ledger.account_balance(own_stack.store(), ledger.processor_fees("usd"))
    assert fees.debits_posted == sum(int(r["fee"]) for r in rows)

    # The same file delivered again (S3 and SQS deliver at least once) posts nothing.
    s3 = aws_client("s3", own_stack.info.aws_endpoint_url)
    etag = s3.head_object(Bucket=SETTLEMENT_BUCKET.name, Key=key)["ETag"].strip('"')
    sqs = aws_client("sqs", own_stack.info.aws_endpoint_url)
    notification = {
        "Records": [
            {
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": SETTLEMENT_BUCKET.name},
                    "object": {"key": key, "eTag": etag},
                },
            }
        ]
    }
    sqs.send_message(
        QueueUrl=queue_url(own_stack.info.aws_endpoint_url, SETTLEMENT_QUEUE.name),
        MessageBody=json.dumps(notification),
    )
    eventually(
        lambda: queue_drained(own_stack, SETTLEMENT_QUEUE.name),
        message="the notification delivered again",
    )
    assert len(settlement_journals(own_stack, {r["charge_id"] for r in rows})) == len(rows)

    verified = own_stack.clearline("ledger", "verify")
    assert verified.returncode == 0, verified.stdout
    status = own_stack.clearline("reconcile", "status")
    assert key in status.stdout and status.returncode == 0


FAULTS = [
    ("--extra-row", "missing_in_ledger"),
    ("--wrong-amount=2", "amount_mismatch"),
    ("--wrong-currency=3", "currency_mismatch"),
    ("--duplicate-row=1", "duplicate"),
    ("--missing-row=2", "missing_in_settlement"),
]


@pytest.mark.parametrize(("fault", "kind"), FAULTS, ids=[k for _, k in FAULTS])
def test_each_injected_fault_is_caught_and_posts_nothing_for_it(
    own_stack: Stack,
    shop: tuple[dict[str, Any], stripe.StripeClient],
    tmp_path: Path,
    fault: str,
    kind: str,
) -> None:
    _, sdk = shop
    day, settles_on = a_day_of_business(sdk)
    ours = set(day["captures"]) | {
        derived_id("txn", r, "refund") for r in day["refunds"]
    }  # names this scenario's movements
    key, rows = drop_settlement_file(own_stack, tmp_path, settles_on, fault)
    report = report_for(own_stack, key)

    # Earlier scenarios' unsettled movements are reported missing again (they still are);
    # this scenario's movements are not, except the one the fault dropped.
    def about_this_day(mismatch: dict[str, Any]) -> bool:
        if mismatch["kind"] != "missing_in_settlement":
            return True
        return any(name in mismatch["detail"] for name in ours)

    mine = [m for m in report["mismatches"] if about_this_day(m)]
    assert [m["kind"] for m in mine] == [kind], report["mismatches"]
    assert report["counts"]["matched"] == len(rows) - (0 if kind == "missing_in_settlement" else 1)
    unsettled = [
        r
        for r in rows
        if (own_stack.store().get(f"TXN#{txn_of(r)}", "TXN") or {}).get("settlement") == "unsettled"
    ]
    if kind in ("amount_mismatch", "currency_mismatch"):
        assert len(unsettled) == 1  # the mismatched row posted nothing
    verified = own_stack.clearline("ledger", "verify")
    assert verified.returncode == 0, verified.stdout


def test_the_reconciler_sample_reconciles_its_file(
    own_stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient], tmp_path: Path
) -> None:
    _, sdk = shop
    day, settles_on = a_day_of_business(sdk)
    output = tmp_path / "settlement.csv"
    done = own_stack.clearline(
        "settlements", "generate", "--date", settles_on, "--output", str(output), "--no-upload"
    )
    assert done.returncode == 0, done.stderr
    with output.open() as source:
        rows = list(csv.DictReader(source))
    assert len(rows) == len(day["captures"]) + len(day["refunds"])
    # Under a prefix the bucket does not announce: only the invocation below reconciles it.
    key = f"inbox/{settles_on}/batch_{uuid.uuid4().hex}.csv"
    s3 = aws_client("s3", own_stack.info.aws_endpoint_url)
    etag = s3.put_object(Bucket=SETTLEMENT_BUCKET.name, Key=key, Body=output.read_bytes())["ETag"]
    event = sample_event(
        tmp_path,
        "reconciler",
        {"settlements/2026/11/27/batch_sample.csv": key, "etag_sample": etag.strip('"')},
    )
    assert invoke(own_stack, "reconciler", event) == {"batchItemFailures": []}

    report = report_for(own_stack, key, timeout=5)
    assert report["rows"] == len(rows) and report["counts"]["matched"] == len(rows)
    ours = [txn_of(r) for r in rows]
    # Earlier scenarios' unsettled movements are reported missing again; nothing of this day.
    assert [
        m
        for m in report["mismatches"]
        if m["kind"] != "missing_in_settlement" or any(txn in m["detail"] for txn in ours)
    ] == []
    journals = settlement_journals(own_stack, {r["charge_id"] for r in rows})
    assert sorted(j["source"] for j in journals) == sorted(ours)
    for txn in ours:
        item = own_stack.store().get(f"TXN#{txn}", "TXN")
        assert item is not None and item["settled_by"] == key


def test_journey_resolve_a_mismatch_and_ledger_verify_still_passes(
    own_stack: Stack,
    shop: tuple[dict[str, Any], stripe.StripeClient],
    tmp_path: Path,
    browser: WebDriver,
) -> None:
    """An operator finds the file's amount mismatch in the dashboard, resolves it by an
    adjusting journal, and runs `ledger verify`: still balanced."""
    _, sdk = shop
    _, settles_on = a_day_of_business(sdk)
    key, rows = drop_settlement_file(own_stack, tmp_path, settles_on, "--wrong-amount=2")
    (found,) = mismatches_of(report_for(own_stack, key), "amount_mismatch")
    wrong = rows[found["row"] - 1]
    assert own_stack.store().get(f"TXN#{txn_of(wrong)}", "TXN")["settlement"] == "unsettled"

    link = own_stack.clearline("dashboard", "link", "--operations", shop[0]["id"])
    browser.get(link.stdout.strip().splitlines()[-1])
    wait = WebDriverWait(browser, 30)
    wait.until(expected_conditions.title_contains("Payments"))
    browser.find_element(By.LINK_TEXT, "Operations").click()
    wait.until(expected_conditions.title_contains("Operations"))
    files = browser.find_element(By.CSS_SELECTOR, "table.reports").text
    assert key.removeprefix("settlements/").split("/")[-1] in files
    rows_shown = browser.find_elements(By.CSS_SELECTOR, "#mismatch-list tbody tr")
    (mine,) = [r for r in rows_shown if f"row {found['row']}" in r.text and key in r.text]
    assert "amount mismatch" in mine.text and found["detail"] in mine.text
    row_id = mine.get_attribute("id")
    mine.find_element(By.NAME, "note").send_keys("Processor short-paid; written off (case 42)")
    mine.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(expected_conditions.presence_of_element_located((By.ID, "result")))
    assert browser.find_element(By.ID, "result").text.startswith("Resolved")
    resolved = browser.find_element(By.ID, str(row_id))
    assert "resolved" in resolved.text and "case 42" in resolved.text

    # The movement settled, once, at the processor's figure, and the ledger still balances.
    txn = own_stack.store().get(f"TXN#{txn_of(wrong)}", "TXN")
    assert txn["settlement"] == "settled" and txn["settled_by"] == key
    browser.find_element(By.CSS_SELECTOR, "#verify-form button").click()
    wait.until(expected_conditions.presence_of_element_located((By.ID, "verify-result")))
    assert browser.find_element(By.ID, "verify-result").text == "balanced"
    verified = own_stack.clearline("ledger", "verify")
    assert verified.returncode == 0, verified.stdout
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOTS / "dashboard-resolve-mismatch.png"))
