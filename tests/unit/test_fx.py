"""Multi-currency money: rounding an exchange, the stored rates failing closed, FX quotes, and
converted charges and refunds against a real sandbox processor and an in-process store. No
movement in any currency may create or destroy money."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Context, Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearline import fx, ledger
from clearline.audit import Caller
from clearline.charges import ChargeService
from clearline.disputes import DISPUTE_FEE_USD, dispute_fee
from clearline.errors import InvalidRequestError
from clearline.ids import derived_id
from clearline.merchants import Merchant, create_merchant
from clearline.models import Charge, FxQuote, Refund
from clearline.money import CURRENCIES
from clearline.params import (
    ChargeCaptureParams,
    ChargeCreateParams,
    FxQuoteCreateParams,
    RefundCreateParams,
)
from clearline.processor import ProcessorClient
from clearline.refunds import RefundService
from clearline.store import Store, Write
from clearline.topology import MAIN_TABLE
from clearline_local.sandbox_processor import SandboxProcessor
from clearline_local.sandbox_rates import BASE_RATES
from presentation.errors import error_status
from tests.unit.conftest import moto_account, record_rates

RATES = {code: Decimal(rate) for code, rate in BASE_RATES.items()}
TEN_DIGITS = Context(prec=10)  # rates carry ten significant digits


class Clock:
    """A clock a test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sheet_at(as_of: int, **rates: Decimal) -> fx.RateSheet:
    """The sandbox provider's rates at `as_of`, with any of them replaced."""
    return fx.RateSheet(as_of, {**RATES, **rates})


def moved(sheet: fx.RateSheet, code: str, factor: Decimal, as_of: int) -> fx.RateSheet:
    """`sheet` with one currency's rate multiplied by `factor`, as a later pull would bring."""
    rate = (sheet.rates[code] * factor).quantize(Decimal("0.000001"))
    return fx.RateSheet(as_of, {**sheet.rates, code: rate})


def rounded(amount: int, rate: Decimal, source: str, target: str) -> int:
    """The exact value in the target's minor unit (a fraction, never a float), rounded half
    to even: how many `target` minor units `amount` of `source` is at `rate`."""
    shift = CURRENCIES[target].exponent - CURRENCIES[source].exponent
    return round(Fraction(amount) * Fraction(rate) * Fraction(10) ** shift)


def rates_items(store: Store) -> list[dict[str, Any]]:
    return [item for item in store.scan(fx.RATES_PK) if item["pk"] == fx.RATES_PK]


def everything(store: Store) -> list[dict[str, Any]]:
    return sorted(store.scan(), key=lambda item: (item["pk"], item["sk"]))


# ---- ledger.exchange ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "rate", "source", "target", "expected"),
    [
        (1000, "1.0869565", "eur", "usd", 1087),  # 1086.9565 cents
        (10000, "1.086956522", "eur", "usd", 10870),  # 10869.56522
        (1000, "0.006611570", "jpy", "usd", 661),  # 1000 yen: 661.157 cents
        (5000, "0.006611570248", "jpy", "usd", 3306),  # 3305.785124
        (1000, "3.252032520", "kwd", "usd", 325),  # 1.000 kwd: 325.203252 cents
        (50000, "3.252032520", "kwd", "usd", 16260),  # 50.000 kwd: 16260.1626
        (1234, "151.25", "usd", "jpy", 1866),  # 12.34 usd: 1866.425 yen
        (100, "151.25", "usd", "jpy", 151),  # 1.00 usd: 151.25 yen
        (1000, "0.3075", "usd", "kwd", 3075),  # 10.00 usd: 3.075 kwd, in fils
        (99_999_999, "0.006611570248", "jpy", "usd", 66115702),  # the largest amount
    ],
)
def test_an_exchange_rounds_half_even_once_at_the_target_exponent(
    amount: int, rate: str, source: str, target: str, expected: int
) -> None:
    assert ledger.exchange(amount, Decimal(rate), source, target) == expected
    assert rounded(amount, Decimal(rate), source, target) == expected


@pytest.mark.parametrize(
    ("amount", "rate", "source", "target", "expected"),
    [
        (1000, "151.25", "usd", "jpy", 1512),  # exactly 1512.5: down to the even 1512
        (1000, "151.35", "usd", "jpy", 1514),  # exactly 1513.5: up to the even 1514
        (1000, "1.0005", "eur", "usd", 1000),  # exactly 1000.5
        (3000, "1.0005", "eur", "usd", 3002),  # exactly 3001.5
        (1, "0.0025", "jpy", "kwd", 2),  # 1 yen is exactly 2.5 fils
        (3, "0.0025", "jpy", "kwd", 8),  # exactly 7.5 fils
        (25, "1", "kwd", "usd", 2),  # 0.025 kwd is exactly 2.5 cents
        (35, "1", "kwd", "usd", 4),  # exactly 3.5 cents
    ],
)
def test_an_exact_half_rounds_to_even(
    amount: int, rate: str, source: str, target: str, expected: int
) -> None:
    shift = CURRENCIES[target].exponent - CURRENCIES[source].exponent
    exact = Fraction(amount) * Fraction(Decimal(rate)) * Fraction(10) ** shift
    assert exact - int(exact) == Fraction(1, 2)  # the case is a true tie
    assert ledger.exchange(amount, Decimal(rate), source, target) == expected
    assert expected % 2 == 0


def test_an_exchange_rounds_once_not_step_by_step() -> None:
    # 1.4999 rounds to 1; rounding first to a tenth (1.5) and then to a unit would give 2.
    assert ledger.exchange(14999, Decimal("0.0001"), "usd", "usd") == 1
    # 1 yen at 0.0034999 kwd is 3.4999 fils: 3 (by way of 3.5 it would be 4).
    assert ledger.exchange(1, Decimal("0.0034999"), "jpy", "kwd") == 3
    # 1 eur cent at 0.4999 is 0.4999 cents: nothing, not a cent.
    assert ledger.exchange(1, Decimal("0.4999"), "eur", "usd") == 0


