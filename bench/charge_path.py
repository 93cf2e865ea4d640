"""Charge path figures on this machine (prints them; asserts nothing).

- charges per second through the local stack's front door, with 1 and 8 clients;
- DynamoDB calls per charge, capture and refund, counted with a botocore event hook on the
  api handler run in this process against the same moto server;
- the same for a charge in euros that converts into the merchant's dollars (the stored
  rates read, two linked journals written);
- raw boto3 making the writes a charge makes (two TransactWriteItems, of 3 and 14 items
  of the same sizes) on the same moto server, with as many clients: the local stack's
  charges/s over that rate is the ratio printed.

Usage: python bench/charge_path.py [--charges N] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from in_process_api import InProcessApi

from clearline.merchants import create_merchant
from clearline.store import Store
from clearline_local.stack import LocalStack, aws_client

BODY = b"amount=5000&currency=usd&source=tok_visa"
CONVERTED_BODY = b"amount=5000&currency=eur&source=tok_visa"
HOLD_BODY = b"amount=5000&currency=usd&source=tok_visa&capture=false"


def throughput(url: str, secret: str, clients: int, charges: int, body: bytes = BODY) -> float:
    session = requests.Session()

    def one(_: int) -> None:
        response = session.post(
            f"{url}/v1/charges",
            data=body,
            auth=(secret, ""),
            timeout=60,
            headers={
                "Idempotency-Key": str(uuid.uuid4()),
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        response.raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(one, range(charges)))
    return charges / (time.perf_counter() - started)


# A charge's transactions: the write-ahead (the charge, its index item, the key's claim) and
# the commit (the charge, audit, events, journal, balance shards, balance transaction and
# index items, and the key's answer), as (items, bytes of padding each: the items less
# their keys).
CHARGE_TRANSACTIONS = ((3, 850), (14, 780))


def raw_boto3_rate(endpoint: str, table: str, clients: int, charges: int) -> float:
    """Charges' worth of writes a second, made with boto3 alone: no api, no processor."""
    dynamodb = aws_client("dynamodb", endpoint)

    def one(_: int) -> None:
        for items, size in CHARGE_TRANSACTIONS:
            dynamodb.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": table,
                            "Item": {
                                "pk": {"S": f"BENCH#{uuid.uuid4()}"},
                                "sk": {"S": "RAW"},
                                "padding": {"S": "x" * size},
                            },
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    }
                    for _ in range(items)
                ]
            )

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(one, range(charges)))
    return charges / (time.perf_counter() - started)


def dynamodb_calls_per_operation(
    stack: LocalStack, secret: str, runs: int
) -> dict[str, Counter[str]]:
    """Per operation, the calls it makes, over `runs` of each. One handler (it is loaded once
    per process, and its client takes the hook when it is built), counting into the
    operation at hand; the calls that set an operation up are not counted."""
    counts: dict[str, Counter[str]] = {}
    current: list[Counter[str]] = [Counter()]
    api = InProcessApi(stack, secret, lambda operation, _: current[-1].update([operation]))

    def counted(label: str, path: str, body: bytes) -> dict[str, Any]:
        current.append(counts.setdefault(label, Counter()))
        try:
            return json.loads(api.post(path, body)["body"])
        finally:
            current.pop()

    for _ in range(runs):
        counted("charge", "/v1/charges", BODY)
        counted("charge (eur into usd)", "/v1/charges", CONVERTED_BODY)
        held = json.loads(api.post("/v1/charges", HOLD_BODY)["body"])["id"]
        counted("capture", f"/v1/charges/{held}/capture", b"")
        counted("refund", "/v1/refunds", f"charge={held}&amount=1000".encode())
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--charges", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4, help="api execution environments")
    args = parser.parse_args()

    # Request logs off: the figures are for the charge path, not for writing to a terminal.
    quiet = {"POWERTOOLS_LOG_LEVEL": "WARNING"}
    stack = LocalStack(port=0, workers=args.workers, extra_environment=quiet)
    info = stack.start()
    try:
        store = Store(info.main_table, aws_client("dynamodb", info.aws_endpoint_url))
        secret = create_merchant(store, "Bench").secret_key
        throughput(info.api_url, secret, 4, 20)  # warm every worker
        # The workers print metrics as they go: collect the figures, print them at the end.
        lines = [f"charge path on {os.cpu_count()} cores, {args.workers} api workers, moto server"]
        # Side by side, one client each: a charge in dollars, one in euros converted.
        for label, body, clients in (
            ("", BODY, 1),
            (", eur into usd", CONVERTED_BODY, 1),
            ("", BODY, 8),
        ):
            rate = throughput(info.api_url, secret, clients, args.charges, body)
            line = f"  {clients} client(s){label}: {rate:7.1f} charges/s over {args.charges}"
            if not label:  # taking turns with raw boto3 making the same writes
                raw = raw_boto3_rate(info.aws_endpoint_url, info.main_table, clients, args.charges)
                line += f"; raw boto3 {raw:6.1f}/s, ratio {rate / raw:.2f}"
            lines.append(line)
        for label, calls in dynamodb_calls_per_operation(stack, secret, 20).items():
            per_operation = {name: count / 20 for name, count in sorted(calls.items())}
            lines.append(
                f"  DynamoDB calls per {label}: {sum(per_operation.values()):.1f} "
                f"{json.dumps(per_operation)}"
            )
    finally:
        stack.stop()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
