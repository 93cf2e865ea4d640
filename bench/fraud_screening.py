"""What fraud screening costs a charge (prints figures; asserts nothing).

- DynamoDB calls per charge, counted with a botocore hook on the api handler run in this
  process against a local stack's moto server, for three merchants: no rules of their own
  (Radar's defaults and the score only), 20 rules with value lists, and the same 20 plus
  two velocity rules (which read and add to their counters);
- milliseconds per charge for each, in this process;
- microseconds to score and decide 100 rules, with no store at all.

Usage: python bench/fraud_screening.py [--charges N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from typing import Any

from in_process_api import InProcessApi

from clearline.audit import Caller
from clearline.fraud_rules import RuleBook
from clearline.merchants import create_merchant
from clearline.params import ValueListCreateParams, ValueListItemCreateParams
from clearline.radar_rules import decide, parse
from clearline.risk import DEFAULT_RULES, DeterministicScorer, Payer
from clearline.store import Store
from clearline.value_lists import ValueListService
from clearline_local.stack import LocalStack, aws_client

BODY = b"amount=5000&currency=usd&source=tok_visa&receipt_email=buyer%40example.com"

LIST_RULES = [
    "Block if :email: in @blocked_emails",
    "Block if :email_domain: in @blocked_domains",
    "Review if :amount: > 100000",
    "Block if :currency: = 'xxx'",
    "Review if :card_funding: = 'prepaid' and :amount: > 20000",
    *[f"Review if :amount: = {n} and :currency: = 'usd'" for n in range(15)],
]
VELOCITY_RULES = [
    "Block if :charge_count_for_email_hourly: > 1000000",
    "Review if :card_fingerprint_count_for_email_daily: > 1000000",
]


def shop(store: Store, name: str, rules: list[str]) -> str:
    made = create_merchant(store, name)
    merchant = made.merchant
    lists = ValueListService(store)
    caller = Caller(merchant, "req_bench")
    for alias, kind, value in (
        ("blocked_emails", "email", "thief@example.com"),
        ("blocked_domains", "string", "fraud.example"),
    ):
        created = lists.create(
            caller,
            ValueListCreateParams.model_validate(
                {"alias": alias, "name": alias, "item_type": kind}
            ),
            idempotency_key=f"{name}-{alias}",
        )
        lists.create_item(
            caller,
            ValueListItemCreateParams(value_list=created.id, value=value),
            idempotency_key=f"{name}-{alias}-item",
        )
    book = RuleBook(store)
    for text in rules:
        book.add(merchant.id, text)
    return made.secret_key


def per_charge(api: InProcessApi, counts: list[Counter[str]], charges: int) -> tuple[Any, float]:
    api.post("/v1/charges", BODY)  # the merchant's rules and lists read once, then cached
    counts.append(Counter())
    started = time.perf_counter()
    for _ in range(charges):
        api.post("/v1/charges", BODY)
    elapsed_ms = (time.perf_counter() - started) * 1000 / charges
    calls = {name: n / charges for name, n in sorted(counts[-1].items())}
    return calls, elapsed_ms


def decide_microseconds(rounds: int = 2000) -> float:
    rules = tuple(
        parse(f"Review if :amount: = {n} and :email_domain: = 'x{n}.example'", f"r{n}")
        for n in range(100)
    )
    scorer = DeterministicScorer()
    attributes: dict[str, Any] = {"amount": 5000.0, "email_domain": "example.com"}
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        for i in range(rounds):
            risk = scorer.assess(Payer(None, f"fp_{i}", "buyer@example.com"))
            known = {**attributes, "risk_level": risk.level, "risk_score": float(risk.score)}
            decide((*rules, *DEFAULT_RULES), known, {})
        samples.append((time.perf_counter() - started) * 1e6 / rounds)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--charges", type=int, default=30)
    args = parser.parse_args()
    stack = LocalStack(port=0, workers=1, extra_environment={"POWERTOOLS_LOG_LEVEL": "WARNING"})
    info = stack.start()
    lines = [f"fraud screening, {args.charges} charges each, in process, moto server"]
    try:
        store = Store(info.main_table, aws_client("dynamodb", info.aws_endpoint_url))
        keys = {
            "no rules of its own": shop(store, "Plain", []),
            "20 rules, 2 value lists": shop(store, "Listed", LIST_RULES),
            "the same + 2 velocity rules": shop(store, "Counted", LIST_RULES + VELOCITY_RULES),
        }
        counts: list[Counter[str]] = [Counter()]
        api = InProcessApi(stack, next(iter(keys.values())), lambda op, _: counts[-1].update([op]))
        for label, key in keys.items():
            api.secret_key = key
            calls, ms = per_charge(api, counts, args.charges)
            lines.append(
                f"  {label:30} {sum(calls.values()):4.1f} DynamoDB calls/charge "
                f"{json.dumps(calls)}  {ms:6.1f} ms/charge"
            )
    finally:
        stack.stop()
    lines.append(f"  score + 100 rules + defaults, no store: {decide_microseconds():.0f} µs/charge")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