@settings(max_examples=200, deadline=None)
@given(
    amount=st.integers(min_value=0, max_value=99_999_999),
    rate=st.decimals(
        min_value=Decimal("0.000001"), max_value=Decimal("2000"), places=9, allow_nan=False
    ),
    source=st.sampled_from(sorted(CURRENCIES)),
    target=st.sampled_from(sorted(CURRENCIES)),
)
def test_an_exchange_is_the_exact_value_rounded_half_even(
    amount: int, rate: Decimal, source: str, target: str
) -> None:
    assert ledger.exchange(amount, rate, source, target) == rounded(amount, rate, source, target)


# ---- the rate book ------------------------------------------------------------------------


def test_no_rates_at_all_is_a_retryable_503(store: Store) -> None:
    book = fx.RateBook(store)
    with pytest.raises(fx.FxRatesUnavailable) as raised:
        book.latest()
    error = raised.value
    assert (error_status(error), error.code, error.should_retry) == (
        503,
        "fx_rates_unavailable",
        True,
    )
    with pytest.raises(fx.FxRatesUnavailable):
        book.mid("eur", "usd")
    assert book.mid("usd", "usd") == 1  # a currency is itself without any sheet


def test_a_sheet_older_than_the_max_age_fails_closed(store: Store) -> None:
    now = int(time.time())
    fx.RateBook(store, clock=Clock(now)).record(sheet_at(now))
    clock = Clock(now + 600)
    book = fx.RateBook(store, clock=clock, max_age=600)
    assert book.latest().as_of == now  # exactly the max age: still usable
    assert book.mid("eur", "usd") == Decimal("1.086956522")

    clock.now = now + 601
    with pytest.raises(fx.FxRatesUnavailable) as raised:
        book.latest()
    assert (error_status(raised.value), raised.value.code, raised.value.should_retry) == (
        503,
        "fx_rates_unavailable",
        True,
    )
    with pytest.raises(fx.FxRatesUnavailable):
        book.mid("jpy", "usd")
    # The same sheet under the default hour is fine: the age, not the sheet, refuses it.
    assert fx.RateBook(store, clock=Clock(now + 601)).latest().as_of == now


def _without(code: str, as_of: int) -> fx.RateSheet:
    return fx.RateSheet(as_of, {c: r for c, r in RATES.items() if c != code})


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda now: _without("krw", now), "no rate for krw"),
        (lambda now: sheet_at(now, eur=Decimal(0)), "not a positive number"),
        (lambda now: sheet_at(now, jpy=Decimal("-151.25")), "not a positive number"),
        (lambda now: sheet_at(now, gbp=Decimal("NaN")), "not a positive number"),
        (lambda now: sheet_at(now, usd=Decimal(2)), "not based on usd"),
        (lambda now: sheet_at(now + 301), "in the future"),
        (lambda now: sheet_at(now - 3601), "seconds old"),
    ],
    ids=["incomplete", "zero", "negative", "nan", "not_usd_based", "future", "stale"],
)
def test_record_refuses_a_sheet_nothing_may_convert_at(
    store: Store, make: Callable[[int], fx.RateSheet], reason: str
) -> None:
    now = int(time.time())
    book = fx.RateBook(store, clock=Clock(now))
    with pytest.raises(fx.InvalidRateSheet, match=reason):
        book.record(make(now))
    assert rates_items(store) == []  # not even in the history
    with pytest.raises(fx.FxRatesUnavailable):
        book.latest()


def test_a_late_older_sheet_is_kept_in_the_history_but_never_becomes_the_latest(
    store: Store,
) -> None:
    now = int(time.time())
    book = fx.RateBook(store, clock=Clock(now))
    newer = sheet_at(now - 10)
    older = moved(sheet_at(now - 20), "eur", Decimal("1.05"), now - 20)
    assert book.record(newer) is True
    assert book.record(older) is False
    assert book.record(newer) is False  # a replay of the latest changes nothing either

    latest = book.latest()
    assert latest.as_of == now - 10 and latest.rates["eur"] == Decimal("0.92")
    kept = store.get(fx.RATES_PK, f"AT#{now - 20:010d}")
    assert kept is not None
    assert kept["as_of"] == now - 20 and Decimal(kept["rates"]["eur"]) == Decimal("0.966")
    assert fx.RateSheet.from_item(kept).mid("eur", "usd") == Decimal("1.035196687")
    assert {item["sk"] for item in rates_items(store)} == {
        "LATEST",
        f"AT#{now - 10:010d}",
        f"AT#{now - 20:010d}",
    }

    newest = moved(newer, "eur", Decimal("0.95"), now)
    assert book.record(newest) is True
    assert book.latest().rates["eur"] == Decimal("0.874")


class LateWrite(Store):
    """The store as a pull sees it when another, newer pull lands just before its write of
    the latest rates: two runs of the rates function overlapping."""

    def __init__(self, store: Store, meanwhile: Callable[[], object]) -> None:
        super().__init__(store.table_name, store.client)
        self.meanwhile: Callable[[], object] | None = meanwhile

    def _overlap(self) -> None:
        if self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            meanwhile()

    def get(self, pk: str, sk: str) -> dict[str, Any] | None:
        found = super().get(pk, sk)
        if (pk, sk) == (fx.RATES_PK, fx.LATEST_SK):
            self._overlap()
        return found

    def transact(self, writes: list[Write]) -> None:
        self._overlap()
        super().transact(writes)


def test_an_older_pull_overlapping_a_newer_one_never_rolls_the_rates_back(
    store: Store,
) -> None:
    now = int(time.time())
    book = fx.RateBook(store, clock=Clock(now))
    book.record(sheet_at(now - 30))
    newer = sheet_at(now - 10)
    older = moved(sheet_at(now - 20), "eur", Decimal("1.05"), now - 20)
    late = fx.RateBook(LateWrite(store, lambda: book.record(newer)), clock=Clock(now))
    assert late.record(older) is False  # kept in the history, not as the latest
    assert book.latest().as_of == now - 10


