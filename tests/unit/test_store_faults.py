"""DynamoDB failures through the real api handler: each answered as the design says.

The local moto serializes transactions, so a TransactionConflict cannot happen there by
itself: it is raised here by the DynamoDB client, as botocore raises it on AWS.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from clearline.store import Store

from .test_api_events import api, invoke  # noqa: F401 - the api fixture is used by name


class FailingTransactions:
    """A DynamoDB client whose TransactWriteItems fail with `error`; the rest works."""

    def __init__(self, client: Any, error: Callable[[], ClientError]) -> None:
        self._client = client
        self._error = error
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        if name != "transact_write_items":
            return getattr(self._client, name)

        def refuse(**_: Any) -> Any:
            self.refused += 1
            raise self._error()

        return refuse


def conflict() -> ClientError:
    return ClientError(
        {
            "Error": {"Code": "TransactionCanceledException", "Message": "conflict"},
            "CancellationReasons": [{"Code": "None"}, {"Code": "TransactionConflict"}],
        },  # type: ignore[typeddict-item]
        "TransactWriteItems",
    )


def throttled() -> ClientError:
    return ClientError(
        {"Error": {"Code": "InternalServerError", "Message": "try again"}}, "TransactWriteItems"
    )


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [(conflict, 409, "lock_timeout"), (throttled, 503, "service_unavailable")],
)
def test_a_failed_transaction_is_refused_as_retryable_and_writes_no_charge(
    api: tuple[Any, str],  # noqa: F811
    store: Store,
    error: Callable[[], ClientError],
    status: int,
    code: str,
) -> None:
    handler, secret = api
    import api_routes

    services = api_routes.services()
    failing = FailingTransactions(services.store.client, error)
    services.store.client = failing
    try:
        response = invoke(handler, "create_charge", secret)
    finally:
        services.store.client = failing._client
    assert failing.refused == 1, "the write-ahead was the first transaction, and it failed"
    assert response["statusCode"] == status, response["body"]
    body = json.loads(response["body"])
    assert body["error"]["code"] == code
    headers = response.get("multiValueHeaders") or {}
    assert headers["Stripe-Should-Retry"] == ["true"]
    assert [i for i in store.scan("CHARGE#") if i["sk"] == "CHARGE"] == []

    retried = invoke(handler, "create_charge", secret)  # the same Idempotency-Key
    assert retried["statusCode"] == 200, retried["body"]
    assert json.loads(retried["body"])["status"] == "succeeded"
