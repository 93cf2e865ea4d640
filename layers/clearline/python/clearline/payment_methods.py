"""PaymentMethods (`pm_`): the cards a merchant may charge, as the vault describes them.

The vault makes a payment method when a browser tokenizes a card, and keeps the number.
Clearline learns of one the first time a request names it: it asks the vault what card it
stands for (brand, last four, expiry, fingerprint), checks it is the merchant's, and keeps
that description here, where customers can have it attached and lists can find it. Stripe's
test aliases (`pm_card_visa`) and the vault's single-use tokens become payment methods of
their own the same way, each under a reference derived from the request, so that a
retried request lands on the same payment method.

Attaching and detaching move no money: each is one audited, versioned transition with its
`payment_method.*` event.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from clearline import listing
from clearline.audit import Caller
from clearline.customers import CustomerService, customer_pk
from clearline.errors import (
    ConflictError,
    InvalidRequestError,
    ResourceMissingError,
    ServiceUnavailableError,
)
from clearline.merchants import Merchant
from clearline.models import Customer, Page, PaymentMethod
from clearline.params import PaymentMethodUpdateParams, merged_metadata
from clearline.processor import ProcessorError
from clearline.store import Store
from clearline.transitions import Announcement, Change, Transition, TransitionWriter
from clearline.vault_client import TokenAlreadyUsed, VaultClient

KIND = "pm"
SK = "PAYMENT_METHOD"
TEST_ALIAS_PREFIX = "pm_card_"
ACTIVE = "active"


def payment_method_pk(payment_method_id: str) -> str:
    return f"PM#{payment_method_id}"


def _missing(payment_method_id: str, param: str) -> ResourceMissingError:
    return ResourceMissingError("PaymentMethod", payment_method_id, param=param)


def _vault_unavailable(exc: Exception) -> ServiceUnavailableError:
    return ServiceUnavailableError(
        "The card vault did not answer; nothing was charged. Retry the request shortly."
    )


def _described(answer: dict[str, Any]) -> dict[str, Any]:
    """What Clearline keeps of the vault's description of a card: never more than the
    vault itself shows a browser."""
    card = answer.get("card") or {}
    checks = card.get("checks") or {}
    return {
        "card": {
            "brand": card.get("brand") or "unknown",
            "last4": card.get("last4") or "",
            "exp_month": int(card.get("exp_month") or 0),
            "exp_year": int(card.get("exp_year") or 0),
            "funding": card.get("funding") or "unknown",
            "country": card.get("country"),
            "fingerprint": card.get("fingerprint"),
            "iin": card.get("iin"),  # the BIN, which fraud rules read and no page shows
            "checks": {name: checks.get(name) for name in ("cvc_check",)},
            "three_d_secure_supported": bool(
                (card.get("three_d_secure_usage") or {}).get("supported", True)
            ),
        },
        "billing_details": answer.get("billing_details") or {},
        "metadata": answer.get("metadata") or {},
        "client_ip": answer.get("client_ip"),
    }


def _facets(item: dict[str, Any]) -> list[dict[str, Any]]:
    created_ms = int(str(item["gsi1sk"]).split("#", 1)[0])
    return listing.facet_items(
        item["merchant"],
        KIND,
        created_ms,
        (item["pk"], SK),
        item["id"],
        {"customer": item.get("customer")},
    )


class PaymentMethodService:
    def __init__(
        self, store: Store, vault: VaultClient | None, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.vault = vault
        self.clock = clock
        self.writer = TransitionWriter(store, clock=lambda: self.clock())

    # ---- what a request names ---------------------------------------------------------------

    def resolve(
        self,
        merchant: Merchant,
        reference: str,
        *,
        param: str,
        request: str,
        reusable: bool = False,
    ) -> PaymentMethod | None:
        """The stored payment method that a request's `payment_method` or `source` names,
        made first if it is a test alias or an unredeemed token of the vault's; None for a
        processor's own token (what the vault did not issue), or where there is no vault.
        `reusable`: the card is to be kept (attached to a customer), so a processor's test
        token (`tok_visa`) becomes a stored test card too. `request` names the request, so
        that its retry makes nothing new."""
        if self.vault is None:
            return None
        try:
            if reference.startswith(TEST_ALIAS_PREFIX):
                answer = self.vault.test_payment_method(merchant.id, reference, request)
                if answer is None:
                    raise _missing(reference, param)
                return self._remember(merchant, answer)
            if reference.startswith("pm_"):
                return self.owned(merchant, reference, param=param)
            if reference.startswith("tok_"):
                answer = self.vault.redeem_token(merchant.id, reference, request)
                if answer is None and reusable:
                    answer = self.vault.test_payment_method(merchant.id, reference, request)
                    if answer is None:
                        raise _missing(reference, param)
                return None if answer is None else self._remember(merchant, answer)
        except TokenAlreadyUsed:
            raise InvalidRequestError(
                f"You cannot use a Clearline token more than once: {reference}.",
                param=param,
                code="token_already_used",
            ) from None
        except ProcessorError as exc:
            raise _vault_unavailable(exc) from exc
        return None

    def owned(
        self, merchant: Merchant, payment_method_id: str, *, param: str = "id"
    ) -> PaymentMethod:
        """The merchant's payment method, learnt from the vault on first sight, or 404."""
        return PaymentMethod.from_item(self._owned_item(merchant, payment_method_id, param=param))

    def stored_item(self, merchant: Merchant, payment_method_id: str) -> dict[str, Any]:
        """The stored item of a payment method `resolve` returned (to change it along with
        something else in one transaction)."""
        return self._owned_item(merchant, payment_method_id)

    def _owned_item(
        self, merchant: Merchant, payment_method_id: str, *, param: str = "id"
    ) -> dict[str, Any]:
        if not payment_method_id.startswith("pm_"):
            raise _missing(payment_method_id, param)
        item = self.store.get(payment_method_pk(payment_method_id), SK)
        if item is not None:
            if item.get("merchant") != merchant.id:
                raise _missing(payment_method_id, param)
            return item
        if self.vault is None:
            raise _missing(payment_method_id, param)
        try:
            answer = self.vault.payment_method(merchant.id, payment_method_id)
        except ProcessorError as exc:
            raise _vault_unavailable(exc) from exc
        if answer is None or answer.get("merchant") not in (None, merchant.id):
            raise _missing(payment_method_id, param)
        self._remember(merchant, answer)
        return self.store.get(payment_method_pk(payment_method_id), SK) or {}

    def _remember(self, merchant: Merchant, answer: dict[str, Any]) -> PaymentMethod:
        payment_method_id = str(answer["id"])
        existing = self.store.get(payment_method_pk(payment_method_id), SK)
        if existing is not None:
            if existing.get("merchant") != merchant.id:
                raise _missing(payment_method_id, "payment_method")
            return PaymentMethod.from_item(existing)
        now = self.clock()
        created = int(answer.get("created") or now)
        item: dict[str, Any] = {
            "pk": payment_method_pk(payment_method_id),
            "sk": SK,
            **listing.list_keys(merchant.id, KIND, created * 1000, payment_method_id),
            "id": payment_method_id,
            "merchant": merchant.id,
            "created": created,
            "customer": None,
            "livemode": merchant.livemode,
            "version": 1,
            **_described(answer),
        }
        learnt = Change(item["pk"], SK, payment_method_id, "learn", ACTIVE, create=item)
        if self.writer.commit(Transition([learnt], None)) is not None:  # learnt meanwhile
            item = self.store.get(item["pk"], SK) or item
        return PaymentMethod.from_item(item)

    # ---- attach, detach, update ----------------------------------------------------------

    def attach(
        self, caller: Caller, payment_method_id: str, customer_id: str, *, request: str
    ) -> PaymentMethod:
        merchant = caller.merchant
        customer = CustomerService(self.store).chargeable(merchant.id, customer_id)
        method = self.resolve(
            merchant, payment_method_id, param="id", request=request, reusable=True
        )
        if method is None:
            raise _missing(payment_method_id, "id")
        item = self._owned_item(merchant, method.id)
        if item.get("customer") == customer["id"]:
            return PaymentMethod.from_item(item)  # attached already: a retry
        if item.get("customer"):
            raise InvalidRequestError(
                f"The payment method {method.id} is attached to another customer; detach it first.",
                code="payment_method_unexpected_state",
            )
        self.commit(self.attaching(caller, item, customer_id))
        return PaymentMethod.from_item({**item, "customer": customer_id})

    def attaching(
        self, caller: Caller | None, item: dict[str, Any], customer_id: str
    ) -> Transition:
        """The transition that attaches a payment method to a customer (for a caller that
        adds more to it: a customer created with its card)."""
        after = {**item, "customer": customer_id}
        change = Change.versioned(item, "attach", ACTIVE, set={"customer": customer_id})
        return Transition(
            [change],
            caller,
            [
                Announcement(
                    item["merchant"], "payment_method.attached", PaymentMethod.from_item(after)
                )
            ],
            index_items=_facets(after),
        )

    def detach(self, caller: Caller, payment_method_id: str) -> PaymentMethod:
        item = self._owned_item(caller.merchant, payment_method_id)
        customer_id = item.get("customer")
        if not customer_id:
            raise InvalidRequestError(
                f"The payment method {payment_method_id} is not attached to a customer, so "
                "it cannot be detached.",
                code="payment_method_unexpected_state",
            )
        after = {**item, "customer": None}
        change = Change.versioned(item, "detach", ACTIVE, set={"customer": None})
        changes = [change]
        events = [
            Announcement(
                item["merchant"],
                "payment_method.detached",
                PaymentMethod.from_item(after),
                previous=PaymentMethod.from_item(item),
            )
        ]
        # A customer's default card that is detached is no longer its default.
        customer = self.store.get(customer_pk(customer_id), "CUSTOMER")
        defaults = {
            name: None
            for name in ("default_payment_method", "default_source")
            if customer and customer.get(name) == payment_method_id
        }
        if customer is not None and defaults:
            version = int(customer["version"])
            changes.append(Change.versioned(customer, "update", customer["state"], set=defaults))
            events.append(
                Announcement(
                    customer["merchant"],
                    "customer.updated",
                    Customer.from_item({**customer, **defaults}),
                    operation=f"customer.updated:{version + 1}",
                    previous=Customer.from_item(customer),
                )
            )
        removals = [(f["pk"], f["sk"]) for f in _facets(item)]
        self.commit(Transition(changes, caller, events, index_removals=removals))
        return PaymentMethod.from_item(after)

    def update(
        self, caller: Caller, payment_method_id: str, params: PaymentMethodUpdateParams
    ) -> PaymentMethod:
        item = self._owned_item(caller.merchant, payment_method_id)
        changes: dict[str, Any] = {}
        if params.metadata is not None:
            changes["metadata"] = merged_metadata(item.get("metadata") or {}, params.metadata)
        if params.billing_details is not None:
            sent = params.billing_details.model_dump(exclude_unset=True)
            changes["billing_details"] = {**(item.get("billing_details") or {}), **sent}
        if not changes:
            return PaymentMethod.from_item(item)
        after = {**item, **changes}
        change = Change.versioned(item, "update", ACTIVE, set=changes)
        announced = Announcement(
            item["merchant"],
            "payment_method.updated",
            PaymentMethod.from_item(after),
            operation=f"payment_method.updated:{int(item['version']) + 1}",
            previous=PaymentMethod.from_item(item),
        )
        self.commit(Transition([change], caller, [announced]))
        return PaymentMethod.from_item(after)

    # ---- lists ---------------------------------------------------------------------------

    def list(
        self,
        merchant: Merchant,
        *,
        limit: int,
        starting_after: str | None,
        ending_before: str | None,
        customer: str | None = None,
    ) -> Page[PaymentMethod]:
        if customer is not None:
            CustomerService(self.store).owned(merchant.id, customer, param="customer")
        items = listing.page(
            self.store,
            merchant.id,
            KIND,
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
            facets={"customer": [customer]} if customer else None,
        )
        return items.of(PaymentMethod.from_item)

    def commit(self, transition: Transition) -> None:
        if self.writer.commit(transition) is not None:
            raise ConflictError("The payment method was changed by another request; retry.")
