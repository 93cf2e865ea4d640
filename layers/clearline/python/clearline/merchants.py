"""Merchants and their API keys. Keys are stored only as SHA-256 hashes.

A plain hash (not a slow password hash) is enough: keys are 190 bits of randomness, so
there is nothing to brute-force, and authentication runs on every request.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Literal

from clearline.errors import AuthenticationError, InvalidRequestError
from clearline.ids import new_id
from clearline.money import percent_of
from clearline.store import Store, Write

KeyKind = Literal["secret", "publishable"]


@dataclass(frozen=True)
class Merchant:
    id: str
    name: str
    fee_basis_points: int  # 290 = 2.9%
    fee_fixed: int  # minor units of the charge's currency
    created: int
    livemode: bool = False

    def fee_for(self, amount: int) -> int:
        return min(amount, percent_of(amount, self.fee_basis_points) + self.fee_fixed)


@dataclass(frozen=True)
class NewMerchant:
    merchant: Merchant
    secret_key: str
    publishable_key: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _new_key(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(24).replace("-", "x").replace("_", "y")


def create_merchant(
    store: Store, name: str, *, fee_percent: float = 2.9, fee_fixed: int = 30
) -> NewMerchant:
    if not name.strip():
        raise InvalidRequestError("A merchant needs a name.", param="name")
    if not 0 <= fee_percent <= 100:
        raise InvalidRequestError("fee_percent must be between 0 and 100.", param="fee_percent")
    if fee_fixed < 0:
        raise InvalidRequestError("fee_fixed must not be negative.", param="fee_fixed")
    merchant = Merchant(
        id=new_id("acct"),
        name=name.strip(),
        fee_basis_points=round(fee_percent * 100),
        fee_fixed=fee_fixed,
        created=int(time.time()),
    )
    secret_key, publishable_key = _new_key("sk_test_"), _new_key("pk_test_")
    writes = [
        Write.put_new(
            {
                "pk": f"MERCHANT#{merchant.id}",
                "sk": "MERCHANT",
                "id": merchant.id,
                "name": merchant.name,
                "fee_basis_points": merchant.fee_basis_points,
                "fee_fixed": merchant.fee_fixed,
                "created": merchant.created,
                "livemode": merchant.livemode,
            }
        )
    ]
    for key, kind in ((secret_key, "secret"), (publishable_key, "publishable")):
        writes.append(
            Write.put_new(
                {
                    "pk": f"APIKEY#{hash_key(key)}",
                    "sk": "APIKEY",
                    "merchant": merchant.id,
                    "kind": kind,
                    "hint": key[:8] + "..." + key[-4:],
                    "created": merchant.created,
                }
            )
        )
    store.transact(writes)
    return NewMerchant(merchant, secret_key, publishable_key)


def get_merchant(store: Store, merchant_id: str) -> Merchant | None:
    item = store.get(f"MERCHANT#{merchant_id}", "MERCHANT")
    if item is None:
        return None
    return Merchant(
        id=item["id"],
        name=item["name"],
        fee_basis_points=item["fee_basis_points"],
        fee_fixed=item["fee_fixed"],
        created=item["created"],
        livemode=item.get("livemode", False),
    )


def authenticate(store: Store, key: str) -> tuple[Merchant, KeyKind]:
    """The merchant a key belongs to, or 401. Unknown and malformed keys look the same."""
    hint = key[:8] + "*" * max(0, min(len(key), 40) - 12) + key[-4:] if len(key) > 12 else "***"
    if not key.startswith(("sk_", "pk_")):
        raise AuthenticationError(f"Invalid API Key provided: {hint}", code="api_key_invalid")
    item = store.get(f"APIKEY#{hash_key(key)}", "APIKEY")
    merchant = get_merchant(store, item["merchant"]) if item else None
    if item is None or merchant is None:
        raise AuthenticationError(f"Invalid API Key provided: {hint}", code="api_key_invalid")
    return merchant, item["kind"]
