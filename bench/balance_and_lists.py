"""What a balance and a list page cost (prints figures; asserts nothing).

The api handler runs in this process against a local stack's moto server, counting its
DynamoDB calls with a botocore hook, for `GET /v1/balance` and the first page of charges,
events, balance transactions and disputes of a merchant with some history. A balance sums
every shard of the merchant's two accounts (pending and available) in each of its
settlement currencies; a list page merges a query of each shard of the list's index, in
parallel: 32 for charges, 64 for events, 4 for kinds made far less often (disputes here).

Usage: python bench/balance_and_lists.py [--charges N] [--reads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter

from in_process_api import InProcessApi

from clearline.merchants import create_merchant
from clearline.store import Store
from clearline_local.stack import LocalStack, aws_client

READS = {
    "GET /v1/balance": "/v1/balance",
    "GET /v1/charges?limit=10": "/v1/charges?limit=10",
    "GET /v1/events?limit=10": "/v1/events?limit=10",
    "GET /v1/balance_transactions?limit=10": "/v1/balance_transactions?limit=10",
    "GET /v1/disputes?limit=10": "/v1/disputes?limit=10",
}


def measured(api: InProcessApi, current: list[Counter[str]], path: str, reads: int) -> str:
    calls: Counter[str] = Counter()
    took = []
    for _ in range(reads):
        current.append(calls)
        started = time.perf_counter()
        try:
            api.get(path)
        finally:
            took.append(time.perf_counter() - started)
            current.pop()
    per_read = {name: count / reads for name, count in sorted(calls.items())}
    return (
        f"{sum(per_read.values()):5.1f} DynamoDB calls, median "
        f"{statistics.median(took) * 1000:6.1f} ms {per_read}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--charges", type=int, default=30, help="history made first")
    parser.add_argument("--reads", type=int, default=5, help="reads of each, timed")
    args = parser.parse_args()

    stack = LocalStack(port=0, workers=1, extra_environment={"POWERTOOLS_LOG_LEVEL": "WARNING"})
    info = stack.start()
    try:
        store = Store(info.main_table, aws_client("dynamodb", info.aws_endpoint_url))
        secret = create_merchant(store, "Bench").secret_key
        current: list[Counter[str]] = [Counter()]
        api = InProcessApi(stack, secret, lambda operation, _: current[-1].update([operation]))
        for n in range(args.charges):
            api.post("/v1/charges", f"amount={1000 + n}&currency=usd&source=tok_visa".encode())
        lines = [f"balance and list pages after {args.charges} charges, moto server, in process"]
        for label, path in READS.items():
            lines.append(f"  {label:42} {measured(api, current, path, args.reads)}")
        # A merchant paid in two currencies has twice the shards to sum.
        current.append(Counter())
        api.secret_key = create_merchant(
            store, "Bench two currencies", settlement_currencies=("usd", "eur")
        ).secret_key
        current.pop()
        lines.append(
            f"  {'GET /v1/balance, settling in usd and eur':42} "
            f"{measured(api, current, READS['GET /v1/balance'], args.reads)}"
        )
    finally:
        stack.stop()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
