"""FX quotes in Stripe's shape."""

from __future__ import annotations

from typing import Any

from clearline.models import FxQuote


def render_fx_quote(quote: FxQuote) -> dict[str, Any]:
    usage = dict(quote.usage)
    return {
        "id": quote.id,
        "object": "fx_quote",
        "created": quote.created,
        "livemode": False,
        "lock_duration": quote.lock_duration,
        "lock_expires_at": quote.lock_expires_at,
        "lock_status": quote.lock_status,
        "rates": {
            source: {
                "exchange_rate": float(rate.exchange_rate),
                "rate_details": {
                    "base_rate": float(rate.base_rate),
                    "duration_premium": float(rate.duration_premium),
                    "fx_fee_rate": float(rate.fx_fee_rate),
                    # Our rates are the provider's mid-market; there is no other reference.
                    "reference_rate": None,
                    "reference_rate_provider": None,
                },
            }
            for source, rate in sorted(quote.rates.items())
        },
        "to_currency": quote.to_currency,
        "usage": {
            "type": usage.get("type", "payment"),
            "payment": usage.get("payment"),
            "transfer": usage.get("transfer"),
        },
    }
