"""The `clearline` console command."""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from clearline.rate_limits import DEFAULT_RATE_ENV
from clearline.topology import WEBHOOK_QUEUE
from clearline_local.state import NoStackRunning, StackInfo, find_stack


def _store(info: StackInfo) -> Any:
    from clearline.store import Store
    from clearline_local.stack import aws_client

    return Store(info.main_table, aws_client("dynamodb", info.aws_endpoint_url))


STOP_DIAGNOSIS_SECONDS = 20


def cmd_up(args: argparse.Namespace) -> int:
    import dataclasses

    from clearline.merchants import create_merchant
    from clearline.topology import TOPOLOGY
    from clearline_local.stack import LocalStack

    # Compressible retries: fewer attempts and shorter waits make tests run in seconds.
    webhook_queue = dataclasses.replace(WEBHOOK_QUEUE, max_receive_count=args.webhook_max_attempts)
    topology = dataclasses.replace(
        TOPOLOGY,
        queues=tuple(webhook_queue if q.key == WEBHOOK_QUEUE.key else q for q in TOPOLOGY.queues),
    )
    stack = LocalStack(
        args.port,
        vault_port=args.vault_port,
        checkout_port=args.checkout_port,
        topology=topology,
        workers=args.workers,
        processor_latency_ms=args.processor_latency_ms,
        processor_timeout_seconds=args.processor_timeout,
        default_rate_limit=args.default_rate_limit,
        extra_environment={
            "CLEARLINE_WEBHOOK_RETRY_BASE_SECONDS": str(args.webhook_retry_base),
            "CLEARLINE_WEBHOOK_TIMEOUT_SECONDS": str(args.webhook_timeout),
        },
    )
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    # `kill -USR1` prints where every thread is, for a stack that seems stuck.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        info = stack.start()
        test = create_merchant(_store(info), "Test merchant")
        # On your own stack you are its operator too: the link opens the operations views.
        dashboard = _dashboard_link(info, test.merchant.id, operations=True)
        print(
            f"""Clearline local stack is up.

  API base URL      {info.api_url}
  Secret key        {test.secret_key}
  Publishable key   {test.publishable_key}
  Card vault        {info.vault_url}   (clearline.js, the card field, tokenization)
  Demo checkout     {info.checkout_url}   (a shop's website, paying with test cards)
  Sandbox processor {info.processor_url}
  AWS (moto)        {info.aws_endpoint_url}

Dashboard (a one-time sign-in link for the test merchant and its operator, good for 15 minutes):
  {dashboard}

Create a charge:
  curl {info.api_url}/v1/charges -u {test.secret_key}: \\
    -H "Idempotency-Key: $(uuidgen)" -d amount=5000 -d currency=usd -d source=tok_visa

More merchants: clearline merchants create "Shop name"   (in another terminal)
Press Ctrl-C to stop.""",
            flush=True,
        )
        # Wake now and then: a signal delivered to another thread only runs its handler
        # when the main thread next runs Python, and a wait with no timeout never does.
        while not stopping.wait(0.5):
            pass
    finally:
        print("Stopping the local stack...", file=sys.stderr, flush=True)
        # A stop that takes this long is stuck somewhere: say where, in the stack's output.
        # Left armed past stack.stop(), so that an exit stuck joining something says so too
        # (the interpreter disarms it when it finishes exiting).
        faulthandler.dump_traceback_later(STOP_DIAGNOSIS_SECONDS, exit=False)
        stack.stop()
        print("Stopped.", file=sys.stderr, flush=True)
    return 0


def _dashboard_link(info: StackInfo, merchant_id: str, *, operations: bool = False) -> str:
    from clearline.dashboard import DashboardSessions

    token = DashboardSessions(_store(info)).issue_link(merchant_id, operations=operations)
    return f"{info.api_url}/dashboard/sign-in?token={token}"


def cmd_dashboard_link(args: argparse.Namespace) -> int:
    """A one-time sign-in link to a merchant's dashboard."""
    from clearline.merchants import get_merchant

    info = find_stack(args.port)
    if get_merchant(_store(info), args.merchant) is None:
        print(f"error: no merchant {args.merchant}", file=sys.stderr)
        return 1
    print(_dashboard_link(info, args.merchant, operations=args.operations))
    return 0


