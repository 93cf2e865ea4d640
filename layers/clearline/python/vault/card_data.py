"""Card details as a browser sends them: validated the way Stripe validates them, with
Stripe's error codes, and described (brand, funding, country) without the number.

Nothing here stores or logs: it turns parameters into a `CardDetails`, or refuses them.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from clearline.cards import luhn_valid
from clearline.errors import CardError, InvalidRequestError

MIN_DIGITS, MAX_DIGITS = 12, 19
# A year further ahead than this is a typo, not a card.
MAX_YEARS_AHEAD = 50
_SEPARATORS = re.compile(r"[ \-]")


@dataclass(frozen=True)
class CardDetails:
    """A card as the vault holds it once opened. `repr` never shows the number or CVC."""

    number: str
    exp_month: int
    exp_year: int
    cvc: str | None = None

    def __repr__(self) -> str:
        return f"CardDetails(last4={self.last4!r}, exp={self.exp_month:02d}/{self.exp_year})"

    __str__ = __repr__

    @property
    def last4(self) -> str:
        return self.number[-4:]

    @property
    def iin(self) -> str:
        """The issuer's number (BIN): the first six digits. With the last four, the most of
        a number that may be kept or shown in the clear."""
        return self.number[:6]

    @property
    def brand(self) -> str:
        return brand_of(self.number)

    @property
    def funding(self) -> str:
        return TEST_CARD_PROFILES.get(self.number, DEFAULT_PROFILE)[0]

    @property
    def country(self) -> str:
        return TEST_CARD_PROFILES.get(self.number, DEFAULT_PROFILE)[1]


# ---- brands ------------------------------------------------------------------------------------

# (brand, prefixes as inclusive ranges of the leading digits), checked in order.
_BRAND_RANGES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("amex", (("34", "34"), ("37", "37"))),
    ("diners", (("36", "36"), ("38", "38"), ("300", "305"))),
    ("jcb", (("3528", "3589"),)),
    ("visa", (("4", "4"),)),
    ("mastercard", (("51", "55"), ("2221", "2720"))),
    ("discover", (("6011", "6011"), ("65", "65"), ("644", "649"))),
    ("unionpay", (("62", "62"),)),
)

# The legacy `card` object (a token's) names brands for people.
BRAND_NAMES = {
    "amex": "American Express",
    "diners": "Diners Club",
    "discover": "Discover",
    "jcb": "JCB",
    "mastercard": "MasterCard",
    "unionpay": "UnionPay",
    "visa": "Visa",
    "unknown": "Unknown",
}
# `payment_method.card.display_brand`, in Stripe's spelling.
DISPLAY_BRANDS = {
    "amex": "american_express",
    "diners": "diners_club",
    "discover": "discover",
    "jcb": "jcb",
    "mastercard": "mastercard",
    "unionpay": "union_pay",
    "visa": "visa",
    "unknown": "other",
}


def brand_of(number: str) -> str:
    """The card network a number belongs to, from its leading digits; "unknown" otherwise."""
    for brand, ranges in _BRAND_RANGES:
        for low, high in ranges:
            if low <= number[: len(low)] <= high:
                return brand
    return "unknown"


def cvc_length(brand: str) -> int:
    return 4 if brand == "amex" else 3


# ---- Stripe's test cards -----------------------------------------------------------------------

# (funding, country) of the test numbers that are not a US credit card.
DEFAULT_PROFILE = ("credit", "US")
TEST_CARD_PROFILES: dict[str, tuple[str, str]] = {
    "4000056655665556": ("debit", "US"),
    "5200828282828210": ("debit", "US"),
    "5105105105105100": ("prepaid", "US"),
    "6011981111111113": ("debit", "US"),
    "4000000760000002": ("credit", "BR"),
    "4000001240000000": ("credit", "CA"),
    "4000004840008001": ("credit", "MX"),
}

# Stripe's test payment method and token names, by the card number each stands for.
_TEST_NUMBERS = {
    "visa": "4242424242424242",
    "visa_debit": "4000056655665556",
    "mastercard": "5555555555554444",
    "amex": "378282246310005",
    "chargeDeclined": "4000000000000002",
    "chargeDeclinedInsufficientFunds": "4000000000009995",
    "chargeDeclinedExpiredCard": "4000000000000069",
    "chargeDeclinedIncorrectCvc": "4000000000000127",
    "chargeDeclinedProcessingError": "4000000000000119",
    "chargeDeclinedFraudulent": "4100000000000019",
    "radarBlock": "4100000000000019",
    "riskLevelElevated": "4000000000009235",
    "riskLevelHighest": "4000000000004954",
    "cvcCheckFail": "4000000000000101",
    "createIssuerFraudRecord": "4000000000005423",
    "chargeDeclinedLostCard": "4000000000009987",
    "chargeDeclinedStolenCard": "4000000000009979",
    "threeDSecure2Required": "4000002500003155",
    "authenticationRequired": "4000002500003155",
    "createDispute": "4000000000000259",
    "createDisputeProductNotReceived": "4000000000002685",
    "createDisputeInquiry": "4000000000001976",
}
TEST_CARD_ALIASES: dict[str, str] = {
    **{f"pm_card_{name}": number for name, number in _TEST_NUMBERS.items()},
    **{f"tok_{name}": number for name, number in _TEST_NUMBERS.items()},
}

# Test cards whose issuer asks for a 3-D Secure challenge on every payment.
CHALLENGE_NUMBERS = frozenset({"4000002500003155", "4000002760003184", "4000000000003220"})


def test_card(alias: str, today: dt.date) -> CardDetails | None:
    """The card a test alias (`pm_card_visa`, `tok_visa`) stands for, valid until the end
    of next year as Stripe's always are; None for anything else."""
    number = TEST_CARD_ALIASES.get(alias)
    return None if number is None else CardDetails(number, 12, today.year + 1)


