"""The api handler run in the benchmark's own process against a local stack's moto server,
with a botocore hook that sees every DynamoDB call it makes and its parameters."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import boto3

from clearline_local.frontdoor import build_event
from clearline_local.lambda_runtime import LocalLambdaContext, load_handler
from clearline_local.stack import LocalStack

DynamoDBCall = Callable[[str, dict[str, Any]], None]  # (operation name, request parameters)


class InProcessApi:
    def __init__(self, stack: LocalStack, secret_key: str, on_dynamodb_call: DynamoDBCall) -> None:
        os.environ.update(stack.function_environment("api"))
        boto3.setup_default_session()
        assert boto3.DEFAULT_SESSION is not None
        # Registered before the handler builds its client, so the client inherits it.
        boto3.DEFAULT_SESSION.events.register(
            "provide-client-params.dynamodb",
            lambda model, params, **_: on_dynamodb_call(model.name, params),
        )
        self.handler = load_handler(stack.topology.function("api"))
        self.secret_key = secret_key

    def post(self, path: str, body: bytes) -> dict[str, Any]:
        headers = [
            ("Authorization", f"Bearer {self.secret_key}"),
            ("Idempotency-Key", str(uuid.uuid4())),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ]
        return self._send("POST", path, headers, body)

    def get(self, path: str) -> dict[str, Any]:
        return self._send("GET", path, [("Authorization", f"Bearer {self.secret_key}")], b"")

    def _send(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> dict[str, Any]:
        event = build_event(method, path, headers, body, "127.0.0.1", "prod")
        response = self.handler(event, LocalLambdaContext("api", 1024, 29, str(uuid.uuid4())))
        assert response["statusCode"] == 200, response["body"]
        return dict(response)
