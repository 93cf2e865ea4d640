"""What a million charges cost on AWS, from what a burst of charges does on the local stack.

A merchant with a webhook endpoint makes N charges (captured at once, on `tok_visa`)
through the front door; the bench waits for everything they set off (events, webhooks, the
second look), then settles them from the processor's settlement file, as a day of business
ends. Every AWS request any function makes is counted at the moto server, with the
capacity units DynamoDB would bill for it (item sizes read from the requests and answers;
transactions at 2x). Every Lambda invocation is timed. The counts are turned into dollars
per million charges at AWS's list prices (us-east-1, on-demand; `PRICES` below), printed as
a table, with the biggest line named. Asserts nothing.

What is modelled rather than counted, and why:
- Lambda durations are the local ones, which overstate AWS's (every call crosses a pipe to
  a worker process and waits its turn at one serialized moto server): an upper bound.
- SQS: the local pollers poll on their own schedule, so receives and deletes are priced as
  Lambda's event source mapping makes them, one receive and one delete per message sent
  (an upper bound: it batches both); DynamoDB stream reads by Lambda are free.
- API Gateway: one REST request per api, vault or notification invocation.
- Free tiers, CloudWatch Logs and X-Ray are left out.

Usage: python bench/cost.py [--charges N]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests
from moto.moto_server.werkzeug_app import DomainDispatcherApplication

from clearline.merchants import create_merchant
from clearline.reconciliation import COLUMNS
from clearline.store import Store
from clearline.topology import SETTLEMENT_BUCKET, TOPOLOGY
from clearline_local.stack import LocalStack, aws_client

# us-east-1 list prices, on-demand, in dollars (check https://aws.amazon.com/pricing/).
PRICES = {
    "api_gateway_request": 3.50 / 1e6,  # REST API, first 333 million a month
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_second_arm": 0.0000133334,  # every function runs on arm64
    "dynamodb_write_unit": 0.625 / 1e6,  # on-demand write request unit
    "dynamodb_read_unit": 0.125 / 1e6,  # on-demand read request unit
    "eventbridge_event": 1.00 / 1e6,  # custom events, per 64 KB chunk
    "sqs_request": 0.40 / 1e6,  # standard queue, per 64 KB chunk
    "s3_put": 0.005 / 1000,  # PUT, COPY, POST, LIST
    "s3_get": 0.0004 / 1000,  # GET and all other requests
    "kms_request": 0.03 / 10_000,
    "ssm_request": 0.0,  # standard parameters, standard throughput
}
# Requests the local stack makes that AWS does not bill as such (Lambda's own pollers).
POLLING = {
    ("dynamodbstreams", op)
    for op in ("GetRecords", "GetShardIterator", "DescribeStream", "ListStreams")
} | {("sqs", op) for op in ("ReceiveMessage", "DeleteMessage", "DeleteMessageBatch")}
UNCOUNTED_KEY = "costbenchreader"  # the bench's own reads of item sizes are not counted
API_FRONTED = {TOPOLOGY.api.function, "vault"} | (
    {TOPOLOGY.notifications.function} if TOPOLOGY.notifications else set()
)


# ---- DynamoDB item sizes, as DynamoDB bills them ----------------------------------------------


def value_size(value: dict[str, Any]) -> int:
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(str(inner).encode())
    if kind == "N":
        return len(str(inner).lstrip("-").replace(".", "")) // 2 + 1
    if kind == "B":
        return len(str(inner)) * 3 // 4  # base64 on the wire
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(value_size({kind[0]: member}) for member in inner)
    if kind == "M":
        return 3 + sum(len(k.encode()) + 1 + value_size(v) for k, v in inner.items())
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in inner)
    return 0


def item_size(item: dict[str, Any]) -> int:
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def kind_of(table: str, key: dict[str, Any]) -> str:
    """`clearline-main CHARGE#/AUDIT#`: what kind of item a write touched, ids left out."""
    parts = []
    for name in ("pk", "sk", "id"):
        value = key.get(name, {}).get("S")
        if value is not None:
            parts.append(value.split("#", 1)[0][:24] + ("#" if "#" in value else ""))
    return f"{table} {'/'.join(parts)}"


def units(size: int, unit_bytes: int) -> int:
    return max(1, math.ceil(size / unit_bytes))


class Meter:
    """Counts every request the moto server answers: per (service, operation), plus the
    DynamoDB units they would bill. Updates are sized afterwards, from the item they left."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: Counter[tuple[str, str]] = Counter()
        self.bytes: Counter[tuple[str, str]] = Counter()
        self.read_units = 0.0
        self.write_units = 0.0
        self.updated: list[tuple[str, dict[str, Any], int]] = []  # table, key, factor
        self.sqs_sent = 0
        self.sqs_received = 0
        self.events = 0
        self.write_units_by_kind: Counter[str] = Counter()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": Counter(self.requests),
                "read_units": self.read_units,
                "write_units": self.write_units,
                "updated": list(self.updated),
                "sqs_messages": max(self.sqs_sent, self.sqs_received),
                "write_units_by_kind": Counter(self.write_units_by_kind),
                "events": self.events,
            }

    def record(self, service: str, operation: str, body: bytes, answer: bytes) -> None:
        with self.lock:
            self.requests[(service, operation)] += 1
            self.bytes[(service, operation)] += len(body)
            if service == "dynamodb":
                self._dynamodb(operation, json.loads(body or b"{}"), json.loads(answer or b"{}"))
            elif service == "sqs" and operation in ("SendMessage", "SendMessageBatch"):
                sent = json.loads(body or b"{}")
                self.sqs_sent += len(sent.get("Entries", [])) or 1
            elif service == "sqs" and operation == "ReceiveMessage":
                # EventBridge's deliveries to queues happen inside moto: every message is
                # received at least once, so the received count stands in for them.
                self.sqs_received += len(json.loads(answer or b"{}").get("Messages", []))
            elif service == "events" and operation == "PutEvents":
                entries = json.loads(body or b"{}").get("Entries", [])
                self.events += sum(units(len(json.dumps(e)), 64 * 1024) for e in entries)

    def _wrote(self, table: str, key: dict[str, Any], write_units: int) -> None:
        self.write_units += write_units
        self.write_units_by_kind[kind_of(table, key)] += write_units

    def _dynamodb(self, operation: str, asked: dict[str, Any], answer: dict[str, Any]) -> None:
        def read_factor(consistent: bool) -> float:
            return 1.0 if consistent else 0.5

        if operation == "GetItem" and "Item" in answer:
            self.read_units += units(item_size(answer["Item"]), 4096) * read_factor(
                bool(asked.get("ConsistentRead"))
            )
        elif operation == "GetItem":
            self.read_units += read_factor(bool(asked.get("ConsistentRead")))
        elif operation in ("Query", "Scan"):
            total = sum(item_size(item) for item in answer.get("Items", []))
            self.read_units += units(total, 4096) * read_factor(bool(asked.get("ConsistentRead")))
        elif operation == "BatchGetItem":
            for table, items in answer.get("Responses", {}).items():
                consistent = bool(asked["RequestItems"].get(table, {}).get("ConsistentRead"))
                for item in items:
                    self.read_units += units(item_size(item), 4096) * read_factor(consistent)
        elif operation == "TransactGetItems":
            for response in answer.get("Responses", []):
                self.read_units += 2 * units(item_size(response.get("Item", {})), 4096)
        elif operation == "PutItem":
            self._wrote(asked["TableName"], asked["Item"], units(item_size(asked["Item"]), 1024))
        elif operation in ("UpdateItem", "DeleteItem"):
            self.updated.append((asked["TableName"], asked["Key"], 1))
        elif operation == "BatchWriteItem":
            for writes in asked.get("RequestItems", {}).values():
                for write in writes:
                    put = write.get("PutRequest")
                    self.write_units += units(item_size(put["Item"]), 1024) if put else 1
        elif operation == "TransactWriteItems":
            for entry in asked.get("TransactItems", []):
                ((kind, spec),) = entry.items()
                if kind == "Put":
                    item = spec["Item"]
                    self._wrote(spec["TableName"], item, 2 * units(item_size(item), 1024))
                else:  # Update, Delete, ConditionCheck: sized by the item they touch
                    self.updated.append((spec["TableName"], spec["Key"], 2))