def test_the_dispute_fee_is_fifteen_dollars_in_the_settlement_currency(store: Store) -> None:
    book = fx.RateBook(store)
    assert dispute_fee(book, "usd") == DISPUTE_FEE_USD  # needs no rates
    record_rates(store)
    assert dispute_fee(book, "eur") == 1380  # 15.00 usd at 0.92
    assert dispute_fee(book, "jpy") == 2269  # 2268.75 yen
    assert dispute_fee(book, "kwd") == 4612  # 4.6125 kwd: to the even fils


# ---- quotes -------------------------------------------------------------------------------


@pytest.fixture
def quoting(store: Store) -> dict[str, Any]:
    now = int(time.time())
    clock = Clock(now)
    book = fx.RateBook(store, clock=clock)
    book.record(sheet_at(now))
    merchant = create_merchant(store, "Quote Shop", settlement_currencies=["usd"]).merchant
    return {
        "now": now,
        "clock": clock,
        "book": book,
        "merchant": merchant,
        "quotes": fx.FxQuoteService(store, book, clock),
    }


def quote_of(
    quoting: dict[str, Any],
    from_currencies: list[str],
    lock_duration: str = "hour",
    to_currency: str = "usd",
    merchant: Merchant | None = None,
) -> FxQuote:
    params = FxQuoteCreateParams.model_validate(
        {
            "from_currencies": from_currencies,
            "to_currency": to_currency,
            "lock_duration": lock_duration,
        }
    )
    created: FxQuote = quoting["quotes"].create(merchant or quoting["merchant"], params)
    return created


@pytest.mark.parametrize(
    ("lock_duration", "premium", "expected"),
    [
        ("none", "0", "1.076086957"),
        ("five_minutes", "0", "1.076086957"),
        ("hour", "0.001", "1.075"),  # 1.086956522 x 0.989 = 1.075000000258
        ("day", "0.002", "1.073913044"),  # x 0.988 = 1.073913043736
    ],
)
def test_a_quote_is_the_base_rate_less_the_fx_fee_and_the_lock_premium(
    quoting: dict[str, Any], lock_duration: str, premium: str, expected: str
) -> None:
    quote = quote_of(quoting, ["eur", "jpy"], lock_duration)
    eur = quote.rates["eur"]
    assert eur.base_rate == "1.086956522"
    assert (eur.fx_fee_rate, eur.duration_premium) == ("0.01", premium)
    assert eur.exchange_rate == expected
    base = Decimal(eur.base_rate)
    assert Decimal(expected) == TEN_DIGITS.multiply(base, 1 - Decimal("0.01") - Decimal(premium))
    jpy = quote.rates["jpy"]
    assert jpy.base_rate == "0.006611570248"
    assert Decimal(jpy.exchange_rate) == TEN_DIGITS.multiply(
        Decimal(jpy.base_rate), 1 - Decimal("0.01") - Decimal(premium)
    )
    assert quote.rates_as_of == quoting["now"]
    assert quote.to_currency == "usd"


def test_a_quote_is_priced_at_the_merchants_own_fx_fee(
    store: Store, quoting: dict[str, Any]
) -> None:
    dear = create_merchant(store, "Dear Shop", fx_fee_percent=2.5).merchant
    quote = quote_of(quoting, ["eur"], "day", merchant=dear)
    assert quote.rates["eur"].fx_fee_rate == "0.025"
    assert Decimal(quote.rates["eur"].exchange_rate) == TEN_DIGITS.multiply(
        Decimal("1.086956522"), Decimal("0.973")
    )


def test_no_quote_is_made_at_stale_rates(store: Store, quoting: dict[str, Any]) -> None:
    quoting["clock"].now += 3601
    with pytest.raises(fx.FxRatesUnavailable):
        quote_of(quoting, ["eur"], "hour")
    assert not [item for item in store.scan("FXQUOTE#") if item["sk"] == "FXQUOTE"]


def test_a_locked_quote_is_active_until_its_lock_expires(quoting: dict[str, Any]) -> None:
    now, clock = quoting["now"], quoting["clock"]
    quote = quote_of(quoting, ["eur"], "hour")
    assert (quote.lock_status, quote.lock_expires_at) == ("active", now + 3600)
    service, merchant = quoting["quotes"], quoting["merchant"]
    clock.now = now + 3599
    assert service.retrieve(merchant, quote.id).lock_status == "active"
    clock.now = now + 3600
    assert service.retrieve(merchant, quote.id).lock_status == "expired"

    five = quote_of(quoting, ["eur"], "five_minutes")
    assert five.lock_expires_at == now + 3600 + 300


def test_a_quote_without_a_lock_holds_no_rate(quoting: dict[str, Any]) -> None:
    quote = quote_of(quoting, ["eur"], "none")
    assert (quote.lock_status, quote.lock_expires_at) == ("none", None)
    quoting["clock"].now += 10 * 86400
    assert quoting["quotes"].retrieve(quoting["merchant"], quote.id).lock_status == "none"


def test_a_quote_converts_only_to_a_settlement_currency(quoting: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        quote_of(quoting, ["usd"], to_currency="eur")
    assert (error_status(raised.value), raised.value.param) == (400, "to_currency")


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("expired", "fx_quote_expired"),
        ("unlocked", "fx_quote_expired"),
        ("other_pair", "fx_quote_invalid"),
        ("other_merchant", "fx_quote_invalid"),
    ],
)
def test_a_payment_cannot_convert_at_a_quote_it_may_not_use(
    store: Store, quoting: dict[str, Any], case: str, code: str
) -> None:
    merchant: Merchant = quoting["merchant"]
    if case == "expired":
        quote = quote_of(quoting, ["eur"], "five_minutes")
        quoting["clock"].now += 301
    elif case == "unlocked":
        quote = quote_of(quoting, ["eur"], "none")
    elif case == "other_pair":
        quote = quote_of(quoting, ["gbp", "jpy"], "hour")
    else:
        other = create_merchant(store, "Other Shop").merchant
        quote = quote_of(quoting, ["eur"], "hour", merchant=other)
    with pytest.raises(InvalidRequestError) as raised:
        fx.conversion_for(store, quoting["book"], merchant, "eur", quote.id)
    error = raised.value
    assert (error_status(error), error.param, error.code) == (400, "fx_quote", code)
    assert quote.id in error.message
    if case == "other_merchant":  # looks the same as a quote that does not exist
        missing = "fxq_" + "0" * 24
        with pytest.raises(InvalidRequestError) as unknown:
            fx.conversion_for(store, quoting["book"], merchant, "eur", missing)
        assert (type(unknown.value), unknown.value.code, unknown.value.param) == (
            type(error),
            error.code,
            error.param,
        )
        assert unknown.value.message == error.message.replace(quote.id, missing)


