"""Reconciler throughput and memory on settlement files of 10,000 and 100,000 rows, against
a ledger seeded to match, next to a bare `csv.reader` pass over the same files.

moto runs in a separate process (the local stack's serialized server), so the memory
figure is the reconciler's own: the peak traced by tracemalloc in this process while it
reconciles, which must not grow with the file. DynamoDB calls are counted with a botocore
hook on the reconciler's client; rows settle a dozen to a transaction (8 items each, at
most 100 items), and are looked up 100 to a BatchGetItem. Throughput is bounded by moto;
the modelled time puts each call at 10 ms, as DynamoDB's round trip from a Lambda.

The same file is then reconciled again, from a fresh ledger, fanned out: planned into
chunks of --chunk-bytes at line ends, and the chunks settled by --workers threads, each
with a ranged read of the file (chunk results kept in memory here; the handler keeps them
in S3, two requests a chunk). moto answers one request at a time, so workers do not add
throughput here; the modelled time runs the chunks 10 at a time, as the reconciler's
queue allows.

Usage: python bench/reconcile.py [--rows 10000 100000] [--chunk-bytes N] [--workers N]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from clearline import balance
from clearline.ids import derived_id
from clearline.reconciliation import (
    COLUMNS,
    DEFAULT_CHUNK_BYTES,
    Chunk,
    Reconciler,
    Report,
    plan_chunks,
)
from clearline.store import Store, serialize
from clearline.topology import MAIN_TABLE, TOPOLOGY
from clearline_local.provision import provision_tables
from clearline_local.stack import aws_client, free_port

MODELLED_ROWS = 100_000
MODELLED_CALL_SECONDS = 0.010  # a DynamoDB call's round trip, transactions included
PARALLEL_CHUNKS = 10  # the reconciler's queue's maximum concurrency

MOTO = """
import logging, sys, threading
from clearline_local.stack import SerializedMotoServer
logging.getLogger("werkzeug").setLevel(logging.WARNING)
SerializedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False).start()
threading.Event().wait()
"""


def seed(store: Store, rows: int, now: float) -> None:
    """One captured movement per row, as the charge path writes it."""
    items = []
    for n in range(rows):
        charge = f"ch_bench{n:07d}"
        items.extend(
            balance.transaction_items(
                derived_id("txn", charge, "capture"),
                merchant_id="acct_bench",
                kind="charge",
                source=charge,
                amount=5000,
                fee=175,
                currency="usd",
                now=now,
            )
        )
    for start in range(0, len(items), 25):
        store.client.batch_write_item(
            RequestItems={
                store.table_name: [
                    {"PutRequest": {"Item": serialize(i)}} for i in items[start : start + 25]
                ]
            }
        )


def write_file(path: Path, rows: int, settlement_date: dt.date) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for n in range(rows):
            writer.writerow(
                [
                    settlement_date.isoformat(),
                    "batch_bench",
                    f"pa_{n:07d}",
                    "capture",
                    5000,
                    75,
                    4925,
                    "usd",
                    f"ch_bench{n:07d}",
                    "",
                ]
            )


def bare_pass(path: Path) -> float:
    started = time.perf_counter()
    with path.open(newline="") as source:
        count = sum(1 for _ in csv.reader(source))
    assert count > 0
    return time.perf_counter() - started


class Results:
    def __init__(self) -> None:
        self.saved: dict[int, dict[str, object]] = {}

    def save(self, index: int, partial: dict[str, object]) -> None:
        self.saved[index] = partial

    def load(self, index: int) -> dict[str, object]:
        return self.saved[index]


def whole(reconciler: Reconciler, path: Path) -> Report:
    with path.open(newline="") as source:
        return reconciler.reconcile(source, file=path.name, etag="bench")


def fanned_out(
    reconciler: Reconciler, path: Path, chunk_bytes: int, workers: int
) -> tuple[Report, list[Chunk], float]:
    """The file planned (timed alone), then its chunks settled by `workers` threads."""
    started = time.perf_counter()
    with path.open("rb") as source:
        chunks = reconciler.fan_out(path.name, "bench", lambda: plan_chunks(source, chunk_bytes))
    planning = time.perf_counter() - started
    assert chunks
    results = Results()

    def settle(chunk: Chunk) -> Report | None:
        with path.open("rb") as source:
            source.seek(chunk.start)
            text = source.read(chunk.end - chunk.start + 1).decode()
        return reconciler.reconcile_chunk(
            text.splitlines(), file=path.name, etag="bench", chunk=chunk, results=results
        )

    with ThreadPoolExecutor(workers) as pool:
        (report,) = [r for r in pool.map(settle, chunks) if r is not None]
    return report, chunks, planning


def run(rows: int, workdir: Path, chunk_bytes: int | None, workers: int) -> str:
    now = time.time()
    settlement_date = dt.datetime.fromtimestamp(now, dt.UTC).date() + dt.timedelta(days=2)
    path = workdir / f"settlement_{rows}.csv"
    write_file(path, rows, settlement_date)
    port = free_port()
    moto = subprocess.Popen([sys.executable, "-c", MOTO, str(port)])
    try:
        client = aws_client("dynamodb", f"http://127.0.0.1:{port}")
        for _ in range(100):  # until the server answers
            try:
                client.list_tables()
                break
            except Exception:
                time.sleep(0.1)
        provision_tables(TOPOLOGY, client)
        store = Store(MAIN_TABLE.name, client)
        seed(store, rows, now)
        calls: Counter[str] = Counter()
        client.meta.events.register(
            "provide-client-params.dynamodb.*",
            lambda model, **_: calls.update([model.name]),
        )
        tracemalloc.start()
        started = time.perf_counter()
        chunks: list[Chunk] = []
        planning = 0.0
        if chunk_bytes is None:
            report = whole(Reconciler(store), path)
        else:
            report, chunks, planning = fanned_out(Reconciler(store), path, chunk_bytes, workers)
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        moto.kill()
    assert report.counts["matched"] == rows, report.counts
    per_row = sum(calls.values()) / rows
    modelled_calls = per_row * MODELLED_ROWS * MODELLED_CALL_SECONDS
    figures = (
        f"{rows} rows in {seconds:.1f} s, {rows / seconds:.0f} rows/s, "
        f"{per_row:.3f} DynamoDB calls per row, peak {peak / 2**20:.1f} MiB "
        f"{json.dumps(dict(sorted(calls.items())))}"
    )
    if chunk_bytes is None:
        return (
            f"reconcile: {figures}\n"
            f"  modelled: {MODELLED_ROWS:,} rows at {MODELLED_CALL_SECONDS * 1000:.0f} ms per "
            f"DynamoDB call: {modelled_calls:.0f} s in calls, one after another\n"
            f"  bare csv.reader over the same file: {rows / bare_pass(path):.0f} rows/s"
        )
    # 100,000 rows in chunks of the reconciler's size, run PARALLEL_CHUNKS at a time; the
    # plan's pass over the file scaled to that size.
    rows_per_chunk = rows * DEFAULT_CHUNK_BYTES / path.stat().st_size
    chunks_100k = math.ceil(MODELLED_ROWS / rows_per_chunk)
    rounds = math.ceil(chunks_100k / PARALLEL_CHUNKS)
    chunk_seconds = per_row * rows_per_chunk * MODELLED_CALL_SECONDS
    planning_100k = planning * MODELLED_ROWS / rows
    return (
        f"reconcile fanned out: {figures}\n"
        f"  {len(chunks)} chunks of {chunk_bytes:,} bytes, {workers} workers; "
        f"planning pass {planning * 1000:.0f} ms\n"
        f"  modelled: {MODELLED_ROWS:,} rows in {chunks_100k} chunks of {DEFAULT_CHUNK_BYTES:,} "
        f"bytes, {PARALLEL_CHUNKS} at a time: {rounds} x {chunk_seconds:.1f} s + planning "
        f"{planning_100k:.1f} s = {rounds * chunk_seconds + planning_100k:.0f} s in calls "
        f"(one after another: {modelled_calls:.0f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--chunk-bytes", type=int, default=DEFAULT_CHUNK_BYTES // 4)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        for rows in args.rows:
            print(run(rows, Path(workdir), None, 1), flush=True)
            print(run(rows, Path(workdir), args.chunk_bytes, args.workers), flush=True)


if __name__ == "__main__":
    main()
