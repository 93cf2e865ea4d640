"""The charge state machine: create, retrieve and list charges.

Exactly-once creation rests on three things: the charge id is derived from
(merchant, idempotency key), the processor is called with an idempotency key derived
from the charge id, and the charge, its audit event and its journal are written in one
transaction that refuses to overwrite an existing charge. A retry at any point therefore
finds the first outcome instead of making a second one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from clearline import ledger, money
from clearline.errors import (
    CardError,
    ConflictError,
    InvalidRequestError,
    ResourceMissingError,
    ServiceUnavailableError,
)
from clearline.ids import derived_id
from clearline.merchants import Merchant
from clearline.params import ChargeCreateParams
from clearline.processor import Authorization, ProcessorClient, ProcessorUnavailable, UnknownToken
from clearline.store import Store, StoreUnavailable, TransactionCancelled, Write

LIST_INDEX = "by_merchant"

# Internal states; Stripe's `status` is derived from them.
PENDING, AUTHORIZED, CAPTURED, FAILED = "pending", "authorized", "captured", "failed"


def _stripe_status(state: str) -> str:
    return {PENDING: "pending", FAILED: "failed"}.get(state, "succeeded")


def charge_key(charge_id: str) -> tuple[str, str]:
    return f"CHARGE#{charge_id}", "CHARGE"


def list_partition(merchant_id: str, kind: str) -> str:
    return f"MERCHANT#{merchant_id}#{kind}"


def charge_object(item: dict[str, Any]) -> dict[str, Any]:
    """A stored charge in Stripe's shape."""
    card = item.get("card") or {}
    status = _stripe_status(item["state"])
    return {
        "id": item["id"],
        "object": "charge",
        "amount": item["amount"],
        "amount_captured": item["amount_captured"],
        "amount_refunded": item["amount_refunded"],
        "balance_transaction": item.get("balance_transaction"),
        "billing_details": {"address": None, "email": None, "name": None, "phone": None},
        "calculated_statement_descriptor": item.get("statement_descriptor") or "CLEARLINE",
        "captured": item["state"] == CAPTURED,
        "created": item["created"],
        "currency": item["currency"],
        "description": item.get("description"),
        "disputed": False,
        "failure_code": item.get("failure_code"),
        "failure_message": item.get("failure_message"),
        "fraud_details": {},
        "livemode": False,
        "metadata": item.get("metadata") or {},
        "outcome": item.get("outcome"),
        "paid": status == "succeeded",
        "payment_intent": None,
        "payment_method": item.get("payment_method"),
        "payment_method_details": {"card": card, "type": "card"} if card else None,
        "receipt_url": None,
        "refunded": False,
        "refunds": {
            "object": "list",
            "data": [],
            "has_more": False,
            "total_count": 0,
            "url": f"/v1/charges/{item['id']}/refunds",
        },
        "statement_descriptor": item.get("statement_descriptor"),
        "status": status,
    }


def _outcome(auth: Authorization) -> dict[str, Any]:
    if auth.approved:
        return {
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "seller_message": "Payment complete.",
            "type": "authorized",
        }
    return {
        "network_status": "declined_by_network",
        "reason": auth.decline_code,
        "risk_level": "normal",
        "type": "issuer_declined",
        "seller_message": "The bank did not return any further details with this decline.",
    }


def _card_error(item: dict[str, Any]) -> CardError:
    return CardError(
        item["failure_message"],
        code=item["failure_code"],
        decline_code=item.get("decline_code"),
        charge=item["id"],
        param=None,
    )