def test_a_payment_at_a_quote_converts_at_exactly_the_quotes_rates(
    store: Store, quoting: dict[str, Any]
) -> None:
    merchant, book, now = quoting["merchant"], quoting["book"], quoting["now"]
    quote = quote_of(quoting, ["eur", "gbp"], "day")
    # The market moves after the quote: the quote's rates stand.
    quoting["clock"].now = now + 60
    book.record(moved(sheet_at(now), "eur", Decimal("1.05"), now + 60))

    conversion = fx.conversion_for(store, book, merchant, "eur", quote.id)
    assert conversion is not None
    eur = quote.rates["eur"]
    assert (conversion.from_currency, conversion.to_currency) == ("eur", "usd")
    assert conversion.base_rate == Decimal(eur.base_rate)
    assert conversion.fee_rate == Decimal(eur.fx_fee_rate) + Decimal(eur.duration_premium)
    assert fx.rate_text(conversion.exchange_rate) == eur.exchange_rate
    assert (conversion.quote, conversion.rates_as_of) == (quote.id, now)

    unquoted = fx.conversion_for(store, book, merchant, "eur", None)
    assert unquoted is not None
    assert unquoted.base_rate == Decimal("1.035196687")  # today's mid, not the quote's
    assert unquoted.rates_as_of == now + 60


def test_without_a_quote_a_payment_converts_at_the_mid_less_the_merchants_fee(
    store: Store, quoting: dict[str, Any]
) -> None:
    book, now = quoting["book"], quoting["now"]
    dear = create_merchant(store, "Dear Shop", fx_fee_percent=2.5).merchant
    conversion = fx.conversion_for(store, book, dear, "jpy", None)
    assert conversion == fx.Conversion(
        "jpy", "usd", Decimal("0.006611570248"), Decimal("0.025"), None, now
    )
    assert conversion.exchange_rate == TEN_DIGITS.multiply(
        Decimal("0.006611570248"), Decimal("0.975")
    )
    assert conversion.to_merchant(10000) == 6446  # 64.46... cents, at the merchant's rate
    assert conversion.at_mid(10000) == 6612


def test_a_settlement_currency_converts_nothing_and_needs_no_rates(store: Store) -> None:
    merchant = create_merchant(store, "Dollar Shop").merchant
    book = fx.RateBook(store)
    assert fx.conversion_for(store, book, merchant, "usd", None) is None  # no sheet at all
    with pytest.raises(fx.FxRatesUnavailable):
        fx.conversion_for(store, book, merchant, "eur", None)


def test_a_merchant_holding_usd_and_eur(store: Store, quoting: dict[str, Any]) -> None:
    book = quoting["book"]
    both = create_merchant(store, "Two Shop", settlement_currencies=["usd", "eur"]).merchant
    assert both.settlement_currencies == ("usd", "eur")
    assert fx.conversion_for(store, book, both, "eur", None) is None
    assert fx.conversion_for(store, book, both, "usd", None) is None
    gbp = fx.conversion_for(store, book, both, "gbp", None)
    assert gbp is not None and gbp.to_currency == "usd"  # the default, first
    # A quote into eur takes gbp there instead.
    quote = quote_of(quoting, ["gbp"], "hour", to_currency="eur", merchant=both)
    to_eur = fx.conversion_for(store, book, both, "gbp", quote.id)
    assert to_eur is not None
    assert (to_eur.to_currency, to_eur.base_rate) == ("eur", Decimal("1.164556962"))


# ---- converted charges --------------------------------------------------------------------


@pytest.fixture
def shop(store: Store, processor: SandboxProcessor) -> Iterator[dict[str, Any]]:
    sheet = record_rates(store)
    client = ProcessorClient(processor.url, timeout_seconds=2.0)
    merchant = create_merchant(store, "FX Shop").merchant
    yield {
        "store": store,
        "sheet": sheet,
        "client": client,
        "merchant": merchant,
        "caller": Caller(merchant, "req_fx"),
        "charges": ChargeService(store, client),
        "refunds": RefundService(store, client),
    }
    processor.clear_faults()


def charge(shop: dict[str, Any], amount: int, currency: str, **fields: Any) -> Charge:
    params = ChargeCreateParams(amount=amount, currency=currency, source="tok_visa", **fields)
    created: Charge = shop["charges"].create(
        shop["caller"], params, idempotency_key=str(uuid.uuid4())
    )
    return created


def refund(shop: dict[str, Any], charge_id: str, amount: int | None = None) -> Refund:
    params = RefundCreateParams(charge=charge_id, amount=amount)
    done: Refund = shop["refunds"].create(shop["caller"], params, idempotency_key=str(uuid.uuid4()))
    return done


def journals_of(store: Store, charge_id: str, operation: str) -> dict[str, dict[str, Any]]:
    """A charge's journals of one operation, by currency."""
    found: dict[str, dict[str, Any]] = {}
    for item in store.query_partition(f"CHARGE#{charge_id}", "JOURNAL#"):
        if item["operation"] == operation:
            assert item["currency"] not in found
            found[item["currency"]] = item
    return found


def txn(store: Store, txn_id: str | None) -> dict[str, Any]:
    item = store.get(f"TXN#{txn_id}", "TXN")
    assert item is not None
    return item


def credit_balance(store: Store, account: str) -> int:
    return ledger.account_balance(store, account).credit_balance


def assert_linked(legs: dict[str, dict[str, Any]], source: str, target: str) -> None:
    """Two legs of one conversion: each names the other, and both state the same facts."""
    assert set(legs) == {source, target}
    customer, settlement = legs[source], legs[target]
    assert customer["fx"]["counterpart"] == settlement["id"]
    assert settlement["fx"]["counterpart"] == customer["id"]
    facts = ("from_currency", "to_currency", "from_amount", "to_amount", "rate")
    assert {f: customer["fx"][f] for f in facts} == {f: settlement["fx"][f] for f in facts}
    assert (customer["fx"]["from_currency"], customer["fx"]["to_currency"]) == (source, target)