def _service_and_operation(environ: dict[str, Any]) -> tuple[str, str]:
    target = str(environ.get("HTTP_X_AMZ_TARGET") or "")
    authorization = str(environ.get("HTTP_AUTHORIZATION") or "")
    scope = authorization.split("Credential=", 1)[-1].split(",", 1)[0].split("/")
    service = scope[3] if len(scope) > 3 else "unknown"
    if target.startswith("DynamoDBStreams"):
        return "dynamodbstreams", target.split(".")[-1]
    if target:
        return service, target.split(".")[-1]
    if service == "s3":
        return "s3", str(environ.get("REQUEST_METHOD"))
    return service, "request"


def install(meter: Meter) -> None:
    """Counts every request moto's server answers (it runs in this process)."""
    answer_request = DomainDispatcherApplication.__call__

    def counted(
        self: Any, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        answer = b"".join(answer_request(self, environ, start_response))
        if UNCOUNTED_KEY not in str(environ.get("HTTP_AUTHORIZATION") or ""):
            service, operation = _service_and_operation(environ)
            try:
                meter.record(service, operation, body, answer)
            except (ValueError, KeyError) as exc:  # a figure lost, never the request
                print(f"not metered: {service} {operation}: {exc}")
        return [answer]

    DomainDispatcherApplication.__call__ = counted  # type: ignore[method-assign]


# ---- Lambda ---------------------------------------------------------------------------------


class Invocations:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count: Counter[str] = Counter()
        self.gb_seconds: Counter[str] = Counter()

    def wrap(self, key: str, function: Any) -> None:
        invoke, memory_gb = function.invoke, function.spec.memory_mb / 1024

        def timed(event: dict[str, Any]) -> Any:
            started = time.perf_counter()
            try:
                return invoke(event)
            finally:
                billed_ms = math.ceil((time.perf_counter() - started) * 1000)
                with self.lock:
                    self.count[key] += 1
                    self.gb_seconds[key] += memory_gb * billed_ms / 1000

        function.invoke = timed

    def snapshot(self) -> tuple[Counter[str], Counter[str]]:
        with self.lock:
            return Counter(self.count), Counter(self.gb_seconds)


# ---- the day of business --------------------------------------------------------------------


class Receiver(BaseHTTPRequestHandler):
    received = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with Receiver.lock:
            Receiver.received += 1
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        return


def quiet_for(meter: Meter, invocations: Invocations, seconds: float, timeout: float) -> None:
    """Waits until nothing billable happened for `seconds`: what the charges set off is done."""
    deadline = time.monotonic() + timeout

    def state() -> tuple[Any, ...]:
        counted = meter.snapshot()["requests"]
        billable = sum(n for key, n in counted.items() if key not in POLLING)
        return billable, sum(invocations.snapshot()[0].values())

    last, since = state(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = state()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return


Touched = list[tuple[str, dict[str, Any], int]]  # table, key, factor


def write_units_of_updates(stack: LocalStack, updated: Touched) -> Counter[str]:
    """Updates, deletes and condition checks bill for the item they touch: sized by reading
    it now (a deleted one counts one unit). By kind of item."""
    reader = _uncounted_client(stack)
    found: Counter[str] = Counter()
    for table, key, factor in updated:
        item = reader.get_item(TableName=table, Key=key).get("Item")
        found[kind_of(table, key)] += factor * (units(item_size(item), 1024) if item else 1)
    return found


def _uncounted_client(stack: LocalStack) -> Any:
    import boto3

    return boto3.client(
        "dynamodb",
        endpoint_url=stack.aws_endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=UNCOUNTED_KEY,
        aws_secret_access_key="unused",
    )


def charge(url: str, secret: str) -> str:
    answer = requests.post(
        f"{url}/v1/charges",
        data={"amount": 2500, "currency": "usd", "source": "tok_visa"},
        headers={"Authorization": f"Bearer {secret}", "Idempotency-Key": str(uuid.uuid4())},
        timeout=30,
    )
    answer.raise_for_status()
    return str(answer.json()["id"])


def settle(stack: LocalStack, processor_url: str, charge_ids: set[str]) -> int:
    """The processor's settlement file of these charges, dropped where it drops its files."""
    asked: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).date().isoformat(), "lag_days": 0}
    answer = requests.post(f"{processor_url}/_sandbox/settlements", json=asked, timeout=30)
    rows = [row for row in answer.json()["rows"] if row["charge_id"] in charge_ids]
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    s3 = aws_client("s3", stack.aws_endpoint_url)
    key = f"settlements/bench/{uuid.uuid4().hex}.csv"
    s3.put_object(Bucket=SETTLEMENT_BUCKET.name, Key=key, Body=out.getvalue().encode())
    return len(rows)


