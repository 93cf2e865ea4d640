"""A sandbox FX rate provider: an HTTP service on loopback that serves a mid-market rate sheet,
the way a real provider quotes what one US dollar buys in each currency Clearline takes.

Code that converts money must cope with rates that move and with a provider that fails, and a
real provider does neither on demand. This one serves fixed base rates, so the same settings
always give the same sheet, and tests move them by a chosen percent (drift) or make the
provider fail: answer 500, or keep serving an old sheet (stale). Its clock is injected, so
`as_of` is known to a test. Like the bank and the processor it is a `sandbox_http` service;
all state is in memory and guarded by one lock.

Rates are decimal strings, never floats: a float cannot hold 0.92 exactly, and a rate read
back must be the rate that was served.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any, Literal, cast

from clearline_local.sandbox_http import (
    Operation,
    RequestError,
    Response,
    SandboxService,
    request_fingerprint,
)

logger = logging.getLogger(__name__)

BASE_CURRENCY = "usd"
# Units of each currency per one US dollar: every currency of clearline.money, in its order
# (copied rather than imported; the sandbox does not depend on the service it stands beside).
BASE_RATES: dict[str, str] = {
    "usd": "1",
    "eur": "0.92",
    "gbp": "0.79",
    "cad": "1.36",
    "aud": "1.52",
    "chf": "0.9045",
    "sek": "10.45",
    "nok": "10.75",
    "dkk": "6.87",
    "sgd": "1.35",
    "hkd": "7.82",
    "mxn": "16.95",
    "inr": "83.3",
    "jpy": "151.25",
    "krw": "1345.5",
    "bhd": "0.376",
    "jod": "0.709",
    "kwd": "0.3075",
    "omr": "0.385",
    "tnd": "3.12",
}

MAX_DRIFT_PERCENT = Decimal(50)
STALE_SECONDS = 86_400  # how old a stale sheet claims to be when its outage begins

OutageMode = Literal["none", "error_500", "stale"]
OUTAGE_MODES: tuple[str, ...] = ("none", "error_500", "stale")

_RATE_QUANTUM = Decimal("0.000001")  # at most six decimal places
# Fixed rather than the thread's context: the same settings give the same rates everywhere.
_DECIMAL_CONTEXT = Context(prec=28, rounding=ROUND_HALF_EVEN)
_DECIMAL_RE = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")


def _decimal_string(value: Decimal) -> str:
    # normalize() drops trailing zeros; format "f" keeps it out of exponent notation.
    return format(value.normalize(_DECIMAL_CONTEXT), "f")


def _drifted(code: str, percent: Decimal) -> str:
    base = Decimal(BASE_RATES[code])
    factor = _DECIMAL_CONTEXT.add(1, _DECIMAL_CONTEXT.divide(percent, 100))
    rate = _DECIMAL_CONTEXT.multiply(base, factor)
    return _decimal_string(rate.quantize(_RATE_QUANTUM, context=_DECIMAL_CONTEXT))


# ---------------------------------------------------------------------------- validation


def _percent(value: object) -> Decimal:
    # bool is an int subclass; `true` is never a percent
    if isinstance(value, bool):
        raise ValueError("percent must be a decimal string or a number")
    if isinstance(value, Decimal) and value.is_finite():
        percent = value
    elif isinstance(value, int):
        percent = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("percent must be a finite number")
        percent = Decimal(repr(value))  # the float's shortest form, not its binary expansion
    elif isinstance(value, str) and _DECIMAL_RE.fullmatch(value):
        percent = Decimal(value)
    else:
        raise ValueError("percent must be a decimal string or a number")
    if not -MAX_DRIFT_PERCENT <= percent <= MAX_DRIFT_PERCENT:
        raise ValueError(f"percent must be between -{MAX_DRIFT_PERCENT} and {MAX_DRIFT_PERCENT}")
    return percent


def _drift_currency(value: object) -> str:
    code = value.lower() if isinstance(value, str) else None
    if code not in BASE_RATES:
        raise ValueError(f"currency must be one of {', '.join(BASE_RATES)}")
    if code == BASE_CURRENCY:
        # The base is one dollar per dollar; a drift on it would be ignored, so it is refused.
        raise ValueError(f"{BASE_CURRENCY} is the base currency and does not drift")
    return code


def _outage_mode(value: object) -> OutageMode:
    if value in OUTAGE_MODES:
        return cast(OutageMode, value)
    raise ValueError(f"unknown outage mode {value!r}; expected one of {OUTAGE_MODES}")


# ---------------------------------------------------------------------------------- rates


class SandboxRates(SandboxService):
    """An in-memory mid-market rate provider, served over HTTP on a daemon thread."""

    name = "sandbox rates"
    server_version = "ClearlineSandboxRates/1.0"
    internal_error = ("rates_unavailable", "The rate provider had an internal error.")
    logger = logger

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(host, port)
        self.clock = clock
        self._drift: dict[str, Decimal] = {}  # percent per currency; absent means none
        self._outage: OutageMode = "none"
        self._stale_sheet: dict[str, Any] | None = None  # what a stale outage keeps serving

    # -- the sheet ------------------------------------------------------------------------

    def rate_sheet(self) -> dict[str, Any]:
        """The sheet as the provider quotes it now: what GET /v1/rates answers outside an
        outage."""
        with self._lock:
            return self._sheet()

    def _sheet(self) -> dict[str, Any]:
        rates = {
            code: _drifted(code, self._drift.get(code, Decimal(0)))
            for code in BASE_RATES
            if code != BASE_CURRENCY
        }
        return {
            "object": "rate_sheet",
            "base": BASE_CURRENCY,
            "as_of": int(self.clock()),
            "rates": {BASE_CURRENCY: "1", **rates},
        }

    # -- test controls --------------------------------------------------------------------

    def set_drift(self, percent: Decimal | str | float, currency: str | None = None) -> None:
        """Move `currency` (every currency but usd when None) to base * (1 + percent/100).
        A drift replaces the one set before; it does not add to it. ValueError when refused,
        and then nothing changes."""
        value = _percent(percent)
        codes = (
            [code for code in BASE_RATES if code != BASE_CURRENCY]
            if currency is None
            else [_drift_currency(currency)]
        )
        with self._lock:
            for code in codes:
                if value:
                    self._drift[code] = value
                else:
                    self._drift.pop(code, None)

    def drift(self) -> dict[str, str]:
        """The drift in force, in percent, for each currency that has one."""
        with self._lock:
            return {code: _decimal_string(value) for code, value in self._drift.items()}

    @property
    def outage(self) -> OutageMode:
        with self._lock:
            return self._outage

    def set_outage(self, mode: str) -> None:
        """`error_500`: GET /v1/rates answers 500. `stale`: it keeps answering the sheet of
        the moment the outage began, dated a day earlier. `none`: normal service."""
        value = _outage_mode(mode)
        with self._lock:
            if value == "stale" and self._outage == "stale":
                return  # still the same outage: the old sheet stays as it was
            self._stale_sheet = None
            if value == "stale":
                sheet = self._sheet()
                sheet["as_of"] -= STALE_SECONDS
                self._stale_sheet = sheet
            self._outage = value

    def reset(self) -> None:
        """No drift and no outage."""
        with self._lock:
            self._drift.clear()
            self._outage = "none"
            self._stale_sheet = None

    # -- request handling (transport-free) ------------------------------------------------

    def _controls(self) -> dict[str, Any]:
        return {"drift": self.drift(), "outage": self.outage}

    def _sandbox_route(self, method: str, path: str, body: dict[str, Any]) -> Response | None:
        if path == "/_sandbox/drift":
            if method == "POST":
                # Both are checked before either is applied: a refused request changes nothing.
                try:
                    percent = _percent(body.get("percent"))
                except ValueError as exc:
                    raise RequestError(400, "invalid_drift", str(exc), "percent") from None
                currency = body.get("currency")
                if currency is not None:
                    try:
                        currency = _drift_currency(currency)
                    except ValueError as exc:
                        raise RequestError(400, "invalid_drift", str(exc), "currency") from None
                self.set_drift(percent, currency)
            if method in ("GET", "POST"):
                return Response(200, {"drift": self.drift()})
        if path == "/_sandbox/outage":
            if method == "POST":
                try:
                    mode = _outage_mode(body.get("mode"))
                except ValueError as exc:
                    raise RequestError(400, "invalid_outage", str(exc), "mode") from None
                self.set_outage(mode)
            if method in ("GET", "POST"):
                return Response(200, {"outage": self.outage})
        if path == "/_sandbox/reset" and method == "POST":
            self.reset()
            return Response(200, self._controls())
        return None

    def _read(self, parts: list[str]) -> dict[str, Any] | None:
        if parts != ["rates"]:
            return None
        if self._outage == "error_500":
            self.logger.info("sandbox outage error_500 on GET /v1/rates")
            code, message = self.internal_error
            raise RequestError(500, code, message)
        if self._stale_sheet is not None:
            return {**self._stale_sheet, "rates": dict(self._stale_sheet["rates"])}
        return self._sheet()

    def _fingerprint(self, method: str, path: str, body: dict[str, Any]) -> str:
        return request_fingerprint(method, path, body)

    def _route_post(self, parts: list[str]) -> Operation:
        # Rates are only read: nothing is committed over /v1.
        raise RequestError(404, "not_found", "Unrecognized request URL.")