def cmd_merchants_create(args: argparse.Namespace) -> int:
    from clearline.errors import ApiError
    from clearline.merchants import create_merchant

    info = find_stack(args.port)
    try:
        created = create_merchant(
            _store(info),
            args.name,
            fee_percent=args.fee_percent,
            fee_fixed=args.fee_fixed,
            livemode=args.live,
            settlement_currencies=args.settlement_currency or ["usd"],
            fx_fee_percent=args.fx_fee_percent,
            rate_limit_per_second=args.rate_limit,
        )
    except ApiError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    record = {
        "id": created.merchant.id,
        "name": created.merchant.name,
        "secret_key": created.secret_key,
        "publishable_key": created.publishable_key,
        "fee_percent": created.merchant.fee_basis_points / 100,
        "fee_fixed": created.merchant.fee_fixed,
        "livemode": created.merchant.livemode,
        "settlement_currencies": list(created.merchant.settlement_currencies),
        "fx_fee_percent": created.merchant.fx_fee_basis_points / 100,
        # Its own limit, or None: its mode's default (25 a second in test mode, 100 live).
        "rate_limit_per_second": created.merchant.rate_limit_per_second,
        "api_url": info.api_url,
    }
    if args.json:
        print(json.dumps(record))
    else:
        for name, value in record.items():
            print(f"{name:16} {value}")
        print("\nThe secret key is shown once: Clearline keeps only its hash.")
    return 0


