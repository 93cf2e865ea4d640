"""Refunds, and voids (a refund of an uncaptured charge releases its authorization).

A refund of captured money is write-ahead, in two transitions around the processor call.
The first reserves the amount with a conditional decrement of the charge's `refundable`
(so concurrent refunds can never together exceed what was captured: the limit is a
condition, not a read followed by a write) and stores the refund, and its operation
record, as pending. The second, once the processor has answered, posts the journal and
settles the refund. A retry with the same key, or the resolver, finds the pending refund
and finishes it; the processor's idempotency key makes the repeated call return the first
refund.

A refund can wait: when the processor has no capacity for it (its rate limit), it is
answered `pending`, as Stripe's refunds can be, and the resolver finishes it later, which
announces refund.updated; the merchant need not retry.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from functools import cached_property
from typing import Any, Literal

from clearline import balance, fx, ledger, listing
from clearline.audit import Caller
from clearline.charges import (
    AUTHORIZED,
    CANCELED,
    CAPTURED,
    EXPIRED,
    FAILED,
    OP_FAILED,
    OP_PENDING,
    OP_SUCCEEDED,
    ChargeService,
    MoneyService,
    charge_pk,
    finish_operation,
    not_capturable,
    operation_record,
)
from clearline.errors import (
    ApiError,
    ConflictError,
    InvalidRequestError,
    processor_unavailable,
)
from clearline.ids import derived_id
from clearline.merchants import Merchant
from clearline.models import Charge, Page, Refund
from clearline.money import check_payable, currency, format_amount
from clearline.params import RefundCreateParams, RefundUpdateParams, merged_metadata
from clearline.processor import ProcessorBusy, ProcessorRejected, ProcessorUnavailable
from clearline.reviews import ReviewService
from clearline.store import StoreUnavailable
from clearline.transitions import Announcement, Change, Transition

log = logging.getLogger(__name__)

PENDING, SUCCEEDED, FAILED_REFUND, CANCELED_REFUND = "pending", "succeeded", "failed", "canceled"
PROCESSOR_DECLINED = "declined"
# The processor refuses a key we revoked, which only a cancel does.
REVOKED = "idempotency_key_revoked"


def embedded(item: dict[str, Any]) -> dict[str, Any]:
    """A refund as its charge holds it: its model's snapshot."""
    return Refund.from_item(item).snapshot()


def _already_refunded(charge: dict[str, Any]) -> InvalidRequestError:
    return InvalidRequestError(
        f"Charge {charge['id']} has already been refunded.",
        param="charge",
        code="charge_already_refunded",
    )


def _charged_back(charge: dict[str, Any]) -> InvalidRequestError:
    return InvalidRequestError(
        f"Charge {charge['id']} has been charged back; cannot issue a refund.",
        param="charge",
        code="charge_disputed",
    )


def _refund_events(
    merchant_id: str, refund: dict[str, Any], charge: dict[str, Any], refund_event: str
) -> list[Announcement]:
    """The refund's own event, and charge.refunded with the charge as it now stands."""
    return [
        Announcement(merchant_id, refund_event, Refund.from_item(refund)),
        Announcement(
            merchant_id,
            "charge.refunded",
            Charge.from_item(charge),
            operation=f"charge.refunded:{refund['id']}",
        ),
    ]


# What a refund of an authorization does instead of moving an amount.
Voided = Literal["void", "finish void"]
VOID: Voided = "void"
FINISH_VOID: Voided = "finish void"