# ---- dollars --------------------------------------------------------------------------------


def lines_of(
    requests_by_op: Counter[tuple[str, str]],
    read_units: float,
    write_units: float,
    sqs_messages: int,
    events: int,
    invoked: Counter[str],
    gb_seconds: Counter[str],
) -> list[tuple[str, float, str]]:
    """(line, dollars, what it counts) for everything counted."""
    lines = [
        ("DynamoDB writes", write_units * PRICES["dynamodb_write_unit"], f"{write_units:.0f} WRU"),
        ("DynamoDB reads", read_units * PRICES["dynamodb_read_unit"], f"{read_units:.1f} RRU"),
        ("EventBridge", events * PRICES["eventbridge_event"], f"{events} events"),
        (
            "SQS",
            3 * sqs_messages * PRICES["sqs_request"],
            f"{sqs_messages} messages x (send, receive, delete)",
        ),
    ]
    api_requests = sum(n for key, n in invoked.items() if key in API_FRONTED)
    lines.append(
        ("API Gateway", api_requests * PRICES["api_gateway_request"], f"{api_requests} requests")
    )
    for key in sorted(invoked):
        dollars = (
            invoked[key] * PRICES["lambda_request"]
            + gb_seconds[key] * PRICES["lambda_gb_second_arm"]
        )
        lines.append(
            (f"Lambda {key}", dollars, f"{invoked[key]} invocations, {gb_seconds[key]:.1f} GB-s")
        )
    s3_puts = sum(
        n for (svc, op), n in requests_by_op.items() if svc == "s3" and op in ("PUT", "POST")
    )
    s3_gets = sum(n for (svc, op), n in requests_by_op.items() if svc == "s3") - s3_puts
    lines.append(
        (
            "S3",
            s3_puts * PRICES["s3_put"] + s3_gets * PRICES["s3_get"],
            f"{s3_puts} puts, {s3_gets} gets",
        )
    )
    kms = sum(n for (svc, _), n in requests_by_op.items() if svc == "kms")
    lines.append(("KMS", kms * PRICES["kms_request"], f"{kms} requests"))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--charges", type=int, default=100)
    args = parser.parse_args()

    meter, invocations = Meter(), Invocations()
    install(meter)
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    quiet = {"POWERTOOLS_LOG_LEVEL": "WARNING", "CLEARLINE_DEFAULT_RATE_LIMIT": "1000"}
    stack = LocalStack(port=0, workers=2, extra_environment=quiet)
    info = stack.start()
    try:
        for key, function in stack.functions.items():
            invocations.wrap(key, function)
        if stack.vault is not None:
            invocations.wrap("vault", stack.vault)
        store = Store(info.main_table, aws_client("dynamodb", info.aws_endpoint_url))
        secret = create_merchant(store, "Cost Bench").secret_key
        endpoint = requests.post(
            f"{info.api_url}/v1/webhook_endpoints",
            data={
                "url": f"http://127.0.0.1:{receiver.server_address[1]}/hooks",
                "enabled_events[0]": "*",
            },
            headers={"Authorization": f"Bearer {secret}", "Idempotency-Key": str(uuid.uuid4())},
            timeout=30,
        )
        assert endpoint.status_code == 200, endpoint.text
        for _ in range(5):  # warm every worker: cold starts are not what a million pay for
            charge(info.api_url, secret)
        quiet_for(meter, invocations, 3.0, 120)
        before, (invoked_before, gb_before) = meter.snapshot(), invocations.snapshot()

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=4) as pool:
            made = set(pool.map(lambda _: charge(info.api_url, secret), range(args.charges)))
        quiet_for(meter, invocations, 3.0, 300)
        rows = settle(stack, info.processor_url, made)
        quiet_for(meter, invocations, 5.0, 300)
        seconds = time.perf_counter() - started
        after, (invoked_after, gb_after) = meter.snapshot(), invocations.snapshot()

        requests_by_op = after["requests"] - before["requests"]
        updated = after["updated"][len(before["updated"]) :]
        by_kind = after["write_units_by_kind"] - before["write_units_by_kind"]
        by_kind.update(write_units_of_updates(stack, updated))
        write_units = sum(by_kind.values())
        lines = lines_of(
            requests_by_op,
            after["read_units"] - before["read_units"],
            write_units,
            after["sqs_messages"] - before["sqs_messages"],
            after["events"] - before["events"],
            invoked_after - invoked_before,
            gb_after - gb_before,
        )
    finally:
        stack.stop()
        receiver.shutdown()

    per_million = 1e6 / args.charges
    table = sorted(lines, key=lambda line: -line[1])
    total = sum(dollars for _, dollars, _ in table) * per_million
    print(
        f"cost of {args.charges} charges (captured, one webhook endpoint, settled from "
        f"{rows} file rows) in {seconds:.0f} s on the local stack, at us-east-1 list prices"
    )
    print(f"  {'line':<26} {'$ / million charges':>20}   counted per charge")
    for name, dollars, what in table:
        print(f"  {name:<26} {dollars * per_million:>20.2f}   {_per_charge(what, args.charges)}")
    print(f"  {'total':<26} {total:>20.2f}")
    biggest = table[0]
    print(
        f"  biggest line: {biggest[0]}, {biggest[1] * per_million / total:.0%} of the total "
        "(Lambda durations are the local stack's: an upper bound)"
    )
    billable = {f"{svc}.{op}": n / args.charges for (svc, op), n in requests_by_op.items()}
    print(f"  AWS requests per charge: {json.dumps(dict(sorted(billable.items())))}")
    top = ", ".join(f"{kind} {n / args.charges:.1f}" for kind, n in by_kind.most_common(6))
    print(f"  DynamoDB write units per charge, the largest by item: {top}")
    print(f"  webhooks received: {Receiver.received}")


def _per_charge(what: str, charges: int) -> str:
    """'1234 WRU' -> '12.34 WRU' (per charge), for each number in the description."""
    words = []
    for word in what.split():
        try:
            words.append(
                f"{float(word.rstrip(',')) / charges:.2f}" + ("," if word.endswith(",") else "")
            )
        except ValueError:
            words.append(word)
    return " ".join(words)


if __name__ == "__main__":
    main()
