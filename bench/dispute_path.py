"""Disputes next to the charge path: what each writes (prints figures; asserts nothing).

Everything runs in this process: moto in-process with the topology's tables (and the
local stack's snapshot-free transactions), a sandbox processor, and the charge and
dispute services. A botocore hook on the store's client attributes every item written
(each Put, Update and Delete of a TransactWriteItems, and every PutItem, UpdateItem and
DeleteItem) to its partition-key prefix and to the phase that wrote it:

1. charges: N charges, every 1/rate-th on a dispute test card; items written and DynamoDB
   calls per charge, for the plain charges and for the ones about to be disputed;
2. disputes: each dispute the processor raises, received as its notification would be;
   items written per dispute by partition, and which charge items those writes touch;
3. charges again: N/10 more charges once disputes exist (none being received meanwhile).

Then `ledger.verify` checks the books, and the whole run's time is printed. The default
run (10,000 charges) takes minutes on moto: progress goes to stderr every 1,000 charges.

Usage: python bench/dispute_path.py [--charges N] [--dispute-rate R]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import requests
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import dynamodb_backends

from clearline import ledger
from clearline.audit import Caller
from clearline.charges import ChargeService, charge_pk
from clearline.config import WEBHOOK_SECRETS_KEY_ENV
from clearline.disputes import DisputeService
from clearline.merchants import create_merchant
from clearline.params import ChargeCreateParams
from clearline.processor import ProcessorClient, ProcessorDispute
from clearline.store import Store, deserialize
from clearline.topology import MAIN_TABLE, TOPOLOGY
from clearline_local import moto_transactions
from clearline_local.provision import provision_tables, provision_webhook_secrets_key
from clearline_local.sandbox_processor import SandboxProcessor

REGION = "us-east-1"
AMOUNT = 5000
PROGRESS_EVERY = 1000
DISPUTE_WAIT_SECONDS = 60.0
WRITE_OPERATIONS = ("PutItem", "UpdateItem", "DeleteItem")
ACTION_OF = {"PutItem": "Put", "UpdateItem": "Update", "DeleteItem": "Delete"}


@dataclass(frozen=True)
class Written:
    """One item written: (table, Put/Update/Delete, pk, sk)."""

    table: str
    action: str
    pk: str
    sk: str

    @property
    def prefix(self) -> str:
        """The partition key's prefix (CHARGE#, DISPUTE#, ACCOUNT#...)."""
        head, hash_, _ = self.pk.partition("#")
        return head + hash_

    @property
    def kind(self) -> str:
        """The partition prefix with the kind of item inside it: CHARGE#/AUDIT, ACCOUNT#/BALANCE."""
        return f"{self.prefix}/{self.sk.partition('#')[0]}"


@dataclass
class Recorder:
    """Every DynamoDB call and item written since the last `take`, and per-phase totals."""

    phase: str = "setup"
    calls: Counter[str] = field(default_factory=Counter)
    writes: list[Written] = field(default_factory=list)
    by_phase: dict[str, Counter[str]] = field(default_factory=dict)
    shards: dict[str, set[str]] = field(default_factory=dict)  # phase -> ACCOUNT# pks written

    def hook(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        operation = model.name
        self.calls[operation] += 1
        if operation == "TransactWriteItems":
            parts = [(a, body) for w in params["TransactItems"] for a, body in w.items()]
        elif operation in WRITE_OPERATIONS:
            parts = [(ACTION_OF[operation], params)]
        else:
            return
        for action, body in parts:
            if action == "ConditionCheck":
                continue  # checked, not written
            key = deserialize(body.get("Key") or body["Item"])
            written = Written(body["TableName"], action, str(key["pk"]), str(key.get("sk", "")))
            self.writes.append(written)
            self.by_phase.setdefault(self.phase, Counter())[written.kind] += 1
            if written.prefix == "ACCOUNT#":
                self.shards.setdefault(self.phase, set()).add(written.pk)

    def take(self) -> tuple[Counter[str], list[Written]]:
        calls, writes = self.calls, self.writes
        self.calls, self.writes = Counter(), []
        return calls, writes


class TableReadStore(Store):
    """The store, but a scan reads moto's table in memory rather than through the Scan API:
    moto sorts the whole table again for every 1 MB page, which makes a full scan take
    minutes at 10,000 charges. Only the ledger check reads through it, and what it
    yields is what Scan returns: every item, in the wire format, deserialized as usual."""

    def scan(self, prefix: str | None = None) -> Iterator[dict[str, Any]]:
        table = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].get_table(self.table_name)
        for item in table.all_items():
            raw = item.to_json()["Attributes"]
            if not prefix or raw["pk"]["S"].startswith(prefix):
                yield deserialize(raw)


