"""Per-key rate limits and the failed-authentication lockout, end to end, on a stack of
its own with Stripe's numbers (the shared stack may run with a higher default).

Bursts are bounded (a few hundred requests) and every assertion is on counts, with slack:
never on how long anything took."""

from __future__ import annotations

import http.client
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import stripe

from clearline.rate_limits import FAILED_AUTH_LIMIT

from .conftest import Stack, running_stack

pytestmark = pytest.mark.integration

BURST_THREADS = 24


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`clearline up` with Stripe's limits."""
    with running_stack(tmp_path_factory, stripes_limits=True) as stack:
        yield stack


def merchant(stack: Stack, name: str, *extra: str) -> dict[str, Any]:
    done = stack.clearline("merchants", "create", name, "--json", *extra)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def sdk(stack: Stack, key: str) -> stripe.StripeClient:
    # The SDK's own retries on: a 429 with Stripe-Should-Retry: false is still not retried.
    return stripe.StripeClient(key, base_addresses={"api": stack.url}, max_network_retries=2)


def patiently(call: Any) -> Any:
    """`call()`, backing off while it is rate limited (after a burst, for the checks)."""
    for attempt in range(30):
        try:
            return call()
        except stripe.RateLimitError:
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("still rate limited")


def test_a_burst_past_the_limit_is_refused_in_stripes_shape_and_writes_nothing(
    own_stack: Stack,
) -> None:
    shop = merchant(own_stack, "Busy shop")
    other = merchant(own_stack, "Quiet shop")
    client = sdk(own_stack, shop["secret_key"])
    auth = (shop["secret_key"], "")

    def one(i: int) -> tuple[str, int, requests.Response | None]:
        if i % 4 == 0:  # a write, through plain HTTP
            answer = requests.post(
                f"{own_stack.url}/v1/customers",
                auth=auth,
                data={"email": f"burst{i}@example.com"},
                headers={"Idempotency-Key": str(uuid.uuid4())},
                timeout=30,
            )
            return "post", answer.status_code, answer
        try:  # a read, through the stripe SDK
            client.v1.customers.retrieve(f"cus_missing{i}")
        except stripe.RateLimitError:
            return "sdk", 429, None
        except stripe.InvalidRequestError as missing:
            return "sdk", missing.http_status or 0, None
        return "sdk", 200, None

    with ThreadPoolExecutor(BURST_THREADS) as pool:
        results = list(pool.map(one, range(240)))
    # Right after it, another merchant's key is unaffected.
    assert sdk(own_stack, other["secret_key"]).v1.balance.retrieve().object == "balance"

    statuses = Counter((kind, status) for kind, status, _ in results)
    assert statuses[("sdk", 429)] > 0, statuses  # the SDK raised stripe.RateLimitError
    assert set(statuses) <= {("sdk", 404), ("sdk", 429), ("post", 200), ("post", 429)}
    refused = [a for _, status, a in results if a is not None and status == 429]
    assert refused, statuses
    for answer in refused:
        assert answer.json() == {
            "error": {
                "type": "invalid_request_error",
                "code": "rate_limit",
                "message": "Too many requests hit the API too quickly. We recommend an "
                "exponential backoff of your requests.",
            }
        }
        assert answer.headers["Stripe-Rate-Limited-Reason"] == "global-rate"
        assert answer.headers["Stripe-Should-Retry"] == "false"
        assert answer.headers["Request-Id"].startswith("req_")
    # Nothing over the limit was written: exactly the accepted creates exist.
    listed = patiently(lambda: client.v1.customers.list(params={"limit": 100}))
    assert len(listed.data) == statuses[("post", 200)]


def test_a_merchant_with_its_own_limit_gets_its_own_number(own_stack: Stack) -> None:
    slow = merchant(own_stack, "Slow lane", "--rate-limit", "3")
    fast = merchant(own_stack, "Fast lane", "--rate-limit", "1000")

    def burst(key: str, count: int) -> Counter[int]:
        def one(i: int) -> int:
            url = f"{own_stack.url}/v1/customers/cus_missing{i}"
            return requests.get(url, auth=(key, ""), timeout=30).status_code

        with ThreadPoolExecutor(8) as pool:
            return Counter(pool.map(one, range(count)))

    started = time.monotonic()
    slow_statuses = burst(slow["secret_key"], 40)
    elapsed = time.monotonic() - started
    # At most its burst (3) and 3 a second more, whatever the machine's pace.
    assert slow_statuses[404] <= 3 + 3 * elapsed + 1, slow_statuses
    assert slow_statuses[429] > 0 and set(slow_statuses) <= {404, 429}
    # 150 requests fit in a burst of 1,000 (Stripe's test-mode 25 would refuse most).
    assert burst(fast["secret_key"], 150) == Counter({404: 150})


