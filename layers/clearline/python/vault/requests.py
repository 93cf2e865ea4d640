"""The parameters browsers send to tokenize a card, checked as Stripe checks them.

Everything but the card is validated first (a malformed request is a 400 whatever the
card); then the card (a card that cannot be right is a 402 card_error). A card number
anywhere but `card[number]` (in metadata, a name) is refused, so none is ever stored or
echoed in the clear.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ConfigDict, Field

from clearline.cards import holds_card_number
from clearline.errors import InvalidRequestError
from clearline.params import (
    AddressParams,
    Boolean,
    Email,
    Integer,
    Metadata,
    Params,
    ShortText,
    String,
    parse_params,
)
from vault.card_data import CardDetails, validate_card

# What Stripe.js adds to every request for its own telemetry: accepted, and not kept.
TELEMETRY_PARAMS = frozenset(
    {
        "payment_user_agent",
        "guid",
        "muid",
        "sid",
        "time_on_page",
        "referrer",
        "pasted_fields",
        "client_attribution_metadata",
    }
)
CARD_FIELDS = frozenset({"number", "exp_month", "exp_year", "cvc", "networks"})
HOLDER_FIELDS = frozenset(
    {
        "name",
        "address_line1",
        "address_line2",
        "address_city",
        "address_state",
        "address_zip",
        "address_country",
    }
)
# The publishable key travels in the body as Stripe.js sends it; the route reads it.
AUTH_PARAMS = frozenset({"key"})


class BillingDetailsParams(Params):
    address: AddressParams | None = None
    email: Email | None = None
    name: ShortText | None = None
    phone: ShortText | None = None


class PaymentMethodCreateParams(Params):
    type: Literal["card"]
    card: Any = None
    billing_details: BillingDetailsParams | None = None
    metadata: Metadata = Field(default_factory=dict)
    allow_redisplay: Literal["always", "limited", "unspecified"] = "unspecified"


class TokenCreateParams(Params):
    card: Any = None


class CardHolderParams(Params):
    name: ShortText | None = None
    address_line1: ShortText | None = None
    address_line2: ShortText | None = None
    address_city: ShortText | None = None
    address_state: ShortText | None = None
    address_zip: ShortText | None = None
    address_country: ShortText | None = None


ADDRESS_FIELDS = ("city", "country", "line1", "line2", "postal_code", "state")


@dataclass(frozen=True)
class NewPaymentMethod:
    card: CardDetails
    billing_details: dict[str, Any]
    metadata: dict[str, str]
    allow_redisplay: str


@dataclass(frozen=True)
class NewToken:
    card: CardDetails
    holder: dict[str, str | None]  # name and address_* of the legacy card object


def empty_billing_details() -> dict[str, Any]:
    return {
        "address": dict.fromkeys(ADDRESS_FIELDS),
        "email": None,
        "name": None,
        "phone": None,
    }


def _without_telemetry(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in TELEMETRY_PARAMS | AUTH_PARAMS}


def _refuse_stray_card_numbers(params: dict[str, Any]) -> None:
    card = params.get("card")
    rest = {k: v for k, v in params.items() if k != "card"}
    if isinstance(card, dict):
        rest["card"] = {k: v for k, v in card.items() if k != "number"}
    for name, value in rest.items():
        name_holds_one = holds_card_number(name)
        if name_holds_one or holds_card_number(value):
            raise InvalidRequestError(
                "A card number may only be sent as card[number].",
                code="parameter_invalid",
                param=None if name_holds_one else name,  # never echo the number itself
            )


def _check_card_fields(card: Any, allowed: frozenset[str]) -> None:
    if isinstance(card, dict):
        for name in card:
            if name not in allowed:
                raise InvalidRequestError(
                    f"Received unknown parameter: card[{name[:40]}]",
                    code="parameter_unknown",
                    param=f"card[{name[:40]}]",
                )


def parse_payment_method(params: dict[str, Any], today: dt.date) -> NewPaymentMethod:
    params = _without_telemetry(params)
    _refuse_stray_card_numbers(params)
    parsed = parse_params(PaymentMethodCreateParams, params)
    _check_card_fields(parsed.card, CARD_FIELDS)
    card = validate_card(parsed.card, today)
    billing = empty_billing_details()
    if parsed.billing_details is not None:
        given = parsed.billing_details.model_dump()
        billing.update({k: v for k, v in given.items() if k != "address"})
        if given["address"] is not None:
            billing["address"] = given["address"]
    return NewPaymentMethod(card, billing, dict(parsed.metadata), parsed.allow_redisplay)


def parse_token(params: dict[str, Any], today: dt.date) -> NewToken:
    params = _without_telemetry(params)
    _refuse_stray_card_numbers(params)
    parsed = parse_params(TokenCreateParams, params)
    _check_card_fields(parsed.card, CARD_FIELDS | HOLDER_FIELDS)
    card = validate_card(parsed.card, today)
    holder_params = {k: v for k, v in parsed.card.items() if k in HOLDER_FIELDS}
    try:
        holder = parse_params(CardHolderParams, holder_params).model_dump()
    except InvalidRequestError as error:
        error.param = f"card[{error.param}]"
        raise
    return NewToken(card, holder)


def billing_details_of(holder: dict[str, str | None]) -> dict[str, Any]:
    """A token's card holder as a payment method's billing_details."""
    billing = empty_billing_details()
    billing["name"] = holder.get("name")
    billing["address"] = {
        "city": holder.get("address_city"),
        "country": holder.get("address_country"),
        "line1": holder.get("address_line1"),
        "line2": holder.get("address_line2"),
        "postal_code": holder.get("address_zip"),
        "state": holder.get("address_state"),
    }
    return billing


# ---- Clearline's internal requests (JSON) ----------------------------------------------------


class InternalParams(Params):
    # Fields a newer Clearline adds are ignored, so the two can be deployed in either order.
    model_config = ConfigDict(extra="ignore", frozen=True)

    merchant: String


class TestCardParams(InternalParams):
    test_card: String
    reference: String


class RedeemParams(InternalParams):
    reference: String


class AuthorizationParams(InternalParams):
    payment_method: String
    amount: Integer
    currency: String
    capture: Boolean = True
    reference: String
    authentication: String | None = None


class AuthenticationParams(InternalParams):
    payment_method: String
    amount: Integer
    currency: String
    reference: String
    complete_url: String