class RefundService(MoneyService):
    @cached_property
    def charges(self) -> ChargeService:
        return ChargeService(self.store, self.processor, self.shards, self.clock)

    # ---- create ---------------------------------------------------------------------------

    def create(self, caller: Caller, params: RefundCreateParams, *, idempotency_key: str) -> Refund:
        merchant = caller.merchant
        refund_id = derived_id("re", merchant.id, idempotency_key)
        try:
            charge, amount = self._refundable(merchant, params)
            # Stale rates refuse a refund of a converted charge here.
            moves_money = isinstance(amount, int)
            market = fx.market_rate_item(self.charges.rates, charge) if moves_money else {}
        except ApiError:
            # A retry of a refund written before (its write-ahead reserved the amount, so
            # the charge may look refunded) finishes it. Looked up only here and when the
            # write-ahead finds it, so a new refund reads nothing for it.
            existing = self._read(f"REFUND#{refund_id}", "REFUND")
            if existing is None:
                raise
            return self._resume(caller, existing)
        if amount == FINISH_VOID:  # a void cut short: finish it, if it is ours
            return self._resume_void(caller, charge, refund_id)
        if amount == VOID:
            return self._void(caller, charge, refund_id, params, idempotency_key)
        assert isinstance(amount, int)
        reserved = self._reserve(caller, charge, refund_id, amount, params, idempotency_key, market)
        if reserved is None:  # this key's refund, written before
            existing = self._read(f"REFUND#{refund_id}", "REFUND")
            if existing is None:  # and gone again: a request going on with it
                raise ConflictError(
                    "A refund with this key is already in progress; retry shortly.",
                    code="idempotency_key_in_use",
                )
            return self._resume(caller, existing)
        refund, record = reserved
        return self._settle_or_leave_pending(caller, refund, record, charge)

    def _refundable(
        self, merchant: Merchant, params: RefundCreateParams
    ) -> tuple[dict[str, Any], int | Voided]:
        """The charge a new refund is of and the amount it refunds, checked; for an
        authorization, which is voided whole, VOID (or FINISH_VOID, its void cut short)."""
        charge = self.charges.owned(merchant.id, self._charge_id(merchant, params), param="charge")
        if charge.get("pending_op") == "void":
            return charge, FINISH_VOID
        state = charge["state"]
        if state == AUTHORIZED and not charge.get("pending_op"):
            if params.amount is not None and params.amount != charge["amount"]:
                raise InvalidRequestError(
                    "You cannot partially refund an uncaptured charge. Instead, capture the "
                    "charge for an amount less than the original amount.",
                    param="amount",
                )
            return charge, VOID
        if state == FAILED:
            raise InvalidRequestError(
                f"Charge {charge['id']} failed; there is nothing to refund.",
                param="charge",
                code="charge_not_refundable",
            )
        if state in (CANCELED, EXPIRED) or (state == CAPTURED and charge["refundable"] <= 0):
            raise _already_refunded(charge)
        if state != CAPTURED:
            raise ConflictError(f"Charge {charge['id']} is still being processed; retry shortly.")
        if charge.get("chargeback"):  # the network has taken the money back already
            raise _charged_back(charge)
        amount = charge["refundable"] if params.amount is None else params.amount
        self._check_amount(charge, amount)
        return charge, amount

    def _charge_id(self, merchant: Merchant, params: RefundCreateParams) -> str:
        """The charge a refund is of: named, or the successful charge of a PaymentIntent."""
        if (params.charge is None) == (params.payment_intent is None):
            raise InvalidRequestError(
                "Send one of charge and payment_intent: the payment to refund.",
                param="charge",
                code="parameter_missing",
            )
        if params.charge is not None:
            return params.charge
        assert params.payment_intent is not None
        intent = listing.get_owned(
            self.store, merchant.id, params.payment_intent, "pi", param="payment_intent"
        )
        if intent["state"] not in ("succeeded", "requires_capture"):
            raise InvalidRequestError(
                f"PaymentIntent {intent['id']} has no successful charge to refund; its status "
                f"is {intent['state']}.",
                param="payment_intent",
                code="charge_not_refundable",
            )
        return str(intent["latest_charge"])

    def _check_amount(self, charge: dict[str, Any], amount: int) -> None:
        if amount <= 0:
            raise InvalidRequestError(
                "Refund amount must be positive.", param="amount", code="amount_too_small"
            )
        cur = currency(charge["currency"])
        check_payable(amount, cur)
        if amount > charge["refundable"]:
            raise InvalidRequestError(
                f"Refund amount ({format_amount(amount, cur)}) is greater than unrefunded amount "
                f"on charge ({format_amount(charge['refundable'], cur)})",
                param="amount",
                code="amount_too_large",
            )

    def _new_refund(
        self,
        merchant_id: str,
        charge: dict[str, Any],
        refund_id: str,
        amount: int,
        details: dict[str, Any],
        now: float,
    ) -> dict[str, Any]:
        """A refund item; `details` holds its reason, metadata and idempotency key."""
        return {
            "pk": f"REFUND#{refund_id}",
            "sk": "REFUND",
            **listing.list_keys(merchant_id, "re", int(now * 1000), refund_id),
            "id": refund_id,
            "merchant": merchant_id,
            "charge": charge["id"],
            "payment_intent": charge.get("payment_intent"),
            "amount": amount,
            "currency": charge["currency"],
            "reason": details.get("reason"),
            "metadata": details.get("metadata") or {},
            "created": int(now),
            "created_ms": int(now * 1000),
            "idempotency_key": details.get("idempotency_key"),
        }

    def _reserve(
        self,
        caller: Caller,
        charge: dict[str, Any],
        refund_id: str,
        amount: int,
        params: RefundCreateParams,
        idempotency_key: str,
        market: dict[str, str],
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Write-ahead: the amount is reserved on the charge, and the refund and its operation
        record stored pending with the processor key the refund will use (and, for a
        converted charge, today's rate, which its FX gain or loss is booked at). None when
        this refund was written before."""
        now = self.clock()
        details = {
            "reason": params.reason,
            "metadata": dict(params.metadata),
            "idempotency_key": idempotency_key,
        }
        refund = {
            **self._new_refund(caller.merchant.id, charge, refund_id, amount, details, now),
            "status": PENDING,
            **market,
        }
        record = operation_record(
            charge,
            f"refund#{refund_id}",
            processor_key=f"{refund_id}:refund",
            amount=amount,
            caller=caller,
            now=now,
            refund=refund_id,
        )
        reserve = Change(
            charge["pk"],
            "CHARGE",
            charge["id"],
            f"refund.request:{refund_id}",
            CAPTURED,
            from_state=CAPTURED,
            set={f"refunds.{refund_id}": embedded(refund)},
            add={"refundable": -amount},
            # A chargeback opened meanwhile took the money back: no refund on top of it.
            condition="refundable >= :amount AND attribute_not_exists(chargeback)",
            values={":amount": amount},
        )
        transition = Transition(
            [
                reserve,
                Change(
                    refund["pk"],
                    "REFUND",
                    refund_id,
                    "create",
                    PENDING,
                    state_attribute="status",
                    create=refund,
                ),
                Change(
                    record["pk"],
                    record["sk"],
                    charge["id"],
                    record["operation"],
                    OP_PENDING,
                    state_attribute="status",
                    create=record,
                    audited=False,
                ),
            ],
            caller,
            [Announcement(caller.merchant.id, "refund.created", Refund.from_item(refund))],
            idempotency_key=idempotency_key,
        )
        cancelled = self.writer.commit(transition)
        if cancelled is None:
            return refund, record
        if cancelled.failed_at(1):  # this key's refund was written before: a retry
            return None
        current = self._read(charge["pk"], "CHARGE") or charge
        if current.get("chargeback"):
            raise _charged_back(current)
        if current["state"] != CAPTURED or current["refundable"] <= 0:
            raise _already_refunded(charge)
        self._check_amount(current, amount)  # another refund took part of what was left
        raise ConflictError("The charge was being changed by another request; retry.")

    def _resume(self, caller: Caller, refund: dict[str, Any]) -> Refund:
        if refund["merchant"] != caller.merchant.id:
            raise ConflictError("This refund id is taken; retry with another key.")
        if refund["status"] == PENDING:
            charge = self._read(charge_pk(refund["charge"]), "CHARGE")
            assert charge is not None, "a refund always has its charge"
            record = self._read(charge["pk"], f"OP#refund#{refund['id']}")
            assert record is not None, "a pending refund always has its operation record"
            return self._settle_or_leave_pending(caller, refund, record, charge)
        return Refund.from_item(refund)

    def _settle_or_leave_pending(
        self,
        caller: Caller,
        refund: dict[str, Any],
        record: dict[str, Any],
        charge: dict[str, Any],
    ) -> Refund:
        """Settle a refund asked for now; one the processor has no capacity for stays
        pending, written ahead with its key and due for the resolver, which finishes it."""
        try:
            return self.settle(caller, refund, record, charge)
        except ProcessorBusy:
            return Refund.from_item(refund)

    def send_waiting(self, refund_id: str) -> str:
        """Send a refund that was answered pending for want of processor capacity (a
        queued job; the resolver finishes any whose job was lost). Raises ProcessorBusy,
        nothing sent, while there is still no capacity."""
        refund = self._read(f"REFUND#{refund_id}", "REFUND")
        if refund is None or refund["status"] != PENDING:
            return "already settled"
        charge = self._read(charge_pk(refund["charge"]), "CHARGE")
        assert charge is not None, "a refund always has its charge"
        record = self._read(charge["pk"], f"OP#refund#{refund['id']}")
        assert record is not None, "a pending refund always has its operation record"
        return self.settle(None, refund, record, charge).status

    def settle(
        self,
        caller: Caller | None,
        refund: dict[str, Any],
        record: dict[str, Any],
        charge: dict[str, Any],
    ) -> Refund:
        """Refund at the processor with the record's key, then commit what it did: the
        refund succeeded (journal posted), or failed (the reservation released). A refund
        whose cancel was asked for finishes its cancel instead. Raises ProcessorBusy, with
        nothing sent, when the processor has no capacity for it: it stays pending."""
        if record.get("cancel_requested"):
            return self.finish_cancel(caller, refund, record, charge)
        try:
            self.processor.refund(
                idempotency_key=record["processor_key"],
                authorization_id=charge["processor_authorization"],
                amount=refund["amount"],
                reference=refund["id"],
            )
        except ProcessorUnavailable as exc:
            raise processor_unavailable() from exc  # stays pending; a retry finishes it
        except ProcessorRejected as exc:
            if exc.code == REVOKED:  # canceled meanwhile: nothing moved, nothing will
                return self._commit_cancel(caller, refund, record, charge)
            return self._fail(caller, refund, record, charge, exc.message)
        return self._succeed(caller, refund, record, charge)

    # ---- cancel ---------------------------------------------------------------------------

    def cancel(self, caller: Caller, refund_id: str) -> Refund:
        """Cancel a refund the processor has not made yet. Write-ahead: the wish to cancel is
        recorded on the operation first; then the processor is asked to revoke the refund's
        key, which it refuses if the refund was already made (then the refund is settled as
        made, and the cancel refused); then the cancel is committed. A crash anywhere is
        finished by a retry or the resolver, both of which see the recorded wish."""
        refund = listing.get_owned(self.store, caller.merchant.id, refund_id, "re")
        if refund["status"] != PENDING:
            raise InvalidRequestError(
                f"Refund {refund_id} is {refund['status']}: only a pending refund can be canceled.",
                code="refund_not_cancelable",
            )
        charge = self._read(charge_pk(refund["charge"]), "CHARGE")
        record = self._read(charge_pk(refund["charge"]), f"OP#refund#{refund_id}")
        if charge is None or record is None or record["status"] != OP_PENDING:
            raise ConflictError(f"Refund {refund_id} is being settled; retry shortly.")
        if not record.get("cancel_requested"):
            wish = Change(
                record["pk"],
                record["sk"],
                refund["charge"],
                f"refund.cancel.request:{refund_id}",
                OP_PENDING,
                from_state=OP_PENDING,
                state_attribute="status",
                set={"cancel_requested": True},
                audited=False,
            )
            if self.writer.commit(Transition([wish], caller)) is not None:
                raise ConflictError(f"Refund {refund_id} is being settled; retry shortly.")
            record = {**record, "cancel_requested": True}
        done = self.finish_cancel(caller, refund, record, charge)
        if done.status != CANCELED_REFUND:
            raise InvalidRequestError(
                f"Refund {refund_id} had already been made by the processor, so it cannot be "
                f"canceled; it is {done.status}.",
                code="refund_not_cancelable",
            )
        return done

    def finish_cancel(
        self,
        caller: Caller | None,
        refund: dict[str, Any],
        record: dict[str, Any],
        charge: dict[str, Any],
    ) -> Refund:
        """Revoke the refund's processor key and commit what that says."""
        try:
            revoked = self.processor.revoke(record["processor_key"])
        except ProcessorUnavailable as exc:
            raise processor_unavailable() from exc  # the wish stays recorded; retry
        if revoked:
            return self._commit_cancel(caller, refund, record, charge)
        # Too late: the processor made the refund. It settles as made.
        return self._succeed(caller, refund, record, charge)

    def _commit_cancel(
        self,
        caller: Caller | None,
        refund: dict[str, Any],
        record: dict[str, Any],
        charge: dict[str, Any],
    ) -> Refund:
        canceled = {**refund, "status": CANCELED_REFUND}
        transition = Transition(
            [
                Change(
                    refund["pk"],
                    "REFUND",
                    refund["id"],
                    "cancel",
                    CANCELED_REFUND,
                    from_state=PENDING,
                    state_attribute="status",
                ),
                Change(
                    charge["pk"],
                    "CHARGE",
                    charge["id"],
                    f"refund.cancel:{refund['id']}",
                    CAPTURED,
                    from_state=CAPTURED,
                    set={f"refunds.{refund['id']}": embedded(canceled)},
                    add={"refundable": refund["amount"]},  # the reservation is released
                ),
                finish_operation(record, OP_FAILED, failure_reason="canceled"),
            ],
            caller,
            [
                Announcement(
                    charge["merchant"],
                    "refund.updated",
                    Refund.from_item(canceled),
                    operation="refund.canceled",
                    previous=Refund.from_item(refund),
                )
            ],
        )
        if self.writer.commit(transition) is not None:  # settled meanwhile by another path
            return Refund.from_item(self._read(refund["pk"], "REFUND") or canceled)
        return Refund.from_item(canceled)

    def _succeed(
        self,
        caller: Caller | None,
        refund: dict[str, Any],
        record: dict[str, Any],
        charge: dict[str, Any],
    ) -> Refund:
        merchant_id, cur, amount = charge["merchant"], charge["currency"], refund["amount"]
        txn_id = derived_id("txn", refund["id"], "refund")
        done = {**refund, "status": SUCCEEDED, "balance_transaction": txn_id}
        refunded = {
            **charge,
            "amount_refunded": charge["amount_refunded"] + amount,
            "refunds": {**charge.get("refunds", {}), refund["id"]: embedded(done)},
        }
        now = self.clock()
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
        # Converted: back at the charge's rate; the market's move since is ours.
        moved = fx.movement(
            journal,
            charge,
            amount=amount,
            leaving=True,
            market_rate=lambda: Decimal(refund["fx_market_rate"]),
        )
        transition = Transition(
            [
                Change(
                    refund["pk"],
                    "REFUND",
                    refund["id"],
                    "succeed",
                    SUCCEEDED,
                    from_state=PENDING,
                    state_attribute="status",
                    set={"balance_transaction": txn_id},
                ),
                Change(
                    charge["pk"],
                    "CHARGE",
                    charge["id"],
                    f"refund.succeed:{refund['id']}",
                    CAPTURED,
                    from_state=CAPTURED,
                    set={f"refunds.{refund['id']}": embedded(done)},
                    add={"amount_refunded": amount},
                ),
                finish_operation(record, OP_SUCCEEDED),
            ],
            caller,
            _refund_events(merchant_id, done, refunded, "refund.updated"),
            journals=moved.journals,
            answer=Refund.from_item(done),
            records=balance.transaction_items(
                txn_id,
                merchant_id=merchant_id,
                kind="refund",
                source=refund["id"],
                amount=-moved.amount,
                fee=0,
                currency=moved.currency,
                now=now,
                presentment=(amount, cur),
                exchange_rate=moved.exchange_rate,
            ),
        )
        if self.writer.commit(transition) is not None:  # finished by a concurrent retry
            return Refund.from_item(self._read(refund["pk"], "REFUND") or done)
        if charge.get("review") and Charge.from_item(refunded).fully_refunded:
            self._close_review(refunded, done)
        return Refund.from_item(done)

    def _close_review(self, charge: dict[str, Any], refund: dict[str, Any]) -> None:
        """A payment refunded in full leaves nothing to review: its review closes, as
        `refunded_as_fraud` when the refund says so. After the refund's commit, not in it
        (closing an already closed review is no change, and must not undo the refund); one
        left open by a crash here is only a review a person closes."""
        reason = "refunded_as_fraud" if refund.get("reason") == "fraudulent" else "refunded"
        merchant = self.charges.merchant_of(charge["merchant"])
        try:
            ReviewService(self.store, self.clock).close(
                None, charge["review"], reason, merchant=merchant
            )
        except (ApiError, StoreUnavailable) as exc:
            log.warning("review %s left open: %s", charge["review"], exc)

    def _fail(
        self,
        caller: Caller | None,
        refund: dict[str, Any],
        record: dict[str, Any],
        charge: dict[str, Any],
        reason: str,
    ) -> Refund:
        # Stripe's word for a refund the processor refused; its own words stay on the
        # operation record, for the operator.
        failed = {**refund, "status": FAILED_REFUND, "failure_reason": PROCESSOR_DECLINED}
        transition = Transition(
            [
                Change(
                    refund["pk"],
                    "REFUND",
                    refund["id"],
                    "fail",
                    FAILED_REFUND,
                    from_state=PENDING,
                    state_attribute="status",
                    set={"failure_reason": PROCESSOR_DECLINED},
                ),
                Change(
                    charge["pk"],
                    "CHARGE",
                    charge["id"],
                    f"refund.fail:{refund['id']}",
                    CAPTURED,
                    from_state=CAPTURED,
                    set={f"refunds.{refund['id']}": embedded(failed)},
                    add={"refundable": refund["amount"]},
                ),
                finish_operation(record, OP_FAILED, failure_reason=reason),
            ],
            caller,
            [Announcement(charge["merchant"], "refund.failed", Refund.from_item(failed))],
        )
        if self.writer.commit(transition) is not None:
            return Refund.from_item(self._read(refund["pk"], "REFUND") or failed)
        return Refund.from_item(failed)

    # ---- void -----------------------------------------------------------------------------

    def void_hold(self, caller: Caller, charge_id: str, *, idempotency_key: str) -> Refund:
        """Release an authorization, and never refund a capture: a charge captured first
        keeps its money and the void is refused. The void's lock is a guarded write from
        `authorized` with no operation pending, so a capture and a void cannot both win."""
        refund_id = derived_id("re", caller.merchant.id, idempotency_key)
        existing = self._read(f"REFUND#{refund_id}", "REFUND")
        if existing is not None:
            return self._resume(caller, existing)
        charge = self.charges.owned(caller.merchant.id, charge_id, param="charge")
        if charge.get("pending_op") == "void":
            return self._resume_void(caller, charge, refund_id)
        if charge["state"] != AUTHORIZED or charge.get("pending_op"):
            raise not_capturable(charge)
        params = RefundCreateParams(charge=charge_id)
        return self._void(caller, charge, refund_id, params, idempotency_key)

    def _void(
        self,
        caller: Caller,
        charge: dict[str, Any],
        refund_id: str,
        params: RefundCreateParams,
        idempotency_key: str,
    ) -> Refund:
        record = self.charges.request_void(
            charge,
            caller,
            "refund",
            refund=refund_id,
            reason=params.reason,
            metadata=dict(params.metadata),
            idempotency_key=idempotency_key,
        )
        if record is None:
            current = self._read(charge["pk"], "CHARGE") or charge
            if current["state"] in (CANCELED, EXPIRED):
                raise _already_refunded(charge)
            raise ConflictError(f"Charge {charge['id']} was changed by another request; retry.")
        return self._settle_void(caller, {**charge, "pending_op": "void"}, record)

    def _resume_void(self, caller: Caller, charge: dict[str, Any], refund_id: str) -> Refund:
        record = self._read(charge["pk"], "OP#void")
        if record is None or record["status"] != OP_PENDING or record.get("refund") != refund_id:
            raise ConflictError(f"Charge {charge['id']} is being voided; retry shortly.")
        return self._settle_void(caller, charge, record)

    def _settle_void(
        self, caller: Caller | None, charge: dict[str, Any], record: dict[str, Any]
    ) -> Refund:
        settled = self.settle_void(caller, charge, record)
        if settled["state"] != CANCELED:
            raise ConflictError(
                f"Charge {charge['id']} was changed by another request; retry to see its new state."
            )
        refund = self._read(f"REFUND#{record['refund']}", "REFUND")
        assert refund is not None, "a canceled charge has its void refund"
        return Refund.from_item(refund)

    def settle_void(
        self, caller: Caller | None, charge: dict[str, Any], record: dict[str, Any]
    ) -> dict[str, Any]:
        """Void at the processor; the committed void carries the refund that announces it."""

        def add_refund(transition: Transition, voided: dict[str, Any]) -> None:
            refund = {
                **self._new_refund(
                    charge["merchant"], charge, record["refund"], charge["amount"], record, now
                ),
                "status": SUCCEEDED,
            }
            voided["refunds"] = {**charge.get("refunds", {}), refund["id"]: embedded(refund)}
            transition.changes[0].set[f"refunds.{refund['id']}"] = embedded(refund)
            transition.changes.append(
                Change(
                    refund["pk"],
                    "REFUND",
                    refund["id"],
                    "create",
                    SUCCEEDED,
                    state_attribute="status",
                    create=refund,
                )
            )
            transition.idempotency_key = record.get("idempotency_key")
            transition.events += _refund_events(
                charge["merchant"], refund, voided, "refund.created"
            )

        now = self.clock()
        return self.charges.settle_void(charge, record, caller, add_refund)

    # ---- update ---------------------------------------------------------------------------

    def update(self, caller: Caller, refund_id: str, params: RefundUpdateParams) -> Refund:
        """A refund's metadata, on the refund and its charge's copy alike; announced as
        refund.updated with what it was."""
        for _ in range(3):  # the refund settling meanwhile: read again
            item = listing.get_owned(self.store, caller.merchant.id, refund_id, "re")
            if params.metadata is None:
                return Refund.from_item(item)
            metadata = merged_metadata(item.get("metadata") or {}, params.metadata)
            after = {**item, "metadata": metadata}
            charge = self.charges.owned(caller.merchant.id, item["charge"])
            version = int(item.get("version", 0))
            transition = Transition(
                [
                    Change(
                        item["pk"],
                        "REFUND",
                        refund_id,
                        "update",
                        item["status"],
                        from_state=item["status"],
                        state_attribute="status",
                        set={"metadata": metadata, "version": version + 1},
                        condition="attribute_not_exists(version)"
                        if version == 0
                        else "version = :v",
                        values={} if version == 0 else {":v": version},
                    ),
                    Change(
                        charge_pk(item["charge"]),
                        "CHARGE",
                        item["charge"],
                        f"refund.update:{refund_id}",
                        charge["state"],
                        from_state=charge["state"],
                        set={f"refunds.{refund_id}.metadata": metadata},
                        audited=False,
                    ),
                ],
                caller,
                [
                    Announcement(
                        item["merchant"],
                        "refund.updated",
                        Refund.from_item(after),
                        operation=f"refund.updated:{version + 1}",
                        previous=Refund.from_item(item),
                    )
                ],
            )
            if self.writer.commit(transition) is None:
                return Refund.from_item(after)
        raise ConflictError(f"Refund {refund_id} is changing; retry shortly.")

    # ---- read -----------------------------------------------------------------------------

    def retrieve(self, merchant: Merchant, refund_id: str) -> Refund:
        return Refund.from_item(listing.get_owned(self.store, merchant.id, refund_id, "re"))

    def list(
        self,
        merchant: Merchant,
        *,
        charge_id: str | None,
        limit: int,
        starting_after: str | None,
        ending_before: str | None,
        created: listing.Created | None = None,
    ) -> Page[Refund]:
        if charge_id:
            charge = listing.get_owned(self.store, merchant.id, charge_id, "ch", param="charge")
            return listing.page_in_memory(
                Charge.from_item(charge).refunds,
                limit=limit,
                starting_after=starting_after,
                ending_before=ending_before,
                created=created,
                kind="refund",
            )
        items = listing.page(
            self.store,
            merchant.id,
            "re",
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
            created=created,
        )
        return items.of(Refund.from_item)
