from __future__ import annotations

import pytest

from clearline.errors import InvalidRequestError
from clearline.forms import parse_body, parse_form


def test_bracket_notation_as_the_stripe_sdk_sends_it() -> None:
    body = (
        "amount=5000&metadata[order]=6735&metadata[note]="
        "&expand[0]=a&expand[1]=b&card[address][city]=Oslo"
    )
    assert parse_form(body) == {
        "amount": "5000",
        "metadata": {"order": "6735", "note": ""},
        "expand": ["a", "b"],
        "card": {"address": {"city": "Oslo"}},
    }


def test_empty_brackets_append() -> None:
    assert parse_form("expand[]=a&expand[]=b") == {"expand": ["a", "b"]}


def test_sparse_indexes_stay_a_hash() -> None:
    assert parse_form("x[0]=a&x[2]=b") == {"x": {"0": "a", "2": "b"}}


@pytest.mark.parametrize(
    "body",
    [
        "amount",  # no '='
        "a=1&a=2",  # given twice
        "a=1&a[b]=2",  # a value and a hash
        "a[b=1",  # unbalanced
        "a[b][c][d][e][f]=1",  # too deep
        "a=%ff%fe",  # not UTF-8
    ],
)
def test_malformed_forms_are_refused(body: str) -> None:
    with pytest.raises(InvalidRequestError):
        parse_form(body)


def test_json_bodies() -> None:
    assert parse_body(
        '{"amount": 5, "metadata": {"a": "b"}}', "application/json; charset=utf-8"
    ) == {"amount": 5, "metadata": {"a": "b"}}
    with pytest.raises(InvalidRequestError):
        parse_body("[1]", "application/json")
    with pytest.raises(InvalidRequestError):
        parse_body("{", "application/json")


def test_no_body_is_no_params() -> None:
    assert parse_body(None, None) == {}
    assert parse_body("", "application/json") == {}
