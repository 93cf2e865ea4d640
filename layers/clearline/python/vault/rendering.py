"""The vault's records in Stripe's shapes: `payment_method`, `token`, and the
authentication Clearline reads. None of them can show more than the last four digits."""

from __future__ import annotations

from typing import Any

from vault.authentications import AuthenticationDecision
from vault.card_data import BRAND_NAMES, DISPLAY_BRANDS
from vault.models import Authentication, CardFacts, PaymentMethod, Token


def _address_check(value: Any) -> str | None:
    # Nothing has checked it yet: the issuer does, at the first authorization.
    return "unchecked" if value else None


def payment_method_object(payment_method: PaymentMethod) -> dict[str, Any]:
    card = payment_method.card
    address = payment_method.billing_details.get("address") or {}
    return {
        "id": payment_method.id,
        "object": "payment_method",
        "allow_redisplay": payment_method.allow_redisplay,
        "billing_details": payment_method.billing_details,
        "card": {
            "brand": card.brand,
            "checks": {
                "address_line1_check": _address_check(address.get("line1")),
                "address_postal_code_check": _address_check(address.get("postal_code")),
                "cvc_check": "unchecked" if card.cvc_given else None,
            },
            "country": card.country,
            "display_brand": DISPLAY_BRANDS[card.brand],
            "exp_month": card.exp_month,
            "exp_year": card.exp_year,
            "fingerprint": card.fingerprint,
            "funding": card.funding,
            "generated_from": None,
            "last4": card.last4,
            "networks": {"available": [card.brand], "preferred": None},
            "regulated_status": None,
            "three_d_secure_usage": {"supported": True},
            "wallet": None,
        },
        "created": payment_method.created,
        "customer": None,
        "livemode": payment_method.livemode,
        "metadata": payment_method.metadata,
        "type": "card",
    }


def internal_payment_method_object(payment_method: PaymentMethod) -> dict[str, Any]:
    """What Clearline reads: the object, whose it is, and what its fraud rules read that
    Stripe does not show (the card's BIN, the address of the browser that gave it)."""
    shown = payment_method_object(payment_method)
    return {
        **shown,
        "card": {**shown["card"], "iin": payment_method.card.iin},
        "client_ip": payment_method.client_ip,
        "merchant": payment_method.merchant,
    }


def _legacy_card(card_id: str, card: CardFacts, holder: dict[str, str | None]) -> dict[str, Any]:
    return {
        "id": card_id,
        "object": "card",
        "address_city": holder.get("address_city"),
        "address_country": holder.get("address_country"),
        "address_line1": holder.get("address_line1"),
        "address_line1_check": _address_check(holder.get("address_line1")),
        "address_line2": holder.get("address_line2"),
        "address_state": holder.get("address_state"),
        "address_zip": holder.get("address_zip"),
        "address_zip_check": _address_check(holder.get("address_zip")),
        "brand": BRAND_NAMES[card.brand],
        "country": card.country,
        "cvc_check": "unchecked" if card.cvc_given else None,
        "dynamic_last4": None,
        "exp_month": card.exp_month,
        "exp_year": card.exp_year,
        "fingerprint": card.fingerprint,
        "funding": card.funding,
        "last4": card.last4,
        "metadata": {},
        "name": holder.get("name"),
        "networks": {"preferred": None},
        "regulated_status": None,
        "tokenization_method": None,
        "wallet": None,
    }


def token_object(token: Token) -> dict[str, Any]:
    return {
        "id": token.id,
        "object": "token",
        "card": _legacy_card(token.card_id, token.card, token.holder),
        "client_ip": token.client_ip,
        "created": token.created,
        "livemode": token.livemode,
        "type": "card",
        "used": token.used,
    }


def authentication_object(authentication: Authentication) -> dict[str, Any]:
    return {
        "id": authentication.id,
        "object": "authentication",
        "status": authentication.status,
        "payment_method": authentication.payment_method,
        "reference": authentication.reference,
        "merchant": authentication.merchant,
        "amount": authentication.amount,
        "currency": authentication.currency,
    }


def authentication_decision(decision: AuthenticationDecision, vault_url: str) -> dict[str, Any]:
    """The answer to Clearline's "does this payment need a challenge?"."""
    authentication = decision.authentication
    return {
        "id": authentication.id if authentication else None,
        "object": "authentication",
        "status": decision.status,
        "url": f"{vault_url}/3ds/{authentication.id}" if authentication else None,
    }
