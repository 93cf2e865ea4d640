"""Merchants and their API keys. Keys are stored only as SHA-256 hashes.

A plain hash (not a slow password hash) is enough: keys are 190 bits of randomness, so
there is nothing to brute-force, and authentication runs on every request. A key's item
carries its merchant, so authenticating is one read, and `KeyCache` keeps the answer for
a minute per execution environment, as an API Gateway authorizer's cache would.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from clearline.errors import AuthenticationError, ConflictError, InvalidRequestError
from clearline.ids import new_id
from clearline.money import currency, percent_of
from clearline.store import Store
from clearline.transitions import Change, Transition, TransitionWriter
from clearline.versions import CURRENT_VERSION

if TYPE_CHECKING:  # the audit trail names the merchant: it imports this module
    from clearline.audit import Caller

KeyKind = Literal["secret", "publishable"]
# A merchant's own rate limit is at most the stage's (API Gateway throttles the whole
# stage at 10,000 a second, and a usage plan cannot exceed it).
MAX_RATE_LIMIT = 10_000


@dataclass(frozen=True)
class Merchant:
    id: str
    name: str
    fee_basis_points: int  # 290 = 2.9%
    fee_fixed: int  # minor units of the charge's currency
    created: int
    livemode: bool = False
    api_version: str = CURRENT_VERSION  # pinned at creation, Stripe's way
    # The currencies the merchant is paid in, the default first: a charge in any other
    # converts into the default (or into the one its FX quote names).
    settlement_currencies: tuple[str, ...] = ("usd",)
    fx_fee_basis_points: int = 100  # 1%: what converting a payment costs the merchant
    # Requests a second its keys may make; None: Stripe's default for its mode (25 in test
    # mode, 100 live; see clearline.rate_limits).
    rate_limit_per_second: int | None = None

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
    store: Store,
    name: str,
    *,
    fee_percent: float = 2.9,
    fee_fixed: int = 30,
    livemode: bool = False,
    settlement_currencies: Sequence[str] = ("usd",),
    fx_fee_percent: float = 1.0,
    rate_limit_per_second: int | None = None,
) -> NewMerchant:
    """A merchant and its keys. A live-mode merchant's keys say so (`sk_live_`, as Stripe's
    do), and its webhooks always get the strict rules: https to public addresses only."""
    if not name.strip():
        raise InvalidRequestError("A merchant needs a name.", param="name")
    if not 0 <= fee_percent <= 100:
        raise InvalidRequestError("fee_percent must be between 0 and 100.", param="fee_percent")
    if fee_fixed < 0:
        raise InvalidRequestError("fee_fixed must not be negative.", param="fee_fixed")
    if not 0 <= fx_fee_percent <= 10:
        raise InvalidRequestError(
            "fx_fee_percent must be between 0 and 10.", param="fx_fee_percent"
        )
    if rate_limit_per_second is not None and not 1 <= rate_limit_per_second <= MAX_RATE_LIMIT:
        raise InvalidRequestError(
            f"rate_limit_per_second must be between 1 and {MAX_RATE_LIMIT}.",
            param="rate_limit_per_second",
        )
    held = tuple(
        dict.fromkeys(
            currency(c, param="settlement_currencies").code for c in settlement_currencies
        )
    )
    if not held:
        raise InvalidRequestError(
            "A merchant needs a settlement currency.", param="settlement_currencies"
        )
    merchant = Merchant(
        id=new_id("acct"),
        name=name.strip(),
        fee_basis_points=round(fee_percent * 100),
        fee_fixed=fee_fixed,
        created=int(time.time()),
        livemode=livemode,
        settlement_currencies=held,
        fx_fee_basis_points=round(fx_fee_percent * 100),
        rate_limit_per_second=rate_limit_per_second,
    )
    mode = "live" if livemode else "test"
    secret_key, publishable_key = _new_key(f"sk_{mode}_"), _new_key(f"pk_{mode}_")
    item = {"pk": f"MERCHANT#{merchant.id}", "sk": "MERCHANT", **asdict(merchant)}
    keys = [
        *_key_items(merchant, secret_key, "secret"),
        *_key_items(merchant, publishable_key, "publishable"),
    ]
    opened = Change(item["pk"], "MERCHANT", merchant.id, "create", "active", create=item)
    TransitionWriter(store).commit(Transition([opened], records=keys))
    return NewMerchant(merchant, secret_key, publishable_key)


def _key_items(merchant: Merchant, key: str, kind: str) -> list[dict[str, Any]]:
    """A key's item, found by its hash when a request presents it, and the merchant's note
    of it (its kind and a hint, never the key), by which the merchant's keys are listed."""
    digest, hint = hash_key(key), key[:8] + "..." + key[-4:]
    now = int(time.time())
    return [
        {
            "pk": f"APIKEY#{digest}",
            "sk": "APIKEY",
            "merchant": merchant.id,
            "merchant_record": asdict(merchant),
            "kind": kind,
            "hint": hint,
            "created": now,
        },
        {
            "pk": f"MERCHANT#{merchant.id}",
            "sk": f"APIKEY#{digest}",
            "kind": kind,
            "hint": hint,
            "created": now,
            "state": ACTIVE_KEY,
        },
    ]