def _admin_request(
    info: StackInfo, method: str, path: str, body: dict[str, Any] | None = None
) -> Any:
    """A call to the api's admin routes, signed as an operator (SigV4), as in AWS. Prints
    the error and returns None when refused."""
    import urllib.error
    import urllib.request

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from clearline_local.environment import FAKE_CREDENTIALS
    from clearline_local.lambda_runtime import REGION

    url = f"{info.api_url}{path}"
    data = None if body is None else json.dumps(body).encode()
    headers = {} if body is None else {"Content-Type": "application/json"}
    signed = AWSRequest(method, url, data=data, headers=headers)
    credentials = Credentials(
        FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"], FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
    )
    SigV4Auth(credentials, "execute-api", REGION).add_auth(signed)
    request = urllib.request.Request(url, data, dict(signed.headers.items()), method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        error = json.loads(exc.read() or b"{}").get("error", {})
        print(f"error: {error.get('message') or exc.reason}", file=sys.stderr)
        return None


def cmd_merchants_bank_account(args: argparse.Namespace) -> int:
    """Set a merchant's bank account for payouts in a currency, through the api's admin
    route, as an operator."""
    info = find_stack(args.port)
    body = {
        "currency": args.currency,
        "routing_number": args.routing_number,
        "account_number": args.account_number,
        **({"account_holder_name": args.holder} if args.holder else {}),
    }
    path = f"/admin/merchants/{args.merchant}/bank_accounts"
    account = _admin_request(info, "POST", path, body)
    if account is None:
        return 2
    if args.json:
        print(json.dumps(account))
    else:
        for name in ("id", "currency", "bank_name", "routing_number", "last4"):
            print(f"{name:16} {account[name]}")
    return 0


def cmd_radar_rules(args: argparse.Namespace) -> int:
    """A merchant's fraud rules (Clearline's own API: Stripe has none), as an operator:
    list them, add one (`Block if :card_country: != :ip_country:`), remove one by id, or
    turn one of Radar's default rules off or back on (`disable-default block_if_high_risk`)."""
    if args.action != "list" and not args.rule:
        print(f"error: radar rules {args.action} needs the rule", file=sys.stderr)
        return 2
    info = find_stack(args.port)
    path = f"/admin/merchants/{args.merchant}/radar_rules"
    if args.action == "add":
        rules = _admin_request(info, "POST", path, {"rule": args.rule})
    elif args.action == "remove":
        rules = _admin_request(info, "DELETE", f"{path}/{args.rule}")
    elif args.action in ("disable-default", "enable-default"):
        enabled = "true" if args.action == "enable-default" else "false"
        rules = _admin_request(info, "POST", f"{path}/defaults/{args.rule}", {"enabled": enabled})
    else:
        rules = _admin_request(info, "GET", path)
    if rules is None:
        return 2
    if args.json:
        print(json.dumps(rules))
    else:
        for rule in rules["data"]:
            print(f"{rule['id']}  {rule['action']} if {rule['predicate']}")
        for rule in rules.get("defaults", []):
            state = "on " if rule["enabled"] else "off"
            print(f"{rule['id']}  {state} (default) {rule['action']} if {rule['predicate']}")
    return 0


def cmd_bank_report(args: argparse.Namespace) -> int:
    """The sandbox bank's payout report for a date, as CSV, uploaded for reconciliation."""
    from clearline.reconciliation import BANK_REPORT_COLUMNS
    from clearline.topology import BANK_REPORT_PREFIX

    info = find_stack(args.port)
    rows = _post_json(f"{info.bank_url}/_sandbox/reports", {"date": args.date})["rows"]
    day = datetime.fromisoformat(args.date)
    key = f"{BANK_REPORT_PREFIX}{day:%Y/%m/%d}/report_{int(time.time() * 1000)}.csv"
    _publish_csv(info, rows, BANK_REPORT_COLUMNS, key, args)
    return 0


def _publish_csv(
    info: StackInfo,
    rows: list[dict[str, Any]],
    columns: list[str],
    key: str,
    args: argparse.Namespace,
) -> None:
    """Rows as CSV: written to `--output` if asked, and uploaded to the settlement bucket
    under `key` (which the reconciler picks up) unless `--no-upload`."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    if args.output:
        with open(args.output, "w") as out:
            out.write(buffer.getvalue())
        print(f"wrote {len(rows)} rows to {args.output}")
    if not args.no_upload:
        s3, bucket = _settlement_bucket(info)
        s3.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue().encode())
        print(f"uploaded {len(rows)} rows to s3://{bucket}/{key}")


def cmd_bank_advance(args: argparse.Namespace) -> int:
    """Move the sandbox bank's clock forward: transfers arrive (or are returned) on its time."""
    info = find_stack(args.port)
    now = _post_json(f"{info.bank_url}/_sandbox/clock", {"advance_seconds": args.days * 86400})
    print(f"the bank's time is now {datetime.fromtimestamp(now['now'], UTC):%Y-%m-%d %H:%M:%S}")
    return 0


def cmd_fx_rates(args: argparse.Namespace) -> int:
    """The stored exchange rates the api converts at, and how old they are."""
    import time

    from clearline.fx import LATEST_SK, MAX_RATE_AGE_SECONDS, RATES_PK

    info = find_stack(args.port)
    latest = _store(info).get(RATES_PK, LATEST_SK)
    if latest is None:
        print("no rates stored: conversions are refused until the rates function runs")
        return 1
    age = int(time.time() - int(latest["as_of"]))
    state = "usable" if age <= MAX_RATE_AGE_SECONDS else "STALE: conversions are refused"
    print(f"as of {datetime.fromtimestamp(int(latest['as_of']), UTC):%Y-%m-%d %H:%M:%S} UTC")
    print(f"{age} seconds old ({state}; the bound is {MAX_RATE_AGE_SECONDS} s)")
    for code, rate in sorted(latest["rates"].items()):
        print(f"  1 usd = {rate} {code}")
    return 0


def cmd_fx_drift(args: argparse.Namespace) -> int:
    """Move the sandbox provider's rates; they reach the api at the rates function's next pull."""
    info = find_stack(args.port)
    body = {"percent": args.percent, **({"currency": args.currency} if args.currency else {})}
    print(json.dumps(_post_json(f"{info.rates_url}/_sandbox/drift", body)))
    return 0


def cmd_fx_outage(args: argparse.Namespace) -> int:
    """Make the sandbox provider fail (error_500), serve an old sheet (stale), or recover."""
    info = find_stack(args.port)
    print(json.dumps(_post_json(f"{info.rates_url}/_sandbox/outage", {"mode": args.mode})))
    return 0


def _post_json(url: str, body: dict[str, Any]) -> Any:
    import urllib.request

    request = urllib.request.Request(
        url,
        method="POST",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def cmd_ledger_verify(args: argparse.Namespace) -> int:
    from clearline.ledger import verify

    report = verify(_store(find_stack(args.port)))
    print(f"journals: {report.journals}  accounts: {report.accounts}")
    for currency, totals in sorted(report.totals.items()):
        print(f"  {currency}: debits {totals['debits']}  credits {totals['credits']}")
    for violation in report.violations:
        print(f"VIOLATION {violation}")
    print("ledger OK" if report.ok else f"ledger has {len(report.violations)} violation(s)")
    return 0 if report.ok else 1


def _function_env(info: StackInfo, key: str) -> dict[str, str]:
    from clearline.topology import TOPOLOGY, VAULT_TOPOLOGY
    from clearline_local.environment import function_environment

    in_vault = key in {spec.key for spec in VAULT_TOPOLOGY.functions}
    return function_environment(
        VAULT_TOPOLOGY if in_vault else TOPOLOGY,
        key,
        aws_endpoint_url=info.aws_endpoint_url,
        processor_url=info.processor_url,
        extra={**info.environment, **(info.vault_environment if in_vault else {})},
        vault_url=info.vault_url,
        bank_url=info.bank_url,
        bank_accounts_key=info.bank_accounts_key,
        rates_url=info.rates_url,
    )


def _function_spec(key: str) -> Any:
    from clearline.topology import TOPOLOGY, VAULT_TOPOLOGY

    functions = (*TOPOLOGY.functions, *VAULT_TOPOLOGY.functions)
    specs = {spec.key: spec for spec in functions}
    return specs[key]


def _parse_time(text: str) -> datetime:
    """An ISO time, or now plus an offset such as +8d, +2h or +90m (to move the clock)."""
    now = datetime.now(UTC)
    if text.startswith("+"):
        unit = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}[text[-1]]
        return now + timedelta(**{unit: float(text[1:-1])})
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def cmd_invoke(args: argparse.Namespace) -> int:
    """Run one function's real handler in this process against the running stack."""
    import os
    import uuid

    from clearline_local.lambda_runtime import LocalLambdaContext, load_handler
    from clearline_local.triggers import scheduled_event

    info = find_stack(args.port)
    spec = _function_spec(args.function)
    os.environ.update(_function_env(info, spec.key))
    if args.event:
        with open(args.event) as source:
            event = json.load(source)
    else:
        event = scheduled_event(f"{spec.key}-schedule", _parse_time(args.time))
    handler = load_handler(spec)
    result = handler(
        event, LocalLambdaContext(spec.key, spec.memory_mb, spec.timeout_seconds, str(uuid.uuid4()))
    )
    print(json.dumps(result, default=str))
    return 0


def cmd_webhooks_attempts(args: argparse.Namespace) -> int:
    from clearline.webhooks import attempts_for

    attempts = attempts_for(_store(find_stack(args.port)), args.event_id)
    if not attempts:
        print(f"no delivery attempts recorded for {args.event_id}")
    for attempt in attempts:
        when = datetime.fromtimestamp(attempt["at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        status = attempt.get("status") or "---"
        print(
            f"{when}  {attempt['endpoint']}  {status}  {attempt['latency_ms']:>6} ms  "
            f"{attempt['url']}  {attempt.get('error') or ''}".rstrip()
        )
    return 0


def _webhook_queue(info: StackInfo) -> tuple[Any, str, str]:
    from clearline.topology import WEBHOOK_QUEUE
    from clearline_local.environment import queue_url
    from clearline_local.stack import aws_client

    return (
        aws_client("sqs", info.aws_endpoint_url),
        queue_url(info.aws_endpoint_url, WEBHOOK_QUEUE.name),
        queue_url(info.aws_endpoint_url, WEBHOOK_QUEUE.dlq_name),
    )


def cmd_webhooks_redeliver(args: argparse.Namespace) -> int:
    """Queue an event for delivery again, to every subscribed endpoint (support's tool)."""
    from clearline.topology import EVENT_SOURCE
    from presentation.links import Links
    from presentation.outbox import webhook_detail

    info = find_stack(args.port)
    item = _store(info).get(f"EVENT#{args.event_id}", "EVENT")
    if item is None:
        print(f"error: no such event: {args.event_id}", file=sys.stderr)
        return 2
    sqs, queue, _ = _webhook_queue(info)
    links = Links.from_env(fallback=info.api_url)
    detail = {**webhook_detail(item, links), "force": True}
    sqs.send_message(
        QueueUrl=queue,
        MessageBody=json.dumps(
            {"source": EVENT_SOURCE, "detail-type": item["type"], "detail": detail}
        ),
    )
    print(f"queued {args.event_id} for redelivery")
    return 0


def cmd_webhooks_redrive(args: argparse.Namespace) -> int:
    """Move every message from the webhook dead-letter queue back to the delivery queue."""
    sqs, queue, dlq = _webhook_queue(find_stack(args.port))
    moved = 0
    while True:
        messages = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            break
        for message in messages:
            sqs.send_message(QueueUrl=queue, MessageBody=message["Body"])
            sqs.delete_message(QueueUrl=dlq, ReceiptHandle=message["ReceiptHandle"])
            moved += 1
    print(f"redrove {moved} message(s) from the dead-letter queue")
    return 0


def cmd_listen(args: argparse.Namespace) -> int:
    """Forward a merchant's events to a local URL, signed, printing each delivery.

    It registers a webhook endpoint for the URL through the API (as the merchant), follows
    the merchant's new events through the API, prints each delivery attempt the
    dispatcher records, and removes the endpoint when stopped."""
    import time
    import urllib.request

    from clearline.webhooks import attempts_for

    info = find_stack(args.port)
    auth = {"Authorization": f"Bearer {args.api_key}"}

    def call(method: str, path: str, body: bytes | None = None) -> Any:
        headers = {**auth, "Idempotency-Key": f"listen-{time.time()}"} if body else auth
        request = urllib.request.Request(
            f"{info.api_url}{path}", data=body, headers=headers, method=method
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    started = int(time.time())
    endpoint = call(
        "POST",
        "/v1/webhook_endpoints",
        f"url={args.forward_to}&enabled_events[]={args.events}".encode(),
    )
    print(f"Ready! Your webhook signing secret is {endpoint['secret']}")
    print(f"Forwarding events to {args.forward_to}  (Ctrl-C to stop)", flush=True)
    store, shown = _store(info), set()
    stopping = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        while not stopping.wait(0.5):
            events = call("GET", f"/v1/events?limit=100&created[gte]={started}")["data"]
            for event in reversed(events):
                for attempt in attempts_for(store, event["id"]):
                    if attempt["endpoint"] != endpoint["id"] or attempt["sk"] in shown:
                        continue
                    shown.add(attempt["sk"])
                    status = attempt.get("status") or attempt.get("error")
                    print(
                        f"{datetime.fromtimestamp(attempt['at'], UTC):%H:%M:%S}  --> "
                        f"{event['type']} [{event['id']}]  <-- [{status}] POST "
                        f"{attempt['url']}",
                        flush=True,
                    )
    finally:
        call("DELETE", f"/v1/webhook_endpoints/{endpoint['id']}")
    return 0


def _settlement_bucket(info: StackInfo) -> tuple[Any, str]:
    from clearline.topology import SETTLEMENT_BUCKET
    from clearline_local.stack import aws_client

    return aws_client("s3", info.aws_endpoint_url), SETTLEMENT_BUCKET.name


def cmd_settlements_generate(args: argparse.Namespace) -> int:
    """The sandbox processor's settlement file for a date, optionally with faults, as CSV."""
    from clearline.reconciliation import COLUMNS

    info = find_stack(args.port)
    asked = {"date": args.date, "lag_days": args.lag_days}
    rows = _post_json(f"{info.processor_url}/_sandbox/settlements", asked)["rows"]
    rows = inject_faults(rows, args)
    day = datetime.fromisoformat(args.date)
    key = f"settlements/{day:%Y/%m/%d}/batch_{day:%Y%m%d}_{int(time.time() * 1000)}.csv"
    _publish_csv(info, rows, COLUMNS, key, args)
    return 0


def inject_faults(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The processor's mistakes the reconciler must catch (rows are numbered from 1)."""
    rows = [dict(r) for r in rows]
    if args.wrong_amount:
        rows[args.wrong_amount - 1]["amount"] += 1
    if args.wrong_currency:
        row = rows[args.wrong_currency - 1]
        row["currency"] = "eur" if row["currency"] != "eur" else "usd"
    if args.duplicate_row:
        rows.append(dict(rows[args.duplicate_row - 1]))
    if args.extra_row:
        template = (
            rows[0]
            if rows
            else {"settlement_date": args.date, "batch_id": "batch", "currency": "usd", "fee": 0}
        )
        rows.append(
            {
                **template,
                "processor_reference": "pa_unknown",
                "type": "capture",
                "amount": 1234,
                "net": 1234,
                "charge_id": "ch_not_ours",
                "refund_id": "",
            }
        )
    if args.missing_row:
        del rows[args.missing_row - 1]
    return rows


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Reconcile a local settlement file against the running stack's ledger, or with
    `status`, summarise the reports the reconciler wrote."""
    if args.file == "status":
        return reconcile_status(args)
    import hashlib

    from clearline.reconciliation import Reconciler

    info = find_stack(args.port)
    with open(args.file, "rb") as raw:
        etag = hashlib.md5(raw.read(), usedforsecurity=False).hexdigest()
    with open(args.file) as counted:
        total = max(0, sum(1 for _ in counted) - 1)

    def progress(done: int) -> None:
        width = 40
        filled = width * done // max(total, 1)
        print(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} rows",
            end="",
            file=sys.stderr,
            flush=True,
        )

    with open(args.file, newline="") as source:
        report = Reconciler(_store(info)).reconcile(
            source, file=args.file, etag=etag, progress=progress
        )
    print(file=sys.stderr)
    if report.already_reconciled:
        print(f"{args.file} (etag {etag}) was reconciled before; nothing posted again.")
        return 0
    print(f"{'outcome':24} {'rows':>8}")
    for kind, count in sorted(report.counts.items()):
        print(f"{kind:24} {count:>8}")
    for currency, amount in sorted(report.settled.items()):
        print(f"settled {currency:16} {amount:>8}")
    for mismatch in report.mismatches:
        print(f"  {mismatch.kind}: row {mismatch.row}  {mismatch.detail}")
    return 0 if not report.mismatches else 1


def reconcile_status(args: argparse.Namespace) -> int:
    info = find_stack(args.port)
    s3, bucket = _settlement_bucket(info)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="reports/").get("Contents", [])
    if not listed:
        print("no reconciliation reports yet")
    print(f"{'file':60} {'rows':>6} {'matched':>8} {'mismatches':>10}")
    for entry in sorted(listed, key=lambda e: e["LastModified"]):
        report = json.loads(s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read())
        matched = report["counts"].get("matched", 0)
        print(
            f"{report['file'][:60]:60} {report['rows']:>6} {matched:>8} "
            f"{len(report['mismatches']):>10}"
        )
        for mismatch in report["mismatches"]:
            print(f"    {mismatch['kind']}: row {mismatch['row']}  {mismatch['detail']}")
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    import os

    from clearline.topology import TOPOLOGY, table_env_var
    from clearline_local.lambda_runtime import load_handler

    os.environ.setdefault(table_env_var("main"), "unused")
    load_handler(TOPOLOGY.function(TOPOLOGY.api.function))
    # Importable once load_handler has put functions/api on the path.
    from api_routes import app
    from openapi_document import document_json

    print(document_json(app))
    return 0


def _default_rate_limit() -> int | None:
    from clearline.rate_limits import default_rate_from

    return default_rate_from(os.environ.get(DEFAULT_RATE_ENV))


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="clearline", description="Clearline's local stack and tools."
    )
    commands = root.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start the local stack in the foreground")
    up.add_argument("--port", type=int, default=4242, help="front door port (0 picks a free one)")
    up.add_argument(
        "--vault-port", type=int, help="the card vault's port (default: --port + 1; 0: a free one)"
    )
    up.add_argument(
        "--checkout-port", type=int, help="the demo checkout's port (default: --port + 2; 0: any)"
    )
    up.add_argument("--workers", type=int, default=2, help="api Lambda execution environments")
    up.add_argument("--processor-latency-ms", type=int, default=0)
    up.add_argument(
        "--processor-timeout",
        type=float,
        default=10.0,
        help="seconds the api waits for the processor",
    )
    up.add_argument(
        "--webhook-retry-base",
        type=float,
        default=60.0,
        help="seconds before the first webhook retry (doubling after)",
    )
    up.add_argument(
        "--webhook-max-attempts",
        type=int,
        default=WEBHOOK_QUEUE.max_receive_count,
        help="delivery attempts before an event goes to the dead-letter queue",
    )
    up.add_argument(
        "--webhook-timeout",
        type=float,
        default=10.0,
        help="seconds a webhook endpoint has to answer",
    )
    up.add_argument(
        "--default-rate-limit",
        type=int,
        default=_default_rate_limit(),
        metavar="N",
        help="requests a second for every key without a limit of its own (default: "
        f"${DEFAULT_RATE_ENV}, else Stripe's: 25 in test mode, 100 live)",
    )
    up.set_defaults(run=cmd_up)

    merchants = commands.add_parser("merchants", help="manage merchants").add_subparsers(
        dest="action", required=True
    )
    create = merchants.add_parser("create", help="create a merchant and its API keys")
    create.add_argument("name")
    create.add_argument("--json", action="store_true", help="print one JSON object")
    create.add_argument("--fee-percent", type=float, default=2.9)
    create.add_argument("--fee-fixed", type=int, default=30, help="minor units per charge")
    create.add_argument(
        "--settlement-currency",
        action="append",
        help="a currency the merchant is paid in (repeat for several; the first is the "
        "default, which charges in other currencies convert into; usd if none)",
    )
    create.add_argument(
        "--fx-fee-percent", type=float, default=1.0, help="the fee on converted payments"
    )
    create.add_argument(
        "--live",
        action="store_true",
        help="a live-mode merchant (sk_live_ keys): its webhooks go to public https URLs only",
    )
    create.add_argument(
        "--rate-limit",
        type=int,
        metavar="N",
        help="requests a second its keys may make (default: 25 in test mode, 100 live)",
    )
    create.add_argument("--port", type=int, help="the stack whose front door is on this port")
    create.set_defaults(run=cmd_merchants_create)
    bank_account = merchants.add_parser(
        "bank-account", help="set a merchant's bank account for payouts in a currency"
    )
    bank_account.add_argument("merchant", help="the merchant's id (acct_...)")
    bank_account.add_argument("--currency", default="usd")
    bank_account.add_argument("--routing-number", default="110000000")
    bank_account.add_argument("--account-number", required=True)
    bank_account.add_argument("--holder", help="the account holder's name")
    bank_account.add_argument("--json", action="store_true", help="print one JSON object")
    bank_account.add_argument("--port", type=int)
    bank_account.set_defaults(run=cmd_merchants_bank_account)

    dashboard = commands.add_parser("dashboard", help="the dashboard").add_subparsers(
        dest="action", required=True
    )
    link = dashboard.add_parser("link", help="print a one-time sign-in link for a merchant")
    link.add_argument("merchant", help="the merchant's id (acct_...)")
    link.add_argument(
        "--operations",
        action="store_true",
        help="for an operator: also the operations views, across every merchant",
    )
    link.add_argument("--port", type=int)
    link.set_defaults(run=cmd_dashboard_link)
    ledger = commands.add_parser("ledger", help="inspect the ledger").add_subparsers(
        dest="action", required=True
    )
    verify = ledger.add_parser("verify", help="check every journal and balance")
    verify.add_argument("--port", type=int)
    verify.set_defaults(run=cmd_ledger_verify)

    commands.add_parser("openapi", help="print the API's OpenAPI document").set_defaults(
        run=cmd_openapi
    )

    invoke = commands.add_parser("invoke", help="run one function's handler against the stack")
    invoke.add_argument("function", help="a function key of the topology, e.g. scheduler")
    invoke.add_argument("--event", help="a JSON event file (default: a scheduled event)")
    invoke.add_argument(
        "--time",
        default="+0s",
        help="the scheduled event's time: ISO, or an offset from now like +8d",
    )
    invoke.add_argument("--port", type=int)
    invoke.set_defaults(run=cmd_invoke)

    webhooks = commands.add_parser("webhooks", help="webhook deliveries").add_subparsers(
        dest="action", required=True
    )
    attempts = webhooks.add_parser("attempts", help="every delivery attempt of an event")
    attempts.add_argument("event_id")
    attempts.add_argument("--port", type=int)
    attempts.set_defaults(run=cmd_webhooks_attempts)
    redeliver = webhooks.add_parser("redeliver", help="deliver an event again")
    redeliver.add_argument("event_id")
    redeliver.add_argument("--port", type=int)
    redeliver.set_defaults(run=cmd_webhooks_redeliver)
    redrive = webhooks.add_parser("redrive", help="move the dead-letter queue back for delivery")
    redrive.add_argument("--port", type=int)
    redrive.set_defaults(run=cmd_webhooks_redrive)

    settlements = commands.add_parser("settlements", help="processor settlement files")
    generate = settlements.add_subparsers(dest="action", required=True).add_parser(
        "generate", help="the sandbox processor's settlement file for a date"
    )
    generate.add_argument("--date", required=True, help="settlement date, YYYY-MM-DD")
    generate.add_argument("--lag-days", type=int, default=2, help="T+N (default T+2)")
    generate.add_argument("--missing-row", type=int, metavar="N", help="drop row N")
    generate.add_argument("--extra-row", action="store_true", help="add a row that is not ours")
    generate.add_argument("--wrong-amount", type=int, metavar="N", help="row N's amount + 1")
    generate.add_argument("--wrong-currency", type=int, metavar="N", help="row N's currency")
    generate.add_argument("--duplicate-row", type=int, metavar="N", help="repeat row N")
    generate.add_argument("--output", help="also write the CSV to this file")
    generate.add_argument("--no-upload", action="store_true", help="do not drop it in S3")
    generate.add_argument("--port", type=int)
    generate.set_defaults(run=cmd_settlements_generate)

    bank = commands.add_parser("bank", help="the sandbox bank").add_subparsers(
        dest="action", required=True
    )
    report = bank.add_parser("report", help="the bank's payout report for a date")
    report.add_argument("--date", required=True, help="report date, YYYY-MM-DD (the bank's)")
    report.add_argument("--output", help="also write the CSV here")
    report.add_argument("--no-upload", action="store_true", help="do not upload it to S3")
    report.add_argument("--port", type=int)
    report.set_defaults(run=cmd_bank_report)
    advance = bank.add_parser("advance", help="move the bank's clock forward")
    advance.add_argument("--days", type=float, default=1.0)
    advance.add_argument("--port", type=int)
    advance.set_defaults(run=cmd_bank_advance)

    fx = commands.add_parser("fx", help="exchange rates").add_subparsers(
        dest="action", required=True
    )
    rates = fx.add_parser("rates", help="the stored rates and their age")
    rates.add_argument("--port", type=int)
    rates.set_defaults(run=cmd_fx_rates)
    drift = fx.add_parser("drift", help="move the sandbox provider's rates by a percentage")
    drift.add_argument("--percent", required=True, help="e.g. 2.5 or -1")
    drift.add_argument("--currency", help="one currency (default: all)")
    drift.add_argument("--port", type=int)
    drift.set_defaults(run=cmd_fx_drift)
    outage = fx.add_parser("outage", help="make the sandbox provider fail, or recover")
    outage.add_argument("mode", choices=["error_500", "stale", "none"])
    outage.add_argument("--port", type=int)
    outage.set_defaults(run=cmd_fx_outage)

    radar = commands.add_parser("radar", help="fraud rules").add_subparsers(
        dest="what", required=True
    )
    rules = radar.add_parser("rules", help="a merchant's fraud rules (an operator's)")
    rules.add_argument(
        "action", choices=["list", "add", "remove", "disable-default", "enable-default"]
    )
    rules.add_argument(
        "rule",
        nargs="?",
        help="add: the rule's text; remove: its id; disable-default, enable-default: the id "
        "of one of Radar's default rules (block_if_high_risk, manual_review_if_elevated_risk)",
    )
    rules.add_argument("--merchant", required=True, help="the merchant's id (acct_...)")
    rules.add_argument("--json", action="store_true", help="print one JSON object")
    rules.add_argument("--port", type=int)
    rules.set_defaults(run=cmd_radar_rules)

    reconcile = commands.add_parser("reconcile", help="reconcile a settlement file, or `status`")
    reconcile.add_argument("file", help="a settlement CSV, or `status` for the reports")
    reconcile.add_argument("--port", type=int)
    reconcile.set_defaults(run=cmd_reconcile)

    listen = commands.add_parser("listen", help="forward a merchant's events to a local URL")
    listen.add_argument("--forward-to", required=True)
    listen.add_argument("--api-key", required=True, help="the merchant's secret key")
    listen.add_argument("--events", default="*", help="event types to forward (default all)")
    listen.add_argument("--port", type=int)
    listen.set_defaults(run=cmd_listen)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except NoStackRunning as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
