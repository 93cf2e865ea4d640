"""Foreign exchange: the mid-market rates the rates function keeps, the quotes that lock a
rate, and the conversion of a payment into its merchant's settlement currency.

Rates come from a provider, pulled on a schedule by the rates function and stored in the
main table; the api reads only what is stored and never calls the provider. A sheet older
than `MAX_RATE_AGE_SECONDS` stops every conversion (503, retryable): money is never moved
at a rate nobody can vouch for.

A charge locks its conversion when it is created (from a quote, or the current rate plus
the merchant's FX fee) and every later movement of it (its capture, refunds, disputes)
converts at that rate. The merchant gets `exchange_rate`, the mid-market `base_rate` less
the fee; amounts round half-even, once, to the target currency's minor unit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import Any, Literal

from clearline import ledger, listing
from clearline.errors import (
    InvalidRequestError,
    ResourceMissingError,
    ServiceUnavailableError,
    store_unavailable,
)
from clearline.ids import derived_id, new_id
from clearline.ledger import Journal, exchange
from clearline.merchants import Merchant
from clearline.models import FxQuote, FxQuoteRate, Page
from clearline.money import CURRENCIES, currency
from clearline.params import FxQuoteCreateParams
from clearline.store import Store, StoreUnavailable, Write, commit

RATES_PK, LATEST_SK = "FXRATES", "LATEST"
BASE_CURRENCY = "usd"  # a sheet's rates are units of each currency per one of this
MAX_RATE_AGE_ENV = "CLEARLINE_FX_MAX_RATE_AGE_SECONDS"
# The rates function pulls every 15 minutes: an hour is four missed pulls in a row.
MAX_RATE_AGE_SECONDS = int(os.environ.get(MAX_RATE_AGE_ENV, "3600"))
DEFAULT_FX_FEE_BASIS_POINTS = 100  # 1%
# Rates carry ten significant digits: far below a minor unit at Stripe's largest amount.
_RATES = Context(prec=10, rounding=ROUND_HALF_EVEN)

LockDuration = Literal["none", "five_minutes", "hour", "day"]
LOCK_SECONDS: dict[str, int] = {"none": 0, "five_minutes": 300, "hour": 3600, "day": 86400}
# What holding a rate for longer costs: the risk the rate moves before the money does.
DURATION_PREMIUM: dict[str, Decimal] = {
    "none": Decimal("0"),
    "five_minutes": Decimal("0"),
    "hour": Decimal("0.001"),
    "day": Decimal("0.002"),
}


class FxRatesUnavailable(ServiceUnavailableError):
    def __init__(self, detail: str) -> None:
        super().__init__(
            f"Exchange rates are not available ({detail}), so no currency can be converted "
            "right now. Retry shortly, or charge in a settlement currency.",
            code="fx_rates_unavailable",
        )


def rate_text(rate: Decimal) -> str:
    """A rate as stored and shown: plain digits, never an exponent."""
    return format(rate.normalize(), "f")


@dataclass(frozen=True)
class RateSheet:
    """Mid-market rates at one moment: units of each currency per one US dollar."""

    as_of: int
    rates: Mapping[str, Decimal]
    source: str = "provider"

    def mid(self, from_currency: str, to_currency: str) -> Decimal:
        """How many `to_currency` one `from_currency` buys, at the mid-market."""
        return _RATES.divide(self.rates[to_currency], self.rates[from_currency])

    def as_item(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of,
            "source": self.source,
            "rates": {code: rate_text(rate) for code, rate in self.rates.items()},
        }

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> RateSheet:
        rates = {code: Decimal(str(rate)) for code, rate in item["rates"].items()}
        return cls(int(item["as_of"]), rates, str(item.get("source", "provider")))


class InvalidRateSheet(ValueError):
    pass


def check_sheet(sheet: RateSheet, now: float, max_age: int = MAX_RATE_AGE_SECONDS) -> None:
    """What a sheet must be before anything converts at it: complete, positive, and fresh."""
    missing = sorted(set(CURRENCIES) - set(sheet.rates))
    if missing:
        raise InvalidRateSheet(f"no rate for {', '.join(missing)}")
    if sheet.rates[BASE_CURRENCY] != 1:
        raise InvalidRateSheet(f"the sheet is not based on {BASE_CURRENCY}")
    if any(not rate.is_finite() or rate <= 0 for rate in sheet.rates.values()):
        raise InvalidRateSheet("a rate is not a positive number")
    if sheet.as_of > now + 300:
        raise InvalidRateSheet("the sheet is dated in the future")
    if now - sheet.as_of > max_age:
        raise InvalidRateSheet(f"the sheet is {int(now - sheet.as_of)} seconds old")


def parse_rate(value: object) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise InvalidRateSheet(f"{value!r} is not a rate") from exc


class RateBook:
    """The stored rates: the latest sheet, and every sheet by its time (the audit of what
    any conversion was priced against)."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], float] = time.time,
        max_age: int = MAX_RATE_AGE_SECONDS,
    ) -> None:
        self.store = store
        self.clock = clock
        self.max_age = max_age

    def record(self, sheet: RateSheet) -> bool:
        """Keep a sheet: in the history always, as the latest only if it is newer than the
        latest (a late or replayed pull never rolls the rates back). True if it is now the
        latest."""
        check_sheet(sheet, self.clock(), self.max_age)
        self.store.put({"pk": RATES_PK, "sk": f"AT#{sheet.as_of:010d}", **sheet.as_item()})
        # A condition of the write, not a read before it: two pulls overlapping cannot
        # leave the older sheet as the latest.
        newer = Write(
            "Put",
            item={"pk": RATES_PK, "sk": LATEST_SK, **sheet.as_item()},
            condition="attribute_not_exists(pk) OR as_of < :as_of",
            values={":as_of": sheet.as_of},
        )
        return commit(self.store, [newer]) is None

    def latest(self) -> RateSheet:
        """The newest sheet, if it may still be used; else FxRatesUnavailable (fail closed)."""
        try:
            item = self.store.get(RATES_PK, LATEST_SK)
        except StoreUnavailable as exc:
            raise store_unavailable() from exc
        if item is None:
            raise FxRatesUnavailable("no rates have been received")
        sheet = RateSheet.from_item(item)
        age = self.clock() - sheet.as_of
        if age > self.max_age:
            raise FxRatesUnavailable(f"the latest are {int(age // 60)} minutes old")
        return sheet

    def mid(self, from_currency: str, to_currency: str) -> Decimal:
        if from_currency == to_currency:
            return Decimal(1)
        return self.latest().mid(from_currency, to_currency)


