"""The local stack: moto, the sandbox processor, and the api Lambda behind a front door.

Everything is built from clearline.topology, the description the CDK app reads too.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

from clearline.config import WEBHOOK_ALLOW_LOOPBACK_ENV, WEBHOOK_SECRETS_KEY_ENV
from clearline.merchants import create_merchant
from clearline.rate_limits import DEFAULT_RATE_ENV
from clearline.store import Store
from clearline.topology import (
    FX_RATES_FUNCTION,
    PROCESSOR_NOTIFICATION_PATH,
    TOPOLOGY,
    VAULT_FINGERPRINT_KEY_ENV,
    VAULT_KEY_ENV,
    VAULT_PUBLIC_URL_ENV,
    VAULT_RATE_PER_IP_ENV,
    VAULT_TOPOLOGY,
    Topology,
)
from clearline_local import iam_signatures, moto_queries, moto_transactions
from clearline_local.demo_shop import DemoShop
from clearline_local.environment import FAKE_CREDENTIALS, function_environment
from clearline_local.frontdoor import FrontDoorServer, KeyGate
from clearline_local.lambda_runtime import REGION, LocalFunction
from clearline_local.provision import (
    provision_bank_accounts_key,
    provision_buckets,
    provision_messaging,
    provision_processor_notification_secret,
    provision_tables,
    provision_vault_keys,
    provision_webhook_secrets_key,
)
from clearline_local.sandbox_bank import SandboxBank
from clearline_local.sandbox_processor import SandboxProcessor
from clearline_local.sandbox_rates import SandboxRates
from clearline_local.state import StackInfo, state_dir
from clearline_local.triggers import Trigger, scheduled_event, start_triggers
from presentation.links import PUBLIC_URL_ENV

LOOPBACK = "127.0.0.1"
# Every local client (the tests, a browser) comes from loopback: one address for them all.
LOCAL_VAULT_LIMIT_PER_IP = 100_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def workers_path(port: int, directory: Path | None = None) -> Path:
    """Where a running stack lists each function's worker pids, kept current as workers are
    replaced (for tools and tests that stop workers to see the stack recover)."""
    return (directory or state_dir()) / f"{port}.workers"


def read_worker_pids(port: int, directory: Path | None = None) -> dict[str, list[int]]:
    return {
        key: [int(pid) for pid in pids]
        for key, pids in json.loads(workers_path(port, directory).read_text()).items()
    }


def aws_client(service: str, endpoint_url: str) -> Any:
    return boto3.client(  # type: ignore[call-overload]  # service is any name
        service,
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


class SerializedMotoServer(ThreadedMotoServer):
    """moto's threaded server, answering one request at a time.

    Stock moto is not safe for concurrent transactions (its snapshot deepcopy fails when
    another thread writes meanwhile), and the faster transactions of moto_transactions
    rely on nothing changing between their check and their writes. DynamoDB serializes
    conflicting writes too, so one at a time changes no outcome.
    """

    def _server_entry(self) -> None:
        moto_transactions.install()  # safe only because requests are serialized below
        moto_queries.install()
        app = DomainDispatcherApplication(create_backend_app)
        lock = threading.Lock()

        def one_at_a_time(
            environ: dict[str, Any], start_response: Callable[..., Any]
        ) -> Iterable[bytes]:
            with lock:
                return list(app(environ, start_response))  # consume the body inside the lock

        self._server = make_server(
            self._ip_address, self._port, one_at_a_time, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()


class LocalStack:
    def __init__(
        self,
        port: int = 4242,
        *,
        workers: int = 2,
        processor_latency_ms: int = 0,
        processor_timeout_seconds: float = 10.0,
        topology: Topology = TOPOLOGY,
        extra_environment: dict[str, str] | None = None,
        vault_port: int | None = None,
        checkout_port: int | None = None,
        notifications_port: int | None = None,
        default_rate_limit: int | None = None,
    ) -> None:
        self.port = port
        # Requests a second for keys without a limit of their own; None: Stripe's numbers.
        self.default_rate_limit = default_rate_limit
        # The vault is an origin of its own, as in AWS: beside the api's port, or any.
        self.vault_port = vault_port if vault_port is not None else (port + 1 if port else 0)
        self.vault_topology = VAULT_TOPOLOGY
        self.vault: LocalFunction | None = None
        self.vault_door: FrontDoorServer | None = None
        # The demo checkout is a merchant's website: an origin of its own, next to the vault's.
        self.checkout_port = (
            checkout_port if checkout_port is not None else (port + 2 if port else 0)
        )
        self.demo_shop: DemoShop | None = None
        # The processor's notifications arrive at an API of their own; only the processor
        # calls it, and it is told where, so any free port will do.
        self.notifications_port = notifications_port or 0
        self.notification_door: FrontDoorServer | None = None
        self.workers = workers
        self.topology = topology
        self.extra_environment = {
            "CLEARLINE_PROCESSOR_TIMEOUT": str(processor_timeout_seconds),
            **(extra_environment or {}),
        }
        self.moto_port = free_port()
        self.moto = SerializedMotoServer(ip_address=LOOPBACK, port=self.moto_port, verbose=False)
        self.processor = SandboxProcessor(host=LOOPBACK, latency_ms=processor_latency_ms)
        self.bank = SandboxBank(host=LOOPBACK)
        self.rates = SandboxRates(host=LOOPBACK)
        self.bank_accounts_key = ""
        self.functions: dict[str, LocalFunction] = {}
        self.triggers: list[Trigger] = []
        self.front_door: FrontDoorServer | None = None
        self.info: StackInfo | None = None
        self._workers_lock = threading.Lock()
        self._stopping = False

    @property
    def aws_endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.moto_port}"

    def function_environment(self, key: str, topology: Topology | None = None) -> dict[str, str]:
        """What the CDK app sets on the function, with local names and endpoints."""
        topology = topology or self.topology
        return function_environment(
            topology,
            key,
            aws_endpoint_url=self.aws_endpoint_url,
            processor_url=self.processor.url,
            extra=self.extra_environment,
            vault_url=self.vault_door.url if self.vault_door else "",
            bank_url=self.bank.url,
            bank_accounts_key=self.bank_accounts_key,
            rates_url=self.rates.url,
        )

    def start(self) -> StackInfo:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request lines
        self.moto.start()
        clients = {
            name: aws_client(name, self.aws_endpoint_url)
            for name in (
                "dynamodb",
                "dynamodbstreams",
                "sqs",
                "events",
                "s3",
                "kms",
                "secretsmanager",
            )
        }
        provision_tables(self.topology, clients["dynamodb"])
        provision_tables(self.vault_topology, clients["dynamodb"])
        queue_arns = provision_messaging(self.topology, clients["sqs"], clients["events"])
        provision_buckets(self.topology, clients["s3"], queue_arns)
        self.processor.start()
        self.bank.start()
        self.rates.start()
        self.bank_accounts_key = provision_bank_accounts_key(clients["kms"])
        notification_secret = provision_processor_notification_secret(clients["secretsmanager"])
        # Bound now and served once the api is warm: the functions must know its port.
        front_door = FrontDoorServer(
            LOOPBACK,
            self.port,
            self._invoke_api,
            self.topology.api.stage,
            verify_signature=self._verify_signature,  # the operators' /admin routes
            key_gate=KeyGate(self._invoke_authorizer),  # API keys, usage plans
        )
        self.port = int(front_door.server_address[1])
        vault_door = FrontDoorServer(
            LOOPBACK,
            self.vault_port,
            self._invoke_vault,
            self.vault_topology.api.stage,
            verify_signature=self._verify_signature,
            name="vault-door",
        )
        self.vault_door = vault_door
        self.vault_port = int(vault_door.server_address[1])
        # The processor's notifications reach Clearline at an API of their own, as in AWS.
        assert self.topology.notifications is not None
        notification_door = FrontDoorServer(
            LOOPBACK,
            self.notifications_port,
            self._invoke_intake,
            self.topology.notifications.stage,
            name="notification-door",
        )
        self.notification_door = notification_door
        self.notifications_port = int(notification_door.server_address[1])
        self.processor.configure_notifications(
            notification_door.url + PROCESSOR_NOTIFICATION_PATH, notification_secret
        )
        demo = create_merchant(
            Store(self.topology.table("main").name, clients["dynamodb"]), "Demo shop"
        )
        # Bound now, serving once the api and the vault do.
        demo_shop = DemoShop(
            LOOPBACK,
            self.checkout_port,
            api_url=front_door.url,
            vault_url=vault_door.url,
            secret_key=demo.secret_key,
            publishable_key=demo.publishable_key,
        )
        self.checkout_port = demo_shop.port
        own_ports = sorted(
            {
                self.moto_port,
                self.processor.port,
                self.bank.port,
                self.rates.port,
                self.port,
                self.vault_port,
                self.checkout_port,
                self.notifications_port,
            }
        )
        self.extra_environment = {
            **self.extra_environment,
            WEBHOOK_SECRETS_KEY_ENV: provision_webhook_secrets_key(clients["kms"]),
            # Local receivers (`clearline listen`, the tests') are on loopback, so test-mode
            # endpoints may be too; never on the stack's own ports (moto, the processor, the
            # front door), which would take signed POSTs as commands.
            WEBHOOK_ALLOW_LOOPBACK_ENV: ",".join(str(port) for port in own_ports),
            # Receipts and error-code pages are served by the api, through the front door.
            PUBLIC_URL_ENV: f"http://{LOOPBACK}:{self.port}",
        }
        sealing_key, fingerprint_key = provision_vault_keys(clients["kms"])
        vault_environment = {
            VAULT_KEY_ENV: sealing_key,
            VAULT_FINGERPRINT_KEY_ENV: fingerprint_key,
            VAULT_PUBLIC_URL_ENV: vault_door.url,
            VAULT_RATE_PER_IP_ENV: str(LOCAL_VAULT_LIMIT_PER_IP),
        }
        try:
            vault_spec = self.vault_topology.function(self.vault_topology.api.function)
            self.vault = LocalFunction(
                vault_spec,
                {
                    **self.function_environment(vault_spec.key, self.vault_topology),
                    **vault_environment,
                },
                self.workers,
            )
            self.vault.warm()
            api = self.topology.api
            for spec in self.topology.functions:
                # Every request meets the api, and every keyed one the authorizer first.
                in_front = spec.key in (api.function, api.authorizer)
                environment = self.function_environment(spec.key)
                # Both keep the limits: the authorizer, and the api on keyless routes.
                if in_front and self.default_rate_limit is not None:
                    environment[DEFAULT_RATE_ENV] = str(self.default_rate_limit)
                function = LocalFunction(
                    spec,
                    environment,
                    self.workers if in_front else 1,
                    on_environments_changed=self._write_worker_pids,
                )
                function.warm()
                self.functions[spec.key] = function
            # Rates before the first request: a conversion never waits for the schedule.
            self.functions[FX_RATES_FUNCTION.key].invoke(
                scheduled_event(f"{FX_RATES_FUNCTION.key}-schedule", datetime.now(UTC))
            )
            self.triggers = start_triggers(
                self.topology, self.functions, clients, queue_arns, self.aws_endpoint_url
            )
        except BaseException:
            front_door.server_close()
            vault_door.server_close()
            notification_door.server_close()
            demo_shop.server_close()
            raise
        self.front_door = front_door.start()
        vault_door.start()
        notification_door.start()
        self.demo_shop = demo_shop.start()
        self.info = StackInfo(
            api_url=self.front_door.url,
            port=self.port,
            aws_endpoint_url=self.aws_endpoint_url,
            processor_url=self.processor.url,
            bank_url=self.bank.url,
            bank_accounts_key=self.bank_accounts_key,
            rates_url=self.rates.url,
            vault_url=vault_door.url,
            notifications_url=notification_door.url + PROCESSOR_NOTIFICATION_PATH,
            checkout_url=demo_shop.url,
            demo_merchant_id=demo.merchant.id,
            demo_secret_key=demo.secret_key,
            demo_publishable_key=demo.publishable_key,
            pid=os.getpid(),
            started=time.time(),
            environment=self.extra_environment,
            vault_environment=vault_environment,
        )
        self.info.write()
        self._write_worker_pids()
        return self.info

    def _invoke_api(self, event: dict[str, Any]) -> Any:
        return self.functions[self.topology.api.function].invoke(event)

    def _invoke_authorizer(self, event: dict[str, Any]) -> Any:
        assert self.topology.api.authorizer is not None
        return self.functions[self.topology.api.authorizer].invoke(event)

    def _invoke_intake(self, event: dict[str, Any]) -> Any:
        assert self.topology.notifications is not None
        return self.functions[self.topology.notifications.function].invoke(event)

    def _invoke_vault(self, event: dict[str, Any]) -> Any:
        assert self.vault is not None, "the vault's door opens after its function is warm"
        return self.vault.invoke(event)

    @staticmethod
    def _verify_signature(method: str, url: str, headers: dict[str, str], body: bytes) -> bool:
        """As API Gateway checks an IAM-authorized call: signed by the stack's credentials."""
        return iam_signatures.verify(
            method,
            url,
            headers,
            body,
            access_key=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            secret_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region=REGION,
        )

    def _write_worker_pids(self) -> None:
        with self._workers_lock:
            if self.info is None or self._stopping:
                return  # written once the port is known, until the stack stops
            path = workers_path(self.port)
            temp = path.with_suffix(".tmp-workers")
            temp.write_text(json.dumps({key: f.pids() for key, f in self.functions.items()}))
            temp.replace(path)  # readers never see a half-written file

    def stop(self) -> None:
        if self.info:
            self.info.remove()
            with self._workers_lock:
                self._stopping = True
                workers_path(self.port).unlink(missing_ok=True)
        if self.demo_shop:
            self.demo_shop.stop()
        for trigger in self.triggers:
            trigger.stop()
        if self.front_door:
            self.front_door.stop()
        if self.vault_door:
            self.vault_door.stop()
        if self.notification_door:
            self.notification_door.stop()
        functions = [*self.functions.values(), *([self.vault] if self.vault else [])]
        for function in functions:  # a signal to the process group kills every worker at once
            function.closing()
        closers = [threading.Thread(target=function.close) for function in functions]
        for closer in closers:  # each waits for its workers to exit: all at once, not in turn
            closer.start()
        for closer in closers:
            closer.join()
        self.processor.stop()
        self.bank.stop()
        self.rates.stop()
        self.moto.stop()
