"""The customer object."""

from __future__ import annotations

from typing import Any

from clearline.models import Customer


def render_customer(customer: Customer) -> dict[str, Any]:
    if customer.deleted:
        return {"id": customer.id, "object": "customer", "deleted": True}
    return {
        "id": customer.id,
        "object": "customer",
        "address": customer.address.model_dump() if customer.address else None,
        "balance": 0,
        "created": customer.created,
        "currency": None,
        "default_source": customer.default_source,
        "delinquent": False,
        "description": customer.description,
        "discount": None,
        "email": customer.email,
        "invoice_prefix": customer.id.removeprefix("cus_")[:8].upper(),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": customer.default_payment_method,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": customer.livemode,
        "metadata": dict(customer.metadata),
        "name": customer.name,
        "next_invoice_sequence": 1,
        "phone": customer.phone,
        "preferred_locales": [],
        "shipping": customer.shipping.model_dump() if customer.shipping else None,
        "tax_exempt": "none",
        "test_clock": None,
    }
