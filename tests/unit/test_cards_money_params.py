from __future__ import annotations

import pytest

from clearline import money
from clearline.cards import (
    REDACTED,
    card_number_location,
    contains_card_number,
    redact,
    redact_value,
)
from clearline.errors import InvalidRequestError
from clearline.merchants import Merchant
from clearline.params import ChargeCreateParams, parse_params


@pytest.mark.parametrize(
    "text",
    [
        "4242424242424242",
        "4242 4242 4242 4242",
        "4000-0566-5566-5556",
        "card 378282246310005 here",
        "6011111111111117",
        "4242.4242.4242.4242",
        "4242/4242/4242/4242",
        "4242 - 4242 -- 4242 / 4242",
        "4242424242424242123",  # the card number with its CVC glued on
        "42424242424242421234",  # ... or its CVC or expiry
        "ref 99 4242 4242 4242 4242",  # after an unrelated group
        "6759649826438453",  # Maestro
        "501800000009",  # 12 digits
        "x4242424242424242y",  # inside a word
    ],
)
def test_card_numbers_are_found(text: str) -> None:
    assert contains_card_number(text)


@pytest.mark.parametrize(
    "text",
    [
        "4242424242424241",
        "tok_visa",
        "5000",
        "order 123456789012",
        "8c1f4a5e-5b7b-4d59-9a43-0d8f1c2b3a4d",
        "1795622029000",
        "1764112345678",  # a timestamp in milliseconds
        "2026-11-25 23:27:19",
        "4242-4242",
        "0000000000000000",  # Luhn-valid, but no card starts with 0
        "12345678901234567890123456",  # longer than any card number
        "APIKEY#e3b0c44298fc1c149afbf4c8996fb924278123456789012ae41e4649b934ca495991b7852b855",
    ],
)
def test_other_digits_are_not_card_numbers(text: str) -> None:
    assert not contains_card_number(text)


def test_the_location_of_a_card_number_is_named_without_echoing_it() -> None:
    params = {"amount": "5000", "metadata": {"ok": "1", "note": "4242424242424242"}}
    assert card_number_location(params) == "metadata"
    # A key is named by the parameter that holds it, never by itself.
    assert card_number_location({"metadata": {"4242424242424242": "x"}}) == "metadata"
    assert card_number_location({"4242.4242.4242.4242": "x"}) == "body"
    assert card_number_location({"items": [{"n": "x"}, {"n": 4242424242424242}]}) == "items"
    assert card_number_location({"amount": "5000", "metadata": {"a": "b"}}) is None


def test_redaction_leaves_everything_else() -> None:
    text = "GET /v1/charges/4242-4242-4242-4242 at 2026-11-25 for 5000"
    assert redact(text) == f"GET /v1/charges/{REDACTED} at 2026-11-25 for 5000"
    logged = {"path": "/x/4242424242424242", "n": 4242424242424242, "ok": 7, "k": True}
    assert redact_value(logged) == {"path": f"/x/{REDACTED}", "n": REDACTED, "ok": 7, "k": True}
    assert redact_value({"4242424242424242": ["378282246310005"]}) == {REDACTED: [REDACTED]}


def test_exponents_and_minimums() -> None:
    assert money.currency("USD").exponent == 2
    assert money.currency("jpy").exponent == 0
    assert money.currency("kwd").exponent == 3
    with pytest.raises(InvalidRequestError) as raised:
        money.currency("xyz")
    assert raised.value.param == "currency"
    money.check_charge_amount(50, money.currency("jpy"))
    with pytest.raises(InvalidRequestError, match=r"0\.50 usd"):
        money.check_charge_amount(49, money.currency("usd"))
    with pytest.raises(InvalidRequestError, match=r"0\.500 bhd"):
        money.check_charge_amount(499, money.currency("bhd"))
    with pytest.raises(InvalidRequestError) as raised:
        money.check_charge_amount(money.MAX_AMOUNT + 1, money.currency("usd"))
    assert raised.value.code == "amount_too_large"


@pytest.mark.parametrize("code", ["kwd", "bhd", "jod", "omr", "tnd"])
def test_three_decimal_currencies_move_in_tens(code: str) -> None:
    money.check_charge_amount(1000, money.currency(code))
    with pytest.raises(InvalidRequestError, match="divisible by 10") as raised:
        money.check_charge_amount(1005, money.currency(code))
    assert raised.value.param == "amount"
    money.check_payable(1005, money.currency("usd"))  # two decimals: any amount


def test_fees_round_half_up_in_integers_and_never_exceed_the_amount() -> None:
    merchant = Merchant("acct_1", "Shop", fee_basis_points=290, fee_fixed=30, created=0)
    assert merchant.fee_for(5000) == 145 + 30
    assert merchant.fee_for(50) == 1 + 30  # 1.45 rounds to 1
    assert money.percent_of(150, 300) == 5  # 4.5 rounds half up
    assert Merchant("acct_2", "Shop", 10_000, 100, 0).fee_for(60) == 60


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({"currency": "usd"}, "amount", "parameter_missing"),
        ({"amount": "1.5", "currency": "usd"}, "amount", "parameter_invalid"),
        ({"amount": True, "currency": "usd"}, "amount", "parameter_invalid"),
        ({"amount": 5, "currency": "usd", "foo": 1}, "foo", "parameter_unknown"),
        (
            {"amount": 5, "currency": "usd", "metadata": {"a": {"b": 1}}},
            "metadata[a]",
            "parameter_invalid",
        ),
        (
            {"amount": 5, "currency": "usd", "metadata": {"k" * 41: "v"}},
            "metadata",
            "parameter_invalid",
        ),
        (
            {"amount": 5, "currency": "usd", "statement_descriptor": "<bad>"},
            "statement_descriptor",
            "parameter_invalid",
        ),
        ({"amount": 5, "currency": "usd", "capture": "yes"}, "capture", "parameter_invalid"),
    ],
)
def test_parameter_errors_name_the_parameter(params: dict, param: str, code: str) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        parse_params(ChargeCreateParams, params)
    assert (raised.value.param, raised.value.code) == (param, code)


def test_form_and_json_spellings_parse_alike() -> None:
    form = parse_params(
        ChargeCreateParams, {"amount": "5000", "currency": "usd", "capture": "false"}
    )
    json_ = parse_params(ChargeCreateParams, {"amount": 5000, "currency": "usd", "capture": False})
    assert form == json_
