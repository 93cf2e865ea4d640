from __future__ import annotations

import pytest

from clearline.errors import InvalidRequestError
from clearline.forms import parse_body, parse_form
from presentation.errors import error_status


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


def test_only_canonical_indexes_make_a_list() -> None:
    assert parse_form("metadata[00]=a") == {"metadata": {"00": "a"}}
    assert parse_form("x[0]=a&x[01]=b") == {"x": {"0": "a", "01": "b"}}


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


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("[" * 30_000 + "]" * 30_000, "application/json"),
        ('{"a": {"b": {"c": {"d": {"e": {}}}}}}', "application/json"),
        ('{"a": "' + '\\\\"' * 10_000 + '"' * 3, "application/json"),  # hostile quoting
        ("amount=1", "multipart/form-data; boundary=x"),
        ("amount=1", "text/plain"),
        ("description=a%00b", "application/x-www-form-urlencoded"),
        ('{"metadata": {"k\\u0000": "v"}}', "application/json"),
    ],
)
def test_malformed_bodies_are_a_400(body: str, content_type: str) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        parse_body(body, content_type)
    assert error_status(raised.value) == 400


def test_brackets_inside_json_strings_are_not_nesting() -> None:
    body = '{"description": "[[[[[[{{{{{{\\"", "metadata": {"a": "]]]]"}}'
    assert parse_body(body, "application/json")["metadata"] == {"a": "]]]]"}


def test_a_nul_names_its_parameter() -> None:
    with pytest.raises(InvalidRequestError) as raised:
        parse_body('{"metadata": {"k": "a\\u0000"}}', "application/json")
    assert raised.value.param == "metadata"


def test_a_body_without_a_content_type_is_a_form() -> None:
    assert parse_body("amount=5", None) == {"amount": "5"}


def test_numbered_top_level_names_stay_names() -> None:
    # Only a parameter's value can be a list: the body is a hash of names (the fuzz found
    # `0=true` made the whole body a list).
    assert parse_form("0=true&1=x") == {"0": "true", "1": "x"}
    assert parse_form("0[0]=a") == {"0": ["a"]}
