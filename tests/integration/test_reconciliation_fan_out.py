"""A settlement file fanned out in chunks, over a local stack of its own whose reconciler
splits anything over a few rows: the processor's file dropped in the bucket, its chunks
sent back on the settlement queue and settled by the reconciler's instances, and the report
written by the chunk that completed it. Then a chunk delivered again, and a file with
mismatches in different chunks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe

from clearline.topology import SETTLEMENT_BUCKET, SETTLEMENT_QUEUE
from clearline_local.environment import queue_url
from clearline_local.stack import aws_client

from .conftest import Stack, running_stack, settled_on
from .test_async import eventually, queue_drained
from .test_reconciliation import (
    business,
    drop_settlement_file,
    report_for,
    settlement_journals,
    txn_of,
)

pytestmark = pytest.mark.integration

CHUNK_BYTES = 300  # two or three rows of the processor's file


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = {"CLEARLINE_RECONCILE_CHUNK_BYTES": str(CHUNK_BYTES)}
    with running_stack(tmp_path_factory, settings=settings) as started:
        yield started


@pytest.fixture(scope="module")
def sdk(own_stack: Stack) -> stripe.StripeClient:
    merchant = own_stack.create_merchant("Chunked Shop", fee_percent=3, fee_fixed=0)
    return stripe.StripeClient(merchant["secret_key"], base_addresses={"api": own_stack.url})


def two_days_of_business(sdk: stripe.StripeClient) -> dict[str, list[str]]:
    first, second = business(sdk), business(sdk)
    return {kind: first[kind] + second[kind] for kind in first}


def chunk_results(stack: Stack, key: str) -> list[dict[str, Any]]:
    s3 = aws_client("s3", stack.info.aws_endpoint_url)
    prefix = "chunks/" + key.removeprefix("settlements/") + "/"
    listed = s3.list_objects_v2(Bucket=SETTLEMENT_BUCKET.name, Prefix=prefix)
    return [
        json.loads(s3.get_object(Bucket=SETTLEMENT_BUCKET.name, Key=o["Key"])["Body"].read())
        for o in sorted(listed.get("Contents", []), key=lambda o: o["Key"])
    ]


def marker_of(stack: Stack, key: str) -> dict[str, Any]:
    s3 = aws_client("s3", stack.info.aws_endpoint_url)
    etag = s3.head_object(Bucket=SETTLEMENT_BUCKET.name, Key=key)["ETag"].strip('"')
    marker = stack.store().get(f"RECON#{key}", etag)
    assert marker is not None
    return marker


def test_a_large_file_is_settled_in_chunks_each_row_once(
    own_stack: Stack, sdk: stripe.StripeClient, tmp_path: Path
) -> None:
    day, settles_on = settled_on(lambda: two_days_of_business(sdk))
    key, rows = drop_settlement_file(own_stack, tmp_path, settles_on)
    assert len(rows) == len(day["captures"]) + len(day["refunds"]) == 10
    report = report_for(own_stack, key)
    assert report["mismatches"] == []
    assert (report["rows"], report["counts"]) == (10, {"matched": 10})
    assert report["chunks"] >= 4  # ~100 bytes a row, 300 to a chunk

    marker = marker_of(own_stack, key)
    assert (marker["status"], marker["chunks"], marker["chunks_done"]) == (
        "done",
        report["chunks"],
        report["chunks"],
    )
    # Each chunk's result is kept beside the report; together they are its rows.
    results = chunk_results(own_stack, key)
    assert len(results) == report["chunks"]
    assert sum(r["rows"] for r in results) == 10
    for row in rows:
        txn = own_stack.store().get(f"TXN#{txn_of(row)}", "TXN")
        assert txn is not None and txn["settled_by"] == key and txn["settlement"] == "settled"
    journals = settlement_journals(own_stack, {r["charge_id"] for r in rows})
    assert sorted(j["source"] for j in journals) == sorted(txn_of(r) for r in rows)
    (balance,) = sdk.v1.balance.retrieve().available
    captured = sum(round(int(r["amount"]) * 0.97) for r in rows if r["type"] == "capture")
    refunded = sum(abs(int(r["amount"])) for r in rows if r["type"] == "refund")
    assert balance.amount == captured - refunded

    # SQS delivers a chunk again after the file is done: it settles nothing twice.
    sqs = aws_client("sqs", own_stack.info.aws_endpoint_url)
    plan = marker["plan"]
    chunk = {"file": key, "etag": marker["sk"], **plan[1]}
    sqs.send_message(
        QueueUrl=queue_url(own_stack.info.aws_endpoint_url, SETTLEMENT_QUEUE.name),
        MessageBody=json.dumps({"chunk": chunk}),
    )
    eventually(
        lambda: queue_drained(own_stack, SETTLEMENT_QUEUE.name),
        message="the chunk delivered again",
    )
    assert len(settlement_journals(own_stack, {r["charge_id"] for r in rows})) == 10
    assert marker_of(own_stack, key)["chunks_done"] == report["chunks"]
    verified = own_stack.clearline("ledger", "verify")
    assert verified.returncode == 0, verified.stdout


def test_mismatches_in_any_chunk_reach_the_report(
    own_stack: Stack, sdk: stripe.StripeClient, tmp_path: Path
) -> None:
    _, settles_on = settled_on(lambda: two_days_of_business(sdk))
    key, rows = drop_settlement_file(
        own_stack, tmp_path, settles_on, "--duplicate-row=1", "--wrong-amount=8"
    )
    report = report_for(own_stack, key)
    assert report["chunks"] > 1
    # Row 8 is in a later chunk than row 1, and its duplicate at the end in the last.
    kinds = sorted((m["kind"], m["row"]) for m in report["mismatches"])
    assert kinds == [("amount_mismatch", 8), ("duplicate", len(rows))]
    assert report["counts"]["matched"] == len(rows) - 2
    verified = own_stack.clearline("ledger", "verify")
    assert verified.returncode == 0, verified.stdout
