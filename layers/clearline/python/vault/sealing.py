"""Card data at rest: sealed under the vault's KMS key, and fingerprinted with its HMAC key.

A card's number and expiry are sealed together in one envelope; its CVC in another, kept
apart so it can be destroyed after the first authorization (PCI DSS forbids keeping it
longer). Each envelope's encryption context names the merchant, the object it belongs
to and the field, so an envelope copied onto another object does not open.
"""

from __future__ import annotations

import json
from typing import Any

from clearline.secrets import SecretBox, SecretUnavailable
from vault.card_data import CardDetails

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
FINGERPRINT_LENGTH = 16


def envelope_context(merchant_id: str, owner: str, field: str) -> dict[str, str]:
    """What an envelope is bound to. `owner` is a payment method (pm_...) or a token (tok_...)."""
    kind = "token" if owner.startswith("tok_") else "payment_method"
    return {"merchant": merchant_id, kind: owner, "field": field}


class CardSealer:
    def __init__(self, box: SecretBox) -> None:
        self.box = box

    def seal_card(self, card: CardDetails, merchant_id: str, owner: str) -> dict[str, str]:
        plaintext = json.dumps(
            {"number": card.number, "exp_month": card.exp_month, "exp_year": card.exp_year}
        )
        return self.box.seal(plaintext, envelope_context(merchant_id, owner, "card"))

    def open_card(self, envelope: dict[str, Any], merchant_id: str, owner: str) -> CardDetails:
        opened = json.loads(self.box.open(envelope, envelope_context(merchant_id, owner, "card")))
        return CardDetails(opened["number"], int(opened["exp_month"]), int(opened["exp_year"]))

    def seal_cvc(self, cvc: str, merchant_id: str, owner: str) -> dict[str, str]:
        return self.box.seal(cvc, envelope_context(merchant_id, owner, "cvc"))

    def open_cvc(self, envelope: dict[str, Any], merchant_id: str, owner: str) -> str:
        return self.box.open(envelope, envelope_context(merchant_id, owner, "cvc"))


def _alphanumeric(data: bytes, length: int) -> str:
    number = int.from_bytes(data, "big")
    chars = []
    for _ in range(length):
        number, rem = divmod(number, len(_ALPHABET))
        chars.append(_ALPHABET[rem])
    return "".join(chars)


class Fingerprinter:
    """`fingerprint`: the same card number gives the same one, for every merchant, and
    nobody without the KMS HMAC key can compute one from a number (unlike a plain hash,
    which a list of every possible card number would reverse)."""

    def __init__(self, key_id: str, kms: Any) -> None:
        self.key_id = key_id
        self.kms = kms

    def fingerprint(self, number: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        if not self.key_id:
            raise SecretUnavailable("no KMS key is configured for card fingerprints")
        try:
            answer = self.kms.generate_mac(
                KeyId=self.key_id, MacAlgorithm="HMAC_SHA_256", Message=number.encode()
            )
        except (BotoCoreError, ClientError) as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code") or type(exc).__name__
            raise SecretUnavailable(f"KMS refused to generate a MAC: {code}") from exc
        return _alphanumeric(bytes(answer["Mac"]), FINGERPRINT_LENGTH)