@pytest.mark.parametrize(
    ("currency", "amount", "base_rate", "exchange_rate", "to_merchant", "exchanged", "fee"),
    [
        # 100.00 eur: 10760.86957 cents to the merchant, 10869.56522 at the mid
        ("eur", 10000, "1.086956522", "1.076086957", 10761, 10870, 342),
        # 5000 yen: 3272.727273 and 3305.785124 cents
        ("jpy", 5000, "0.006611570248", "0.006545454546", 3273, 3306, 125),
        # 50.000 kwd: 16097.560975 and 16260.1626 cents
        ("kwd", 50000, "3.25203252", "3.219512195", 16098, 16260, 497),
    ],
)
def test_a_foreign_charge_captures_into_the_merchants_currency(
    shop: dict[str, Any],
    currency: str,
    amount: int,
    base_rate: str,
    exchange_rate: str,
    to_merchant: int,
    exchanged: int,
    fee: int,
) -> None:
    store, merchant = shop["store"], shop["merchant"]
    paid = charge(shop, amount, currency)
    assert (paid.state, paid.amount_captured, paid.currency) == ("captured", amount, currency)
    assert (paid.settlement_currency, paid.exchange_rate) == ("usd", exchange_rate)

    captured = txn(store, paid.balance_transaction)
    assert (captured["amount"], captured["currency"]) == (to_merchant, "usd")
    assert captured["exchange_rate"] == exchange_rate
    assert (captured["presentment_amount"], captured["presentment_currency"]) == (
        amount,
        currency,
    )
    # 2.9% + 30 cents of what the merchant gets in usd, not of the foreign amount.
    assert fee == merchant.fee_for(to_merchant) != merchant.fee_for(amount)
    assert (captured["fee"], captured["net"]) == (fee, to_merchant - fee)

    legs = journals_of(store, paid.id, "charge.capture")
    assert_linked(legs, currency, "usd")
    facts = legs["usd"]["fx"]
    assert (facts["rate"], facts["from_amount"], facts["to_amount"]) == (
        base_rate,
        amount,
        exchanged,
    )

    report = ledger.verify(store)
    assert report.ok, report.violations
    assert set(report.totals) == {currency, "usd"}
    assert credit_balance(store, ledger.merchant_payable(merchant.id, "usd")) == to_merchant - fee
    assert credit_balance(store, ledger.merchant_payable(merchant.id, currency)) == 0
    assert credit_balance(store, ledger.fee_revenue("usd")) == fee
    assert credit_balance(store, ledger.fx_fee_revenue("usd")) == exchanged - to_merchant
    assert credit_balance(store, ledger.fx_liquidity(currency)) == amount
    assert credit_balance(store, ledger.fx_liquidity("usd")) == -exchanged
    assert credit_balance(store, ledger.fx_gain_loss("usd")) == 0


def test_an_authorization_converts_when_it_is_captured_at_the_rate_locked_before(
    shop: dict[str, Any],
) -> None:
    store, merchant = shop["store"], shop["merchant"]
    held = charge(shop, 10000, "eur", capture=False)
    assert (held.state, held.exchange_rate) == ("authorized", "1.076086957")
    # The market moves between the authorization and the capture: the charge's rate holds.
    now = int(time.time())
    fx.RateBook(store).record(moved(shop["sheet"], "eur", Decimal("1.05"), now + 1))

    captured = shop["charges"].capture(shop["caller"], held.id, ChargeCaptureParams(amount=6000))
    assert (captured.amount_captured, captured.amount_released) == (6000, 4000)
    moved_txn = txn(store, captured.balance_transaction)
    assert (moved_txn["amount"], moved_txn["currency"]) == (6457, "usd")  # 6456.521742
    assert moved_txn["fee"] == merchant.fee_for(6457) == 217
    legs = journals_of(store, held.id, "charge.capture")
    assert_linked(legs, "eur", "usd")
    # The desk exchanges at the day of the capture's rate (recorded before the processor
    # was called); what the euro lost since the authorization is ours, not the merchant's.
    assert (legs["usd"]["fx"]["rate"], legs["usd"]["fx"]["to_amount"]) == ("1.035196687", 6211)
    assert credit_balance(store, ledger.fx_fee_revenue("usd")) == 6522 - 6457
    assert credit_balance(store, ledger.fx_gain_loss("usd")) == 6211 - 6522  # a loss of 311
    # The whole hold is released, in the currency it was held in.
    released = [e for e in legs["eur"]["entries"] if e["pending"]]
    assert {(e["account"], e["direction"], e["amount"]) for e in released} == {
        (ledger.processor_receivable("eur"), "credit", 10000),
        (ledger.merchant_payable(merchant.id, "eur"), "debit", 10000),
    }
    report = ledger.verify(store)
    assert report.ok, report.violations


def test_a_charge_at_a_quote_converts_at_the_quotes_rate_while_the_market_moves(
    shop: dict[str, Any],
) -> None:
    store, merchant = shop["store"], shop["merchant"]
    params = FxQuoteCreateParams.model_validate(
        {"from_currencies": ["eur"], "to_currency": "usd", "lock_duration": "day"}
    )
    quote = fx.FxQuoteService(store, fx.RateBook(store)).create(merchant, params)
    fx.RateBook(store).record(moved(shop["sheet"], "eur", Decimal("0.9"), int(time.time()) + 1))

    paid = charge(shop, 10000, "eur", fx_quote=quote.id)
    assert paid.exchange_rate == quote.rates["eur"].exchange_rate == "1.073913044"
    stored = store.get(f"CHARGE#{paid.id}", "CHARGE")
    assert stored is not None and stored["fx"]["quote"] == quote.id
    captured = txn(store, paid.balance_transaction)
    assert (captured["amount"], captured["exchange_rate"]) == (10739, "1.073913044")
    legs = journals_of(store, paid.id, "charge.capture")
    assert_linked(legs, "eur", "usd")
    # The desk exchanges at today's mid, recorded with the charge: the euro gained since
    # the quote, and that is ours. The fee and the lock's premium are the desk's revenue.
    assert (legs["usd"]["fx"]["rate"], legs["usd"]["fx"]["to_amount"]) == ("1.207729469", 12077)
    assert credit_balance(store, ledger.fx_fee_revenue("usd")) == 10870 - 10739
    assert credit_balance(store, ledger.fx_gain_loss("usd")) == 12077 - 10870
    report = ledger.verify(store)
    assert report.ok, report.violations


