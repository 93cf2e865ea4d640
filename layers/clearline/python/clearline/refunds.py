"""Refunds, and voids (a refund of an uncaptured charge releases its authorization).

A refund of captured money happens in two transactions around the processor call. The
first reserves the amount with a conditional decrement of the charge's `refundable`
(so concurrent refunds can never together exceed what was captured: the limit is a
condition, not a read followed by a write) and stores the refund as pending. The second,
once the processor has refunded, posts the journal and marks the refund succeeded. A
retry with the same key finds the pending refund and finishes it; the processor's own
idempotency key makes the repeated call return the first refund.
"""

from __future__ import annotations

from typing import Any

from clearline import balance, ledger, listing
from clearline.audit import Caller, audit_item
from clearline.charges import (
    AUTHORIZED,
    CANCELED,
    CAPTURED,
    EXPIRED,
    FAILED,
    MoneyService,
    charge_object,
    charge_pk,
)
from clearline.errors import (
    ConflictError,
    InvalidRequestError,
    processor_unavailable,
    store_unavailable,
)
from clearline.events import event_write
from clearline.ids import derived_id
from clearline.merchants import Merchant
from clearline.money import currency, format_amount
from clearline.params import RefundCreateParams
from clearline.processor import ProcessorRejected, ProcessorUnavailable
from clearline.store import StoreUnavailable, Write, commit

PENDING, SUCCEEDED, FAILED_REFUND = "pending", "succeeded", "failed"


def embedded(item: dict[str, Any]) -> dict[str, Any]:
    """A refund as its charge holds it: with the creation time in milliseconds, so a
    charge's refunds list newest first even within one second."""
    return {**refund_object(item), "_at_ms": item["created_ms"]}


def refund_object(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": item["id"],
        "object": "refund",
        "amount": item["amount"],
        "balance_transaction": item.get("balance_transaction"),
        "charge": item["charge"],
        "created": item["created"],
        "currency": item["currency"],
        "metadata": item.get("metadata") or {},
        "payment_intent": None,
        "reason": item.get("reason"),
        "receipt_number": None,
        "status": item["status"],
        "failure_reason": item.get("failure_reason"),
    }


