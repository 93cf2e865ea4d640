"""The `clearline` console command."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from clearline_local.state import NoStackRunning, StackInfo, find_stack


def _store(info: StackInfo) -> Any:
    from clearline.store import Store
    from clearline_local.stack import aws_client

    return Store(info.main_table, aws_client("dynamodb", info.aws_endpoint_url))


def cmd_up(args: argparse.Namespace) -> int:
    from clearline.merchants import create_merchant
    from clearline_local.stack import LocalStack

    stack = LocalStack(
        args.port,
        workers=args.workers,
        processor_latency_ms=args.processor_latency_ms,
        processor_timeout_seconds=args.processor_timeout,
    )
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        info = stack.start()
        test = create_merchant(_store(info), "Test merchant")
        print(
            f"""Clearline local stack is up.

  API base URL      {info.api_url}
  Secret key        {test.secret_key}
  Publishable key   {test.publishable_key}
  Sandbox processor {info.processor_url}
  AWS (moto)        {info.aws_endpoint_url}

Create a charge:
  curl {info.api_url}/v1/charges -u {test.secret_key}: \\
    -H "Idempotency-Key: $(uuidgen)" -d amount=5000 -d currency=usd -d source=tok_visa

More merchants: clearline merchants create "Shop name"   (in another terminal)
Press Ctrl-C to stop.""",
            flush=True,
        )
        stopping.wait()
    finally:
        print("Stopping the local stack...", file=sys.stderr, flush=True)
        stack.stop()
    return 0


def cmd_merchants_create(args: argparse.Namespace) -> int:
    from clearline.errors import ApiError
    from clearline.merchants import create_merchant

    info = find_stack(args.port)
    try:
        created = create_merchant(
            _store(info), args.name, fee_percent=args.fee_percent, fee_fixed=args.fee_fixed
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
        "api_url": info.api_url,
    }
    if args.json:
        print(json.dumps(record))
    else:
        for name, value in record.items():
            print(f"{name:16} {value}")
        print("\nThe secret key is shown once: Clearline keeps only its hash.")
    return 0


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


def cmd_openapi(args: argparse.Namespace) -> int:
    import os

    from clearline.topology import TOPOLOGY, table_env_var
    from clearline_local.lambda_runtime import load_handler

    os.environ.setdefault(table_env_var("main"), "unused")
    load_handler(TOPOLOGY.function(TOPOLOGY.api.function))
    from api_routes import app  # importable once load_handler has put functions/api on the path

    print(app.get_openapi_json_schema(title="Clearline API", version="2026-11-01"))
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="clearline", description="Clearline's local stack and tools."
    )
    commands = root.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start the local stack in the foreground")
    up.add_argument("--port", type=int, default=4242, help="front door port (0 picks a free one)")
    up.add_argument("--workers", type=int, default=2, help="api Lambda execution environments")
    up.add_argument("--processor-latency-ms", type=int, default=0)
    up.add_argument(
        "--processor-timeout",
        type=float,
        default=10.0,
        help="seconds the api waits for the processor",
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
    create.add_argument("--port", type=int, help="the stack whose front door is on this port")
    create.set_defaults(run=cmd_merchants_create)

    ledger = commands.add_parser("ledger", help="inspect the ledger").add_subparsers(
        dest="action", required=True
    )
    verify = ledger.add_parser("verify", help="check every journal and balance")
    verify.add_argument("--port", type=int)
    verify.set_defaults(run=cmd_ledger_verify)

    commands.add_parser("openapi", help="print the API's OpenAPI document").set_defaults(
        run=cmd_openapi
    )
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