class ChargeService:
    def __init__(
        self, store: Store, processor: ProcessorClient, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.processor = processor
        self.clock = clock

    def _existing(self, charge_id: str) -> dict[str, Any] | None:
        try:
            return self.store.get(*charge_key(charge_id))
        except StoreUnavailable as exc:
            raise ServiceUnavailableError("The charge store did not answer; retry.") from exc

    def _settled(self, item: dict[str, Any]) -> dict[str, Any]:
        """The response for a stored charge: a failed one is a 402, as it was the first time."""
        if item["state"] == FAILED:
            raise _card_error(item)
        return charge_object(item)

    def create(
        self,
        merchant: Merchant,
        params: ChargeCreateParams,
        *,
        idempotency_key: str,
        request_id: str,
    ) -> dict[str, Any]:
        cur = money.currency(params.currency)
        money.check_charge_amount(params.amount, cur)
        token = params.source or params.payment_method
        if not token:
            raise InvalidRequestError(
                "Must provide source or payment_method.", param="source", code="parameter_missing"
            )
        token_param = "source" if params.source else "payment_method"

        charge_id = derived_id("ch", merchant.id, idempotency_key)
        existing = self._existing(charge_id)
        if existing is not None:
            if (
                existing["merchant"] != merchant.id
            ):  # derived ids cannot collide; refuse if they did
                raise ConflictError("This charge id is taken; retry with another key.")
            return self._settled(existing)

        try:
            auth = self.processor.authorize(
                idempotency_key=f"{charge_id}:authorize",
                token=token,
                amount=params.amount,
                currency=cur.code,
                capture=params.capture,
                reference=charge_id,
            )
        except UnknownToken as exc:
            raise InvalidRequestError(
                f"No such token: '{token}'", param=token_param, code="resource_missing"
            ) from exc
        except ProcessorUnavailable as exc:
            # Nothing is stored: a retry with the same key calls the processor with the same
            # key, which answers with the first result instead of charging again.
            raise ServiceUnavailableError(
                "The card processor did not answer in time; retry with the same Idempotency-Key.",
                code="processor_unavailable",
            ) from exc

        now = self.clock()
        item = self._charge_item(
            merchant, params, charge_id, token, auth, now, idempotency_key, request_id
        )
        writes = [
            Write.put_new(item),
            Write.put_new(self._audit_item(item, merchant, None, item["state"], request_id, now)),
        ]
        if auth.approved:
            writes += self._journal(merchant, item, now).writes()
        if not self._commit(writes):
            # A concurrent request with the same key committed first: theirs stands.
            item = self._existing(charge_id) or item
        return self._settled(item)

    def _charge_item(
        self,
        merchant: Merchant,
        params: ChargeCreateParams,
        charge_id: str,
        token: str,
        auth: Authorization,
        now: float,
        idempotency_key: str,
        request_id: str,
    ) -> dict[str, Any]:
        state = (CAPTURED if params.capture else AUTHORIZED) if auth.approved else FAILED
        created_ms = int(now * 1000)
        item: dict[str, Any] = {
            "pk": charge_key(charge_id)[0],
            "sk": "CHARGE",
            "gsi1pk": list_partition(merchant.id, "charge"),
            "gsi1sk": f"{created_ms:013d}#{charge_id}",
            "id": charge_id,
            "merchant": merchant.id,
            "state": state,
            "version": 1,
            "amount": params.amount,
            "currency": params.currency.lower(),
            "amount_captured": params.amount if state == CAPTURED else 0,
            "amount_refunded": 0,
            "description": params.description,
            "metadata": dict(params.metadata),
            "statement_descriptor": params.statement_descriptor,
            "payment_method": token,
            "card": auth.card.model_dump(),
            "outcome": _outcome(auth),
            "processor_authorization": auth.id,
            "created": int(now),
            "created_ms": created_ms,
            "idempotency_key": idempotency_key,
            "request_id": request_id,
        }
        if state == FAILED:
            item.update(
                failure_code=auth.code,
                decline_code=auth.decline_code,
                failure_message=auth.message or "Your card was declined.",
            )
        else:
            fee = merchant.fee_for(params.amount) if state == CAPTURED else 0
            item.update(fee=fee)
        return item

    @staticmethod
    def _audit_item(
        item: dict[str, Any],
        merchant: Merchant,
        from_state: str | None,
        to_state: str,
        request_id: str,
        now: float,
    ) -> dict[str, Any]:
        return {
            "pk": item["pk"],
            "sk": f"AUDIT#{item['version']:04d}",
            "actor": merchant.id,
            "at": int(now * 1000),
            "from_state": from_state,
            "to_state": to_state,
            "request_id": request_id,
            "object": item["id"],
        }

    @staticmethod
    def _journal(merchant: Merchant, item: dict[str, Any], now: float) -> ledger.Journal:
        if item["state"] == CAPTURED:
            operation = "charge.capture"
            entries = ledger.capture_entries(
                merchant.id, item["currency"], item["amount"], item["fee"]
            )
        else:
            operation = "charge.authorize"
            entries = ledger.authorization_hold_entries(
                merchant.id, item["currency"], item["amount"]
            )
        return ledger.Journal(
            id=derived_id("jnl", item["id"], operation),
            currency=item["currency"],
            entries=entries,
            charge_id=item["id"],
            merchant_id=merchant.id,
            operation=operation,
            created=int(now),
        )

    def _commit(self, writes: list[Write]) -> bool:
        """True if written; False if the first item (the new object) already existed."""
        try:
            self.store.transact(writes)
            return True
        except TransactionCancelled as exc:
            if exc.failed_at(0):
                return False
            raise ConflictError("The charge was being changed by another request; retry.") from exc
        except StoreUnavailable as exc:
            raise ServiceUnavailableError("The charge store did not answer; retry.") from exc

    def retrieve(self, merchant: Merchant, charge_id: str) -> dict[str, Any]:
        item = self._existing(charge_id)
        if item is None or item["merchant"] != merchant.id:
            raise ResourceMissingError("charge", charge_id)
        return charge_object(item)

    def list(
        self,
        merchant: Merchant,
        *,
        limit: int,
        starting_after: str | None,
        ending_before: str | None,
    ) -> dict[str, Any]:
        before = after = None
        if starting_after:
            before = self._cursor(merchant, starting_after, "starting_after")
        elif ending_before:
            after = self._cursor(merchant, ending_before, "ending_before")
        try:
            items = self.store.query_index(
                LIST_INDEX,
                "gsi1pk",
                list_partition(merchant.id, "charge"),
                "gsi1sk",
                before=before,
                after=after,
                newest_first=after is None,
                limit=limit + 1,
            )
        except StoreUnavailable as exc:
            raise ServiceUnavailableError("The charge store did not answer; retry.") from exc
        has_more = len(items) > limit
        items = items[:limit]
        if after is not None:
            items.reverse()  # fetched oldest first to find the page just before the cursor
        return {
            "object": "list",
            "url": "/v1/charges",
            "has_more": has_more,
            "data": [charge_object(i) for i in items],
        }

    def _cursor(self, merchant: Merchant, charge_id: str, param: str) -> str:
        item = self._existing(charge_id)
        if item is None or item["merchant"] != merchant.id:
            raise ResourceMissingError("charge", charge_id, param=param)
        return str(item["gsi1sk"])
