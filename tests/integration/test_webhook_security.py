"""Webhook endpoints over HTTP (the stripe SDK against the local stack): where they may
point, in test and live mode, and signing secrets that are never stored in the clear."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import stripe

from tests.polling import eventually

from .conftest import Stack
from .receivers import Receiver

pytestmark = pytest.mark.integration


def key() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver()
    yield started
    started.server.shutdown()


def sdk_for(stack: Stack, merchant: dict[str, Any]) -> stripe.StripeClient:
    return stripe.StripeClient(merchant["secret_key"], base_addresses={"api": stack.url})


def refused(create: Callable[[], Any]) -> stripe.InvalidRequestError:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        create()
    assert raised.value.http_status == 400
    error = raised.value.error
    assert error is not None and error.param == "url" and error.type == "invalid_request_error"
    return raised.value


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


# ---- test mode: loopback receivers, never the stack itself or private networks ---------------

OWN_SERVICES: list[tuple[str, Callable[[Stack], str]]] = [
    ("processor", lambda s: f"http://127.0.0.1:{port_of(s.info.processor_url)}/_sandbox/faults"),
    ("processor-by-name", lambda s: f"http://localhost:{port_of(s.info.processor_url)}/v1"),
    ("moto", lambda s: f"http://127.0.0.1:{port_of(s.info.aws_endpoint_url)}/"),
    ("moto-ipv6", lambda s: f"http://[::1]:{port_of(s.info.aws_endpoint_url)}/"),
    ("front-door", lambda s: f"http://127.0.0.1:{s.info.port}/v1/charges"),
]
NOT_PUBLIC: list[tuple[str, str]] = [
    ("metadata", "http://169.254.169.254/latest/meta-data/iam/"),
    ("container-credentials", "http://169.254.170.2/v2/credentials"),
    ("private", "https://10.0.0.1/hooks"),
    ("cgnat", "https://100.64.0.1/hooks"),
    ("mapped-loopback", "http://[::ffff:127.0.0.1]:3000/hooks"),
    ("nat64-private", "https://[64:ff9b::a00:1]/hooks"),
    ("unspecified", "http://0.0.0.0:3000/hooks"),
]


@pytest.mark.parametrize("url_of", [u for _, u in OWN_SERVICES], ids=[n for n, _ in OWN_SERVICES])
def test_a_test_mode_endpoint_at_the_stacks_own_services_is_refused(
    stack: Stack, url_of: Callable[[Stack], str]
) -> None:
    sdk = sdk_for(stack, stack.create_merchant("Curious Shop"))
    error = refused(
        lambda: sdk.v1.webhook_endpoints.create(
            params={"url": url_of(stack), "enabled_events": ["*"]},  # type: ignore[typeddict-item]
            options={"idempotency_key": key()},
        )
    )
    assert "where the stack's own services listen" in error.user_message
    assert sdk.v1.webhook_endpoints.list().data == []


@pytest.mark.parametrize("url", [u for _, u in NOT_PUBLIC], ids=[n for n, _ in NOT_PUBLIC])
def test_a_test_mode_endpoint_off_the_public_internet_is_refused(stack: Stack, url: str) -> None:
    sdk = sdk_for(stack, stack.create_merchant("Curious Shop"))
    error = refused(
        lambda: sdk.v1.webhook_endpoints.create(
            params={"url": url, "enabled_events": ["*"]},  # type: ignore[typeddict-item]
            options={"idempotency_key": key()},
        )
    )
    assert "must point at the public internet" in error.user_message
    assert sdk.v1.webhook_endpoints.list().data == []


def test_an_update_to_a_refused_url_is_refused_and_changes_nothing(
    stack: Stack, receiver: Receiver
) -> None:
    sdk = sdk_for(stack, stack.create_merchant("Moving Shop"))
    endpoint = sdk.v1.webhook_endpoints.create(
        params={"url": receiver.url, "enabled_events": ["*"]},  # type: ignore[typeddict-item]
        options={"idempotency_key": key()},
    )
    moto = f"http://127.0.0.1:{port_of(stack.info.aws_endpoint_url)}/"
    for url in (moto, "http://169.254.169.254/latest/meta-data/"):
        refused(
            lambda url=url: sdk.v1.webhook_endpoints.update(  # type: ignore[misc]
                endpoint.id, params={"url": url}, options={"idempotency_key": key()}
            )
        )
    assert sdk.v1.webhook_endpoints.retrieve(endpoint.id).url == receiver.url


# ---- live mode: https to public addresses only -----------------------------------------------


@pytest.fixture
def live(stack: Stack) -> dict[str, Any]:
    done = stack.clearline("merchants", "create", "Live Shop", "--json", "--live")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_live_mode_merchants_have_live_keys(live: dict[str, Any]) -> None:
    assert live["livemode"] is True
    assert live["secret_key"].startswith("sk_live_")
    assert live["publishable_key"].startswith("pk_live_")


def test_live_mode_endpoints_must_be_https_on_public_addresses(
    stack: Stack, live: dict[str, Any], receiver: Receiver
) -> None:
    sdk = sdk_for(stack, live)

    def create(url: str) -> Any:
        return sdk.v1.webhook_endpoints.create(
            params={"url": url, "enabled_events": ["*"]},  # type: ignore[typeddict-item]
            options={"idempotency_key": key()},
        )

    # What a test-mode merchant may use on the local stack, a live one may not.
    assert "must use https" in refused(lambda: create(receiver.url)).user_message
    loopback = refused(lambda: create(f"https://127.0.0.1:{receiver.port}/webhooks"))
    assert "a loopback address" in loopback.user_message
    assert "loopback" in refused(lambda: create(f"https://localhost:{receiver.port}/")).user_message
    assert "private" in refused(lambda: create("https://10.0.0.1/hooks")).user_message
    assert "metadata" in refused(lambda: create("https://169.254.169.254/latest")).user_message
    assert "Cannot resolve" in refused(lambda: create("https://nowhere.invalid/")).user_message

    endpoint = create("https://93.184.216.34/hooks")
    assert endpoint.livemode is True
    assert endpoint.secret and endpoint.secret.startswith("whsec_")
    for url in ("http://93.184.216.34/hooks", "https://192.168.0.10/hooks"):
        refused(
            lambda url=url: sdk.v1.webhook_endpoints.update(  # type: ignore[misc]
                endpoint.id, params={"url": url}, options={"idempotency_key": key()}
            )
        )
    assert sdk.v1.webhook_endpoints.retrieve(endpoint.id).url == "https://93.184.216.34/hooks"
    sdk.v1.webhook_endpoints.delete(endpoint.id)


# ---- signing secrets at rest -----------------------------------------------------------------


def stored_text(stack: Stack) -> str:
    """Every item of the stack's tables, as DynamoDB holds them."""
    client = stack.dynamodb()
    items: list[dict[str, Any]] = []
    for table in (stack.info.main_table, stack.info.idempotency_table):
        for page in client.get_paginator("scan").paginate(TableName=table):
            items.extend(page["Items"])
    return json.dumps(items, default=str)


