"""Currencies and amounts: integers in the currency's minor unit, never floats."""

from __future__ import annotations

from dataclasses import dataclass

from clearline.errors import InvalidRequestError

# Stripe's largest amount: eight digits in the minor unit.
MAX_AMOUNT = 99_999_999


@dataclass(frozen=True)
class Currency:
    code: str
    exponent: int  # ISO 4217 minor-unit digits
    minimum: int  # smallest chargeable amount, in minor units (Stripe's minimums)


_CURRENCIES = [
    Currency("usd", 2, 50),
    Currency("eur", 2, 50),
    Currency("gbp", 2, 30),
    Currency("cad", 2, 50),
    Currency("aud", 2, 50),
    Currency("chf", 2, 50),
    Currency("sek", 2, 300),
    Currency("nok", 2, 300),
    Currency("dkk", 2, 250),
    Currency("sgd", 2, 50),
    Currency("hkd", 2, 400),
    Currency("mxn", 2, 1000),
    Currency("inr", 2, 50),
    Currency("jpy", 0, 50),
    Currency("krw", 0, 100),
    Currency("bhd", 3, 500),
    Currency("jod", 3, 500),
    Currency("kwd", 3, 500),
    Currency("omr", 3, 500),
    Currency("tnd", 3, 500),
]
CURRENCIES: dict[str, Currency] = {c.code: c for c in _CURRENCIES}


def currency(code: str, *, param: str = "currency") -> Currency:
    found = CURRENCIES.get(code.lower())
    if found is None:
        raise InvalidRequestError(
            f"Invalid currency: {code}. Supported currencies: {', '.join(sorted(CURRENCIES))}.",
            param=param,
            code="parameter_invalid_currency",
        )
    return found


def format_amount(amount: int, cur: Currency) -> str:
    if cur.exponent == 0:
        return f"{amount} {cur.code}"
    return f"{amount / 10**cur.exponent:.{cur.exponent}f} {cur.code}"


def check_payable(amount: int, cur: Currency, *, param: str = "amount") -> None:
    """Card networks move three-decimal currencies (kwd, bhd, jod, omr, tnd) in steps of
    ten minor units: 1.005 kwd cannot be charged, captured or refunded."""
    if cur.exponent == 3 and amount % 10:
        raise InvalidRequestError(
            f"Amounts in {cur.code} must be divisible by 10 (the last digit must be 0): "
            f"{format_amount(amount, cur)} cannot be paid by card.",
            param=param,
            code="parameter_invalid",
        )


def check_charge_amount(amount: int, cur: Currency, *, param: str = "amount") -> None:
    if amount < cur.minimum:
        raise InvalidRequestError(
            f"Amount must be at least {format_amount(cur.minimum, cur)}",
            param=param,
            code="amount_too_small",
        )
    if amount > MAX_AMOUNT:
        raise InvalidRequestError(
            f"Amount must be no more than {format_amount(MAX_AMOUNT, cur)}",
            param=param,
            code="amount_too_large",
        )
    check_payable(amount, cur, param=param)


def percent_of(amount: int, basis_points: int) -> int:
    """basis_points/10000 of amount, rounded half up, in integers only."""
    return (amount * basis_points + 5_000) // 10_000
