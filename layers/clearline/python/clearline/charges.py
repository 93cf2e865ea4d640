"""The charge state machine: create, capture, expire, retrieve and list charges.

Exactly-once creation rests on three things: the charge id is derived from
(merchant, idempotency key), the processor is called with an idempotency key derived
from the charge id, and the charge, its audit event, its outbox event and its journal are
written in one transaction that refuses to overwrite an existing charge. Every later
change is a conditional update on the charge plus an item unique to (charge, operation),
written in the same transaction as its journal: a retry or a race cannot apply it twice.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from typing import Any

from clearline import balance, ledger, listing, money
from clearline.audit import Caller, audit_item
from clearline.errors import (
    ApiError,
    CardError,
    ConflictError,
    InvalidRequestError,
    processor_unavailable,
    store_unavailable,
)
from clearline.events import event_write
from clearline.ids import derived_id
from clearline.merchants import Merchant, get_merchant
from clearline.params import ChargeCaptureParams, ChargeCreateParams
from clearline.processor import (
    Authorization,
    ProcessorClient,
    ProcessorRejected,
    ProcessorUnavailable,
    UnknownToken,
)
from clearline.store import Store, StoreUnavailable, Write, commit

# Internal states; Stripe's `status`, `captured` and `refunded` are derived from them.
PENDING, AUTHORIZED, CAPTURED, FAILED = "pending", "authorized", "captured", "failed"
CANCELED, EXPIRED = "canceled", "expired"

# Authorizations not captured within this window are voided and marked expired.
AUTHORIZATION_WINDOW_SECONDS = int(
    os.environ.get("CLEARLINE_AUTHORIZATION_WINDOW_SECONDS", str(7 * 24 * 60 * 60))
)
DUE_INDEX = "by_due"
DUE_SHARDS = 8  # spreads the sparse `by_due` index over partitions
DUE_AUTHORIZATION, DUE_PROCESSOR = "AUTH", "PENDING"


def due_keys(kind: str, charge_id: str, at: int) -> dict[str, str]:
    """Puts a charge in the sparse `by_due` index: `kind` work is due at `at` (Unix time)."""
    shard = int.from_bytes(hashlib.sha256(charge_id.encode()).digest()[:2], "big") % DUE_SHARDS
    return {"due_pk": f"{kind}#{shard}", "due_sk": f"{at:010d}#{charge_id}"}


def charge_pk(charge_id: str) -> str:
    return f"CHARGE#{charge_id}"


def charge_object(item: dict[str, Any]) -> dict[str, Any]:
    """A stored charge in Stripe's shape."""
    card = item.get("card") or {}
    status = {PENDING: "pending", FAILED: "failed"}.get(item["state"], "succeeded")
    # Stripe counts the uncaptured part of a partial capture, and a voided or expired
    # authorization, as refunded.
    amount_refunded = item["amount_refunded"] + item.get("amount_released", 0)
    refunds = listing.page_in_memory(
        list((item.get("refunds") or {}).values()),
        url=f"/v1/charges/{item['id']}/refunds",
        limit=10,
        starting_after=None,
        ending_before=None,
    )
    return {
        "id": item["id"],
        "object": "charge",
        "amount": item["amount"],
        "amount_captured": item["amount_captured"],
        "amount_refunded": amount_refunded,
        "balance_transaction": item.get("balance_transaction"),
        "billing_details": {"address": None, "email": None, "name": None, "phone": None},
        "calculated_statement_descriptor": item.get("statement_descriptor") or "CLEARLINE",
        "captured": item["amount_captured"] > 0,
        "capture_at": item.get("capture_at"),
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
        "refunded": status == "succeeded" and amount_refunded == item["amount"],
        "refunds": {**refunds, "total_count": len(item.get("refunds") or {})},
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
    )


def not_capturable(item: dict[str, Any]) -> ApiError:
    """Why a charge cannot be captured (or voided) any more, in Stripe's words."""
    charge_id, state = item["id"], item["state"]
    if state == CAPTURED:
        return InvalidRequestError(
            f"Charge {charge_id} has already been captured.", code="charge_already_captured"
        )
    if state == CANCELED:
        return InvalidRequestError(
            f"Charge {charge_id} has already been refunded.", code="charge_already_refunded"
        )
    if state == EXPIRED:
        return InvalidRequestError(
            f"Charge {charge_id} has expired: it was not captured within the authorization "
            "window, and its hold was released.",
            code="charge_expired_for_capture",
        )
    if state == FAILED:
        return InvalidRequestError(
            f"Charge {charge_id} failed and has nothing to capture.", code="charge_not_capturable"
        )
    return ConflictError(f"Charge {charge_id} is still being processed; retry shortly.")


