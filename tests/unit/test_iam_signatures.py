"""The vault's internal routes are IAM-authorized: Clearline's client signs each request
(SigV4, as its Lambda role would), and the local front door verifies it as API Gateway
does, refusing anything unsigned, altered, stale or signed by someone else."""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from clearline.processor import ProcessorRejected
from clearline.vault_client import VaultClient
from clearline_local import iam_signatures
from clearline_local.environment import FAKE_CREDENTIALS
from clearline_local.frontdoor import LOCAL_CALLER_ARN, FrontDoorServer

REGION = "us-east-1"


def _verify(method: str, url: str, headers: dict[str, str], body: bytes, **kw: Any) -> bool:
    return iam_signatures.verify(
        method,
        url,
        headers,
        body,
        access_key=kw.get("access_key", FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"]),
        secret_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region=REGION,
        now=kw.get("now"),
    )


@pytest.fixture
def signing_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_REGION", REGION)


def _signed(method: str, url: str, body: dict[str, Any] | None) -> tuple[dict[str, str], bytes]:
    client = VaultClient("http://127.0.0.1:1")
    data = json.dumps(body).encode() if body is not None else None
    headers = client._signed_headers(method, url, data)
    headers["Host"] = url.split("/")[2]  # what the HTTP client adds on the wire
    return headers, data or b""


def test_a_signed_request_verifies_and_any_change_to_it_does_not(signing_env: None) -> None:
    url = "http://127.0.0.1:4243/internal/payment_methods/pm_1?merchant=acct_1"
    headers, body = _signed("GET", url, None)
    assert _verify("GET", url, headers, body)
    assert not _verify("POST", url, headers, body)
    assert not _verify("GET", url.replace("acct_1", "acct_2"), headers, body)
    assert not _verify("GET", url.replace("pm_1", "pm_2"), headers, body)
    assert not _verify("GET", url, {k: v for k, v in headers.items() if k != "X-Amz-Date"}, body)
    assert not _verify("GET", url, {}, body)  # unsigned
    assert not _verify("GET", url, headers, body, access_key="AKIDSOMEONEELSE")


def test_the_body_is_signed_too(signing_env: None) -> None:
    url = "http://127.0.0.1:4243/internal/authorizations"
    headers, body = _signed("POST", url, {"amount": 100, "payment_method": "pm_1"})
    assert _verify("POST", url, headers, body)
    assert not _verify("POST", url, headers, body.replace(b"100", b"999"))


def test_a_stale_signature_is_refused(signing_env: None) -> None:
    url = "http://127.0.0.1:4243/internal/authentications/3ds_1"
    headers, body = _signed("GET", url, None)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=16)
    assert not _verify("GET", url, headers, body, now=later)


@pytest.fixture
def vault_door() -> Iterator[tuple[FrontDoorServer, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        seen.append(event)
        identity = event["requestContext"]["identity"]
        body = json.dumps({"id": "pm_1", "caller": identity.get("userArn")})
        return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": body}

    def verify(method: str, url: str, headers: dict[str, str], body: bytes) -> bool:
        return _verify(method, url, headers, body)

    door = FrontDoorServer("127.0.0.1", 0, invoke, "prod", verify_signature=verify).start()
    yield door, seen
    door.stop()


def test_the_front_door_lets_only_signed_calls_reach_internal_routes(
    signing_env: None, vault_door: tuple[FrontDoorServer, list[dict[str, Any]]]
) -> None:
    door, seen = vault_door
    client = VaultClient(door.url)
    answer = client.payment_method("acct_1", "pm_1")
    assert answer == {"id": "pm_1", "caller": LOCAL_CALLER_ARN}
    assert seen[-1]["requestContext"]["identity"]["userArn"] == LOCAL_CALLER_ARN

    unsigned = urllib.request.Request(f"{door.url}/internal/payment_methods/pm_1?merchant=acct_1")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(unsigned, timeout=5)
    assert refused.value.code == 403
    assert len(seen) == 1  # the refused call never reached the function


def test_public_paths_reach_the_function_without_a_caller(
    vault_door: tuple[FrontDoorServer, list[dict[str, Any]]],
) -> None:
    door, seen = vault_door
    with urllib.request.urlopen(f"{door.url}/clearline.js", timeout=5) as response:
        assert json.loads(response.read())["caller"] is None
    assert "userArn" not in seen[-1]["requestContext"]["identity"]


def test_a_front_door_without_a_verifier_refuses_every_internal_call(signing_env: None) -> None:
    door = FrontDoorServer("127.0.0.1", 0, lambda event: {"statusCode": 200}, "prod").start()
    try:
        with pytest.raises(ProcessorRejected) as refused:
            VaultClient(door.url).payment_method("acct_1", "pm_1")
        assert refused.value.status == 403
    finally:
        door.stop()
