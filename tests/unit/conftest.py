"""Unit-test fixtures: moto in-process, tables from the topology, a real sandbox processor."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import boto3
import pytest
from moto import mock_aws

from clearline import fx
from clearline.config import WEBHOOK_SECRETS_KEY_ENV
from clearline.store import Store
from clearline.topology import MAIN_TABLE, TOPOLOGY
from clearline_local.provision import provision_tables, provision_webhook_secrets_key
from clearline_local.sandbox_processor import SandboxProcessor
from clearline_local.sandbox_rates import BASE_RATES


@contextmanager
def moto_account() -> Iterator[Any]:
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
        try:
            yield client
        finally:
            os.environ.pop(WEBHOOK_SECRETS_KEY_ENV, None)


@pytest.fixture
def aws() -> Iterator[Any]:
    with moto_account() as client:
        yield client


@pytest.fixture
def store(aws: Any) -> Store:
    return Store(MAIN_TABLE.name, aws)


def record_rates(store: Store, as_of: float | None = None) -> fx.RateSheet:
    """The sandbox provider's rates, stored as the rates function stores them."""
    sheet = fx.RateSheet(
        int(time.time() if as_of is None else as_of),
        {code: Decimal(rate) for code, rate in BASE_RATES.items()},
    )
    fx.RateBook(store).record(sheet)
    return sheet


@pytest.fixture
def rates(store: Store) -> fx.RateSheet:
    return record_rates(store)


@pytest.fixture(scope="session")
def processor() -> Iterator[SandboxProcessor]:
    with SandboxProcessor(fault_delay_seconds=1.0) as sandbox:
        yield sandbox
