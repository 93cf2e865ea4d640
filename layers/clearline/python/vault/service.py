"""Payment methods and tokens: cards in, sealed; ids out; cards opened only to forward them.

A card from a browser becomes a payment method (`pm_...`) or a token (`tok_...`). The
number and expiry are sealed in one envelope; the CVC in another item that lapses after
an hour and is deleted once an authorization has carried it. Clearline asks for payment
methods by id, always naming its merchant: another merchant's is as unknown as a missing one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from clearline.errors import InvalidRequestError, ResourceMissingError
from clearline.ids import derived_id, new_id
from clearline.merchants import Merchant
from clearline.store import TransactionCancelled
from vault.card_data import CardDetails, test_card
from vault.models import PM_PREFIX, TOKEN_PREFIX, CardFacts, PaymentMethod, Token
from vault.requests import NewPaymentMethod, NewToken, billing_details_of, empty_billing_details
from vault.sealing import CardSealer, Fingerprinter
from vault.storage import VaultStore, live

# PCI DSS allows keeping a CVC only until the authorization it is collected for.
CVC_TTL_SECONDS = 60 * 60
# A token is for one payment, made soon after the customer typed the card.
TOKEN_TTL_SECONDS = 24 * 60 * 60


# The vault's tokens start `tok_1`, as Stripe's own do; Stripe's test tokens are names
# (`tok_visa`). So Clearline asks the vault only about tokens it could have made.
VAULT_TOKEN_PREFIX = "tok_1"


def vault_token_id() -> str:
    return VAULT_TOKEN_PREFIX + new_id("tok").removeprefix("tok_")


class CardVault:
    def __init__(
        self,
        store: VaultStore,
        sealer: CardSealer,
        fingerprinter: Fingerprinter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.sealer = sealer
        self.fingerprinter = fingerprinter
        self.clock = clock

    def today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC).date()

    # ---- from browsers ---------------------------------------------------------------------

    def create_payment_method(
        self, merchant: Merchant, new: NewPaymentMethod, client_ip: str | None = None
    ) -> PaymentMethod:
        pm_id = new_id("pm")
        payment_method = PaymentMethod(
            id=pm_id,
            merchant=merchant.id,
            created=int(self.clock()),
            livemode=merchant.livemode,
            card=self._facts(new.card),
            billing_details=new.billing_details,
            metadata=new.metadata,
            allow_redisplay=new.allow_redisplay,
            client_ip=client_ip,
        )
        self._store_payment_method(payment_method, new.card)
        return payment_method

    def create_token(self, merchant: Merchant, new: NewToken, client_ip: str | None) -> Token:
        now = int(self.clock())
        token = Token(
            id=vault_token_id(),
            merchant=merchant.id,
            created=now,
            livemode=merchant.livemode,
            client_ip=client_ip,
            card_id=new_id("card"),
            card=self._facts(new.card),
            holder=new.holder,
            expires_at=now + TOKEN_TTL_SECONDS,
        )
        if new.card.cvc:
            self._put_cvc(
                token.merchant, token.id, TOKEN_PREFIX, new.card.cvc, now + CVC_TTL_SECONDS
            )
        self.store.put(
            token.to_item(self.sealer.seal_card(new.card, merchant.id, token.id)), if_new=True
        )
        return token

    # ---- for Clearline ---------------------------------------------------------------------

    def payment_method(self, merchant_id: str, pm_id: str) -> PaymentMethod:
        item = self._owned(PM_PREFIX + pm_id, "PM", merchant_id)
        if item is None:
            raise ResourceMissingError("payment_method", pm_id)
        return PaymentMethod.from_item(item)

    def payment_method_from_test_card(
        self, merchant_id: str, alias: str, reference: str
    ) -> PaymentMethod:
        """A payment method for one of Stripe's test aliases (`pm_card_visa`, `tok_visa`).
        The same merchant and reference always give the same one."""
        card = test_card(alias, self.today())
        if card is None:
            raise ResourceMissingError("payment_method", alias, param="test_card")
        pm_id = derived_id("pm", merchant_id, reference)
        existing = self._owned(PM_PREFIX + pm_id, "PM", merchant_id)
        if existing is not None:
            return PaymentMethod.from_item(existing)
        payment_method = PaymentMethod(
            id=pm_id,
            merchant=merchant_id,
            created=int(self.clock()),
            livemode=False,
            card=self._facts(card),
            billing_details=empty_billing_details(),
            origin="test_card",
            reference=reference,
        )
        return self._store_payment_method(payment_method, card)

    def test_card_facts(self, alias: str) -> CardFacts:
        """What a Stripe test alias's card is (brand, last four, fingerprint), without making
        anything: for a charge on a processor's test token, so that its fingerprint is the one
        a payment method of the same number has."""
        card = test_card(alias, self.today())
        if card is None:
            raise ResourceMissingError("test card", alias, param="alias")
        return self._facts(card)

    def redeem_token(self, merchant_id: str, token_id: str, reference: str) -> PaymentMethod:
        """The token's card as a payment method, made at the first redeem. A token is
        single use: only the reference it was first redeemed under gets it again."""
        item = self._owned(TOKEN_PREFIX + token_id, "TOKEN", merchant_id)
        if item is None:
            raise ResourceMissingError("token", token_id)
        token = Token.from_item(item)
        self._check_unused(token, reference)
        pm_id = derived_id("pm", token.id)
        if token.used_by == reference:
            existing = self._owned(PM_PREFIX + pm_id, "PM", merchant_id)
            if existing is not None:
                return PaymentMethod.from_item(existing)
        else:
            self._claim(token, reference, pm_id)
        if "sealed" not in item:  # redeemed and cleaned up by a concurrent retry
            return self.payment_method(merchant_id, pm_id)
        card = self.sealer.open_card(item["sealed"], merchant_id, token.id)
        payment_method = PaymentMethod(
            id=pm_id,
            merchant=merchant_id,
            created=int(self.clock()),
            livemode=token.livemode,
            card=token.card,
            billing_details=billing_details_of(token.holder),
            origin="token",
            reference=reference,
            token=token.id,
            client_ip=token.client_ip,
        )
        cvc_item = live(self.store.get(TOKEN_PREFIX + token.id, "CVC"), self.clock())
        if cvc_item is not None:
            cvc = self.sealer.open_cvc(cvc_item["sealed"], merchant_id, token.id)
            card = CardDetails(card.number, card.exp_month, card.exp_year, cvc)
            # It lapses when the token's would have: redeeming does not extend its life.
            self._put_cvc(merchant_id, pm_id, PM_PREFIX, cvc, cvc_item["expires_at"])
        stored = self._store_payment_method(payment_method, card, with_cvc=False)
        # The payment method holds the card now: the token keeps only what it showed.
        with contextlib.suppress(TransactionCancelled):  # gone already: nothing to remove
            self.store.update(
                TOKEN_PREFIX + token.id, "TOKEN", "REMOVE sealed", condition="attribute_exists(pk)"
            )
        self.store.delete(TOKEN_PREFIX + token.id, "CVC")
        return stored

    def open_card(self, payment_method: PaymentMethod) -> CardDetails:
        """The card behind a payment method, with its CVC while it is still kept."""
        item = self.store.get(PM_PREFIX + payment_method.id, "PM")
        if item is None or item.get("merchant") != payment_method.merchant:
            raise ResourceMissingError("payment_method", payment_method.id)
        card = self.sealer.open_card(item["sealed"], payment_method.merchant, payment_method.id)
        cvc_item = live(self.store.get(PM_PREFIX + payment_method.id, "CVC"), self.clock())
        if cvc_item is None:
            return card
        cvc = self.sealer.open_cvc(cvc_item["sealed"], payment_method.merchant, payment_method.id)
        return CardDetails(card.number, card.exp_month, card.exp_year, cvc)

    def discard_cvc(self, payment_method: PaymentMethod) -> None:
        """Once an authorization carried the CVC, it must not be kept."""
        self.store.delete(PM_PREFIX + payment_method.id, "CVC")

    # ---- storage ---------------------------------------------------------------------------

    def _facts(self, card: CardDetails) -> CardFacts:
        fingerprint = self.fingerprinter.fingerprint(card.number)
        return CardFacts.of(card, fingerprint, cvc_given=card.cvc is not None)

    def _put_cvc(
        self, merchant_id: str, owner: str, prefix: str, cvc: str, expires_at: float
    ) -> None:
        item = {
            "pk": prefix + owner,
            "sk": "CVC",
            "sealed": self.sealer.seal_cvc(cvc, merchant_id, owner),
            "expires_at": int(expires_at),
        }
        with contextlib.suppress(TransactionCancelled):  # a retry stored it first
            self.store.put(item, if_new=True)

    def _store_payment_method(
        self, payment_method: PaymentMethod, card: CardDetails, *, with_cvc: bool = True
    ) -> PaymentMethod:
        """Stores a new payment method; when a retry stored it first, answers that one."""
        if with_cvc and card.cvc:
            expires_at = self.clock() + CVC_TTL_SECONDS
            self._put_cvc(
                payment_method.merchant, payment_method.id, PM_PREFIX, card.cvc, expires_at
            )
        sealed = self.sealer.seal_card(card, payment_method.merchant, payment_method.id)
        try:
            self.store.put(payment_method.to_item(sealed), if_new=True)
        except TransactionCancelled:
            return self.payment_method(payment_method.merchant, payment_method.id)
        return payment_method

    def _owned(self, pk: str, sk: str, merchant_id: str) -> dict[str, Any] | None:
        item = live(self.store.get(pk, sk), self.clock())
        if item is None or item.get("merchant") != merchant_id:
            return None
        return item

    def _check_unused(self, token: Token, reference: str) -> None:
        if token.used and token.used_by != reference:
            raise _already_used(token)

    def _claim(self, token: Token, reference: str, pm_id: str) -> None:
        """Marks the token used by `reference`, unless another reference got there first.
        A used token no longer lapses: its payment method names it."""
        try:
            self.store.update(
                TOKEN_PREFIX + token.id,
                "TOKEN",
                "SET used_by = :reference, payment_method = :pm REMOVE expires_at",
                {":reference": reference, ":pm": pm_id},
                condition="attribute_exists(pk) AND "
                "(attribute_not_exists(used_by) OR used_by = :reference)",
            )
        except TransactionCancelled:
            raise _already_used(token) from None


def _already_used(token: Token) -> InvalidRequestError:
    return InvalidRequestError(
        f"You cannot use a Clearline token more than once: {token.id} has already been used.",
        code="token_already_used",
    )