def needs_challenge(card: CardDetails) -> bool:
    return card.number in CHALLENGE_NUMBERS


# ---- validation ----------------------------------------------------------------------------------


def _missing(param: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"Missing required param: {param}.", code="parameter_missing", param=param
    )


def _text(card: dict[str, Any], name: str) -> str | None:
    value = card.get(name)
    if value is None:
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise InvalidRequestError(
            f"Invalid card[{name}]: a string is expected.",
            code="parameter_invalid",
            param=f"card[{name}]",
        )
    return str(value).strip()


def _number(raw: str) -> str:
    number = _SEPARATORS.sub("", raw)
    if not number.isdigit() or not MIN_DIGITS <= len(number) <= MAX_DIGITS:
        raise CardError("Your card number is invalid.", code="invalid_number", param="card[number]")
    if not luhn_valid(number):
        raise CardError(
            "Your card number is incorrect.", code="incorrect_number", param="card[number]"
        )
    return number


def _month(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 12:
        raise CardError(
            "Your card's expiration month is invalid.",
            code="invalid_expiry_month",
            param="card[exp_month]",
        )
    return int(raw)


def _year(raw: str, today: dt.date) -> int:
    if not raw.isdigit() or len(raw) not in (2, 4):
        raise CardError(
            "Your card's expiration year is invalid.",
            code="invalid_expiry_year",
            param="card[exp_year]",
        )
    year = 2000 + int(raw) if len(raw) == 2 else int(raw)
    if year < today.year:
        raise CardError(
            "Your card's expiration year is in the past.",
            code="invalid_expiry_year",
            param="card[exp_year]",
        )
    if year > today.year + MAX_YEARS_AHEAD:
        raise CardError(
            "Your card's expiration year is invalid.",
            code="invalid_expiry_year",
            param="card[exp_year]",
        )
    return year


def _cvc(raw: str | None, brand: str) -> str | None:
    if not raw:
        return None
    if not raw.isdigit() or len(raw) != cvc_length(brand):
        raise CardError(
            "Your card's security code is invalid.", code="invalid_cvc", param="card[cvc]"
        )
    return raw


def validate_card(card: Any, today: dt.date) -> CardDetails:
    """The `card` hash of a request as a `CardDetails`: missing parameters are a 400,
    card details that cannot be right are a 402 card_error, with Stripe's codes."""
    if card is None or card == "":
        raise _missing("card")
    if not isinstance(card, dict):
        raise InvalidRequestError(
            "Invalid card: a hash of card details is expected.",
            code="parameter_invalid",
            param="card",
        )
    raw_number, raw_month, raw_year = (_text(card, n) for n in ("number", "exp_month", "exp_year"))
    for name, value in (("number", raw_number), ("exp_month", raw_month), ("exp_year", raw_year)):
        if not value:
            raise _missing(f"card[{name}]")
    assert raw_number and raw_month and raw_year  # checked just above
    number = _number(raw_number)
    month = _month(raw_month)
    year = _year(raw_year, today)
    if (year, month) < (today.year, today.month):
        raise CardError(
            "Your card's expiration date is in the past.",
            code="invalid_expiry_month",
            param="card[exp_month]",
        )
    return CardDetails(number, month, year, _cvc(_text(card, "cvc"), brand_of(number)))
