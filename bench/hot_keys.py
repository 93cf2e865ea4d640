"""Hot keys: how much of one merchant's burst of charges lands on any single DynamoDB item.

Drives a burst of charges (most captured at once, some authorized then captured, some
refunded) for ONE merchant through the api handler and records the key of every item each
DynamoDB write touches, and which charge wrote it. Items only one charge writes (its own
charge, journals, audit) take a handful of writes in all, whatever the traffic. Items many
charges write are what a peak heats up:

- a ledger account's balance shards: writes per charge x 10,000 charges/s over the
  account's shard count is each shard's mean rate; since the shard is a hash of the
  journal id, a shard's writes in one second are Poisson, and the figure printed is the
  busiest of its shards in all but one second in a thousand (normal approximation);
- any other item many charges write: its writes per charge x 10,000.

DynamoDB allows about 1,000 write units per second per partition, and a transactional
write costs 2 units per KB. Below, the sampled shares scaled to 10,000 charges/s too:
with few charges per shard they overstate the busiest shard (the largest of 64 small
counts).

Usage: python bench/hot_keys.py [--charges N]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
from collections import Counter, defaultdict
from typing import Any

from in_process_api import InProcessApi

from clearline.ledger import ShardPolicy
from clearline.listing import list_shards
from clearline.merchants import create_merchant
from clearline.store import Store, deserialize
from clearline_local.stack import LocalStack, aws_client

PEAK = 10_000  # charges per second, the design's peak
SHARD = re.compile(r"^(?P<table>[^:]+):ACCOUNT#(?P<account>.+)#(?P<shard>\d+)\|BALANCE$")
ONE_SECOND_IN = 1000  # the busiest shard in all but one second in this many


def busiest_shard(mean: float, shards: int) -> float:
    """The count the busiest of `shards` Poisson(mean) shards stays under in all but one
    second in ONE_SECOND_IN (normal approximation, fine for means above a few dozen)."""
    each = (1 - 1 / ONE_SECOND_IN) ** (1 / shards)
    return mean + statistics.NormalDist().inv_cdf(each) * mean**0.5


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--charges", type=int, default=600)
    args = parser.parse_args()

    items: Counter[str] = Counter()  # item key -> writes
    writers: dict[str, set[int]] = defaultdict(set)  # item key -> the charges that wrote it
    index_partitions: Counter[str] = Counter()  # list-index partition key -> writes
    current = [0]  # the charge being driven

    def record(operation: str, params: dict[str, Any]) -> None:
        if operation == "TransactWriteItems":
            writes = [next(iter(w.values())) for w in params["TransactItems"]]
        elif operation in ("PutItem", "UpdateItem", "DeleteItem"):
            writes = [params]
        else:
            return
        for write in writes:
            key = deserialize(write.get("Key") or write["Item"])
            item = f"{write['TableName']}:{key.get('pk', key.get('id'))}|{key.get('sk', '')}"
            items[item] += 1
            writers[item].add(current[0])
            if "Item" in write and "gsi1pk" in write["Item"]:
                index_partitions[write["Item"]["gsi1pk"]["S"]] += 1

    stack = LocalStack(port=0, workers=1, extra_environment={"POWERTOOLS_LOG_LEVEL": "WARNING"})
    info = stack.start()
    rng = random.Random(7)
    try:
        store = Store(info.main_table, aws_client("dynamodb", info.aws_endpoint_url))
        secret = create_merchant(store, "Hot Merchant").secret_key
        api = InProcessApi(stack, secret, record)
        for n in range(args.charges):
            current[0] = n
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
        f"sampled: largest single-item share at {PEAK:,} charges/s: {hottest:.0f} writes/s "
        f"(from {args.charges} charges; unsharded, each ledger account would take "
        f"~{PEAK:,} writes/s)"
    )
    policy = ShardPolicy.from_env()
    sharded: Counter[str] = Counter()  # account -> writes over all its shards
    others: Counter[str] = Counter()  # shared items that are not shards
    for item, writes in items.items():
        match = SHARD.match(item)
        if match:
            sharded[match["account"]] += writes
        elif len(writers[item]) > 1:
            others[item] += writes
    modelled = []
    for account, writes in sharded.items():
        shards = policy.count(account)
        mean = writes / args.charges * PEAK / shards
        modelled.append((busiest_shard(mean, shards), mean, shards, account))
    modelled.sort(reverse=True)
    print(f"modelled at {PEAK:,} charges/s, the ledger's busiest balance shards:")
    for busiest, mean, shards, account in modelled[:4]:
        print(
            f"  {account[:60]:60} {shards:4d} shards: mean {mean:4.0f} w/s, "
            f"busiest {busiest:4.0f} w/s"
        )
    for item, writes in others.most_common(2):
        print(f"  shared item {item[:58]:58} {writes / args.charges * PEAK:6.0f} w/s")
    top = max([m[0] for m in modelled] + [w / args.charges * PEAK for w in others.values()])
    print(f"hottest item at {PEAK:,} charges/s for one merchant: {top:.0f} writes/s (modelled)")
    # A list index's partitions are sharded the same way (by a hash of the object's id).
    by_list: Counter[tuple[str, str]] = Counter()
    for partition, writes in index_partitions.items():
        family, _, _shard = partition.rpartition("#")
        by_list[(family, family.rsplit("#", 1)[-1])] += writes
    for (family, kind), writes in by_list.most_common(3):
        shards = list_shards(kind)
        mean = writes / args.charges * PEAK / shards
        print(
            f"list-index partitions {family}#*: {shards} shards, mean {mean:,.0f} w/s, busiest "
            f"{busiest_shard(mean, shards):,.0f} w/s at peak (index partitions, not items: "
            "about 1,000 a second each)"
        )


if __name__ == "__main__":
    main()