class RefundService(MoneyService):
    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        try:
            return self.store.get(pk, sk)
        except StoreUnavailable as exc:
            raise store_unavailable() from exc

    # ---- create ---------------------------------------------------------------------------

    def create(
        self, caller: Caller, params: RefundCreateParams, *, idempotency_key: str
    ) -> dict[str, Any]:
        merchant = caller.merchant
        refund_id = derived_id("re", merchant.id, idempotency_key)
        existing = self._get(f"REFUND#{refund_id}", "REFUND")
        if existing is not None:
            return self._resume(caller, existing)

        charge = listing.get_owned(self.store, merchant.id, params.charge, "ch", param="charge")
        state = charge["state"]
        if state == AUTHORIZED:
            if params.amount is not None and params.amount != charge["amount"]:
                raise InvalidRequestError(
                    "You cannot partially refund an uncaptured charge. Instead, capture the "
                    "charge for an amount less than the original amount.",
                    param="amount",
                )
            return self._void(caller, charge, refund_id, params)
        if state == FAILED:
            raise InvalidRequestError(
                f"Charge {charge['id']} failed; there is nothing to refund.",
                param="charge",
                code="charge_not_refundable",
            )
        if state in (CANCELED, EXPIRED) or (state == CAPTURED and charge["refundable"] <= 0):
            raise InvalidRequestError(
                f"Charge {charge['id']} has already been refunded.",
                param="charge",
                code="charge_already_refunded",
            )
        if state != CAPTURED:
            raise ConflictError(f"Charge {charge['id']} is still being processed; retry shortly.")
        amount = charge["refundable"] if params.amount is None else params.amount
        self._check_amount(charge, amount)
        refund = self._reserve(caller, charge, refund_id, amount, params, idempotency_key)
        return self._complete(caller, refund)

    def _check_amount(self, charge: dict[str, Any], amount: int) -> None:
        if amount <= 0:
            raise InvalidRequestError(
                "Refund amount must be positive.", param="amount", code="amount_too_small"
            )
        if amount > charge["refundable"]:
            cur = currency(charge["currency"])
            raise InvalidRequestError(
                f"Refund amount ({format_amount(amount, cur)}) is greater than unrefunded amount "
                f"on charge ({format_amount(charge['refundable'], cur)})",
                param="amount",
                code="amount_too_large",
            )

    def _new_refund(
        self,
        merchant: Merchant,
        charge: dict[str, Any],
        refund_id: str,
        amount: int,
        params: RefundCreateParams,
        status: str,
        now: float,
        idempotency_key: str,
    ) -> dict[str, Any]:
        return {
            "pk": f"REFUND#{refund_id}",
            "sk": "REFUND",
            **listing.list_keys(merchant.id, "re", int(now * 1000), refund_id),
            "id": refund_id,
            "merchant": merchant.id,
            "charge": charge["id"],
            "amount": amount,
            "currency": charge["currency"],
            "status": status,
            "reason": params.reason,
            "metadata": dict(params.metadata),
            "created": int(now),
            "created_ms": int(now * 1000),
            "idempotency_key": idempotency_key,
        }

    def _reserve(
        self,
        caller: Caller,
        charge: dict[str, Any],
        refund_id: str,
        amount: int,
        params: RefundCreateParams,
        idempotency_key: str,
    ) -> dict[str, Any]:
        now = self.clock()
        refund = self._new_refund(
            caller.merchant, charge, refund_id, amount, params, PENDING, now, idempotency_key
        )
        writes = [
            Write(
                "Update",
                key={"pk": charge["pk"], "sk": "CHARGE"},
                update="SET refundable = refundable - :a, refunds.#r = :refund",
                condition="refundable >= :a AND #state = :captured",
                names={"#state": "state", "#r": refund_id},
                values={":a": amount, ":captured": CAPTURED, ":refund": embedded(refund)},
            ),
            Write.put_new(refund),
            Write.put_new(
                {
                    "pk": charge["pk"],
                    "sk": f"OP#refund#{refund_id}",
                    "amount": amount,
                    "request_id": caller.request_id,
                    "at": int(now * 1000),
                }
            ),
            Write.put_new(
                audit_item(
                    refund["pk"],
                    refund_id,
                    caller=caller,
                    operation="request",
                    from_state=None,
                    to_state=PENDING,
                    now=now,
                )
            ),
        ]
        writes.append(
            event_write(
                caller.merchant.id,
                "refund.created",
                refund_object(refund),
                operation="refund.created",
                now=now,
                caller=caller,
                idempotency_key=idempotency_key,
            )
        )
        cancelled = commit(self.store, writes)
        if cancelled is None:
            return refund
        if cancelled.failed_at(1):  # the same key is being refunded concurrently
            raise ConflictError(
                "A refund with this key is already in progress; retry shortly.",
                code="idempotency_key_in_use",
            )
        current = self._get(charge["pk"], "CHARGE") or charge
        if current["state"] != CAPTURED or current["refundable"] <= 0:
            raise InvalidRequestError(
                f"Charge {charge['id']} has already been refunded.",
                param="charge",
                code="charge_already_refunded",
            )
        self._check_amount(current, amount)  # another refund took part of what was left
        raise ConflictError("The charge was being changed by another request; retry.")

    def _resume(self, caller: Caller, refund: dict[str, Any]) -> dict[str, Any]:
        if refund["merchant"] != caller.merchant.id:
            raise ConflictError("This refund id is taken; retry with another key.")
        if refund["status"] == PENDING:
            return self._complete(caller, refund)
        return refund_object(refund)

    def _complete(self, caller: Caller, refund: dict[str, Any]) -> dict[str, Any]:
        """Refund at the processor, then post it; if the processor refuses, release the hold."""
        charge = self._get(charge_pk(refund["charge"]), "CHARGE")
        assert charge is not None, "a refund always has its charge"
        try:
            self.processor.refund(
                idempotency_key=f"{refund['id']}:refund",
                authorization_id=charge["processor_authorization"],
                amount=refund["amount"],
                reference=refund["id"],
            )
        except ProcessorUnavailable as exc:
            raise processor_unavailable() from exc  # stays pending; a retry finishes it
        except ProcessorRejected as exc:
            return self._fail(caller, refund, charge, exc.message)
        return self._succeed(caller, refund, charge)

    def _succeed(
        self, caller: Caller, refund: dict[str, Any], charge: dict[str, Any]
    ) -> dict[str, Any]:
        now = self.clock()
        merchant_id, cur, amount = charge["merchant"], charge["currency"], refund["amount"]
        txn_id = derived_id("txn", refund["id"], "refund")
        done = {**refund, "status": SUCCEEDED, "balance_transaction": txn_id}
        journal = ledger.Journal(
            id=derived_id("jnl", refund["id"], "refund"),
            currency=cur,
            entries=ledger.refund_entries(merchant_id, cur, amount),
            charge_id=charge["id"],
            merchant_id=merchant_id,
            operation="refund",
            created=int(now),
            source=refund["id"],
        )
        writes = [
            Write(
                "Update",
                key={"pk": refund["pk"], "sk": "REFUND"},
                update="SET #status = :succeeded, balance_transaction = :txn",
                condition="#status = :pending",
                names={"#status": "status"},
                values={":succeeded": SUCCEEDED, ":pending": PENDING, ":txn": txn_id},
            ),
            Write(
                "Update",
                key={"pk": charge["pk"], "sk": "CHARGE"},
                update="SET amount_refunded = amount_refunded + :a, refunds.#r = :refund",
                names={"#r": refund["id"]},
                values={":a": amount, ":refund": embedded(done)},
            ),
            Write.put_new(
                audit_item(
                    refund["pk"],
                    refund["id"],
                    caller=caller,
                    operation="succeed",
                    from_state=PENDING,
                    to_state=SUCCEEDED,
                    now=now,
                )
            ),
            *journal.writes(self.shards),
            Write.put_new(
                balance.transaction_item(
                    txn_id,
                    merchant_id=merchant_id,
                    kind="refund",
                    source=refund["id"],
                    amount=-amount,
                    fee=0,
                    currency=cur,
                    now=now,
                )
            ),
        ]
        refunded = {
            **charge,
            "amount_refunded": charge["amount_refunded"] + amount,
            "refunds": {**charge.get("refunds", {}), refund["id"]: embedded(done)},
        }
        writes += self._refund_events(merchant_id, done, refunded, "refund.updated", now, caller)
        if commit(self.store, writes) is not None:  # finished by a concurrent retry
            return refund_object(self._get(refund["pk"], "REFUND") or done)
        return refund_object(done)

    def _fail(
        self, caller: Caller, refund: dict[str, Any], charge: dict[str, Any], reason: str
    ) -> dict[str, Any]:
        now = self.clock()
        failed = {**refund, "status": FAILED_REFUND, "failure_reason": reason}
        writes = [
            Write(
                "Update",
                key={"pk": refund["pk"], "sk": "REFUND"},
                update="SET #status = :failed, failure_reason = :why",
                condition="#status = :pending",
                names={"#status": "status"},
                values={":failed": FAILED_REFUND, ":pending": PENDING, ":why": reason},
            ),
            Write(
                "Update",
                key={"pk": charge["pk"], "sk": "CHARGE"},
                update="SET refundable = refundable + :a, refunds.#r = :refund",
                names={"#r": refund["id"]},
                values={":a": refund["amount"], ":refund": embedded(failed)},
            ),
            Write.put_new(
                audit_item(
                    refund["pk"],
                    refund["id"],
                    caller=caller,
                    operation="fail",
                    from_state=PENDING,
                    to_state=FAILED_REFUND,
                    now=now,
                )
            ),
        ]
        writes.append(
            event_write(
                charge["merchant"],
                "refund.failed",
                refund_object(failed),
                operation="refund.failed",
                now=now,
                caller=caller,
            )
        )
        if commit(self.store, writes) is not None:
            return refund_object(self._get(refund["pk"], "REFUND") or failed)
        return refund_object(failed)

    # ---- void -----------------------------------------------------------------------------

    def _void(
        self, caller: Caller, charge: dict[str, Any], refund_id: str, params: RefundCreateParams
    ) -> dict[str, Any]:
        try:
            self.processor.void(
                idempotency_key=f"{charge['id']}:void",
                authorization_id=charge["processor_authorization"],
            )
        except ProcessorUnavailable as exc:
            raise processor_unavailable() from exc
        except ProcessorRejected as exc:  # captured or voided meanwhile
            raise ConflictError(
                f"Charge {charge['id']} was changed by another request; retry to see its new state."
            ) from exc
        now = self.clock()
        merchant, cur, amount = caller.merchant, charge["currency"], charge["amount"]
        refund = self._new_refund(
            merchant, charge, refund_id, amount, params, SUCCEEDED, now, f"void:{charge['id']}"
        )
        journal = ledger.Journal(
            id=derived_id("jnl", charge["id"], "void"),
            currency=cur,
            entries=ledger.release_hold_entries(merchant.id, cur, amount),
            charge_id=charge["id"],
            merchant_id=merchant.id,
            operation="charge.void",
            created=int(now),
            source=refund_id,
        )
        writes = [
            Write(
                "Update",
                key={"pk": charge["pk"], "sk": "CHARGE"},
                update="SET #state = :canceled, amount_released = :a, refunds.#r = :refund",
                condition="#state = :authorized",
                names={"#state": "state", "#r": refund_id},
                values={
                    ":canceled": CANCELED,
                    ":authorized": AUTHORIZED,
                    ":a": amount,
                    ":refund": embedded(refund),
                },
            ),
            Write.put_new(refund),
            Write.put_new(
                {
                    "pk": charge["pk"],
                    "sk": "OP#void",
                    "refund": refund_id,
                    "request_id": caller.request_id,
                    "at": int(now * 1000),
                }
            ),
            Write.put_new(
                audit_item(
                    charge["pk"],
                    charge["id"],
                    caller=caller,
                    operation="void",
                    from_state=AUTHORIZED,
                    to_state=CANCELED,
                    now=now,
                )
            ),
            *journal.writes(self.shards),
        ]
        voided = {
            **charge,
            "state": CANCELED,
            "amount_released": amount,
            "refunds": {**charge.get("refunds", {}), refund_id: embedded(refund)},
        }
        writes += self._refund_events(merchant.id, refund, voided, "refund.created", now, caller)
        if commit(self.store, writes) is not None:
            current = self._get(charge["pk"], "CHARGE") or charge
            if current["state"] == CANCELED:
                raise InvalidRequestError(
                    f"Charge {charge['id']} has already been refunded.",
                    param="charge",
                    code="charge_already_refunded",
                )
            raise ConflictError(f"Charge {charge['id']} was changed by another request; retry.")
        return refund_object(refund)

    @staticmethod
    def _refund_events(
        merchant_id: str,
        refund: dict[str, Any],
        charge: dict[str, Any],
        refund_event: str,
        now: float,
        caller: Caller,
    ) -> list[Write]:
        """The refund's own event, and charge.refunded with the charge as it now stands."""
        return [
            event_write(
                merchant_id,
                refund_event,
                refund_object(refund),
                operation=refund_event,
                now=now,
                caller=caller,
            ),
            event_write(
                merchant_id,
                "charge.refunded",
                charge_object(charge),
                operation=f"charge.refunded:{refund['id']}",
                now=now,
                caller=caller,
            ),
        ]

    # ---- read -----------------------------------------------------------------------------

    def retrieve(self, merchant: Merchant, refund_id: str) -> dict[str, Any]:
        return refund_object(listing.get_owned(self.store, merchant.id, refund_id, "re"))

    def list(
        self,
        merchant: Merchant,
        *,
        charge_id: str | None,
        limit: int,
        starting_after: str | None,
        ending_before: str | None,
    ) -> dict[str, Any]:
        if charge_id:
            charge = listing.get_owned(self.store, merchant.id, charge_id, "ch", param="charge")
            return listing.page_in_memory(
                list((charge.get("refunds") or {}).values()),
                url=f"/v1/charges/{charge_id}/refunds",
                limit=limit,
                starting_after=starting_after,
                ending_before=ending_before,
            )
        return listing.page(
            self.store,
            merchant.id,
            "re",
            url="/v1/refunds",
            render=refund_object,
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
        )
