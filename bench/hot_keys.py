"""Hot keys: how much of one merchant's burst of charges lands on any single DynamoDB item.

Drives a burst of charges (most captured at once, some authorized then captured, some
refunded) for ONE merchant through the api handler, records the key of every item each
DynamoDB write touches, and prints the largest share of writes any single item took,
scaled to 10,000 charges per second. DynamoDB allows about 1,000 write units per second
per partition, and a transactional write costs 2 units per KB.

Usage: python bench/hot_keys.py [--charges N]
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from typing import Any

from in_process_api import InProcessApi

from clearline.merchants import create_merchant
from clearline.store import Store, deserialize
from clearline_local.stack import LocalStack, aws_client

PEAK = 10_000  # charges per second, the design's peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--charges", type=int, default=600)
    args = parser.parse_args()

    items: Counter[str] = Counter()  # item key -> writes
    index_partitions: Counter[str] = Counter()  # list-index partition key -> writes

    def record(operation: str, params: dict[str, Any]) -> None:
        if operation == "TransactWriteItems":
            writes = [next(iter(w.values())) for w in params["TransactItems"]]
        elif operation in ("PutItem", "UpdateItem", "DeleteItem"):
            writes = [params]
        else:
            return
        for write in writes:
            key = deserialize(write.get("Key") or write["Item"])
            items[f"{write['TableName']}:{key.get('pk', key.get('id'))}|{key.get('sk', '')}"] += 1
            if "Item" in write and "gsi1pk" in write["Item"]:
                index_partitions[write["Item"]["gsi1pk"]["S"]] += 1

    stack = LocalStack(port=0, workers=1, extra_environment={"POWERTOOLS_LOG_LEVEL": "WARNING"})
    info = stack.start()
    rng = random.Random(7)
    try:
        store = Store(info.main_table, aws_client("dynamodb", info.aws_endpoint_url))
        secret = create_merchant(store, "Hot Merchant").secret_key
        api = InProcessApi(stack, secret, record)
        for _ in range(args.charges):
            roll = rng.random()
            capture = "false" if roll < 0.2 else "true"
            body = json.loads(
                api.post(
                    "/v1/charges",
                    f"amount=5000&currency=usd&source=tok_visa&capture={capture}".encode(),
                )["body"]
            )
            if capture == "false":
                api.post(f"/v1/charges/{body['id']}/capture", b"amount=4000")
            elif roll > 0.9:
                api.post("/v1/refunds", f"charge={body['id']}&amount=1000".encode())
    finally:
        stack.stop()

    total = sum(items.values())
    print(
        f"hot keys: {args.charges} charges for one merchant; {total} item writes over "
        f"{len(items)} distinct items"
    )
    print(f"{'item':70} {'writes':>7} {'share':>7} {'at 10k charges/s':>17}")
    for item, writes in items.most_common(6):
        share = writes / args.charges
        print(f"{item[:70]:70} {writes:7d} {share:7.2%} {share * PEAK:12.0f} w/s")
    hottest = items.most_common(1)[0][1] / args.charges * PEAK
    print(
        f"largest single-item rate at {PEAK:,} charges/s: {hottest:.0f} writes/s "
        f"(unsharded, each ledger account would take ~{PEAK:,} writes/s)"
    )
    for partition, writes in index_partitions.most_common(3):
        print(
            f"list-index partition {partition}: {writes / args.charges * PEAK:,.0f} writes/s "
            "at peak (an index partition, not an item)"
        )


if __name__ == "__main__":
    main()