def p99(values: list[int]) -> int:
    """Nearest-rank 99th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def spread(values: list[int]) -> str:
    if not values:
        return "(none)"
    return (
        f"mean {statistics.fmean(values):6.2f}  median {statistics.median(values):5g}  "
        f"p99 {p99(values):3d}  (n={len(values)})"
    )


@dataclass
class ChargeRun:
    ids: list[str] = field(default_factory=list)
    disputed: set[str] = field(default_factory=set)
    items: dict[str, int] = field(default_factory=dict)  # charge -> items written
    calls: dict[str, int] = field(default_factory=dict)  # charge -> DynamoDB calls
    operations: Counter[str] = field(default_factory=Counter)
    foreign_writes: int = 0  # items written in another charge's partition
    dispute_writes: int = 0  # items written in a DISPUTE# partition
    seconds: float = 0.0


def run_charges(
    service: ChargeService,
    caller: Caller,
    recorder: Recorder,
    count: int,
    every: int | None,
    label: str,
) -> ChargeRun:
    """`count` charges, the `every`-th on a dispute test card (none when `every` is None)."""
    run = ChargeRun()
    recorder.take()
    started = time.perf_counter()
    for i in range(count):
        disputed = every is not None and i % every == every - 1
        params = ChargeCreateParams(
            amount=AMOUNT, currency="usd", source="tok_createDispute" if disputed else "tok_visa"
        )
        charge_id = service.create(caller, params, idempotency_key=str(uuid.uuid4())).id
        calls, writes = recorder.take()
        run.ids.append(charge_id)
        if disputed:
            run.disputed.add(charge_id)
        run.items[charge_id] = len(writes)
        run.calls[charge_id] = sum(calls.values())
        run.operations.update(calls)
        own = charge_pk(charge_id)
        run.foreign_writes += sum(w.prefix == "CHARGE#" and w.pk != own for w in writes)
        run.dispute_writes += sum(w.prefix == "DISPUTE#" for w in writes)
        if (i + 1) % PROGRESS_EVERY == 0:
            elapsed = time.perf_counter() - started
            print(f"  {label}: {i + 1}/{count} charges, {elapsed:.0f} s", file=sys.stderr)
    run.seconds = time.perf_counter() - started
    return run


@dataclass
class DisputeRun:
    opened: int = 0
    items: list[int] = field(default_factory=list)
    by_kind: Counter[str] = field(default_factory=Counter)
    own_charge_item_updates: Counter[int] = field(default_factory=Counter)  # updates -> disputes
    own_partition_writes: int = 0  # items in the disputed charge's partition (audit, journal)
    other_charge_writes: int = 0  # items in any other charge's partition
    later_charge_writes: int = 0  # ... of which in a charge created after the disputed one
    receive_seconds: float = 0.0
    wait_seconds: float = 0.0


def await_dispute(
    processor_url: str, charge_id: str, known: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The processor's dispute of `charge_id`, polling its sandbox list until it is open.
    `known` caches the last list (reference -> record)."""
    deadline = time.monotonic() + DISPUTE_WAIT_SECONDS
    while charge_id not in known:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the processor raised no dispute of {charge_id}")
        answer = requests.get(f"{processor_url}/_sandbox/disputes", timeout=30)
        answer.raise_for_status()
        known.update({r["reference"]: r for r in answer.json()["data"] if r["reference"]})
        if charge_id not in known:
            time.sleep(0.01)
    return known[charge_id]