# ---- a charge's conversion ---------------------------------------------------------------


@dataclass(frozen=True)
class Conversion:
    """How a payment's money becomes its merchant's: locked when the charge is created."""

    from_currency: str  # what the customer paid in (presentment)
    to_currency: str  # what the merchant is paid in (settlement)
    base_rate: Decimal  # mid-market
    fee_rate: Decimal  # the FX fee (and any lock premium), as a fraction
    quote: str | None = None
    rates_as_of: int = 0

    @property
    def exchange_rate(self) -> Decimal:
        """What the merchant gets per unit paid: the base rate less the fee."""
        return _RATES.multiply(self.base_rate, 1 - self.fee_rate)

    def to_merchant(self, amount: int) -> int:
        return exchange(amount, self.exchange_rate, self.from_currency, self.to_currency)

    def at_mid(self, amount: int) -> int:
        return exchange(amount, self.base_rate, self.from_currency, self.to_currency)

    def as_item(self) -> dict[str, Any]:
        return {
            "from_currency": self.from_currency,
            "to_currency": self.to_currency,
            "base_rate": rate_text(self.base_rate),
            "fee_rate": rate_text(self.fee_rate),
            "exchange_rate": rate_text(self.exchange_rate),
            "quote": self.quote,
            "rates_as_of": self.rates_as_of,
        }

    @classmethod
    def from_item(cls, item: Mapping[str, Any] | None) -> Conversion | None:
        if not item:
            return None
        return cls(
            str(item["from_currency"]),
            str(item["to_currency"]),
            Decimal(str(item["base_rate"])),
            Decimal(str(item["fee_rate"])),
            item.get("quote"),
            int(item.get("rates_as_of", 0)),
        )


def fee_rate_of(merchant: Merchant) -> Decimal:
    return Decimal(merchant.fx_fee_basis_points) / 10_000


def settlement_currency(merchant: Merchant, presentment: str, quoted_to: str | None = None) -> str:
    """Where a payment in `presentment` settles: itself if the merchant holds it; else the
    currency a quote converts to, if the merchant holds that; else their default."""
    held = merchant.settlement_currencies
    if presentment in held:
        return presentment
    if quoted_to in held:
        return str(quoted_to)
    return held[0]


# ---- quotes ------------------------------------------------------------------------------