def _get_from(address: str, stack: Stack, key: str) -> tuple[int, dict[str, str], bytes]:
    """A GET from a loopback address of our choosing (Linux answers all of 127/8)."""
    url = urlsplit(stack.url)
    connection = http.client.HTTPConnection(
        url.hostname or "", url.port, timeout=30, source_address=(address, 0)
    )
    try:
        connection.request("GET", "/v1/balance", headers={"Authorization": f"Bearer {key}"})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_wrong_keys_from_one_address_are_refused_while_good_keys_work(
    own_stack: Stack,
) -> None:
    shop = merchant(own_stack, "Guarded shop")
    guesser = "127.0.0.3"  # not the other tests' address: its lockout outlives the test
    answers = [_get_from(guesser, own_stack, f"sk_test_guess{i:024d}") for i in range(35)]
    statuses = [status for status, _, _ in answers]
    assert statuses[:FAILED_AUTH_LIMIT] == [401] * FAILED_AUTH_LIMIT
    assert statuses.count(429) >= 20, statuses  # slack for a window that turns meanwhile
    _, headers, body = next(a for a in answers if a[0] == 429)
    assert headers["Stripe-Rate-Limited-Reason"] == "auth-failures"
    assert headers["Stripe-Should-Retry"] == "false"
    error = json.loads(body)["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "rate_limit")
    assert "invalid API key" in error["message"]
    # A valid key works, from the guessing address and from any other.
    assert _get_from(guesser, own_stack, shop["secret_key"])[0] == 200
    assert _get_from("127.0.0.4", own_stack, shop["secret_key"])[0] == 200
    assert _get_from("127.0.0.4", own_stack, "sk_test_one_honest_typo")[0] == 401


def test_keys_on_the_routes_served_without_the_authorizer_are_limited_too(
    own_stack: Stack,
) -> None:
    """A server retrieving PaymentIntents with its secret key goes through a route that
    browsers call without a key: the api counts that key against its limit itself, and
    counts wrong keys there as failures of their address."""
    slow = merchant(own_stack, "Slow intents", "--rate-limit", "3")

    def one(i: int) -> requests.Response:
        url = f"{own_stack.url}/v1/payment_intents/pi_missing{i}"
        return requests.get(url, auth=(slow["secret_key"], ""), timeout=30)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(40)))
    statuses = Counter(a.status_code for a in answers)
    assert statuses[429] > 0 and set(statuses) <= {404, 429}, statuses
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.headers["Stripe-Rate-Limited-Reason"] == "global-rate"
    assert refused.json()["error"]["code"] == "rate_limit"
    with pytest.raises(stripe.RateLimitError):
        sdk = stripe.StripeClient(slow["secret_key"], base_addresses={"api": own_stack.url})
        for i in range(40):
            try:
                sdk.v1.payment_intents.retrieve(f"pi_missing_sdk{i}")
            except stripe.InvalidRequestError:
                continue  # a 404 within the limit

    guesser = "127.0.0.5"
    url = urlsplit(own_stack.url)
    seen = []
    for i in range(FAILED_AUTH_LIMIT + 5):
        connection = http.client.HTTPConnection(
            url.hostname or "", url.port, timeout=30, source_address=(guesser, 0)
        )
        try:
            connection.request(
                "GET",
                "/v1/payment_intents/pi_x",
                headers={"Authorization": f"Bearer sk_test_guess{i:024d}"},
            )
            seen.append(connection.getresponse().status)
        finally:
            connection.close()
    assert seen[:FAILED_AUTH_LIMIT] == [401] * FAILED_AUTH_LIMIT
    assert 429 in seen[FAILED_AUTH_LIMIT:], seen