def run_disputes(
    service: DisputeService, recorder: Recorder, processor_url: str, charges: ChargeRun
) -> DisputeRun:
    run = DisputeRun()
    position = {charge_id: i for i, charge_id in enumerate(charges.ids)}
    known: dict[str, dict[str, Any]] = {}
    for charge_id in charges.ids:
        if charge_id not in charges.disputed:
            continue
        waited = time.perf_counter()
        record = await_dispute(processor_url, charge_id, known)
        recorder.take()
        started = time.perf_counter()
        service.receive(ProcessorDispute.model_validate(record))
        done = time.perf_counter()
        run.wait_seconds += started - waited
        run.receive_seconds += done - started
        _, writes = recorder.take()
        run.opened += 1
        run.items.append(len(writes))
        run.by_kind.update(w.kind for w in writes)
        own = charge_pk(charge_id)
        run.own_charge_item_updates[
            sum(w.pk == own and w.sk == "CHARGE" and w.action == "Update" for w in writes)
        ] += 1
        run.own_partition_writes += sum(w.pk == own for w in writes)
        for w in writes:
            if w.prefix == "CHARGE#" and w.pk != own:
                run.other_charge_writes += 1
                other = w.pk.removeprefix("CHARGE#")
                run.later_charge_writes += position.get(other, -1) > position[charge_id]
    return run


def charge_lines(title: str, run: ChargeRun) -> list[str]:
    plain = [n for c, n in run.items.items() if c not in run.disputed]
    to_dispute = [n for c, n in run.items.items() if c in run.disputed]
    count = len(run.ids)
    calls = {op: round(n / count, 2) for op, n in sorted(run.operations.items())}
    lines = [
        f"{title}: {count} charges of {AMOUNT} usd in {run.seconds:.1f} s "
        f"= {count / run.seconds:.1f} charges/s",
        f"  items written per plain charge          : {spread(plain)}",
    ]
    if run.disputed:
        lines.append(f"  items written per charge to be disputed : {spread(to_dispute)}")
    lines += [
        f"  DynamoDB calls per charge               : {spread(list(run.calls.values()))}",
        f"    by operation (calls/charge)           : {calls}",
        f"  items written in another charge's partition: {run.foreign_writes}; "
        f"in a DISPUTE# partition: {run.dispute_writes}",
    ]
    return lines


def dispute_lines(run: DisputeRun, shards: dict[str, set[str]]) -> list[str]:
    if not run.opened:
        return ["disputes: none opened"]
    kinds: dict[str, Counter[str]] = {}
    for kind, n in run.by_kind.items():
        prefix, _, item = kind.partition("/")
        kinds.setdefault(prefix, Counter())[item] += n
    updates = ", ".join(
        f"{k} update(s) in {n} of {run.opened}"
        for k, n in sorted(run.own_charge_item_updates.items())
    )
    by_dispute, by_charge = shards.get("disputes", set()), shards.get("charges", set())
    lines = [
        f"disputes: {run.opened} opened in {run.receive_seconds:.2f} s of receive() = "
        f"{run.opened / run.receive_seconds:.1f} disputes/s "
        f"(plus {run.wait_seconds:.2f} s polling the processor for them)",
        f"  items written per dispute               : {spread(run.items)}",
        "  by partition prefix (items/dispute)     :",
    ]
    for prefix, items in sorted(kinds.items()):
        detail = ", ".join(f"{k} {n / run.opened:.2f}" for k, n in sorted(items.items()))
        lines.append(f"    {prefix:10} {sum(items.values()) / run.opened:5.2f}  ({detail})")
    lines += [
        f"  the disputed charge's own CHARGE item   : {updates} disputes",
        f"  items in the disputed charge's partition: {run.own_partition_writes / run.opened:.2f}"
        " per dispute",
        f"  items in any other charge's partition   : {run.other_charge_writes} "
        f"(of which in charges created after the disputed one: {run.later_charge_writes})",
        f"  ledger balance shards (ACCOUNT#) written: {len(by_dispute)} distinct, "
        f"{len(by_dispute & by_charge)} of them also written by charges (of "
        f"{len(by_charge)} the charges wrote)",
    ]
    return lines