class FxQuoteService:
    def __init__(self, store: Store, rates: RateBook, clock: Callable[[], float] = time.time):
        self.store = store
        self.rates = rates
        self.clock = clock

    def create(self, merchant: Merchant, request: FxQuoteCreateParams) -> FxQuote:
        to_currency = currency(request.to_currency, param="to_currency").code
        if to_currency not in merchant.settlement_currencies:
            raise InvalidRequestError(
                f"to_currency must be one of your settlement currencies "
                f"({', '.join(merchant.settlement_currencies)}), not {to_currency}.",
                param="to_currency",
            )
        from_currencies = list(
            dict.fromkeys(
                currency(c, param="from_currencies").code for c in request.from_currencies
            )
        )
        if not from_currencies:
            raise InvalidRequestError(
                "from_currencies needs at least one currency.",
                param="from_currencies",
                code="parameter_missing",
            )
        if to_currency in from_currencies:
            raise InvalidRequestError(
                f"from_currencies must not include to_currency ({to_currency}): a payment in "
                "a settlement currency converts nothing.",
                param="from_currencies",
            )
        if len(from_currencies) > 5:
            raise InvalidRequestError(
                "A quote converts from at most 5 currencies.", param="from_currencies"
            )
        sheet = self.rates.latest()
        now = self.clock()
        premium = DURATION_PREMIUM[request.lock_duration]
        fx_fee = fee_rate_of(merchant)
        rates = {
            source: {
                "base_rate": rate_text(sheet.mid(source, to_currency)),
                "fx_fee_rate": rate_text(fx_fee),
                "duration_premium": rate_text(premium),
            }
            for source in from_currencies
        }
        lock = LOCK_SECONDS[request.lock_duration]
        quote_id = new_id("fxq")
        item = {
            "pk": f"FXQUOTE#{quote_id}",
            "sk": "FXQUOTE",
            **listing.list_keys(merchant.id, "fxq", int(now * 1000), quote_id),
            "id": quote_id,
            "merchant": merchant.id,
            "created": int(now),
            "to_currency": to_currency,
            "lock_duration": request.lock_duration,
            "lock_expires_at": int(now) + lock if lock else None,
            "rates": rates,
            "rates_as_of": sheet.as_of,
            "usage": request.usage.model_dump(mode="json"),
        }
        try:
            self.store.put(item, if_new=True)
        except StoreUnavailable as exc:
            raise store_unavailable() from exc
        return self._quote(item)

    def _quote(self, item: dict[str, Any]) -> FxQuote:
        now = self.clock()
        expires = item.get("lock_expires_at")
        status = "none" if expires is None else ("active" if now < int(expires) else "expired")
        rates = {}
        for source, detail in item["rates"].items():
            conversion = Conversion(
                source,
                item["to_currency"],
                Decimal(detail["base_rate"]),
                Decimal(detail["fx_fee_rate"]) + Decimal(detail["duration_premium"]),
            )
            rates[source] = FxQuoteRate(
                exchange_rate=rate_text(conversion.exchange_rate),
                base_rate=detail["base_rate"],
                fx_fee_rate=detail["fx_fee_rate"],
                duration_premium=detail["duration_premium"],
            )
        return FxQuote.model_validate({**item, "lock_status": status, "rates": rates})

    def retrieve(self, merchant: Merchant, quote_id: str, param: str = "id") -> FxQuote:
        return self._quote(listing.get_owned(self.store, merchant.id, quote_id, "fxq", param))

    def named(self, merchant: Merchant, quote_id: str) -> FxQuote:
        """The quote a payment names: one that is not the merchant's (or not at all) is bad
        input to that payment, a 400, and looks the same either way."""
        try:
            return self.retrieve(merchant, quote_id, param="fx_quote")
        except ResourceMissingError:
            raise InvalidRequestError(
                f"No such fx_quote: '{quote_id}'", param="fx_quote", code="fx_quote_invalid"
            ) from None

    def list(
        self,
        merchant: Merchant,
        *,
        limit: int,
        starting_after: str | None,
        ending_before: str | None,
    ) -> Page[FxQuote]:
        return listing.page(
            self.store,
            merchant.id,
            "fxq",
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
        ).of(self._quote)

    def locked_conversion(
        self, merchant: Merchant, quote_id: str, from_currency: str, to_currency: str
    ) -> Conversion:
        """The conversion a payment makes at a quote: 400 unless the quote is the merchant's,
        still locked, for payments, and for this pair."""
        quote = self.named(merchant, quote_id)
        if quote.lock_status != "active":
            raise InvalidRequestError(
                f"The FX quote {quote_id} is {quote.lock_status}: "
                + (
                    "its lock has expired. Create a new quote."
                    if quote.lock_status == "expired"
                    else "it holds no rate (lock_duration none). Create one with a lock."
                ),
                param="fx_quote",
                code="fx_quote_expired",
            )
        if quote.usage.get("type") != "payment":
            raise InvalidRequestError(
                f"The FX quote {quote_id} is for {quote.usage.get('type')}, not payments.",
                param="fx_quote",
                code="fx_quote_invalid",
            )
        rate = quote.rates.get(from_currency)
        if rate is None or quote.to_currency != to_currency:
            raise InvalidRequestError(
                f"The FX quote {quote_id} converts {', '.join(sorted(quote.rates))} to "
                f"{quote.to_currency}; this payment converts {from_currency} to {to_currency}.",
                param="fx_quote",
                code="fx_quote_invalid",
            )
        return Conversion(
            from_currency,
            to_currency,
            Decimal(rate.base_rate),
            Decimal(rate.fx_fee_rate) + Decimal(rate.duration_premium),
            quote=quote.id,
            rates_as_of=quote.rates_as_of,
        )


