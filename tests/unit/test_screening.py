"""What is refused before routing: card numbers and NUL characters in the URL and kept headers."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from presentation.errors import error_status


def _load_screening() -> Any:
    path = Path(__file__).resolve().parents[2] / "functions" / "api" / "screening.py"
    spec = importlib.util.spec_from_file_location("screening", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


screening = _load_screening()


def event(
    path: str = "/v1/charges",
    query: dict[str, list[str]] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {"path": path, "multiValueQueryStringParameters": query, "headers": headers}


@pytest.mark.parametrize(
    ("request_event", "param", "code"),
    [
        (event("/v1/charges/4242424242424242"), "path", "card_number_in_request"),
        (event(query={"type": ["4242 4242 4242 4242"]}), "type", "card_number_in_request"),
        (event(query={"a": ["1"], "x": ["ok", "5555555555554444"]}), "x", "card_number_in_request"),
        (event(query={"4242424242424242": ["1"]}), "query", "card_number_in_request"),
        (
            event(headers={"Idempotency-Key": "4242-4242-4242-4242"}),
            "header:idempotency-key",
            "card_number_in_request",
        ),
        (event(headers={"stripe-version": "a\x00"}), "header:stripe-version", "parameter_invalid"),
        (event("/v1/charges/ch_\x00"), "path", "parameter_invalid"),
        (event("/v1/charges/ch_%00"), "path", "parameter_invalid"),
        (event("/v1/charges/4242%204242%204242%204242"), "path", "card_number_in_request"),
        (event("/v1/charges/4242%2F4242%2F4242%2F4242"), "path", "card_number_in_request"),
    ],
)
def test_refused(request_event: dict[str, Any], param: str, code: str) -> None:
    refusal = screening.refusal(request_event)
    assert refusal is not None
    assert (error_status(refusal), refusal.param, refusal.code) == (400, param, code)
    assert "4242" not in refusal.message and "5555" not in refusal.message


def test_ordinary_requests_pass() -> None:
    assert screening.refusal(event()) is None
    assert (
        screening.refusal(
            event(
                "/v1/charges/ch_3PqR",
                {"limit": ["10"], "created[gte]": ["1764112345"]},
                {"Idempotency-Key": "0b7c6f3e-7d55-4a3e-9b1a-4242424242", "User-Agent": "x"},
            )
        )
        is None
    )
    # Headers Clearline neither stores nor logs are not its to judge.
    assert screening.refusal(event(headers={"X-Other": "4242424242424242"})) is None
