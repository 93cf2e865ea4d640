"""Unit-test fixtures: moto in-process, tables from the topology, a real sandbox processor."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from clearline.config import WEBHOOK_SECRETS_KEY_ENV
from clearline.store import Store
from clearline.topology import MAIN_TABLE, TOPOLOGY
from clearline_local.provision import provision_tables, provision_webhook_secrets_key
from clearline_local.sandbox_processor import SandboxProcessor


@pytest.fixture
def aws() -> Iterator[Any]:
    """A fresh moto account with the topology's tables and the webhook secrets key;
    yields a DynamoDB client."""
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    os.environ.pop("AWS_ENDPOINT_URL", None)
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        provision_tables(TOPOLOGY, client)
        key = provision_webhook_secrets_key(boto3.client("kms", region_name="us-east-1"))
        os.environ[WEBHOOK_SECRETS_KEY_ENV] = key
        yield client
        os.environ.pop(WEBHOOK_SECRETS_KEY_ENV, None)


@pytest.fixture
def store(aws: Any) -> Store:
    return Store(MAIN_TABLE.name, aws)


@pytest.fixture(scope="session")
def processor() -> Iterator[SandboxProcessor]:
    with SandboxProcessor(fault_delay_seconds=1.0) as sandbox:
        yield sandbox
