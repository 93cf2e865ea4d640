"""3-D Secure authentications, as Stripe's test mode runs them.

Clearline asks before a payment whether the card needs the cardholder's challenge. Most
test cards do not (`not_required`, nothing stored). Those that do get an authentication
whose id derives from Clearline's idempotency key, so a retried request finds the same
one; the cardholder completes or fails it once, on the vault's challenge page, and the
outcome is what the authorization forwarded afterwards may claim.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from clearline.errors import IdempotencyError, InvalidRequestError, ResourceMissingError
from clearline.ids import derived_id
from clearline.store import TransactionCancelled
from vault.card_data import needs_challenge
from vault.models import AUTH_PREFIX, Authentication
from vault.service import CardVault
from vault.storage import VaultStore

OUTCOMES = ("succeeded", "failed")


@dataclass(frozen=True)
class AuthenticationRequest:
    merchant: str
    payment_method: str
    amount: int
    currency: str
    reference: str
    complete_url: str


@dataclass(frozen=True)
class AuthenticationDecision:
    """What Clearline learns: no challenge needed, or one to send the cardholder to."""

    authentication: Authentication | None

    @property
    def status(self) -> str:
        return "not_required" if self.authentication is None else self.authentication.status


class Authentications:
    def __init__(
        self, store: VaultStore, cards: CardVault, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.cards = cards
        self.clock = clock

    def begin(self, request: AuthenticationRequest, idempotency_key: str) -> AuthenticationDecision:
        complete = urlsplit(request.complete_url)
        if complete.scheme not in ("http", "https") or not complete.netloc:
            # The challenge page redirects the cardholder there: only a web address will do.
            raise InvalidRequestError(
                "complete_url must be an absolute http(s) URL.",
                code="parameter_invalid",
                param="complete_url",
            )
        payment_method = self.cards.payment_method(request.merchant, request.payment_method)
        if not needs_challenge(self.cards.open_card(payment_method)):
            return AuthenticationDecision(None)
        authentication = Authentication(
            id=derived_id("3ds", request.merchant, idempotency_key),
            merchant=request.merchant,
            payment_method=request.payment_method,
            amount=request.amount,
            currency=request.currency,
            reference=request.reference,
            complete_url=request.complete_url,
            created=int(self.clock()),
        )
        try:
            self.store.put(authentication.to_item(), if_new=True)
        except TransactionCancelled:
            existing = self.get(authentication.id)
            asked = replace(authentication, created=existing.created)
            if replace(existing, status="challenge_required", completed=None) != asked:
                raise IdempotencyError(
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with."
                ) from None
            return AuthenticationDecision(existing)
        return AuthenticationDecision(authentication)

    def get(self, authentication_id: str) -> Authentication:
        item = self.store.get(AUTH_PREFIX + authentication_id, "AUTH")
        if item is None:
            raise ResourceMissingError("authentication", authentication_id)
        return Authentication.from_item(item)

    def record_outcome(self, authentication_id: str, outcome: str) -> Authentication:
        """The cardholder's answer to the challenge, recorded once: a second answer (a
        resubmitted form, another tab) changes nothing."""
        if outcome not in OUTCOMES:
            raise InvalidRequestError(
                "outcome must be succeeded or failed.", code="parameter_invalid", param="outcome"
            )
        try:
            item = self.store.update(
                AUTH_PREFIX + authentication_id,
                "AUTH",
                "SET #status = :outcome, completed = :now",
                {":outcome": outcome, ":now": int(self.clock()), ":open": "challenge_required"},
                names={"#status": "status"},
                condition="#status = :open",
            )
        except TransactionCancelled:
            return self.get(authentication_id)  # 404 if it never existed
        return Authentication.from_item(item)

    def succeeded_for(
        self, authentication_id: str | None, merchant_id: str, payment_method: str
    ) -> bool:
        """Whether an authorization of this payment method may say the cardholder passed
        this challenge."""
        if not authentication_id:
            return False
        item = self.store.get(AUTH_PREFIX + authentication_id, "AUTH")
        return (
            item is not None
            and item.get("merchant") == merchant_id
            and item.get("payment_method") == payment_method
            and item.get("status") == "succeeded"
        )
