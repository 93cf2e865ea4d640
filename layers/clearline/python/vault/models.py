"""What the vault stores, as typed records, and how each is laid out in its table.

Items hold what may be shown (brand, last four digits, expiry, fingerprint) in the clear,
and the card itself only as a sealed envelope (`sealed`), which these records never
carry: the service reads and writes it beside them.

Keys: `PM#<pm_id>` / `PM` (a payment method) and `CVC` (its CVC, for an hour);
`TOKEN#<tok_id>` / `TOKEN` and `CVC`; `AUTH#<3ds_id>` / `AUTH`; `RATE#...` / window.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Literal

from vault.card_data import CardDetails

PM_PREFIX, TOKEN_PREFIX, AUTH_PREFIX = "PM#", "TOKEN#", "AUTH#"
AuthenticationStatus = Literal["challenge_required", "succeeded", "failed"]


def _stored_fields(cls: type, item: dict[str, Any]) -> dict[str, Any]:
    """The record's fields from an item. The store leaves out attributes that are None,
    so a field without a default that is missing was None."""
    found: dict[str, Any] = {}
    for spec in fields(cls):
        if spec.name in item:
            found[spec.name] = item[spec.name]
        elif spec.default is MISSING and spec.default_factory is MISSING:
            found[spec.name] = None
    return found


@dataclass(frozen=True)
class CardFacts:
    """A card as it may be shown: never its number or CVC."""

    brand: str
    last4: str
    exp_month: int
    exp_year: int
    funding: str
    country: str
    fingerprint: str
    cvc_given: bool
    iin: str | None = None  # for fraud rules on `:card_bin:`; never rendered to merchants

    @classmethod
    def of(cls, card: CardDetails, fingerprint: str, *, cvc_given: bool) -> CardFacts:
        return cls(
            brand=card.brand,
            last4=card.last4,
            exp_month=card.exp_month,
            exp_year=card.exp_year,
            funding=card.funding,
            country=card.country,
            fingerprint=fingerprint,
            cvc_given=cvc_given,
            iin=card.iin,
        )


@dataclass(frozen=True)
class PaymentMethod:
    id: str
    merchant: str
    created: int
    livemode: bool
    card: CardFacts
    billing_details: dict[str, Any]
    metadata: dict[str, str] = field(default_factory=dict)
    allow_redisplay: str = "unspecified"
    # Where the card came from: "card_field" (a browser), "test_card" or "token".
    origin: str = "card_field"
    reference: str | None = None  # the caller's, for test cards and redeemed tokens
    token: str | None = None  # the token it was redeemed from
    # The address of the browser that gave the card (its token's, when redeemed from one),
    # for fraud rules on `:ip_address:` and `:ip_country:`.
    client_ip: str | None = None

    def to_item(self, sealed: dict[str, str]) -> dict[str, Any]:
        return {"pk": PM_PREFIX + self.id, "sk": "PM", **asdict(self), "sealed": sealed}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> PaymentMethod:
        return cls(**{**_stored_fields(cls, item), "card": CardFacts(**item["card"])})


@dataclass(frozen=True)
class Token:
    id: str
    merchant: str
    created: int
    livemode: bool
    client_ip: str | None
    card_id: str
    card: CardFacts
    holder: dict[str, str | None]  # name and address_* of the legacy card object
    expires_at: int | None = None  # an unredeemed token lapses
    used_by: str | None = None  # the reference it was redeemed under
    payment_method: str | None = None

    def to_item(self, sealed: dict[str, str]) -> dict[str, Any]:
        return {"pk": TOKEN_PREFIX + self.id, "sk": "TOKEN", **asdict(self), "sealed": sealed}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Token:
        return cls(**{**_stored_fields(cls, item), "card": CardFacts(**item["card"])})

    @property
    def used(self) -> bool:
        return self.used_by is not None


@dataclass(frozen=True)
class Authentication:
    """A 3-D Secure authentication that needs the cardholder's challenge."""

    id: str
    merchant: str
    payment_method: str
    amount: int
    currency: str
    reference: str
    complete_url: str
    created: int
    status: AuthenticationStatus = "challenge_required"
    completed: int | None = None

    def to_item(self) -> dict[str, Any]:
        return {"pk": AUTH_PREFIX + self.id, "sk": "AUTH", **asdict(self)}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Authentication:
        return cls(**_stored_fields(cls, item))