def test_signing_secrets_are_never_stored_in_the_clear_yet_replay_and_sign(
    stack: Stack, receiver: Receiver
) -> None:
    sdk = sdk_for(stack, stack.create_merchant("Sealed Shop"))
    idempotency_key = key()

    def create() -> Any:
        return sdk.v1.webhook_endpoints.create(
            params={"url": receiver.url, "enabled_events": ["charge.succeeded"]},  # type: ignore[typeddict-item]
            options={"idempotency_key": idempotency_key},
        )

    endpoint = create()
    secret = endpoint.secret
    assert secret and secret.startswith("whsec_")
    stored = stored_text(stack)
    assert "whsec_" not in stored
    assert secret.removeprefix("whsec_") not in stored

    replayed = create()
    assert replayed.last_response is not None
    assert replayed.last_response.headers.get("Idempotent-Replayed") == "true"
    assert (replayed.id, replayed.secret) == (endpoint.id, secret)
    assert "secret" not in sdk.v1.webhook_endpoints.retrieve(endpoint.id)  # shown on create only

    receiver.secret = secret
    charge = sdk.v1.charges.create(
        params={"amount": 1500, "currency": "usd", "source": "tok_visa"},
        options={"idempotency_key": key()},
    )
    (event,) = eventually(lambda: list(receiver.accepted), message="a signed delivery")
    assert event.type == "charge.succeeded" and event.data.object["id"] == charge.id
    assert "whsec_" not in stored_text(stack)
