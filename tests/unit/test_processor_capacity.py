"""The processor's rate limit: the shared limiter (moto, a fake clock), the sandbox's own
limit and the client's reading of its 429, and what each caller does without capacity: a
charge fails closed unsent and retryable, a refund stays pending for the resolver, the
capture worker hands its record back."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from clearline.audit import Caller
from clearline.charges import ChargeService
from clearline.config import PROCESSOR_TPS_ENV, parse_capacity_wait, parse_processor_tps
from clearline.merchants import Merchant, create_merchant
from clearline.params import ChargeCaptureParams, ChargeCreateParams, RefundCreateParams
from clearline.processor import ProcessorBusy, ProcessorClient, ProcessorUnavailable
from clearline.processor_capacity import (
    CAPACITY_PK_PREFIX,
    MAX_PERMITS_PER_ITEM,
    SEND_MARGIN_SECONDS,
    WINDOW_TTL_ATTRIBUTE,
    WINDOW_TTL_SECONDS,
    ProcessorCapacity,
    shard_budgets,
)
from clearline.refunds import RefundService
from clearline.resolver import PENDING_GRACE_SECONDS, Resolver
from clearline.store import Store
from clearline.topology import (
    CAPTURE_QUEUE,
    COUNTERS_TABLE,
    MAIN_TABLE,
    PROCESSOR_URL_ENV,
    TOPOLOGY,
    queue_env_var,
    table_env_var,
)
from clearline_local.lambda_runtime import LocalLambdaContext, load_handler
from clearline_local.sandbox_processor import SandboxProcessor
from clearline_local.stack import free_port

START = 1_800_000_000.0  # a whole second
EVENTS = Path(__file__).resolve().parents[2] / "events"


class FakeTime:
    """A clock that only sleeping moves."""

    def __init__(self, now: float = START) -> None:
        self.now = now
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class CountingClient:
    """A DynamoDB client that counts the calls made through it."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def counted(**kwargs: Any) -> Any:
            self.calls.append(name)
            return method(**kwargs)

        return counted


@pytest.fixture
def counters(aws: Any) -> Store:
    return Store(COUNTERS_TABLE.name, aws)


def limiter(
    counters: Store, tps: int, fake: FakeTime, wait_seconds: float = 0.0
) -> ProcessorCapacity:
    return ProcessorCapacity(
        counters, tps, wait_seconds=wait_seconds, clock=fake.clock, sleep=fake.sleep
    )


def exhaust(counters: Store, tps: int, seconds: range) -> None:
    """Every permit of these seconds taken, as by other instances."""
    for second in seconds:
        for shard, budget in enumerate(shard_budgets(tps)):
            counters.put(
                {"pk": f"{CAPACITY_PK_PREFIX}{second}", "sk": f"SHARD#{shard}", "used": budget}
            )


def busy_now(counters: Store, tps: int = 1) -> None:
    """No capacity on the real clock for the next half minute."""
    now = int(time.time())
    exhaust(counters, tps, range(now - 1, now + 30))


# ---- the limiter ----------------------------------------------------------------------------


def test_each_second_admits_its_budget_with_one_write_per_call_and_refuses_the_rest(
    counters: Store,
) -> None:
    counting = CountingClient(counters.client)
    fake = FakeTime(START + 0.1)
    capacity = limiter(Store(COUNTERS_TABLE.name, counting), 5, fake)
    for _ in range(5):
        capacity.acquire("authorize")
    assert counting.calls == ["update_item"] * 5  # one DynamoDB call per permit, no read
    with pytest.raises(ProcessorBusy, match="no processor capacity"):
        capacity.acquire("authorize")
    assert capacity.used(int(START)) == 5
    fake.now += 1  # a new second, a new budget
    capacity.acquire("authorize")
    assert capacity.used(int(START) + 1) == 1


def test_instances_share_one_budget(counters: Store) -> None:
    fake = FakeTime(START + 0.1)
    first, second = limiter(counters, 3, fake), limiter(counters, 3, fake)
    first.acquire()
    second.acquire()
    first.acquire()
    with pytest.raises(ProcessorBusy):
        second.acquire()


