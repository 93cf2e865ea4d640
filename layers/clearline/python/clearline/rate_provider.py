"""The FX rate provider's API, as the rates function reads it: one sheet of mid-market rates,
units of each currency per US dollar, as decimal strings (a float cannot carry a rate)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from clearline.fx import BASE_CURRENCY, InvalidRateSheet, RateSheet, parse_rate
from clearline.processor import JsonApiClient


class ProviderSheet(BaseModel):
    model_config = ConfigDict(extra="ignore")

    base: str
    as_of: int
    rates: dict[str, str]

    @field_validator("base")
    @classmethod
    def _usd_based(cls, value: str) -> str:
        if value.lower() != BASE_CURRENCY:
            raise ValueError(f"rates must be per {BASE_CURRENCY}, not {value}")
        return value.lower()


class RateProviderClient(JsonApiClient):
    def rate_sheet(self) -> RateSheet:
        """The provider's current sheet. ProcessorUnavailable or ProcessorRejected when it
        does not answer well; InvalidRateSheet when its answer is not a sheet."""
        raw = self._request("GET", "/v1/rates")
        try:
            sheet = ProviderSheet.model_validate(raw)
        except ValidationError as exc:
            raise InvalidRateSheet(f"not a rate sheet: {exc.error_count()} errors") from exc
        rates: dict[str, Decimal] = {
            code.lower(): parse_rate(rate) for code, rate in sheet.rates.items()
        }
        return RateSheet(sheet.as_of, rates, source="provider")
