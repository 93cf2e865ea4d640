"""Fault schedules for the money path, many more than `make test` runs (prints figures).

Every fault at every step of each operation, then N seeded random schedules, each checked
against the sandbox processor's books (see clearline_local/fault_harness.py). Prints how
many schedules ran and how many invariants held; exits 1 if any did not.

Usage: python bench/fault_schedules.py [--seeds N] [--first-seed S]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import boto3
from moto import mock_aws

from clearline.topology import MAIN_TABLE, TOPOLOGY
from clearline_local.fault_harness import OPERATIONS, Harness
from clearline_local.provision import provision_tables


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=300)
    parser.add_argument("--first-seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    started = time.perf_counter()
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        provision_tables(TOPOLOGY, client)
        harness = Harness(client, MAIN_TABLE.name)
        try:
            for operation in OPERATIONS:
                for capture in (True, False) if operation == "charge" else (True,):
                    for schedule in harness.exhaustive(operation, capture=capture):
                        harness.run(schedule)
            exhaustive = harness.outcome.schedules
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                harness.run(Harness.random(seed))
            harness.verify_ledger()
        finally:
            harness.close()
    outcome = harness.outcome
    held = outcome.invariants_checked - len(outcome.violations)
    print(
        f"fault schedules run: {outcome.schedules} ({exhaustive} exhaustive, {args.seeds} seeded)"
    )
    print(f"invariants held: {held} of {outcome.invariants_checked}")
    print(f"seconds: {time.perf_counter() - started:.1f}")
    for violation in outcome.violations[:20]:
        print(f"  violated: {violation}")
    return 1 if outcome.violations else 0


if __name__ == "__main__":
    sys.exit(main())