def test_a_charge_in_a_currency_the_merchant_holds_is_not_converted(
    shop: dict[str, Any],
) -> None:
    store = shop["store"]
    both = create_merchant(store, "Two Shop", settlement_currencies=["usd", "eur"]).merchant
    paid = charge({**shop, "caller": Caller(both, "req_two")}, 5000, "eur")
    assert (paid.settlement_currency, paid.exchange_rate) == (None, None)
    moved_txn = txn(store, paid.balance_transaction)
    assert (moved_txn["amount"], moved_txn["currency"], moved_txn.get("exchange_rate")) == (
        5000,
        "eur",
        None,
    )
    (journal,) = journals_of(store, paid.id, "charge.capture").values()
    assert journal["currency"] == "eur" and "fx" not in journal
    assert credit_balance(store, ledger.merchant_payable(both.id, "eur")) == 5000 - 175
    assert ledger.verify(store).ok


def test_a_quote_never_charges_an_fx_fee_on_a_payment_that_converts_nothing(
    shop: dict[str, Any],
) -> None:
    store = shop["store"]
    quotes = fx.FxQuoteService(store, fx.RateBook(store))
    params = FxQuoteCreateParams.model_validate(
        {"from_currencies": ["usd", "eur"], "to_currency": "usd", "lock_duration": "hour"}
    )
    try:
        quote = quotes.create(shop["merchant"], params)
    except InvalidRequestError as refused:  # a quote from a currency into itself
        assert (error_status(refused), refused.param) == (400, "from_currencies")
        return
    try:
        paid = charge(shop, 10000, "usd", fx_quote=quote.id)
    except InvalidRequestError as refused:  # or the payment refusing to convert at it
        assert (error_status(refused), refused.param) == (400, "fx_quote")
        return
    assert paid.exchange_rate is None
    assert txn(store, paid.balance_transaction)["amount"] == 10000


def test_stale_rates_refuse_a_converted_charge_and_write_nothing(
    store: Store, processor: SandboxProcessor
) -> None:
    now = int(time.time())
    old = now - 3700
    fx.RateBook(store, clock=Clock(old + 1)).record(sheet_at(old))  # the pulls then stopped
    merchant = create_merchant(store, "Stale Shop").merchant
    client = ProcessorClient(processor.url, timeout_seconds=2.0)
    charges, caller = ChargeService(store, client), Caller(merchant, "req_stale")
    before = everything(store)

    key = str(uuid.uuid4())
    with pytest.raises(fx.FxRatesUnavailable) as raised:
        charges.create(
            caller,
            ChargeCreateParams(amount=10000, currency="eur", source="tok_visa"),
            idempotency_key=key,
        )
    assert (error_status(raised.value), raised.value.code) == (503, "fx_rates_unavailable")
    assert everything(store) == before
    assert not [item for item in store.scan("CHARGE#") if item["sk"] == "CHARGE"]
    refused_id = derived_id("ch", merchant.id, key)
    assert not [a for a in processor.authorizations() if a["reference"] == refused_id]

    # A payment that converts nothing needs no rates.
    paid = charges.create(
        caller,
        ChargeCreateParams(amount=2000, currency="usd", source="tok_visa"),
        idempotency_key=str(uuid.uuid4()),
    )
    assert (paid.state, paid.exchange_rate) == ("captured", None)
    # The same key, retried once rates are back, charges once.
    fx.RateBook(store).record(sheet_at(now))
    retried = charges.create(
        caller,
        ChargeCreateParams(amount=10000, currency="eur", source="tok_visa"),
        idempotency_key=key,
    )
    assert (retried.state, retried.exchange_rate) == ("captured", "1.076086957")
    assert ledger.verify(store).ok


def test_stale_rates_refuse_a_refund_of_a_converted_charge_and_write_nothing(
    shop: dict[str, Any],
) -> None:
    store = shop["store"]
    paid = charge(shop, 10000, "eur")
    stale = sheet_at(int(time.time()) - 3700)
    store.put({"pk": fx.RATES_PK, "sk": fx.LATEST_SK, **stale.as_item()})  # an hour of no pulls
    before = everything(store)
    with pytest.raises(fx.FxRatesUnavailable) as raised:
        refund(shop, paid.id)
    assert error_status(raised.value) == 503
    assert everything(store) == before
    assert shop["charges"].retrieve(shop["merchant"], paid.id).amount_refunded == 0


# ---- refunds after the rate moved ---------------------------------------------------------


