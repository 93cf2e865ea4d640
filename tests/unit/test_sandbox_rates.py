"""The sandbox rate provider driven over HTTP: the sheet, drift, outages and reset."""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import requests

from clearline.money import CURRENCIES
from clearline_local.sandbox_rates import BASE_RATES, STALE_SECONDS, SandboxRates

START = 1_700_000_000.75
NON_USD = [code for code in BASE_RATES if code != "usd"]
_RATE_RE = re.compile(r"[0-9]+(\.[0-9]{1,6})?")


class FakeClock:
    """A clock a test moves by hand."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rates(clock: FakeClock) -> Iterator[SandboxRates]:
    # One provider per test: drift and outages are shared state.
    with SandboxRates(clock=clock) as sandbox:
        yield sandbox


def get(service: SandboxRates, path: str = "/v1/rates") -> requests.Response:
    return requests.get(service.url + path, timeout=5)


def post(service: SandboxRates, path: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(service.url + path, json=body, timeout=5)


def sheet(service: SandboxRates) -> dict[str, Any]:
    response = get(service)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def served(service: SandboxRates) -> dict[str, str]:
    rates: dict[str, str] = sheet(service)["rates"]
    return rates


def drift(service: SandboxRates, percent: Any, currency: str | None = None) -> None:
    body = {"percent": percent} if currency is None else {"percent": percent, "currency": currency}
    response = post(service, "/_sandbox/drift", body)
    assert response.status_code == 200, response.text


def outage(service: SandboxRates, mode: str) -> None:
    response = post(service, "/_sandbox/outage", {"mode": mode})
    assert response.status_code == 200, response.text
    assert response.json() == {"outage": mode}


def expected(code: str, percent: str) -> Decimal:
    factor = 1 + Decimal(percent) / 100
    return (Decimal(BASE_RATES[code]) * factor).quantize(Decimal("0.000001"))


# ------------------------------------------------------------------------------ the sheet


def test_the_sheet_quotes_every_currency_as_a_decimal_string(
    rates: SandboxRates, clock: FakeClock
) -> None:
    body = sheet(rates)

    assert body["object"] == "rate_sheet"
    assert body["base"] == "usd"
    assert body["as_of"] == int(clock.now)
    assert isinstance(body["as_of"], int)
    assert list(body["rates"]) == list(CURRENCIES)
    for code, rate in body["rates"].items():
        assert isinstance(rate, str), code
        assert _RATE_RE.fullmatch(rate), (code, rate)
        assert Decimal(rate) > 0, code
    assert body["rates"] == BASE_RATES
    assert body["rates"]["usd"] == "1"
    assert body["rates"]["eur"] == "0.92"


def test_rate_sheet_is_what_the_get_answers(rates: SandboxRates, clock: FakeClock) -> None:
    drift(rates, "3", "gbp")
    clock.now += 42
    assert rates.rate_sheet() == sheet(rates)
    assert rates.rate_sheet()["as_of"] == int(START) + 42


def test_the_same_settings_give_the_same_sheet(clock: FakeClock) -> None:
    with SandboxRates(clock=clock) as first, SandboxRates(clock=clock) as second:
        assert first.port != second.port
        assert sheet(first) == sheet(second)
        for service in (first, second):
            drift(service, "-7.25")
            drift(service, "1.5", "jpy")
        assert sheet(first) == sheet(second)
        assert served(first)["jpy"] == format(expected("jpy", "1.5").normalize(), "f")


def test_an_unknown_rate_path_is_missing(rates: SandboxRates) -> None:
    response = get(rates, "/v1/rates/eur")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


# ---------------------------------------------------------------------------------- drift


@pytest.mark.parametrize(
    ("code", "percent", "rate"),
    [
        ("eur", "2.5", "0.943"),
        ("kwd", "3.33", "0.31774"),  # 0.31773975, rounded to six places
        ("jpy", "-10", "136.125"),
        ("krw", "50", "2018.25"),
        ("bhd", "0.0000001", "0.376"),  # too small to show in six places
    ],
)
def test_drift_moves_only_the_named_currency_by_the_percent(
    rates: SandboxRates, code: str, percent: str, rate: str
) -> None:
    before = served(rates)
    drift(rates, percent, code)
    after = served(rates)

    assert Decimal(after[code]) == expected(code, percent)
    assert after[code] == rate
    assert {c: r for c, r in after.items() if c != code} == {
        c: r for c, r in before.items() if c != code
    }
    assert rates.drift() == {code: format(Decimal(percent).normalize(), "f")}


def test_drift_accepts_a_number_as_well_as_a_string(rates: SandboxRates) -> None:
    drift(rates, 2.5, "eur")
    drift(rates, -3, "gbp")
    assert served(rates)["eur"] == "0.943"
    assert Decimal(served(rates)["gbp"]) == expected("gbp", "-3")


def test_a_drift_replaces_the_last_rather_than_adding_to_it(rates: SandboxRates) -> None:
    drift(rates, "10", "eur")
    assert Decimal(served(rates)["eur"]) == expected("eur", "10")
    drift(rates, "2.5", "eur")
    assert Decimal(served(rates)["eur"]) == expected("eur", "2.5")
    drift(rates, "0", "eur")
    assert served(rates)["eur"] == BASE_RATES["eur"]
    assert get(rates, "/_sandbox/drift").json() == {"drift": {}}


def test_drift_without_a_currency_moves_every_currency_but_usd(rates: SandboxRates) -> None:
    drift(rates, "5", "chf")
    drift(rates, "-1.5")
    after = served(rates)

    assert after["usd"] == "1"
    for code in NON_USD:
        assert Decimal(after[code]) == expected(code, "-1.5"), code
    assert get(rates, "/_sandbox/drift").json() == {"drift": dict.fromkeys(NON_USD, "-1.5")}


def test_a_drifted_rate_is_never_in_exponent_notation(rates: SandboxRates) -> None:
    # Lands on 1400.000000, which normalizes to 1.4E+3 unless formatted as fixed point.
    drift(rates, "4.050538833147528799702712746191007", "krw")
    assert served(rates)["krw"] == "1400"
    drift(rates, "-50")
    assert all(_RATE_RE.fullmatch(rate) for rate in served(rates).values())


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"percent": "50.01"}, "percent"),
        ({"percent": -51}, "percent"),
        ({"percent": "abc"}, "percent"),
        ({"percent": "1e1"}, "percent"),
        ({"percent": "NaN"}, "percent"),
        ({"percent": ""}, "percent"),
        ({"percent": True}, "percent"),
        ({"percent": None}, "percent"),
        ({}, "percent"),
        ({"percent": "2", "currency": "xyz"}, "currency"),
        ({"percent": "2", "currency": "usd"}, "currency"),
        ({"percent": "2", "currency": 7}, "currency"),
    ],
)
def test_a_bad_drift_is_refused_and_changes_nothing(
    rates: SandboxRates, body: dict[str, Any], param: str
) -> None:
    drift(rates, "1", "eur")
    before = sheet(rates)

    response = post(rates, "/_sandbox/drift", body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_drift"
    assert response.json()["error"]["param"] == param
    assert sheet(rates) == before
    assert rates.drift() == {"eur": "1"}


def test_the_drift_bounds_are_inclusive(rates: SandboxRates) -> None:
    drift(rates, "50", "eur")
    drift(rates, "-50", "gbp")
    assert served(rates)["eur"] == "1.38"
    assert served(rates)["gbp"] == "0.395"


@pytest.mark.parametrize(
    ("percent", "currency"),
    [(float("nan"), None), (float("inf"), None), (Decimal("NaN"), None), ("1", "usd"), ("1", "x")],
)
def test_set_drift_refuses_with_value_error(
    rates: SandboxRates, percent: Any, currency: str | None
) -> None:
    with pytest.raises(ValueError):
        rates.set_drift(percent, currency)
    assert rates.drift() == {}


def test_set_drift_takes_a_decimal_and_an_upper_case_code(rates: SandboxRates) -> None:
    rates.set_drift(Decimal("2.5"), "EUR")
    assert rates.rate_sheet()["rates"]["eur"] == "0.943"


# -------------------------------------------------------------------------------- outages


def test_error_500_fails_the_sheet_until_none(rates: SandboxRates) -> None:
    outage(rates, "error_500")
    response = get(rates)
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "code": "rates_unavailable",
            "message": "The rate provider had an internal error.",
        }
    }
    assert get(rates, "/_sandbox/outage").json() == {"outage": "error_500"}
    assert rates.outage == "error_500"

    outage(rates, "none")
    assert get(rates).status_code == 200
    assert served(rates) == BASE_RATES


def test_stale_serves_the_old_sheet_a_day_behind(rates: SandboxRates, clock: FakeClock) -> None:
    drift(rates, "2.5", "eur")
    began = int(clock.now)
    outage(rates, "stale")
    clock.now += 3_600
    drift(rates, "-10", "eur")  # the provider is stuck: a new rate does not show
    outage(rates, "stale")  # still the same outage

    stale = sheet(rates)
    assert stale["as_of"] == began - STALE_SECONDS == began - 86_400
    assert stale["as_of"] < int(clock.now) - STALE_SECONDS
    assert stale["rates"]["eur"] == "0.943"
    assert rates.rate_sheet()["as_of"] == int(clock.now)

    outage(rates, "none")
    fresh = sheet(rates)
    assert fresh["as_of"] == int(clock.now)
    assert Decimal(fresh["rates"]["eur"]) == expected("eur", "-10")


@pytest.mark.parametrize("mode", ["melt", "", None, 500, "ERROR_500"])
def test_an_unknown_outage_mode_is_refused_and_changes_nothing(
    rates: SandboxRates, mode: Any
) -> None:
    outage(rates, "error_500")
    response = post(rates, "/_sandbox/outage", {"mode": mode})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_outage"
    assert response.json()["error"]["param"] == "mode"
    assert rates.outage == "error_500"
    assert get(rates).status_code == 500
    with pytest.raises(ValueError):
        rates.set_outage("melt")


# ---------------------------------------------------------------------------------- reset


def test_reset_clears_drift_and_outage(rates: SandboxRates, clock: FakeClock) -> None:
    drift(rates, "-4")
    drift(rates, "7", "mxn")
    outage(rates, "stale")
    clock.now += 10

    response = post(rates, "/_sandbox/reset", {})
    assert response.status_code == 200
    assert response.json() == {"drift": {}, "outage": "none"}
    body = sheet(rates)
    assert body["rates"] == BASE_RATES
    assert body["as_of"] == int(clock.now)

    rates.set_outage("error_500")
    rates.set_drift("3", "eur")
    rates.reset()
    assert served(rates) == BASE_RATES