def test_a_full_second_waits_for_the_next_then_fails_closed(counters: Store) -> None:
    fake = FakeTime(START + 0.5)
    capacity = limiter(counters, 2, fake, wait_seconds=2.0)
    exhaust(counters, 2, range(int(START), int(START) + 2))
    capacity.acquire()  # seconds START and START+1 full: in START+2
    assert int(fake.now) == int(START) + 2
    assert capacity.used(int(START) + 2) == 1
    assert len(fake.slept) == 2  # one wait per full second, no polling within one

    fake.now = START + 0.5
    exhaust(counters, 2, range(int(START), int(START) + 4))
    with pytest.raises(ProcessorBusy):
        capacity.acquire()
    assert fake.now <= START + 0.5 + 2.0 + 0.1  # never waits past its wait (and a jitter)


def test_a_permit_too_late_in_its_second_is_not_used(counters: Store) -> None:
    fake = FakeTime(START + 0.5)
    slow = ProcessorCapacity(
        counters,
        5,
        wait_seconds=2.0,
        # The write comes back in the last moments of the second: the call would land in
        # the next one, so it takes a permit there instead.
        clock=iter([fake.now, fake.now, START + 1 - SEND_MARGIN_SECONDS / 2]).__next__,
        sleep=fake.sleep,
    )
    with pytest.raises(StopIteration):  # it went on to ask the clock for the next second
        slow.acquire()
    assert slow.used(int(START)) == 1  # taken, and given up

    late = limiter(counters, 5, FakeTime(START + 1 - SEND_MARGIN_SECONDS / 2), wait_seconds=1)
    late.acquire()  # started late: no write in that second at all
    assert late.used(int(START)) == 1
    assert late.used(int(START) + 1) == 1


def test_a_large_budget_is_spread_over_shards_that_add_up_to_it() -> None:
    for tps in (1, 5, 250, 251, 1000, 10_001):
        budgets = shard_budgets(tps)
        assert sum(budgets) == tps
        assert max(budgets) <= MAX_PERMITS_PER_ITEM
        assert max(budgets) - min(budgets) <= 1


def test_a_sharded_second_admits_exactly_its_budget(counters: Store) -> None:
    fake = FakeTime(START + 0.1)
    capacity = limiter(counters, 501, fake)  # three shards of 167
    for _ in range(501):
        capacity.acquire()
    with pytest.raises(ProcessorBusy):
        capacity.acquire()
    assert capacity.used(int(START)) == 501


def test_window_items_expire(counters: Store) -> None:
    limiter(counters, 5, FakeTime(START + 0.1)).acquire()
    (item,) = counters.query_partition(f"{CAPACITY_PK_PREFIX}{int(START)}")
    assert item[WINDOW_TTL_ATTRIBUTE] == int(START) + WINDOW_TTL_SECONDS
    assert COUNTERS_TABLE.ttl_attribute == WINDOW_TTL_ATTRIBUTE


def test_an_unreachable_table_fails_closed(aws: Any) -> None:
    capacity = limiter(Store("no-such-table", aws), 5, FakeTime(START + 0.1))
    with pytest.raises(ProcessorBusy, match="could not be counted"):
        capacity.acquire()


def test_the_limit_is_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_processor_tps(None) == parse_processor_tps("") == 0
    assert parse_processor_tps("5") == 5
    assert parse_capacity_wait(None) == 2.0
    with pytest.raises(ValueError, match="whole number"):
        parse_processor_tps("fast")
    with pytest.raises(ValueError, match="negative"):
        parse_processor_tps("-1")
    with pytest.raises(ValueError, match="0 to 60"):
        parse_capacity_wait("600")
    monkeypatch.delenv(PROCESSOR_TPS_ENV, raising=False)
    assert ProcessorClient("http://127.0.0.1:1").capacity is None  # unset: no limit
    monkeypatch.setenv(PROCESSOR_TPS_ENV, "7")
    monkeypatch.setenv(table_env_var(COUNTERS_TABLE.key), COUNTERS_TABLE.name)
    client = ProcessorClient("http://127.0.0.1:1")
    assert client.capacity is not None
    assert (client.capacity.tps, client.capacity.wait_seconds) == (7, 2.0)


# ---- the sandbox's limit and the client's reading of it ------------------------------------


@pytest.fixture
def limited() -> Iterator[tuple[SandboxProcessor, FakeTime]]:
    fake = FakeTime(START + 0.1)
    with SandboxProcessor(tps_limit=2, clock=fake.clock) as sandbox:
        yield sandbox, fake


def authorize(client: ProcessorClient, key: str) -> Any:
    return client.authorize(
        idempotency_key=key,
        token="tok_visa",
        amount=1000,
        currency="usd",
        capture=True,
        reference=f"ch_{key}",
    )


