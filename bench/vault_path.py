"""Card vault figures on this machine (prints them; asserts nothing).

- tokenizations per second (`POST /v1/payment_methods` at the vault with the publishable
  key), with 1 and 4 clients;
- the latency of a PaymentIntent confirmed on a stored card (the vault forwards the
  authorization) next to one on a processor test token (straight to the processor), as
  medians over the same number of payments.

Usage: python bench/vault_path.py [--payments N]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests

from clearline.merchants import create_merchant
from clearline.store import Store
from clearline.topology import VAULT_RATE_PER_KEY_ENV
from clearline_local.stack import LOCAL_VAULT_LIMIT_PER_IP, LocalStack, aws_client

CARD = {
    "type": "card",
    "card[number]": "4242424242424242",
    "card[exp_month]": "12",
    "card[exp_year]": "2031",
    "card[cvc]": "123",
}


def tokenizations_per_second(vault_url: str, publishable: str, clients: int, count: int) -> float:
    session = requests.Session()

    def one(_: int) -> None:
        answer = session.post(
            f"{vault_url}/v1/payment_methods", data={**CARD, "key": publishable}, timeout=60
        )
        answer.raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(one, range(count)))
    return count / (time.perf_counter() - started)


def confirm_latency_ms(api_url: str, secret: str, payment_method: str) -> float:
    started = time.perf_counter()
    answer = requests.post(
        f"{api_url}/v1/payment_intents",
        data={"amount": 2000, "currency": "usd", "payment_method": payment_method, "confirm": True},
        auth=(secret, ""),
        headers={"Idempotency-Key": str(uuid.uuid4())},
        timeout=60,
    )
    answer.raise_for_status()
    assert answer.json()["status"] == "succeeded", answer.text
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--payments", type=int, default=40)
    args = parser.parse_args()
    # Enough room in the per-key limit for the tokenizations below.
    stack = LocalStack(
        0, workers=2, extra_environment={VAULT_RATE_PER_KEY_ENV: str(LOCAL_VAULT_LIMIT_PER_IP)}
    )
    info = stack.start()
    try:
        store = Store(info.main_table, aws_client("dynamodb", info.aws_endpoint_url))
        shop = create_merchant(store, "Bench shop")
        vault = info.vault_url
        tokenizations_per_second(vault, shop.publishable_key, 1, 5)  # warm every worker
        for clients in (1, 4):
            rate = tokenizations_per_second(vault, shop.publishable_key, clients, args.payments)
            print(f"tokenizations/s, {clients} client(s): {rate:.1f}")
        form = {**CARD, "key": shop.publishable_key}
        stored = [
            requests.post(f"{vault}/v1/payment_methods", data=form, timeout=60).json()["id"]
            for _ in range(args.payments)
        ]
        confirm_latency_ms(info.api_url, shop.secret_key, "tok_visa")  # warm
        on_token = [
            confirm_latency_ms(info.api_url, shop.secret_key, "tok_visa")
            for _ in range(args.payments)
        ]
        on_stored = [confirm_latency_ms(info.api_url, shop.secret_key, pm) for pm in stored]
        print(
            f"PaymentIntent confirmed on tok_visa (processor token): median "
            f"{statistics.median(on_token):.1f} ms"
        )
        print(
            f"PaymentIntent confirmed on a stored card (through the vault): median "
            f"{statistics.median(on_stored):.1f} ms"
        )
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