@pytest.mark.parametrize(
    ("factor", "market_rate", "exchanged", "gain"),
    [
        # eur weakens: buying 100.00 eur back costs 10351.96687 cents; 10761 came back
        ("1.05", "1.035196687", 10352, 409),
        # eur strengthens: it costs 11441.6476 cents
        ("0.95", "1.14416476", 11442, -681),
    ],
)
def test_a_full_refund_gives_back_the_charges_rate_and_the_market_move_is_ours(
    shop: dict[str, Any], factor: str, market_rate: str, exchanged: int, gain: int
) -> None:
    store, merchant = shop["store"], shop["merchant"]
    paid = charge(shop, 10000, "eur")
    capture = txn(store, paid.balance_transaction)
    payable = credit_balance(store, ledger.merchant_payable(merchant.id, "usd"))
    fx.RateBook(store).record(moved(shop["sheet"], "eur", Decimal(factor), int(time.time()) + 1))

    done = refund(shop, paid.id)
    assert (done.status, done.amount, done.currency) == ("succeeded", 10000, "eur")
    stored = store.get(f"REFUND#{done.id}", "REFUND")
    assert stored is not None and stored["fx_market_rate"] == market_rate
    back = txn(store, done.balance_transaction)
    assert back["amount"] == -capture["amount"] == -10761
    assert (back["currency"], back["fee"], back["exchange_rate"]) == ("usd", 0, "1.076086957")
    assert (back["presentment_amount"], back["presentment_currency"]) == (10000, "eur")

    # The merchant is back where they started, less the capture's fee.
    assert credit_balance(store, ledger.merchant_payable(merchant.id, "usd")) == payable - 10761
    assert credit_balance(store, ledger.merchant_payable(merchant.id, "usd")) == -capture["fee"]
    # A credit balance on the gain/loss account is a gain, a debit balance a loss.
    gain_loss = ledger.account_balance(store, ledger.fx_gain_loss("usd"))
    assert gain_loss.credit_balance == gain == 10761 - exchanged
    if gain > 0:
        assert (gain_loss.credits_posted, gain_loss.debits_posted) == (gain, 0)
    else:
        assert (gain_loss.credits_posted, gain_loss.debits_posted) == (0, -gain)
    assert credit_balance(store, ledger.fx_liquidity("eur")) == 0  # in, and out again
    assert credit_balance(store, ledger.fx_liquidity("usd")) == -10870 + exchanged

    legs = journals_of(store, paid.id, "refund")
    assert_linked(legs, "eur", "usd")
    assert (legs["usd"]["fx"]["rate"], legs["usd"]["fx"]["to_amount"]) == (market_rate, exchanged)
    report = ledger.verify(store)
    assert report.ok, report.violations
    assert all(t["debits"] == t["credits"] for t in report.totals.values())


def test_partial_refunds_each_go_back_at_the_charges_rate(shop: dict[str, Any]) -> None:
    store, merchant = shop["store"], shop["merchant"]
    paid = charge(shop, 10000, "eur")
    now = int(time.time())
    fx.RateBook(store).record(moved(shop["sheet"], "eur", Decimal("1.05"), now + 1))

    first = refund(shop, paid.id, 4000)
    assert txn(store, first.balance_transaction)["amount"] == -4304  # 4304.347828
    gain_loss = credit_balance(store, ledger.fx_gain_loss("usd"))
    assert gain_loss == 4304 - 4141  # bought back at 4140.786748
    after_first = shop["charges"].retrieve(merchant, paid.id)
    assert (after_first.amount_refunded, after_first.fully_refunded) == (4000, False)

    fx.RateBook(store).record(moved(shop["sheet"], "eur", Decimal("0.95"), now + 2))
    second = refund(shop, paid.id, 6000)
    assert txn(store, second.balance_transaction)["amount"] == -6457  # 6456.521742
    # 6000 eur at 1.14416476 is 6864.98856: a loss of 408 on the second
    assert credit_balance(store, ledger.fx_gain_loss("usd")) == gain_loss + 6457 - 6865
    assert shop["charges"].retrieve(merchant, paid.id).amount_refunded == 10000
    assert credit_balance(store, ledger.fx_liquidity("eur")) == 0
    report = ledger.verify(store)
    assert report.ok, report.violations


# ---- verify catches tampering -------------------------------------------------------------


@pytest.mark.parametrize(
    "tamper",
    ["customer_rate", "settlement_rate", "customer_to_amount", "settlement_to_amount", "delete"],
)
def test_verify_catches_a_tampered_conversion(shop: dict[str, Any], tamper: str) -> None:
    store = shop["store"]
    paid = charge(shop, 10000, "eur")
    assert ledger.verify(store).ok
    legs = journals_of(store, paid.id, "charge.capture")
    side, field = tamper.split("_", 1) if tamper != "delete" else ("settlement", "")
    leg = legs["eur" if side == "customer" else "usd"]
    if tamper == "delete":
        store.delete(leg["pk"], leg["sk"])
    elif field == "rate":
        store.put({**leg, "fx": {**leg["fx"], "rate": "1.1"}})
    else:
        store.put({**leg, "fx": {**leg["fx"], "to_amount": leg["fx"]["to_amount"] + 1}})
    report = ledger.verify(store)
    assert not report.ok
    other = legs["usd" if side == "customer" else "eur"]
    named = leg["id"] if tamper != "delete" else other["id"]
    assert any(v.startswith(f"{named}:") for v in report.violations), report.violations


# ---- never create or destroy money --------------------------------------------------------


@contextmanager
def fresh_store() -> Iterator[Store]:
    """An empty moto account with the topology's tables, as the `aws` fixture makes."""
    with moto_account() as client:
        yield Store(MAIN_TABLE.name, client)


PRESENTMENT = ["eur", "gbp", "jpy", "kwd", "usd"]
SETTLEMENT = [("usd",), ("eur",), ("usd", "eur"), ("jpy",), ("kwd",)]