def phase_lines(by_phase: dict[str, Counter[str]]) -> list[str]:
    """Items written in each phase, by partition prefix."""
    totals: dict[str, Counter[str]] = {}
    for phase, kinds in by_phase.items():
        for kind, n in kinds.items():
            totals.setdefault(phase, Counter())[kind.partition("/")[0]] += n
    prefixes = sorted({p for counts in totals.values() for p in counts})
    lines = [
        "items written by phase and partition prefix:",
        f"  {'phase':14}" + "".join(f"{p:>11}" for p in prefixes) + f"{'total':>9}",
    ]
    for phase, counts in totals.items():
        cells = "".join(f"{counts[p]:11d}" for p in prefixes)
        lines.append(f"  {phase:14}{cells}{sum(counts.values()):9d}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--charges", type=int, default=10_000)
    parser.add_argument("--dispute-rate", type=float, default=0.01)
    args = parser.parse_args()
    if not 0 < args.dispute_rate <= 1:
        parser.error("--dispute-rate must be in (0, 1]")
    every = max(1, round(1 / args.dispute_rate))
    began = time.perf_counter()

    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
    )
    os.environ.pop("AWS_ENDPOINT_URL", None)
    # One thread calls DynamoDB here, so moto's transactions can skip their whole-table
    # snapshot (O(items in the table) each), as the local stack's serialized server does.
    moto_transactions.install()
    recorder = Recorder()
    with mock_aws(), SandboxProcessor() as processor:
        client = boto3.client("dynamodb", region_name=REGION)
        provision_tables(TOPOLOGY, client)
        kms = boto3.client("kms", region_name=REGION)
        os.environ[WEBHOOK_SECRETS_KEY_ENV] = provision_webhook_secrets_key(kms)
        processor.dispute_delay_seconds = 0.01
        store = Store(MAIN_TABLE.name, client)
        merchant = create_merchant(store, "Dispute Bench").merchant
        caller = Caller(merchant, "req_bench")
        processor_client = ProcessorClient(processor.url)
        charges = ChargeService(store, processor_client)
        disputes = DisputeService(store, processor_client)
        client.meta.events.register("provide-client-params.dynamodb.*", recorder.hook)

        recorder.phase = "charges"
        first = run_charges(charges, caller, recorder, args.charges, every, "charges")
        recorder.phase = "disputes"
        opened = run_disputes(disputes, recorder, processor.url, first)
        recorder.phase = "charges again"
        again = run_charges(charges, caller, recorder, max(1, args.charges // 10), None, "again")
        recorder.phase = "verify"
        print("  verifying the ledger", file=sys.stderr)
        checking = time.perf_counter()
        verified = ledger.verify(TableReadStore(MAIN_TABLE.name, client))
        verify_seconds = time.perf_counter() - checking

    lines = [
        f"dispute path on {os.cpu_count()} cores, moto in-process, sandbox processor; "
        f"1 in {every} charges disputed",
        *charge_lines("charges", first),
        *dispute_lines(opened, recorder.shards),
        *charge_lines("charges again (disputes exist, none being received)", again),
    ]
    first_plain = [n for c, n in first.items.items() if c not in first.disputed]
    if first_plain:
        lines.append(
            f"items written per charge, before vs after disputes: "
            f"{statistics.fmean(first_plain):.2f} vs {statistics.fmean(again.items.values()):.2f}"
        )
    lines += [
        *phase_lines(recorder.by_phase),
        f"ledger.verify(store).ok: {verified.ok} ({verified.journals} journals, "
        f"{verified.charges} charges, {len(verified.violations)} violations; "
        f"{verify_seconds:.0f} s)",
        f"whole run: {time.perf_counter() - began:.0f} s",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