def conversion_for(
    store: Store,
    rates: RateBook,
    merchant: Merchant,
    presentment: str,
    quote_id: str | None,
) -> Conversion | None:
    """What a new payment in `presentment` converts at: None when it settles as it is."""
    quoted_to = None
    quotes = FxQuoteService(store, rates, rates.clock)
    if quote_id is not None:
        quoted_to = quotes.named(merchant, quote_id).to_currency
    target = settlement_currency(merchant, presentment, quoted_to)
    if quote_id is not None:
        return quotes.locked_conversion(merchant, quote_id, presentment, target)
    if target == presentment:
        return None
    sheet = rates.latest()
    return Conversion(
        presentment,
        target,
        sheet.mid(presentment, target),
        fee_rate_of(merchant),
        rates_as_of=sheet.as_of,
    )


@dataclass(frozen=True)
class Movement:
    """A later movement of a charge's money, as booked: its journals, and what it is to the
    merchant (amount and currency, and the rate, when converted)."""

    journals: list[Journal]
    amount: int
    currency: str
    exchange_rate: str | None = None


def movement(
    journal: Journal,
    charge: Mapping[str, Any],
    *,
    amount: int,
    leaving: bool,
    market_rate: Callable[[], Decimal],
    fee: int = 0,
) -> Movement:
    """`journal` as it is for a charge not converted; for a converted one, its two linked
    legs (`moved_again`), with the market rate asked for only then."""
    conversion = Conversion.from_item(charge.get("fx"))
    if conversion is None:
        return Movement([journal], amount, journal.currency)
    legs, to_merchant = moved_again(
        conversion, journal, amount=amount, leaving=leaving, market_rate=market_rate(), fee=fee
    )
    return Movement(legs, to_merchant, conversion.to_currency, rate_text(conversion.exchange_rate))


def moved_again(
    conversion: Conversion,
    journal: Journal,
    *,
    amount: int,
    leaving: bool,
    market_rate: Decimal,
    fee: int = 0,
) -> tuple[list[Journal], int]:
    """The linked journals of a converted charge's money moving again (a refund or a
    chargeback leaving, a won dispute coming back), and what it is to the merchant.

    The merchant's side converts at the charge's rate, so a full refund takes back exactly
    what the capture paid; the FX desk exchanges at `market_rate`, today's; the difference
    is booked to FX gain/loss. `journal` names the movement (id, charge, source...); `fee`
    (a dispute's) is charged in the settlement currency."""
    source, target = conversion.from_currency, conversion.to_currency
    merchant_id = journal.merchant_id
    to_merchant = conversion.to_merchant(amount)
    exchanged = exchange(amount, market_rate, source, target)
    if leaving:
        customer_entries = ledger.fx_out_entries(source, amount)
        settlement_entries = ledger.fx_settled_out_entries(
            merchant_id, target, exchanged=exchanged, from_merchant=to_merchant, fee=fee
        )
    else:
        customer_entries = ledger.fx_in_entries(source, amount)
        settlement_entries = ledger.fx_settled_in_entries(
            merchant_id, target, exchanged=exchanged, to_merchant=to_merchant
        )
    customer_leg = replace(journal, currency=source, entries=customer_entries)
    settlement_leg = replace(
        journal,
        id=derived_id("jnl", journal.id, "fx"),
        currency=target,
        entries=settlement_entries,
    )
    legs = ledger.linked(
        customer_leg,
        settlement_leg,
        rate=rate_text(market_rate),
        from_amount=amount,
        to_amount=exchanged,
    )
    return legs, to_merchant


def market_rate_item(rates: RateBook, charge: Mapping[str, Any]) -> dict[str, str]:
    """Today's mid-market rate for a converted charge's pair, to be recorded with a movement
    before it starts (so finishing it later needs no rate): the FX desk exchanges at it, and
    its difference from the charge's locked rate is our gain or loss. {} for a charge not
    converted. Stale rates refuse the movement (fail closed) before anything is written."""
    conversion = Conversion.from_item(charge.get("fx"))
    if conversion is None:
        return {}
    mid = rates.mid(conversion.from_currency, conversion.to_currency)
    return {"fx_market_rate": rate_text(mid)}
