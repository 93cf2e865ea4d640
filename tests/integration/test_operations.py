"""What an on-call engineer relies on: request ids in replies and logs, the CLI, key storage."""

from __future__ import annotations

import json
import subprocess
import uuid
from typing import Any

import pytest
import requests

from .conftest import CLEARLINE, Stack

pytestmark = pytest.mark.integration


def test_request_id_is_in_the_reply_and_in_the_structured_log(
    stack: Stack, merchant: dict[str, Any]
) -> None:
    response = requests.post(
        f"{stack.url}/v1/charges",
        timeout=30,
        auth=(merchant["secret_key"], ""),
        data={"amount": 700, "currency": "usd", "source": "tok_amex"},
        headers={"Idempotency-Key": str(uuid.uuid4())},
    )
    assert response.status_code == 200
    request_id = response.headers["Request-Id"]
    logged = [
        json.loads(line)
        for line in stack.log_text().splitlines()
        if line.startswith("{") and request_id in line
    ]
    assert any(entry["message"] == "request" and entry["status"] == 200 for entry in logged)
    assert all(entry["request_id"] == request_id for entry in logged)


def test_merchants_create_prints_one_json_object_and_stores_only_hashes(stack: Stack) -> None:
    done = stack.clearline(
        "merchants", "create", "Hash Check", "--json", "--fee-percent", "1.5", "--fee-fixed", "25"
    )
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    assert created["id"].startswith("acct_")
    assert created["secret_key"].startswith("sk_test_")
    assert created["publishable_key"].startswith("pk_test_")
    assert (created["fee_percent"], created["fee_fixed"]) == (1.5, 25)
    everything = json.dumps(stack.dynamodb().scan(TableName=stack.info.main_table)["Items"])
    assert created["secret_key"] not in everything
    assert created["publishable_key"] not in everything


def test_merchants_create_without_a_stack_says_how_to_start_one(
    stack: Stack, tmp_path: Any
) -> None:
    env = {**stack.env, "CLEARLINE_STATE_DIR": str(tmp_path)}
    done = subprocess.run(
        [CLEARLINE, "merchants", "create", "Nobody", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "make up" in done.stderr
    assert done.stdout == ""


def test_ledger_verify_command(stack: Stack) -> None:
    done = stack.clearline("ledger", "verify")
    assert done.returncode == 0, done.stdout
    assert "ledger OK" in done.stdout