class MoneyService:
    """What every service that moves money works with: the store, the processor, the
    ledger's shard policy, and a clock."""

    def __init__(
        self,
        store: Store,
        processor: ProcessorClient,
        shards: ledger.ShardPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.processor = processor
        self.shards = shards or ledger.ShardPolicy()
        self.clock = clock


class ChargeService(MoneyService):
    def _get(self, charge_id: str) -> dict[str, Any] | None:
        try:
            return self.store.get(charge_pk(charge_id), "CHARGE")
        except StoreUnavailable as exc:
            raise store_unavailable() from exc

    def _merchant(self, merchant_id: str) -> Merchant:
        merchant = get_merchant(self.store, merchant_id)
        assert merchant is not None, "a charge always has its merchant"
        return merchant

    def _settled(self, item: dict[str, Any]) -> dict[str, Any]:
        """The response for a stored charge: a failed one is a 402, as it was the first time."""
        if item["state"] == FAILED:
            raise _card_error(item)
        return charge_object(item)

    # ---- create ---------------------------------------------------------------------------

    def create(
        self, caller: Caller, params: ChargeCreateParams, *, idempotency_key: str
    ) -> dict[str, Any]:
        merchant = caller.merchant
        money.check_charge_amount(params.amount, money.currency(params.currency))
        token = params.source or params.payment_method
        if not token:
            raise InvalidRequestError(
                "Must provide source or payment_method.", param="source", code="parameter_missing"
            )
        token_param = "source" if params.source else "payment_method"
        now = self.clock()
        if params.capture_at is not None:
            if params.capture:
                raise InvalidRequestError(
                    "capture_at schedules the capture of an authorization: send capture=false "
                    "with it.",
                    param="capture_at",
                )
            if not now < params.capture_at <= now + AUTHORIZATION_WINDOW_SECONDS:
                raise InvalidRequestError(
                    "capture_at must be in the future and within the authorization window "
                    f"({AUTHORIZATION_WINDOW_SECONDS // 86400} days).",
                    param="capture_at",
                )

        charge_id = derived_id("ch", merchant.id, idempotency_key)
        existing = self._get(charge_id)
        if existing is not None:
            if existing["merchant"] != merchant.id:  # derived ids cannot collide; refuse if so
                raise ConflictError("This charge id is taken; retry with another key.")
            if existing["state"] == PENDING:
                return self.resolve_pending(existing, caller)
            return self._settled(existing)

        try:
            auth = self._authorize(charge_id, token, params)
        except UnknownToken as exc:
            raise InvalidRequestError(
                f"No such token: '{token}'", param=token_param, code="resource_missing"
            ) from exc
        except ProcessorUnavailable:
            # The processor may or may not have charged the card. The charge is stored as
            # pending; a retry with the same key, or the processor sync, asks the processor
            # with the same key and settles it. Nothing is ever charged twice.
            return self._create_pending(caller, params, charge_id, token, now, idempotency_key)

        item = self._charge_item(merchant, params, charge_id, token, auth, now, idempotency_key)
        writes = [Write.put_new(item), *self._created_records(caller, item, now, None)]
        if commit(self.store, writes) is not None:
            # A concurrent request with the same key committed first: theirs stands.
            item = self._get(charge_id) or item
        return self._settled(item)

    def _authorize(self, charge_id: str, token: str, params: ChargeCreateParams) -> Authorization:
        return self.processor.authorize(
            idempotency_key=f"{charge_id}:authorize",
            token=token,
            amount=params.amount,
            currency=params.currency.lower(),
            capture=params.capture,
            reference=charge_id,
        )

    def _charge_item(
        self,
        merchant: Merchant,
        params: ChargeCreateParams,
        charge_id: str,
        token: str,
        auth: Authorization,
        created: float,
        idempotency_key: str,
    ) -> dict[str, Any]:
        state = (CAPTURED if params.capture else AUTHORIZED) if auth.approved else FAILED
        captured = params.amount if state == CAPTURED else 0
        item: dict[str, Any] = {
            "pk": charge_pk(charge_id),
            "sk": "CHARGE",
            **listing.list_keys(merchant.id, "ch", int(created * 1000), charge_id),
            "id": charge_id,
            "merchant": merchant.id,
            "state": state,
            "amount": params.amount,
            "currency": params.currency.lower(),
            "amount_captured": captured,
            "amount_refunded": 0,
            "amount_released": 0,
            # What refunds may still take: decremented under a condition, never below zero.
            "refundable": captured,
            "refunds": {},
            "description": params.description,
            "metadata": dict(params.metadata),
            "statement_descriptor": params.statement_descriptor,
            "payment_method": token,
            "card": auth.card.model_dump(),
            "outcome": _outcome(auth),
            "processor_authorization": auth.id,
            "created": int(created),
            "idempotency_key": idempotency_key,
        }
        if state == FAILED:
            item.update(
                failure_code=auth.code,
                decline_code=auth.decline_code,
                failure_message=auth.message or "Your card was declined.",
            )
        elif state == CAPTURED:
            item.update(
                fee=merchant.fee_for(captured),
                balance_transaction=derived_id("txn", charge_id, "capture"),
            )
        else:  # authorized: due for its scheduled capture, or else for expiry
            expires_at = int(created) + AUTHORIZATION_WINDOW_SECONDS
            item.update(capture_at=params.capture_at, expires_at=expires_at)
            item.update(due_keys(DUE_AUTHORIZATION, charge_id, params.capture_at or expires_at))
        return item

    def _created_records(
        self, caller: Caller | None, item: dict[str, Any], now: float, from_state: str | None
    ) -> list[Write]:
        """The audit event, outbox event, journal and balance transaction of a new charge."""
        merchant_id, charge_id = item["merchant"], item["id"]
        kind = "charge.failed" if item["state"] == FAILED else "charge.succeeded"
        writes = [
            Write.put_new(
                audit_item(
                    item["pk"],
                    charge_id,
                    caller=caller,
                    operation="create" if from_state is None else "settle",
                    from_state=from_state,
                    to_state=item["state"],
                    now=now,
                )
            ),
            event_write(
                merchant_id,
                kind,
                charge_object(item),
                operation=kind,
                now=now,
                caller=caller,
                idempotency_key=item["idempotency_key"],
            ),
        ]
        if item["state"] == CAPTURED:
            writes += self._capture_records(item, item["amount"], item["fee"], now, held=0)
        elif item["state"] == AUTHORIZED:
            journal = ledger.Journal(
                id=derived_id("jnl", charge_id, "authorize"),
                currency=item["currency"],
                entries=ledger.hold_entries(merchant_id, item["currency"], item["amount"]),
                charge_id=charge_id,
                merchant_id=merchant_id,
                operation="charge.authorize",
                created=int(now),
            )
            writes += journal.writes(self.shards)
        return writes

    def _capture_records(
        self, item: dict[str, Any], captured: int, fee: int, now: float, *, held: int
    ) -> list[Write]:
        """The journal and balance transaction of a capture (of a hold of `held`, if any)."""
        charge_id, currency, merchant_id = item["id"], item["currency"], item["merchant"]
        entries = (
            ledger.capture_hold_entries(merchant_id, currency, held, captured, fee)
            if held
            else ledger.capture_entries(merchant_id, currency, captured, fee)
        )
        journal = ledger.Journal(
            id=derived_id("jnl", charge_id, "capture"),
            currency=currency,
            entries=entries,
            charge_id=charge_id,
            merchant_id=merchant_id,
            operation="charge.capture",
            created=int(now),
        )
        txn = balance.transaction_item(
            derived_id("txn", charge_id, "capture"),
            merchant_id=merchant_id,
            kind="charge",
            source=charge_id,
            amount=captured,
            fee=fee,
            currency=currency,
            now=now,
            description=item.get("description"),
        )
        return [*journal.writes(self.shards), Write.put_new(txn)]

    # ---- pending (the processor did not answer) -------------------------------------------

    def _create_pending(
        self,
        caller: Caller,
        params: ChargeCreateParams,
        charge_id: str,
        token: str,
        now: float,
        idempotency_key: str,
    ) -> dict[str, Any]:
        item: dict[str, Any] = {
            "pk": charge_pk(charge_id),
            "sk": "CHARGE",
            **listing.list_keys(caller.merchant.id, "ch", int(now * 1000), charge_id),
            **due_keys(DUE_PROCESSOR, charge_id, int(now)),
            "id": charge_id,
            "merchant": caller.merchant.id,
            "state": PENDING,
            "amount": params.amount,
            "currency": params.currency.lower(),
            "amount_captured": 0,
            "amount_refunded": 0,
            "amount_released": 0,
            "refundable": 0,
            "refunds": {},
            "description": params.description,
            "metadata": dict(params.metadata),
            "statement_descriptor": params.statement_descriptor,
            "payment_method": token,
            "created": int(now),
            "idempotency_key": idempotency_key,
            # What settling the charge needs, once the processor answers.
            "request_params": params.model_dump(mode="json"),
        }
        writes = [
            Write.put_new(item),
            Write.put_new(
                audit_item(
                    item["pk"],
                    charge_id,
                    caller=caller,
                    operation="create",
                    from_state=None,
                    to_state=PENDING,
                    now=now,
                )
            ),
            event_write(
                caller.merchant.id,
                "charge.pending",
                charge_object(item),
                operation="charge.pending",
                now=now,
                caller=caller,
                idempotency_key=idempotency_key,
            ),
        ]
        if commit(self.store, writes) is not None:
            item = self._get(charge_id) or item
        return self._settled(item)

    def resolve_pending(
        self, item: dict[str, Any], caller: Caller | None, auth: Authorization | None = None
    ) -> dict[str, Any]:
        """Settle a pending charge with the processor's answer for its key, asking for it with
        the same key when not given. If the processor still does not answer: still pending."""
        params = ChargeCreateParams.model_validate(item["request_params"])
        if auth is None:
            try:
                auth = self._authorize(item["id"], item["payment_method"], params)
            except ProcessorUnavailable:
                return self._settled(item)
        now = self.clock()
        final = self._charge_item(
            self._merchant(item["merchant"]),
            params,
            item["id"],
            item["payment_method"],
            auth,
            item["created"],
            item["idempotency_key"],
        )
        writes = [
            Write(
                "Put",
                item=final,
                condition="#state = :pending",
                names={"#state": "state"},
                values={":pending": PENDING},
            ),
            *self._created_records(caller, final, now, PENDING),
        ]
        if commit(self.store, writes) is not None:  # settled meanwhile by another path
            final = self._get(item["id"]) or final
        return self._settled(final)

    def fail_pending(self, item: dict[str, Any], reason: str) -> None:
        """The processor never committed this charge: it failed, and nobody was charged."""
        now = self.clock()
        failed = {
            **{k: v for k, v in item.items() if k not in ("due_pk", "due_sk")},
            "state": FAILED,
            "failure_code": "processing_error",
            "failure_message": reason,
            "outcome": {"network_status": "not_sent_to_network", "type": "invalid"},
        }
        writes = [
            Write(
                "Put",
                item=failed,
                condition="#state = :pending",
                names={"#state": "state"},
                values={":pending": PENDING},
            ),
            *self._created_records(None, failed, now, PENDING),
        ]
        commit(self.store, writes)

    # ---- capture and expiry ---------------------------------------------------------------

    def capture(
        self,
        caller: Caller | None,
        charge_id: str,
        params: ChargeCaptureParams,
        merchant_id: str | None = None,
    ) -> dict[str, Any]:
        """Capture an authorization. `caller` is None for Clearline's scheduled captures."""
        owner = caller.merchant.id if caller else merchant_id
        assert owner is not None
        item = listing.get_owned(self.store, owner, charge_id, "ch")
        if item["state"] != AUTHORIZED:
            raise not_capturable(item)
        amount = item["amount"] if params.amount is None else params.amount
        if not 0 < amount <= item["amount"]:
            raise InvalidRequestError(
                f"Capture amount must be between 1 and the authorized {item['amount']}.",
                param="amount",
                code="amount_too_large" if amount > 0 else "amount_too_small",
            )
        try:
            self.processor.capture(
                idempotency_key=f"{charge_id}:capture",
                authorization_id=item["processor_authorization"],
                amount=amount,
            )
        except ProcessorUnavailable as exc:
            raise processor_unavailable() from exc
        except ProcessorRejected as exc:
            # Another capture or a void got to the processor first; the charge says which.
            current = self._get(charge_id) or item
            if current["state"] != AUTHORIZED:
                raise not_capturable(current) from exc
            raise ConflictError(
                f"Charge {charge_id} is being changed by another request; retry shortly."
            ) from exc

        now = self.clock()
        fee = self._merchant(owner).fee_for(amount)
        txn_id = derived_id("txn", charge_id, "capture")
        captured = {
            **item,
            "state": CAPTURED,
            "amount_captured": amount,
            "amount_released": item["amount"] - amount,
            "refundable": amount,
            "fee": fee,
            "balance_transaction": txn_id,
        }
        writes = [
            Write(
                "Update",
                key={"pk": item["pk"], "sk": "CHARGE"},
                update="SET #state = :captured, amount_captured = :c, amount_released = :r, "
                "refundable = :c, fee = :fee, balance_transaction = :txn REMOVE due_pk, due_sk",
                condition="#state = :authorized",
                names={"#state": "state"},
                values={
                    ":captured": CAPTURED,
                    ":authorized": AUTHORIZED,
                    ":c": amount,
                    ":r": item["amount"] - amount,
                    ":fee": fee,
                    ":txn": txn_id,
                },
            ),
            Write.put_new(
                {
                    "pk": item["pk"],
                    "sk": "OP#capture",
                    "amount": amount,
                    "request_id": caller.request_id if caller else None,
                    "at": int(now * 1000),
                }
            ),
            Write.put_new(
                audit_item(
                    item["pk"],
                    charge_id,
                    caller=caller,
                    operation="capture",
                    from_state=AUTHORIZED,
                    to_state=CAPTURED,
                    now=now,
                )
            ),
            event_write(
                owner,
                "charge.captured",
                charge_object(captured),
                operation="charge.captured",
                now=now,
                caller=caller,
            ),
            *self._capture_records(item, amount, fee, now, held=item["amount"]),
        ]
        cancelled = commit(self.store, writes)
        current = self._get(charge_id) or captured
        if cancelled is not None:
            raise not_capturable(current)
        return charge_object(current)

    def expire(self, charge_id: str) -> bool:
        """Void an authorization that was not captured in time. False if it had moved on."""
        item = self._get(charge_id)
        if item is None or item["state"] != AUTHORIZED:
            return False
        try:
            self.processor.void(
                idempotency_key=f"{charge_id}:void",
                authorization_id=item["processor_authorization"],
            )
        except ProcessorUnavailable as exc:
            raise processor_unavailable() from exc
        except ProcessorRejected:
            return False  # captured or voided at the processor meanwhile: the charge says which
        now = self.clock()
        merchant_id, cur, amount = item["merchant"], item["currency"], item["amount"]
        expired = {**item, "state": EXPIRED, "amount_released": amount}
        journal = ledger.Journal(
            id=derived_id("jnl", charge_id, "void"),
            currency=cur,
            entries=ledger.release_hold_entries(merchant_id, cur, amount),
            charge_id=charge_id,
            merchant_id=merchant_id,
            operation="charge.expire",
            created=int(now),
        )
        writes = [
            Write(
                "Update",
                key={"pk": item["pk"], "sk": "CHARGE"},
                update="SET #state = :expired, amount_released = :a REMOVE due_pk, due_sk",
                condition="#state = :authorized",
                names={"#state": "state"},
                values={":expired": EXPIRED, ":authorized": AUTHORIZED, ":a": amount},
            ),
            Write.put_new({"pk": item["pk"], "sk": "OP#void", "at": int(now * 1000)}),
            Write.put_new(
                audit_item(
                    item["pk"],
                    charge_id,
                    caller=None,
                    operation="expire",
                    from_state=AUTHORIZED,
                    to_state=EXPIRED,
                    now=now,
                )
            ),
            event_write(
                merchant_id,
                "charge.expired",
                charge_object(expired),
                operation="charge.expired",
                now=now,
            ),
            *journal.writes(self.shards),
        ]
        return commit(self.store, writes) is None

    # ---- read -----------------------------------------------------------------------------

    def retrieve(self, merchant: Merchant, charge_id: str) -> dict[str, Any]:
        return charge_object(listing.get_owned(self.store, merchant.id, charge_id, "ch"))

    def list(
        self,
        merchant: Merchant,
        *,
        limit: int,
        starting_after: str | None,
        ending_before: str | None,
    ) -> dict[str, Any]:
        return listing.page(
            self.store,
            merchant.id,
            "ch",
            url="/v1/charges",
            render=charge_object,
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
        )
