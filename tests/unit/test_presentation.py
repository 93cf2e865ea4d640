"""The presentation layer: the only place that knows Stripe's shapes."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from clearline.errors import (
    CardError,
    ConflictError,
    InvalidRequestError,
    ResourceMissingError,
    ServiceUnavailableError,
    UnknownUrlError,
)
from clearline.models import Charge, Event, Refund
from presentation.charges import render_charge
from presentation.errors import error_body, error_status
from presentation.events import previous_attributes, render_event
from presentation.expand import check_paths, expand
from presentation.links import Links

LIBRARY = Path(__file__).resolve().parents[2] / "layers" / "clearline" / "python" / "clearline"
LINKS = Links("https://api.example/prod")


def test_the_domain_library_never_imports_the_presentation_layer() -> None:
    offenders = []
    for path in LIBRARY.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "presentation"]
    assert offenders == []


def a_charge(**changes: Any) -> Charge:
    fields: dict[str, Any] = {
        "id": "ch_1",
        "merchant": "acct_1",
        "state": "captured",
        "amount": 5000,
        "currency": "usd",
        "created": 1795608000,
        "amount_captured": 5000,
        "balance_transaction": "txn_1",
        "receipt_token": "tok",
        **changes,
    }
    return Charge(**fields)


@pytest.mark.parametrize(
    ("state", "captured", "released", "status", "refunded"),
    [
        ("pending", 0, 0, "pending", False),
        ("failed", 0, 0, "failed", False),
        ("authorized", 0, 0, "succeeded", False),
        ("captured", 5000, 0, "succeeded", False),
        ("captured", 3000, 2000, "succeeded", False),
        ("canceled", 0, 5000, "succeeded", True),
        ("expired", 0, 5000, "succeeded", True),
    ],
)
def test_stripes_status_fields_derive_from_the_state(
    state: str, captured: int, released: int, status: str, refunded: bool
) -> None:
    shown = render_charge(
        a_charge(state=state, amount_captured=captured, amount_released=released), LINKS
    )
    assert (shown["status"], shown["refunded"], shown["captured"]) == (
        status,
        refunded,
        captured > 0,
    )
    assert shown["amount_refunded"] == released
    assert shown["paid"] is (status == "succeeded")


def test_a_charge_without_a_card_shows_no_receipt_and_no_source() -> None:
    shown = render_charge(a_charge(state="pending", amount_captured=0), LINKS)
    assert (shown["receipt_url"], shown["source"], shown["payment_method"]) == (None, None, None)


def test_a_failed_refund_shows_its_failure_reason_and_others_leave_it_out() -> None:
    refund = Refund(
        id="re_1", merchant="acct_1", charge="ch_1", amount=5, currency="usd", status="failed",
        created=1, failure_reason="expired_or_canceled_card",
    )  # fmt: skip
    shown = render_charge(a_charge(refunds=(refund,)), LINKS)["refunds"]["data"][0]
    assert shown["failure_reason"] == "expired_or_canceled_card"
    settled = render_charge(
        a_charge(refunds=(refund.model_copy(update={"status": "succeeded",
                                                     "failure_reason": None}),)),
        LINKS,
    )["refunds"]["data"][0]  # fmt: skip
    assert "failure_reason" not in settled


def test_previous_attributes_hold_the_old_values_of_what_changed() -> None:
    before = {"description": "a", "metadata": {"k": "1", "gone": "x"}, "amount": 5}
    after = {"description": "b", "metadata": {"k": "1", "new": "y"}, "amount": 5}
    assert previous_attributes(before, after) == {
        "description": "a",
        "metadata": {"gone": "x", "new": None},
    }


def test_an_event_renders_the_snapshot_it_stored_with_what_changed() -> None:
    before, after = a_charge(description="old"), a_charge(description="new")
    event = Event(
        id="evt_1",
        merchant="acct_1",
        type="charge.updated",
        created=1,
        object_kind="charge",
        object=after.snapshot(),
        previous=before.snapshot(),
    )
    shown = render_event(event, LINKS)
    assert shown["data"]["object"] == render_charge(after, LINKS)
    assert shown["data"]["previous_attributes"] == {"description": "old"}


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidRequestError("x"), 400),
        (InvalidRequestError("x", code="method_not_allowed"), 405),
        (InvalidRequestError("x", code="request_too_large"), 413),
        (ResourceMissingError("charge", "ch_1"), 404),
        (UnknownUrlError("x"), 404),
        (CardError("x", code="card_declined"), 402),
        (ConflictError("x"), 409),
        (ServiceUnavailableError("x"), 503),
    ],
)
def test_each_error_has_its_status(error: InvalidRequestError, status: int) -> None:
    assert error_status(error) == status


def test_an_error_with_a_code_links_its_explanation() -> None:
    body = error_body(CardError("Declined", code="card_declined", charge="ch_1"), LINKS)
    assert body["error"]["doc_url"] == "https://api.example/prod/errors/card_declined"
    assert "doc_url" not in error_body(UnknownUrlError("no route"), LINKS)["error"]


@pytest.mark.parametrize(
    ("root", "path"),
    [
        ("charge", "refund"),
        ("charge", "balance_transaction.source.balance_transaction.source.x"),
        ("list:charge", "balance_transaction"),
        ("refund", "charge.invoice"),
        ("event", "data.object"),
        ("charge", "balance_transaction..source"),
    ],
)
def test_a_path_that_cannot_expand_is_refused_before_anything_is_fetched(
    root: str, path: str
) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        check_paths(root, [path])
    assert refused.value.param == "expand" and f"({path})" in refused.value.message


def test_expansion_follows_ids_through_lists_and_objects() -> None:
    objects = {
        "txn_1": {"id": "txn_1", "object": "balance_transaction", "source": "ch_2"},
        "ch_2": {"id": "ch_2", "object": "charge", "balance_transaction": "txn_9"},
    }
    fetched: list[str] = []

    def fetch(object_id: str) -> dict[str, Any] | None:
        fetched.append(object_id)
        found = objects.get(object_id)
        return dict(found) if found else None

    page = {
        "object": "list",
        "data": [{"id": "ch_1", "object": "charge", "balance_transaction": "txn_1"}],
    }
    paths = check_paths("list:charge", ["data.balance_transaction.source"])
    expanded = expand(page, paths, fetch)
    assert expanded["data"][0]["balance_transaction"]["source"]["id"] == "ch_2"
    assert fetched == ["txn_1", "ch_2"]
    # An id nobody owns stays an id.
    lone = expand({"object": "refund", "charge": "ch_404"}, ["charge"], fetch)
    assert lone["charge"] == "ch_404"
