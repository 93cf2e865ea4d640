"""The card vault's real handler behind a local front door, inside a unit test's moto
account: for tests of Clearline's api that need stored cards without a whole local stack.
Its internal routes check signatures as API Gateway's IAM authorization does."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3

from clearline.topology import (
    MAIN_TABLE,
    PROCESSOR_URL_ENV,
    VAULT_FINGERPRINT_KEY_ENV,
    VAULT_FUNCTION,
    VAULT_KEY_ENV,
    VAULT_PUBLIC_URL_ENV,
    VAULT_TABLE,
    VAULT_TOPOLOGY,
    VAULT_URL_ENV,
    table_env_var,
)
from clearline_local import iam_signatures
from clearline_local.frontdoor import FrontDoorServer
from clearline_local.lambda_runtime import LocalLambdaContext, load_handler
from clearline_local.provision import provision_tables, provision_vault_keys

REGION = "us-east-1"


def _verify(method: str, url: str, headers: dict[str, str], body: bytes) -> bool:
    return iam_signatures.verify(
        method,
        url,
        headers,
        body,
        access_key=os.environ["AWS_ACCESS_KEY_ID"],
        secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region=REGION,
    )


@contextmanager
def in_process_vault(processor_url: str) -> Iterator[str]:
    """Starts the vault (inside an active moto mock) and sets the variables that point the
    api's VaultClient at it; yields its URL."""
    provision_tables(VAULT_TOPOLOGY, boto3.client("dynamodb", region_name=REGION))
    sealing, fingerprints = provision_vault_keys(boto3.client("kms", region_name=REGION))
    handler = load_handler(VAULT_FUNCTION)
    import vault_routes  # on the path once its handler is loaded

    def invoke(event: dict[str, Any]) -> Any:
        context = LocalLambdaContext("vault", 512, 29, event["requestContext"]["requestId"])
        return handler(event, context)

    door = FrontDoorServer("127.0.0.1", 0, invoke, "prod", verify_signature=_verify)
    settings = {
        table_env_var(VAULT_TABLE.key): VAULT_TABLE.name,
        table_env_var(MAIN_TABLE.key): MAIN_TABLE.name,
        VAULT_KEY_ENV: sealing,
        VAULT_FINGERPRINT_KEY_ENV: fingerprints,
        VAULT_PUBLIC_URL_ENV: door.url,
        VAULT_URL_ENV: door.url,
        PROCESSOR_URL_ENV: processor_url,
        "AWS_REGION": REGION,
    }
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    vault_routes.services.cache_clear()
    door.start()
    try:
        yield door.url
    finally:
        door.stop()
        vault_routes.services.cache_clear()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