def test_the_sandbox_refuses_calls_past_its_limit_with_429_and_counts_them(
    limited: tuple[SandboxProcessor, FakeTime],
) -> None:
    sandbox, fake = limited
    client = ProcessorClient(sandbox.url, capacity=None)
    authorize(client, "k1")
    authorize(client, "k2")
    with pytest.raises(ProcessorBusy) as refused:
        authorize(client, "k3")
    assert refused.value.status == 429
    assert not isinstance(refused.value, ProcessorUnavailable)  # known not processed
    assert client.lookup("k3") is None  # nothing committed under the key
    assert client.get_authorization(authorize_id(sandbox, "k1"))  # reads are not limited
    stats = requests.get(f"{sandbox.url}/_sandbox/rate_limit", timeout=5).json()
    assert stats == {"throttled": 1, "tps_limit": 2}

    fake.now += 1
    assert authorize(client, "k3").approved  # the same key, a first attempt
    assert len(sandbox.authorizations()) == 3


def authorize_id(sandbox: SandboxProcessor, key: str) -> str:
    (auth,) = [a for a in sandbox.authorizations() if a["reference"] == f"ch_{key}"]
    return str(auth["id"])


def test_the_sandbox_limit_is_set_through_its_controls(
    limited: tuple[SandboxProcessor, FakeTime],
) -> None:
    sandbox, _ = limited
    url = f"{sandbox.url}/_sandbox/rate_limit"
    assert requests.post(url, json={"tps_limit": 0}, timeout=5).json()["tps_limit"] == 0
    client = ProcessorClient(sandbox.url, capacity=None)
    for n in range(4):
        authorize(client, f"free{n}")  # no limit
    refused = requests.post(url, json={"tps_limit": -1}, timeout=5)
    assert refused.status_code == 400
    assert sandbox.tps_limit == 0
    requests.post(url, json={"tps_limit": 1}, timeout=5).raise_for_status()
    requests.delete(f"{sandbox.url}/_sandbox/rate_limit", timeout=5).raise_for_status()
    assert sandbox.rate_limit_stats() == {"throttled": 0, "tps_limit": 1}


def test_the_client_takes_a_permit_before_each_money_call_and_sends_nothing_without(
    counters: Store, processor: SandboxProcessor
) -> None:
    fake = FakeTime(START + 0.1)
    client = ProcessorClient(processor.url, capacity=limiter(counters, 2, fake))
    key = str(uuid.uuid4())
    auth = client.authorize(
        idempotency_key=key,
        token="tok_visa",
        amount=1000,
        currency="usd",
        capture=False,
        reference="ch_permits",
    )
    client.capture(idempotency_key=f"{key}:c", authorization_id=auth.id, amount=1000)
    with pytest.raises(ProcessorBusy):
        client.refund(idempotency_key=f"{key}:r", authorization_id=auth.id, amount=100)
    assert client.lookup(f"{key}:r") is None  # never sent
    fake.now += 1
    client.refund(idempotency_key=f"{key}:r", authorization_id=auth.id, amount=100)
    assert client.capacity is not None
    client.capacity.acquire()  # another instance's call
    with pytest.raises(ProcessorBusy):
        client.void(idempotency_key=f"{key}:v", authorization_id=auth.id)
    assert client.lookup(f"{key}:v") is None
    assert (client.capacity.used(int(START)), client.capacity.used(int(START) + 1)) == (2, 2)


# ---- what the callers do without capacity ---------------------------------------------------


@pytest.fixture
def shop(store: Store) -> Merchant:
    return create_merchant(store, "Capacity Shop").merchant


def test_a_charge_without_capacity_fails_closed_unsent_and_its_retry_charges_once(
    store: Store, counters: Store, processor: SandboxProcessor, shop: Merchant
) -> None:
    fake = FakeTime(START + 0.1)
    client = ProcessorClient(processor.url, capacity=limiter(counters, 1, fake))
    charges = ChargeService(store, client)
    caller, key = Caller(shop, "req_test"), str(uuid.uuid4())
    params = ChargeCreateParams(amount=2500, currency="usd", source="tok_visa")
    exhaust(counters, 1, range(int(START), int(START) + 1))
    with pytest.raises(ProcessorBusy):
        charges.create(caller, params, idempotency_key=key)
    (pending,) = [
        c for c in store.scan("CHARGE#") if c["sk"] == "CHARGE" and c["idempotency_key"] == key
    ]
    assert pending["state"] == "pending"  # written ahead, due for the resolver
    assert client.lookup(pending["processor_key"]) is None  # and never sent

    fake.now += 1
    charged = charges.create(caller, params, idempotency_key=key)
    assert (charged.id, charged.state) == (pending["id"], "captured")
    assert [a["reference"] for a in processor.authorizations()].count(charged.id) == 1