ACTIVE_KEY, EXPIRING_KEY = "active", "expiring"
# How long a rolled secret key keeps working beside the new one, as Stripe offers.
KEY_OVERLAPS = {"now": 0, "1h": 3600, "24h": 86400, "7d": 7 * 86400}


@dataclass(frozen=True)
class ApiKey:
    kind: str
    hint: str
    created: int
    expires: int | None  # None: until it is rolled


def api_keys(store: Store, merchant_id: str, now: float) -> list[ApiKey]:
    """The merchant's keys still working (a rolled one, until its overlap ends), newest first."""
    keys = [
        ApiKey(str(i["kind"]), str(i["hint"]), int(i["created"]), i.get("expires"))
        for i in store.query_partition(f"MERCHANT#{merchant_id}", "APIKEY#")
    ]
    working = [k for k in keys if k.expires is None or k.expires > now]
    return sorted(working, key=lambda k: (k.kind, -k.created))


def roll_secret_key(
    store: Store, caller: Caller, overlap_seconds: int, clock: Callable[[], float] = time.time
) -> str:
    """A new secret key, returned (shown once); the working ones end after
    `overlap_seconds`, so the merchant's servers can change over. Audited, in one
    transaction: a roll that meets another changes nothing."""
    merchant = caller.merchant
    now = int(clock())
    ends = now + overlap_seconds
    mode = "live" if merchant.livemode else "test"
    key = _new_key(f"sk_{mode}_")
    changes = []
    for note in store.query_partition(f"MERCHANT#{merchant.id}", "APIKEY#"):
        if note["kind"] != "secret" or (note.get("expires") or ends + 1) <= ends:
            continue  # a publishable key, or one already ending sooner
        digest = note["sk"].removeprefix("APIKEY#")
        changes += [
            Change(
                note["pk"],
                note["sk"],
                f"key_{digest[:16]}",
                "api_key.roll",
                EXPIRING_KEY,
                from_state=note["state"],
                set={"expires": ends},
            ),
            Change(
                f"APIKEY#{digest}",
                "APIKEY",
                f"key_{digest[:16]}",
                "api_key.roll",
                "secret",
                from_state="secret",
                state_attribute="kind",
                set={"expires": ends},
                audited=False,  # its note's change is the audited one
            ),
        ]
    rolled = Transition(changes, caller, records=_key_items(merchant, key, "secret"))
    if TransitionWriter(store, clock=clock).commit(rolled) is not None:
        raise ConflictError("The keys were rolled by another request meanwhile; look again.")
    return key


def merchant_of_record(record: dict[str, Any]) -> Merchant:
    # Fields added since a record was written take their defaults.
    fields = {name: record[name] for name in Merchant.__dataclass_fields__ if name in record}
    if "settlement_currencies" in fields:
        fields["settlement_currencies"] = tuple(fields["settlement_currencies"])
    return Merchant(**fields)


def get_merchant(store: Store, merchant_id: str) -> Merchant | None:
    item = store.get(f"MERCHANT#{merchant_id}", "MERCHANT")
    return None if item is None else merchant_of_record(item)


def authenticate(store: Store, key: str) -> tuple[Merchant, KeyKind]:
    """The merchant a key belongs to, or 401. Unknown and malformed keys look the same."""
    hint = key[:8] + "*" * max(0, min(len(key), 40) - 12) + key[-4:] if len(key) > 12 else "***"
    if not key.startswith(("sk_", "pk_")):
        raise AuthenticationError(f"Invalid API Key provided: {hint}", code="api_key_invalid")
    item = store.get(f"APIKEY#{hash_key(key)}", "APIKEY")
    if item is None or item.get("expires", time.time() + 1) <= time.time():  # rolled, and over
        raise AuthenticationError(f"Invalid API Key provided: {hint}", code="api_key_invalid")
    return merchant_of_record(item["merchant_record"]), item["kind"]


class KeyCache:
    """Successful authentications, kept for `ttl_seconds` per execution environment (an
    API Gateway authorizer caches its answers the same way). Refusals are not cached, so
    a new key works at once; a revoked key stops working within the TTL."""

    def __init__(
        self, ttl_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self._entries: dict[str, tuple[float, Merchant, KeyKind]] = {}

    def authenticate(self, store: Store, key: str) -> tuple[Merchant, KeyKind]:
        digest = hash_key(key)
        cached = self._entries.get(digest)
        now = self.clock()
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        merchant, kind = authenticate(store, key)
        if len(self._entries) > 10_000:  # bounded: a flood of keys cannot grow it for ever
            self._entries.clear()
        self._entries[digest] = (now + self.ttl_seconds, merchant, kind)
        return merchant, kind
