"""The PaymentMethod object (a card; the vault keeps its number)."""

from __future__ import annotations

from typing import Any

from clearline.models import Address, PaymentMethod

_EMPTY_ADDRESS = Address().model_dump()


def render_payment_method(method: PaymentMethod) -> dict[str, Any]:
    card = method.card
    billing = method.billing_details
    checks = card.checks.model_dump() if card.checks else {}
    return {
        "id": method.id,
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": {
            "address": billing.address.model_dump() if billing.address else dict(_EMPTY_ADDRESS),
            "email": billing.email,
            "name": billing.name,
            "phone": billing.phone,
        },
        "card": {
            "brand": card.brand,
            "checks": {
                "address_line1_check": checks.get("address_line1_check"),
                "address_postal_code_check": checks.get("address_postal_code_check"),
                "cvc_check": checks.get("cvc_check"),
            },
            "country": card.country,
            "display_brand": card.brand,
            "exp_month": card.exp_month,
            "exp_year": card.exp_year,
            "fingerprint": card.fingerprint,
            "funding": card.funding,
            "generated_from": None,
            "last4": card.last4,
            "networks": {"available": [card.brand], "preferred": None},
            "regulated_status": None,
            "three_d_secure_usage": {"supported": card.three_d_secure_supported},
            "wallet": None,
        },
        "created": method.created,
        "customer": method.customer,
        "livemode": method.livemode,
        "metadata": dict(method.metadata),
        "type": "card",
    }