def events_of(store: Store, object_id: str) -> list[str]:
    found = [
        (item["created"], item["type"])
        for item in store.scan("EVENT#")
        if item["sk"] == "EVENT" and object_id in json.dumps(item.get("data", ""), default=str)
    ]
    return [kind for _, kind in sorted(found)]


def test_a_refund_without_capacity_stays_pending_and_the_resolver_finishes_it(
    store: Store, counters: Store, processor: SandboxProcessor, shop: Merchant
) -> None:
    fake = FakeTime(START + 0.1)
    client = ProcessorClient(processor.url, capacity=limiter(counters, 1, fake))
    charges, refunds = ChargeService(store, client), RefundService(store, client)
    caller = Caller(shop, "req_test")
    charge = charges.create(
        caller,
        ChargeCreateParams(amount=5000, currency="usd", source="tok_visa"),
        idempotency_key=str(uuid.uuid4()),
    )
    key = str(uuid.uuid4())
    refund = refunds.create(
        caller, RefundCreateParams(charge=charge.id, amount=1500), idempotency_key=key
    )
    assert refund.status == "pending"  # answered as Stripe's pending refunds are
    assert charges.retrieve(shop, charge.id).amount_refunded == 0
    again = refunds.create(
        caller, RefundCreateParams(charge=charge.id, amount=1500), idempotency_key=key
    )
    assert (again.id, again.status) == (refund.id, "pending")  # still no capacity

    # The resolver's pass, later, with no capacity: left for the next one.
    later = int(time.time()) + PENDING_GRACE_SECONDS + 1
    resolver = Resolver(charges, refunds)
    assert resolver.run(later)["unreachable"] == 1
    fake.now += 1
    outcome = resolver.run(later)
    assert (outcome["settled"], outcome["unreachable"]) == (1, 0)
    settled = refunds.retrieve(shop, refund.id)
    assert settled.status == "succeeded"
    assert charges.retrieve(shop, charge.id).amount_refunded == 1500
    (auth,) = [a for a in processor.authorizations() if a["reference"] == charge.id]
    assert auth["refunds"] == [1500]  # refunded once
    assert "refund.updated" in events_of(store, refund.id)


def test_the_api_answers_no_capacity_in_stripes_shape_and_asks_for_a_retry(
    aws: Any, store: Store, counters: Store, processor: SandboxProcessor
) -> None:
    os.environ.update(
        {
            table_env_var(MAIN_TABLE.key): MAIN_TABLE.name,
            table_env_var("idempotency"): "clearline-idempotency",
            table_env_var(COUNTERS_TABLE.key): COUNTERS_TABLE.name,
            PROCESSOR_URL_ENV: processor.url,
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_NAMESPACE": "Clearline",
            "POWERTOOLS_SERVICE_NAME": "clearline",
        }
    )
    handler = load_handler(TOPOLOGY.function("api"))
    import api_routes

    api_routes.services.cache_clear()
    try:
        secret = create_merchant(store, "Busy API Shop").secret_key
        fake = FakeTime(START + 0.1)
        api_routes.services().charges.processor.capacity = limiter(counters, 1, fake)
        exhaust(counters, 1, range(int(START), int(START) + 1))
        event = json.loads(
            (EVENTS / "api" / "create_charge.json").read_text().replace("sk_test_sample", secret)
        )
        context = LocalLambdaContext("api", 1024, 29, str(uuid.uuid4()))
        refused = handler(event, context)
        assert refused["statusCode"] == 503
        headers = {
            name.lower(): values[-1] for name, values in refused["multiValueHeaders"].items()
        }
        assert headers["stripe-should-retry"] == "true"
        error = json.loads(refused["body"])["error"]
        assert (error["type"], error["code"]) == ("api_error", "processor_busy")

        fake.now += 1  # the SDK's retry, with the same key
        retried = handler(event, LocalLambdaContext("api", 1024, 29, str(uuid.uuid4())))
        assert retried["statusCode"] == 200, retried["body"]
        assert json.loads(retried["body"])["status"] == "succeeded"
    finally:
        api_routes.services.cache_clear()


