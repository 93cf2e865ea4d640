"""Customers (`cus_`): who pays, kept so that charges can name them.

A customer moves no money, so its changes are plain transitions: each audited, announced
(`customer.created`, `.updated`, `.deleted`) and guarded by the version it was read at, so
a concurrent update is refused rather than lost. A deleted customer stays retrievable as
deleted, as Stripe's do, but leaves the merchant's lists and can no longer be charged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from clearline import listing
from clearline.audit import Caller
from clearline.errors import ConflictError, InvalidRequestError, ResourceMissingError
from clearline.ids import derived_id
from clearline.merchants import Merchant
from clearline.models import Customer, Page
from clearline.params import CustomerCreateParams, CustomerUpdateParams, merged_metadata
from clearline.store import Store
from clearline.transitions import Announcement, Change, Transition, TransitionWriter

if TYPE_CHECKING:
    from clearline.payment_methods import PaymentMethodService

ACTIVE, DELETED = "active", "deleted"
KIND = "cus"


def customer_pk(customer_id: str) -> str:
    return f"CUSTOMER#{customer_id}"


def _facets(item: dict[str, Any]) -> list[dict[str, Any]]:
    """The index items that let a merchant list its customers by email."""
    created_ms = int(str(item["gsi1sk"]).split("#", 1)[0])
    key = (item["pk"], item["sk"])
    return listing.facet_items(
        item["merchant"], KIND, created_ms, key, item["id"], {"email": item.get("email")}
    )


class CustomerService:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.writer = TransitionWriter(store, clock=lambda: self.clock())

    def create(
        self,
        caller: Caller,
        params: CustomerCreateParams,
        *,
        idempotency_key: str,
        cards: PaymentMethodService | None = None,
    ) -> Customer:
        """A customer; with `source` (a token) or `payment_method`, that card is attached to
        it and becomes its default, in the same transaction."""
        merchant = caller.merchant
        customer_id = derived_id(KIND, merchant.id, idempotency_key)
        card = self._first_card(caller, params, idempotency_key, cards)
        default = (
            params.invoice_settings.default_payment_method if params.invoice_settings else None
        )
        brought = (params.payment_method, params.source, card and card["id"])
        if default is not None and (card is None or default not in brought):
            # Only a card of the customer's can be its default: on create, the one it brings.
            raise InvalidRequestError(
                "A customer's default payment method must be attached to it: send the card "
                "as payment_method (or source) when creating the customer, or attach it first.",
                param="invoice_settings[default_payment_method]",
                code="payment_method_unexpected_state",
            )
        now = self.clock()
        item: dict[str, Any] = {
            "pk": customer_pk(customer_id),
            "sk": "CUSTOMER",
            **listing.list_keys(merchant.id, KIND, int(now * 1000), customer_id),
            "id": customer_id,
            "merchant": merchant.id,
            "created": int(now),
            "livemode": merchant.livemode,
            "version": 1,
            **self._described({}, params),
        }
        if card is not None and default is not None:
            item["default_payment_method"] = card["id"]  # the card itself, not its alias
        elif card is not None:
            item["default_source"] = card["id"]
        transition = Transition(
            [Change(item["pk"], "CUSTOMER", customer_id, "create", ACTIVE, create=item)],
            caller,
            [Announcement(merchant.id, "customer.created", Customer.from_item(item))],
            index_items=_facets(item),
        )
        if card is not None and cards is not None:
            attached = cards.attaching(caller, card, customer_id)
            transition.changes += attached.changes
            transition.events += attached.events
            transition.index_items += attached.index_items
        if self.writer.commit(transition) is not None:  # the key was used before
            existing = self.store.get(item["pk"], "CUSTOMER")
            if existing is None or existing["merchant"] != merchant.id:
                raise ConflictError("This customer id is taken; retry with another key.")
            return Customer.from_item(existing)
        return Customer.from_item({**item, "state": ACTIVE})

    @staticmethod
    def _first_card(
        caller: Caller,
        params: CustomerCreateParams,
        idempotency_key: str,
        cards: PaymentMethodService | None,
    ) -> dict[str, Any] | None:
        """The stored card a create names, checked before anything is written."""
        param = "source" if params.source else "payment_method"
        reference = params.source or params.payment_method
        if reference is None:
            return None
        method = (
            None
            if cards is None
            else cards.resolve(
                caller.merchant, reference, param=param, request=idempotency_key, reusable=True
            )
        )
        if method is None or cards is None:
            raise ResourceMissingError("source", reference, param=param)
        item = cards.stored_item(caller.merchant, method.id)
        if item.get("customer"):
            raise InvalidRequestError(
                f"The payment method {method.id} is attached to another customer.",
                param=param,
                code="payment_method_unexpected_state",
            )
        return item

    @staticmethod
    def _described(
        current: dict[str, Any], params: CustomerCreateParams | CustomerUpdateParams
    ) -> dict[str, Any]:
        """The fields a create or an update sets; an update leaves out what it does not send."""
        changes: dict[str, Any] = {}
        sent = params.model_fields_set
        for name in ("email", "name", "description", "phone"):
            if name in sent:
                changes[name] = getattr(params, name)
        for name in ("address", "shipping"):
            if name in sent:
                value = getattr(params, name)
                changes[name] = value.model_dump() if value is not None else None
        if params.invoice_settings is not None:
            changes["default_payment_method"] = params.invoice_settings.default_payment_method
        if params.metadata is not None:
            changes["metadata"] = merged_metadata(current.get("metadata") or {}, params.metadata)
        return changes

    def owned(self, merchant_id: str, customer_id: str, *, param: str = "id") -> dict[str, Any]:
        """The merchant's customer (deleted or not), or 404."""
        item = self.store.get(customer_pk(customer_id), "CUSTOMER")
        if item is None or item.get("merchant") != merchant_id:
            raise ResourceMissingError("customer", customer_id, param=param)
        return item

    def chargeable(self, merchant_id: str, customer_id: str) -> dict[str, Any]:
        """A customer a charge may name: the merchant's own, and not deleted."""
        item = self.owned(merchant_id, customer_id, param="customer")
        if item["state"] == DELETED:
            raise InvalidRequestError(
                f"Customer {customer_id} was deleted and cannot be charged.",
                param="customer",
                code="resource_missing",
            )
        return item

    def retrieve(self, merchant: Merchant, customer_id: str) -> Customer:
        return Customer.from_item(self.owned(merchant.id, customer_id))

    def update(
        self,
        caller: Caller,
        customer_id: str,
        params: CustomerUpdateParams,
        *,
        cards: PaymentMethodService | None = None,
    ) -> Customer:
        item = self.owned(caller.merchant.id, customer_id)
        if item["state"] == DELETED:
            raise InvalidRequestError(
                f"Customer {customer_id} was deleted and cannot be updated.",
                code="resource_missing",
            )
        default = (
            params.invoice_settings.default_payment_method if params.invoice_settings else None
        )
        if default is not None and cards is not None:
            param = "invoice_settings[default_payment_method]"
            method = cards.owned(caller.merchant, default, param=param)
            if method.customer != customer_id:
                raise InvalidRequestError(
                    f"The payment method {default} is not attached to customer {customer_id}: "
                    "attach it first.",
                    param=param,
                    code="payment_method_unexpected_state",
                )
        after = {**item, **self._described(item, params)}
        changes = {k: v for k, v in after.items() if item.get(k) != v}
        version = int(item["version"])
        change = Change.versioned(item, "update", ACTIVE, set=changes)
        announced = Announcement(
            item["merchant"],
            "customer.updated",
            Customer.from_item(after),
            operation=f"customer.updated:{version + 1}",
            previous=Customer.from_item(item),
        )
        facets = _facets(after)
        # An email taken away takes the customer out of that email's list.
        removals = [] if facets else [(f["pk"], f["sk"]) for f in _facets(item)]
        self._commit(
            Transition([change], caller, [announced], index_items=facets, index_removals=removals)
        )
        return Customer.from_item(after)

    def delete(self, caller: Caller, customer_id: str) -> Customer:
        item = self.owned(caller.merchant.id, customer_id)
        if item["state"] == DELETED:
            raise ResourceMissingError("customer", customer_id)
        change = Change.versioned(item, "delete", DELETED)
        # Out of the merchant's lists; its sort key stays, for a cursor that names it.
        change.remove = ("gsi1pk",)
        gone = {**item, "state": DELETED}
        announced = Announcement(item["merchant"], "customer.deleted", Customer.from_item(gone))
        removals = [(facet["pk"], facet["sk"]) for facet in _facets(item)]
        self._commit(Transition([change], caller, [announced], index_removals=removals))
        return Customer.from_item(gone)

    def list(
        self,
        merchant: Merchant,
        *,
        limit: int,
        starting_after: str | None,
        ending_before: str | None,
        created: listing.Created | None = None,
        email: str | None = None,
    ) -> Page[Customer]:
        items = listing.page(
            self.store,
            merchant.id,
            KIND,
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
            created=created,
            facets={"email": [email]} if email else None,
        )
        return items.of(Customer.from_item)

    def _commit(self, transition: Transition) -> None:
        if self.writer.commit(transition) is not None:
            raise ConflictError("The customer was changed by another request; retry.")