@st.composite
def payments(draw: st.DrawFn) -> dict[str, Any]:
    """A charge (captured at once, or authorized and captured in part), the drift of its
    rate before each refund, and refunds that together take at most what was captured."""
    presentment = draw(st.sampled_from(PRESENTMENT))
    held = CURRENCIES[presentment]
    step = 10 if held.exponent == 3 else 1  # card networks move kwd in tens of fils
    amount = draw(st.integers(-(-held.minimum // step), 2_000_000 // step)) * step
    capture = draw(st.one_of(st.none(), st.integers(1, amount // step).map(lambda n: n * step)))
    remaining = amount if capture is None else capture
    refunds: list[tuple[int, Decimal]] = []
    for _ in range(draw(st.integers(0, 3))):
        if remaining < step:
            break
        part = draw(st.integers(1, remaining // step)) * step
        drift = draw(st.decimals(min_value=-30, max_value=30, places=2))
        refunds.append((part, drift))
        remaining -= part
    return {
        "presentment": presentment,
        "settles": draw(st.sampled_from(SETTLEMENT)),
        "fx_fee_percent": draw(st.sampled_from([0.0, 1.0, 2.5])),
        "amount": amount,
        "capture": capture,
        "refunds": refunds,
    }


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(payment=payments())
def test_no_movement_creates_or_destroys_money_in_any_currency(
    processor: SandboxProcessor, payment: dict[str, Any]
) -> None:
    with fresh_store() as store:
        now = int(time.time())
        book = fx.RateBook(store)
        book.record(sheet_at(now - 60))
        merchant = create_merchant(
            store,
            "Anywhere Shop",
            settlement_currencies=payment["settles"],
            fx_fee_percent=payment["fx_fee_percent"],
        ).merchant
        client = ProcessorClient(processor.url, timeout_seconds=2.0)
        charges, refunds = ChargeService(store, client), RefundService(store, client)
        caller = Caller(merchant, "req_money")
        presentment, amount = payment["presentment"], payment["amount"]
        settled_in = fx.settlement_currency(merchant, presentment)

        paid = charges.create(
            caller,
            ChargeCreateParams(
                amount=amount,
                currency=presentment,
                source="tok_visa",
                capture=payment["capture"] is None,
            ),
            idempotency_key=str(uuid.uuid4()),
        )
        if payment["capture"] is not None:
            paid = charges.capture(caller, paid.id, ChargeCaptureParams(amount=payment["capture"]))
        captured = paid.amount_captured
        assert paid.state == "captured" and captured == (payment["capture"] or amount)
        assert (paid.settlement_currency or presentment) == settled_in

        moved_currency = presentment if presentment != "usd" else settled_in
        txns = [txn(store, paid.balance_transaction)]
        for n, (part, drift) in enumerate(payment["refunds"], start=1):
            if moved_currency != "usd":
                factor = 1 + drift / 100
                book.record(moved(sheet_at(now - 60), moved_currency, factor, now - 60 + n))
            done = refund({"refunds": refunds, "caller": caller}, paid.id, part)
            assert done.status == "succeeded"
            txns.append(txn(store, done.balance_transaction))

        report = ledger.verify(store)
        assert report.ok, report.violations
        for code, totals in report.totals.items():
            assert totals["debits"] == totals["credits"], code
        assert set(report.totals) <= {presentment, settled_in}

        # The merchant's balance is what their balance transactions say, in their currency.
        assert {t["currency"] for t in txns} == {settled_in}
        payable = credit_balance(store, ledger.merchant_payable(merchant.id, settled_in))
        assert payable == sum(t["net"] for t in txns)
        refunded = sum(part for part, _ in payment["refunds"])
        assert charges.retrieve(merchant, paid.id).amount_refunded == refunded
        # The processor is owed what the customer paid and was not given back.
        receivable = ledger.account_balance(store, ledger.processor_receivable(presentment))
        assert receivable.debits_posted - receivable.credits_posted == captured - refunded
        if settled_in != presentment:
            assert credit_balance(store, ledger.fx_liquidity(presentment)) == captured - refunded


# ---- retries after the lock has gone --------------------------------------------------------


def test_a_retry_after_the_quote_expired_finds_its_charge_rather_than_refusing_it(
    store: Store, processor: SandboxProcessor
) -> None:
    """The processor did not answer, so the charge waits pending with its locked rate. Its
    retry, after the quote's lock has ended (and with the rates gone stale), must find that
    charge and finish it: refusing would tell the merchant it failed while the resolver
    charges the card."""
    now = time.time()
    clock = Clock(now)
    record_rates(store)
    merchant = create_merchant(store, "Patient").merchant
    caller = Caller(merchant, "req_retry")
    client = ProcessorClient(processor.url, timeout_seconds=0.5)
    charges = ChargeService(store, client, clock=clock)
    params = FxQuoteCreateParams.model_validate(
        {"from_currencies": ["eur"], "to_currency": "usd", "lock_duration": "five_minutes"}
    )
    quote = fx.FxQuoteService(store, fx.RateBook(store, clock), clock).create(merchant, params)
    paid = ChargeCreateParams(amount=2500, currency="eur", source="tok_visa", fx_quote=quote.id)
    processor.inject_fault("timeout_before")
    try:
        first = charges.create(caller, paid, idempotency_key="order-77")
    finally:
        processor.clear_faults()
    assert first.state == "pending"

    clock.now = now + 2 * 3600  # the lock is over, and the rates are two hours old
    with pytest.raises(InvalidRequestError):  # a new charge at the quote is refused...
        charges.create(caller, paid, idempotency_key="order-78")
    retried = charges.create(caller, paid, idempotency_key="order-77")  # ...its retry is not
    assert retried.id == first.id and retried.state == "captured"
    assert retried.exchange_rate == quote.rates["eur"].exchange_rate
    assert ledger.verify(store).ok


def test_a_payment_intent_confirmed_at_stale_rates_is_left_as_it_was(
    store: Store, processor: SandboxProcessor
) -> None:
    from clearline.params import PaymentIntentConfirmParams, PaymentIntentCreateParams
    from clearline.payment_intents import PaymentIntentService

    now = time.time()
    clock = Clock(now)
    record_rates(store)
    merchant = create_merchant(store, "Intent Shop").merchant
    caller = Caller(merchant, "req_intent")
    client = ProcessorClient(processor.url, timeout_seconds=2.0)
    charges = ChargeService(store, client, clock=clock)
    refunds = RefundService(store, client, clock=clock)
    intents = PaymentIntentService(store, charges, refunds, clock, public_url="https://x.test")
    created = intents.create(
        caller,
        PaymentIntentCreateParams(amount=3000, currency="eur", payment_method="pm_card_visa"),
        idempotency_key="pi-1",
    )
    clock.now = now + 2 * 3600
    with pytest.raises(fx.FxRatesUnavailable):
        intents.confirm(caller, created.id, PaymentIntentConfirmParams())
    after = store.get(f"PI#{created.id}", "PI")
    assert after is not None
    assert (after["state"], after["attempt"]) == ("requires_confirmation", 0)
    assert after["payment_method"] == created.payment_method

    clock.now = now  # fresh again: the same confirmation goes through
    confirmed = intents.confirm(caller, created.id, PaymentIntentConfirmParams())
    assert confirmed.state == "succeeded"