def test_the_capture_worker_hands_back_records_it_has_no_capacity_for(
    aws: Any, store: Store, counters: Store, processor: SandboxProcessor, shop: Merchant
) -> None:
    charges = ChargeService(store, ProcessorClient(processor.url, capacity=None))
    now = int(time.time())
    authorized = charges.create(
        Caller(shop, "req_test"),
        ChargeCreateParams(
            amount=4000, currency="usd", source="tok_visa", capture=False, capture_at=now + 60
        ),
        idempotency_key=str(uuid.uuid4()),
    )
    os.environ.update(
        {
            table_env_var(MAIN_TABLE.key): MAIN_TABLE.name,
            table_env_var(COUNTERS_TABLE.key): COUNTERS_TABLE.name,
            queue_env_var(CAPTURE_QUEUE.key): "http://unused",
            PROCESSOR_URL_ENV: processor.url,
            PROCESSOR_TPS_ENV: "1",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_SERVICE_NAME": "clearline",
        }
    )
    try:
        handler = load_handler(TOPOLOGY.function("capture_worker"))
    finally:
        os.environ.pop(PROCESSOR_TPS_ENV)
    import capture_handler

    assert capture_handler.processor_client.capacity is not None
    assert capture_handler.processor_client.capacity.wait_seconds == 1.0
    capture_handler.store = store
    capture_handler.charges = ChargeService(store, capture_handler.processor_client)
    fake = FakeTime(START + 0.1)
    capture_handler.processor_client.capacity = limiter(counters, 1, fake, wait_seconds=1.0)
    exhaust(counters, 1, range(int(START), int(START) + 3))

    sample = json.loads((EVENTS / "capture_worker" / "sqs_job.json").read_text())
    (record,) = sample["Records"]
    job = {"charge": authorized.id, "action": "capture", "as_of": now + 61}
    event = {"Records": [{**record, "body": json.dumps(job)}]}
    context = LocalLambdaContext("capture_worker", 512, 30, str(uuid.uuid4()))

    handed_back = handler(event, context)
    assert handed_back == {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
    item = store.get(f"CHARGE#{authorized.id}", "CHARGE")
    assert item is not None and item["state"] == "authorized"  # nothing captured
    (auth,) = [a for a in processor.authorizations() if a["reference"] == authorized.id]
    assert not auth["captured"]  # and nothing sent

    fake.now += 3  # the record again, from the queue
    assert handler(event, context) == {"batchItemFailures": []}
    item = store.get(f"CHARGE#{authorized.id}", "CHARGE")
    assert item is not None and item["state"] == "captured"


def test_the_resolver_leaves_for_later_what_it_has_no_capacity_for(
    store: Store, counters: Store, processor: SandboxProcessor, shop: Merchant
) -> None:
    fake = FakeTime(START + 0.1)
    free = ProcessorClient(processor.url, capacity=None)
    charges = ChargeService(store, free)
    authorized = charges.create(
        Caller(shop, "req_test"),
        ChargeCreateParams(amount=3000, currency="usd", source="tok_visa", capture=False),
        idempotency_key=str(uuid.uuid4()),
    )
    busy = ProcessorClient(processor.url, capacity=limiter(counters, 1, fake))
    exhaust(counters, 1, range(int(START), int(START) + 1))
    with pytest.raises(ProcessorBusy):
        ChargeService(store, busy).capture(
            Caller(shop, "req_test"), authorized.id, ChargeCaptureParams()
        )
    resolver = Resolver(ChargeService(store, busy), RefundService(store, busy))
    later = int(time.time()) + PENDING_GRACE_SECONDS + 1
    assert resolver.run(later)["unreachable"] == 1
    fake.now += 1
    assert resolver.run(later)["settled"] == 1
    assert charges.retrieve(shop, authorized.id).state == "captured"


def test_no_capacity_is_not_an_unreachable_processor() -> None:
    unreachable = ProcessorClient(f"http://127.0.0.1:{free_port()}", capacity=None)
    with pytest.raises(ProcessorUnavailable):
        authorize(unreachable, "nobody-home")


def test_a_compensation_without_capacity_is_not_reported_as_nothing_sent(
    store: Store, processor: SandboxProcessor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The card was authorized and its undoing waits for capacity: the client hears that
    the processor could not finish (the resolver will), never that nothing was sent."""
    from clearline.errors import ServiceUnavailableError

    charges = ChargeService(store, ProcessorClient(processor.url, capacity=None))

    def busy(*_: Any) -> None:
        raise ProcessorBusy("no capacity")

    monkeypatch.setattr(ChargeService, "finish_compensation", busy)
    with pytest.raises(ServiceUnavailableError) as refused:
        charges._finish_compensation_or_retry({"id": "ch_x", "compensation": "void"})
    assert refused.value.code == "processor_unavailable"


def test_a_waiting_refund_is_sent_by_the_queue_workers_once_there_is_capacity(
    store: Store, counters: Store, processor: SandboxProcessor, shop: Merchant
) -> None:
    """The api queues a refund it answered pending; a worker without capacity hands the
    job back (nothing sent), one with capacity sends it once, and a repeat finds it done."""
    from clearline.scheduling import WAITING_REFUND, Job, run_job

    fake = FakeTime(START + 0.1)
    client = ProcessorClient(processor.url, capacity=limiter(counters, 1, fake))
    charges, refunds = ChargeService(store, client), RefundService(store, client)
    caller = Caller(shop, "req_test")
    charge = charges.create(
        caller,
        ChargeCreateParams(amount=4000, currency="usd", source="tok_visa"),
        idempotency_key=str(uuid.uuid4()),
    )
    refund = refunds.create(
        caller, RefundCreateParams(charge=charge.id), idempotency_key=str(uuid.uuid4())
    )
    assert refund.status == "pending"
    job = Job(refund.id, WAITING_REFUND, int(time.time()))
    with pytest.raises(ProcessorBusy):  # still this second: handed back, nothing sent
        run_job(charges, store, job, refunds=refunds)
    (auth,) = [a for a in processor.authorizations() if a["reference"] == charge.id]
    assert auth["refunds"] == []
    fake.now += 1
    assert run_job(charges, store, job, refunds=refunds) == "succeeded"
    assert run_job(charges, store, job, refunds=refunds) == "already settled"
    (auth,) = [a for a in processor.authorizations() if a["reference"] == charge.id]
    assert auth["refunds"] == [4000]
    assert "refund.updated" in events_of(store, refund.id)


def test_the_api_queues_a_refund_it_answers_pending(
    aws: Any, store: Store, counters: Store, processor: SandboxProcessor
) -> None:
    import boto3

    from clearline.topology import CAPTURE_QUEUE, queue_env_var

    sqs = boto3.client("sqs", region_name="us-east-1")
    queue_url = sqs.create_queue(QueueName=CAPTURE_QUEUE.name)["QueueUrl"]
    os.environ.update(
        {
            table_env_var(MAIN_TABLE.key): MAIN_TABLE.name,
            table_env_var("idempotency"): "clearline-idempotency",
            table_env_var(COUNTERS_TABLE.key): COUNTERS_TABLE.name,
            queue_env_var(CAPTURE_QUEUE.key): queue_url,
            PROCESSOR_URL_ENV: processor.url,
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_NAMESPACE": "Clearline",
            "POWERTOOLS_SERVICE_NAME": "clearline",
        }
    )
    handler = load_handler(TOPOLOGY.function("api"))
    import api_routes

    api_routes.services.cache_clear()
    api_routes._sqs.cache_clear()
    try:
        made = create_merchant(store, "Waiting Refund Shop")
        charge = ChargeService(store, ProcessorClient(processor.url, capacity=None)).create(
            Caller(made.merchant, "req_test"),
            ChargeCreateParams(amount=2500, currency="usd", source="tok_visa"),
            idempotency_key=str(uuid.uuid4()),
        )
        fake = FakeTime(START + 0.1)
        api_routes.services().refunds.processor.capacity = limiter(counters, 1, fake)
        exhaust(counters, 1, range(int(START), int(START) + 1))
        event = json.loads(
            (EVENTS / "api" / "create_refund.json")
            .read_text()
            .replace("sk_test_sample", made.secret_key)
        )
        event["body"] = f"charge={charge.id}"
        answer = handler(event, LocalLambdaContext("api", 1024, 29, str(uuid.uuid4())))
        assert answer["statusCode"] == 200, answer["body"]
        refund = json.loads(answer["body"])
        assert refund["status"] == "pending"
        (message,) = sqs.receive_message(QueueUrl=queue_url).get("Messages", [])
        job = json.loads(message["Body"])
        assert (job["charge"], job["action"]) == (refund["id"], "refund")
    finally:
        api_routes.services.cache_clear()
        api_routes._sqs.cache_clear()
