"""Disputes: a cardholder's bank contests a charge, and the merchant answers with evidence.

The network raises a dispute; the processor tells us in a signed notification (the
intake function calls `receive`). Opening a chargeback withdraws the amount and a dispute
fee from the merchant in the transaction that stores it; an inquiry moves no money until
it escalates. The merchant stages evidence, submits it, or accepts the dispute; the
network decides, and a won dispute reinstates the amount. Every money movement is a
journal through the one transition writer, guarded by the dispute's status and version,
so a notification delivered twice, or out of order, changes nothing the second time.

A dispute lives in its own item and workflow: the charge item is touched only to mark it
disputed (and, while a chargeback stands, not refundable), never on the capture path.

Calls to the processor (submit, close) are write-ahead: the operation and its key are
stored on the dispute first, in the resolver's due index, and committed once the
processor has answered. A crash in between is finished by a retry or by the resolver.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from clearline import balance, fx, ledger, listing
from clearline.audit import Caller
from clearline.charges import CAPTURED, DUE_KEYS, DUE_PROCESSOR, MoneyService, charge_pk, due_keys
from clearline.errors import ApiError, ConflictError, InvalidRequestError, processor_unavailable
from clearline.ids import derived_id
from clearline.merchants import Merchant, get_merchant
from clearline.models import BalanceTransaction, Dispute, Page
from clearline.params import DisputeUpdateParams, merged_metadata
from clearline.processor import ProcessorDispute, ProcessorRejected, ProcessorUnavailable
from clearline.reviews import ReviewService
from clearline.store import StoreUnavailable
from clearline.transitions import Announcement, Change, Transition, status_change

log = logging.getLogger(__name__)

WARNING_NEEDS_RESPONSE, WARNING_UNDER_REVIEW, WARNING_CLOSED = (
    "warning_needs_response",
    "warning_under_review",
    "warning_closed",
)
NEEDS_RESPONSE, UNDER_REVIEW, WON, LOST = "needs_response", "under_review", "won", "lost"
STATUSES = frozenset(
    {
        WARNING_NEEDS_RESPONSE,
        WARNING_UNDER_REVIEW,
        WARNING_CLOSED,
        NEEDS_RESPONSE,
        UNDER_REVIEW,
        WON,
        LOST,
    }
)
CLOSED = frozenset({WARNING_CLOSED, WON, LOST})
AWAITING_RESPONSE = frozenset({WARNING_NEEDS_RESPONSE, NEEDS_RESPONSE})
# The due index's kind for disputes whose evidence deadline is coming.
DUE_DISPUTE = "DISPUTE"
DISPUTE_FEE_USD = 1500  # 15.00 USD, or its equivalent: charged on every chargeback, kept if won


def dispute_fee(rates: fx.RateBook, currency_code: str) -> int:
    """The dispute fee in the merchant's settlement currency: 15.00 USD converted at today's
    mid-market rate (stale rates refuse the dispute for now; the processor retries)."""
    if currency_code == "usd":
        return DISPUTE_FEE_USD
    return ledger.exchange(DISPUTE_FEE_USD, rates.mid("usd", currency_code), "usd", currency_code)


def dispute_id_of(processor_dispute_id: str) -> str:
    """Ours derives from the network's: a notification delivered twice lands on one dispute."""
    return derived_id("du", processor_dispute_id)


def withdrawal_txn_id(dispute_id: str) -> str:
    return derived_id("txn", dispute_id, "dispute")


def reinstatement_txn_id(dispute_id: str) -> str:
    return derived_id("txn", dispute_id, "dispute_reversal")


def dispute_pk(dispute_id: str) -> str:
    return f"DISPUTE#{dispute_id}"


class UnknownDispute(ValueError):
    """A notification about a charge we do not have: nothing is stored."""


def prefilled_evidence(charge: dict[str, Any]) -> dict[str, str]:
    """What an order system would put in the evidence from the order behind the charge."""
    evidence: dict[str, str] = {}
    if charge.get("description"):
        evidence["product_description"] = str(charge["description"])
    if charge.get("receipt_email"):
        evidence["customer_email_address"] = str(charge["receipt_email"])
    shipping = charge.get("shipping") or {}
    if shipping:
        evidence["customer_name"] = str(shipping.get("name") or "")
        address = shipping.get("address") or {}
        parts = [address.get(k) for k in ("line1", "line2", "city", "state", "postal_code")]
        parts.append(address.get("country"))
        evidence["shipping_address"] = ", ".join(str(p) for p in parts if p)
        for field in ("carrier", "tracking_number"):
            if shipping.get(field):
                evidence[f"shipping_{field}"] = str(shipping[field])
    metadata = charge.get("metadata") or {}
    if metadata:
        lines = [f"{key}: {value}" for key, value in sorted(metadata.items())]
        evidence["uncategorized_text"] = "Order details\n" + "\n".join(lines)
    return {key: value for key, value in evidence.items() if value}


def _applied(item: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """The item as a change's `set` leaves it (`a.b` paths set inside map `a`)."""
    after = dict(item)
    for path, value in fields.items():
        if "." in path:
            parent, child = path.split(".", 1)
            after[parent] = {**(after.get(parent) or {}), child: value}
        else:
            after[path] = value
    return after


class DisputeService(MoneyService):
    @property
    def rates(self) -> fx.RateBook:
        return fx.RateBook(self.store, self.clock)

    def _market_rate(self, charge: dict[str, Any]) -> Decimal:
        """Today's mid for a converted charge's pair (stale rates: 503, and the processor's
        notice is retried)."""
        return Decimal(fx.market_rate_item(self.rates, charge)["fx_market_rate"])

    # ---- from the processor ---------------------------------------------------------------

    def receive(self, notice: ProcessorDispute) -> Dispute:
        """Bring our dispute to what the processor says it is, opening it if it is new.
        Repeated or stale notices change nothing."""
        dispute_id = dispute_id_of(notice.id)
        for _ in range(5):  # a concurrent change moves the version: read again, apply again
            item = self._read(dispute_pk(dispute_id), "DISPUTE")
            if item is None:
                if self._open(notice, dispute_id):
                    continue
                item = self._read(dispute_pk(dispute_id), "DISPUTE")
                assert item is not None
            if self._follow(item, notice.status):
                return Dispute.from_item(self._read(item["pk"], "DISPUTE") or item)
        raise ConflictError(f"Dispute {dispute_id} kept changing; the notice will be retried.")

    def _open(self, notice: ProcessorDispute, dispute_id: str) -> bool:
        """Store a new dispute, in its first status, and withdraw a chargeback's money.
        False if it was opened meanwhile by another delivery."""
        charge = self._read(charge_pk(notice.reference), "CHARGE") if notice.reference else None
        if charge is None or charge.get("processor_authorization") != notice.authorization:
            raise UnknownDispute(
                f"processor dispute {notice.id} names {notice.reference}, which is not the "
                f"charge of authorization {notice.authorization}"
            )
        if notice.currency != charge["currency"]:
            raise UnknownDispute(f"processor dispute {notice.id} is in another currency")
        now = self.clock()
        inquiry = notice.inquiry or notice.status == WARNING_CLOSED
        status = WARNING_NEEDS_RESPONSE if inquiry else NEEDS_RESPONSE
        due_by = notice.evidence_due_by
        item: dict[str, Any] = {
            "pk": dispute_pk(dispute_id),
            "sk": "DISPUTE",
            **listing.list_keys(charge["merchant"], "du", int(now * 1000), dispute_id),
            **(due_keys(DUE_DISPUTE, dispute_id, due_by) if due_by else {}),
            "id": dispute_id,
            "merchant": charge["merchant"],
            "charge": charge["id"],
            "payment_intent": charge.get("payment_intent"),
            "amount": notice.amount,
            "currency": notice.currency,
            "reason": notice.reason,
            "network_reason_code": notice.network_reason_code,
            "card_brand": (charge.get("card") or {}).get("brand"),
            "inquiry": inquiry,
            "created": int(now),
            "processor_dispute": notice.id,
            "evidence": prefilled_evidence(charge),
            "evidence_details": {
                "due_by": due_by,
                "has_evidence": False,
                "past_due": False,
                "submission_count": 0,
            },
            "balance_transactions": {},
            "is_charge_refundable": inquiry,
            "metadata": {},
            "version": 1,
        }
        mark_charge: dict[str, Any] = {"disputed": True, "dispute": dispute_id}
        transition = Transition(
            [
                Change(
                    item["pk"],
                    "DISPUTE",
                    dispute_id,
                    "create",
                    status,
                    state_attribute="status",
                    create=item,
                ),
                Change(
                    charge["pk"],
                    "CHARGE",
                    charge["id"],
                    f"dispute.open:{dispute_id}",
                    CAPTURED,
                    from_state=CAPTURED,
                    set=mark_charge,
                ),
            ],
            index_items=listing.facet_items(
                charge["merchant"],
                "du",
                int(now * 1000),
                (item["pk"], "DISPUTE"),
                dispute_id,
                {"charge": charge["id"], "payment_intent": charge.get("payment_intent")},
            ),
        )
        opened = {**item, "status": status}
        transition.events.append(
            Announcement(charge["merchant"], "charge.dispute.created", Dispute.from_item(opened))
        )
        if not inquiry:
            self._withdraw(transition, opened, charge, now)
        cancelled = self.writer.commit(transition)
        if cancelled is None:
            self._close_review(charge["id"], charge["merchant"])
            return True
        if cancelled.failed_at(0):
            return False
        raise UnknownDispute(f"charge {charge['id']} cannot be disputed in its state")

    def _close_review(self, charge_id: str, merchant_id: str) -> None:
        """A disputed payment leaves nothing to review: its review closes as `disputed`.
        After the dispute's commit, not in it (closing an already closed review is no
        change, and must not undo the dispute), and only by the delivery that opened the
        dispute, so a redelivered notice closes nothing twice. The charge is read again:
        the look after the authorization may have opened its review since our read. One
        left open by a failure here is only a review a person closes."""
        review_id = None
        try:
            charge = self._read(charge_pk(charge_id), "CHARGE")
            review_id = charge.get("review") if charge else None
            if not review_id:
                return
            merchant = get_merchant(self.store, merchant_id)
            assert merchant is not None, "a charge always has its merchant"
            ReviewService(self.store, self.clock).close(
                None, review_id, "disputed", merchant=merchant
            )
        except (ApiError, StoreUnavailable) as exc:
            log.warning("review %s of charge %s left open: %s", review_id, charge_id, exc)

    def _withdraw(
        self, transition: Transition, dispute: dict[str, Any], charge: dict[str, Any], now: float
    ) -> None:
        """A chargeback's money: out of the merchant's balance, with the dispute fee; the
        charge is not refundable while it stands. Mutates the transition and `dispute`'s
        last change (the dispute item's new balance transaction)."""
        merchant, cur, amount = dispute["merchant"], dispute["currency"], dispute["amount"]
        fee = dispute_fee(self.rates, charge.get("settlement_currency") or cur)
        txn_id = withdrawal_txn_id(dispute["id"])
        journal = ledger.Journal(
            id=derived_id("jnl", dispute["id"], "withdrawal"),
            currency=cur,
            entries=ledger.dispute_withdrawal_entries(merchant, cur, amount, fee),
            charge_id=charge["id"],
            merchant_id=merchant,
            operation="dispute.withdrawal",
            created=int(now),
            source=dispute["id"],
        )
        # At the charge's rate; the market's move since is ours.
        moved = fx.movement(
            journal,
            charge,
            amount=amount,
            leaving=True,
            market_rate=lambda: self._market_rate(charge),
            fee=fee,
        )
        txn_items = balance.transaction_items(
            txn_id,
            merchant_id=merchant,
            kind="adjustment",
            source=dispute["id"],
            amount=-moved.amount,
            fee=fee,
            currency=moved.currency,
            now=now,
            description=f"Chargeback withdrawal for {charge['id']}",
            reporting_category="dispute",
            fee_description="Dispute fee",
            presentment=(amount, cur),
            exchange_rate=moved.exchange_rate,
        )
        transition.records.extend(txn_items)
        transition.journals.extend(moved.journals)
        snapshot = BalanceTransaction.from_item(txn_items[0]).snapshot()
        self._record_txn(transition, txn_id, snapshot)
        charge_change = next(c for c in transition.changes if c.sk == "CHARGE")
        charge_change.set["chargeback"] = dispute["id"]
        dispute["is_charge_refundable"] = False
        dispute["balance_transactions"] = {
            **dispute.get("balance_transactions", {}),
            txn_id: snapshot,
        }
        withdrawn = Dispute.from_item(dispute)
        transition.events.append(
            Announcement(merchant, "charge.dispute.funds_withdrawn", withdrawn)
        )

    @staticmethod
    def _record_txn(transition: Transition, txn_id: str, snapshot: dict[str, Any]) -> None:
        """The balance transaction on the dispute item the transition creates or changes."""
        change = transition.changes[0]
        if change.create is not None:
            change.create["balance_transactions"] = {
                **change.create["balance_transactions"],
                txn_id: snapshot,
            }
            change.create["is_charge_refundable"] = False
        else:
            change.set[f"balance_transactions.{txn_id}"] = snapshot

    def _follow(self, item: dict[str, Any], status: str) -> bool:
        """Move the dispute to the processor's `status`. False if another change got there
        first (read again and retry); True when done or nothing was to be done."""
        current = item["status"]
        if status == current or current in CLOSED or status not in STATUSES:
            return True  # a repeat, a stale notice after the end, or a status we do not know
        if current in (NEEDS_RESPONSE, UNDER_REVIEW) and status.startswith("warning_"):
            return True  # a chargeback never goes back to being an inquiry
        if status in (UNDER_REVIEW, WARNING_UNDER_REVIEW) and (
            current not in AWAITING_RESPONSE or item.get("pending")
        ):
            return True  # a submission we recorded, or one whose answer we are committing
        if status == WARNING_UNDER_REVIEW and current == WARNING_NEEDS_RESPONSE:
            return self._move(item, status, "submitted", None)
        if status == UNDER_REVIEW:
            if current != NEEDS_RESPONSE:  # an inquiry escalated and already answered
                return self._escalate(item, then=UNDER_REVIEW)
            return self._move(item, status, "submitted", None)
        if status == NEEDS_RESPONSE:
            return self._escalate(item)
        if status == WON:
            if item["is_charge_refundable"] and not item["balance_transactions"]:
                return self._escalate(item, then=WON)  # escalated and won, unseen between
            return self._reinstate(item)
        if status in (LOST, WARNING_CLOSED):
            if status == LOST and current.startswith("warning_"):
                return self._escalate(item, then=LOST)
            return self._move(item, status, "closed", None)
        return True

    def _move(
        self, item: dict[str, Any], status: str, how: str, caller: Caller | None, **fields: Any
    ) -> bool:
        """A change of status with no money: the dispute's events, and off the deadline
        index once it no longer waits for a response."""
        remove: tuple[str, ...] = ()
        if status in CLOSED:  # nothing is due any more, and nothing left to send
            remove = (*DUE_KEYS, "pending")
        after = {**_applied(item, fields), "status": status, "version": item["version"] + 1}
        if status in CLOSED:
            after.pop("pending", None)
        event = "charge.dispute.closed" if status in CLOSED else "charge.dispute.updated"
        transition = Transition(
            [status_change(item, f"dispute.{how}", status, set=fields, remove=remove)],
            caller,
            [
                Announcement(
                    item["merchant"],
                    event,
                    Dispute.from_item(after),
                    operation=f"{event}:{after['version']}",
                    previous=Dispute.from_item(item),
                )
            ],
        )
        return self.writer.commit(transition) is None

    def _escalate(self, item: dict[str, Any], *, then: str | None = None) -> bool:
        """An inquiry becomes a chargeback: its money is withdrawn now. `then` is where the
        network has taken it since (a decision we learnt of before the escalation)."""
        charge = self._read(charge_pk(item["charge"]), "CHARGE")
        assert charge is not None, "a dispute always has its charge"
        now = self.clock()
        due_by = int(now) + 8 * 24 * 60 * 60
        escalated = {
            **item,
            "status": NEEDS_RESPONSE,
            "version": item["version"] + 1,
            "evidence_details": {**item["evidence_details"], "due_by": due_by},
        }
        transition = Transition(
            [
                status_change(
                    item,
                    "dispute.escalate",
                    NEEDS_RESPONSE,
                    set={
                        "is_charge_refundable": False,
                        "evidence_details.due_by": due_by,
                        **due_keys(DUE_DISPUTE, item["id"], due_by),
                    },
                ),
                Change(
                    charge["pk"],
                    "CHARGE",
                    charge["id"],
                    f"dispute.escalate:{item['id']}",
                    CAPTURED,
                    from_state=CAPTURED,
                    set={},
                ),
            ],
            events=[
                Announcement(
                    item["merchant"],
                    "charge.dispute.updated",
                    Dispute.from_item(escalated),
                    operation=f"charge.dispute.updated:{escalated['version']}",
                    previous=Dispute.from_item(item),
                )
            ],
        )
        self._withdraw(transition, escalated, charge, now)
        if self.writer.commit(transition) is not None:
            return False
        if then is None:
            return True
        fresh = self._read(item["pk"], "DISPUTE")
        assert fresh is not None
        return self._follow(fresh, then)

    def _reinstate(self, item: dict[str, Any]) -> bool:
        """A won chargeback: the amount back to the merchant; the charge refundable again."""
        merchant, cur, amount = item["merchant"], item["currency"], item["amount"]
        charge = self._read(charge_pk(item["charge"]), "CHARGE")
        assert charge is not None, "a dispute always has its charge"
        now = self.clock()
        txn_id = reinstatement_txn_id(item["id"])
        journal = ledger.Journal(
            id=derived_id("jnl", item["id"], "reinstatement"),
            currency=cur,
            entries=ledger.dispute_reinstatement_entries(merchant, cur, amount),
            charge_id=charge["id"],
            merchant_id=merchant,
            operation="dispute.reinstatement",
            created=int(now),
            source=item["id"],
        )
        moved = fx.movement(
            journal,
            charge,
            amount=amount,
            leaving=False,
            market_rate=lambda: self._market_rate(charge),
        )
        txn_items = balance.transaction_items(
            txn_id,
            merchant_id=merchant,
            kind="adjustment",
            source=item["id"],
            amount=moved.amount,
            fee=0,
            currency=moved.currency,
            now=now,
            description=f"Chargeback reversal for {charge['id']}",
            reporting_category="dispute_reversal",
            presentment=(amount, cur),
            exchange_rate=moved.exchange_rate,
        )
        snapshot = BalanceTransaction.from_item(txn_items[0]).snapshot()
        won = {
            **item,
            "status": WON,
            "version": item["version"] + 1,
            "is_charge_refundable": True,
            "balance_transactions": {**item["balance_transactions"], txn_id: snapshot},
        }
        transition = Transition(
            [
                status_change(
                    item,
                    "dispute.won",
                    WON,
                    set={"is_charge_refundable": True, f"balance_transactions.{txn_id}": snapshot},
                    remove=(*DUE_KEYS, "pending"),
                ),
                Change(
                    charge["pk"],
                    "CHARGE",
                    charge["id"],
                    f"dispute.won:{item['id']}",
                    CAPTURED,
                    from_state=CAPTURED,
                    remove=("chargeback",),
                ),
            ],
            events=[
                Announcement(merchant, "charge.dispute.funds_reinstated", Dispute.from_item(won)),
                Announcement(
                    merchant,
                    "charge.dispute.closed",
                    Dispute.from_item(won),
                    operation=f"charge.dispute.closed:{won['version']}",
                    previous=Dispute.from_item(item),
                ),
            ],
            journals=moved.journals,
            records=txn_items,
        )
        return self.writer.commit(transition) is None

    # ---- from the merchant ----------------------------------------------------------------

    def retrieve(self, merchant: Merchant, dispute_id: str) -> Dispute:
        return Dispute.from_item(self.owned(merchant.id, dispute_id))

    def owned(self, merchant_id: str, dispute_id: str) -> dict[str, Any]:
        return listing.get_owned(self.store, merchant_id, dispute_id, "du", param="dispute")

    def list(
        self,
        merchant: Merchant,
        *,
        limit: int,
        starting_after: str | None,
        ending_before: str | None,
        created: listing.Created | None = None,
        facets: dict[str, list[str]] | None = None,
    ) -> Page[Dispute]:
        return listing.page(
            self.store,
            merchant.id,
            "du",
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
            created=created,
            facets=facets,
        ).of(Dispute.from_item)

    def update(self, caller: Caller, dispute_id: str, params: DisputeUpdateParams) -> Dispute:
        """Stage evidence and metadata; with `submit` (the default), send the evidence."""
        item = self.owned(caller.merchant.id, dispute_id)
        evidence = params.evidence.as_text() if params.evidence is not None else {}
        if item.get("pending"):
            item = self.finish_pending(item, caller)
        if item["status"] in CLOSED:
            raise InvalidRequestError("This dispute is already closed.", param="dispute")
        staged = {**item["evidence"], **evidence}
        staged = {key: value for key, value in staged.items() if value}
        submit = params.submit and item["status"] in AWAITING_RESPONSE
        if params.submit and not submit and evidence:
            raise InvalidRequestError(
                f"Dispute {dispute_id} is {item['status']}: its evidence was already submitted.",
                param="evidence",
                code="dispute_already_submitted",
            )
        fields: dict[str, Any] = {"evidence": staged}
        if evidence:
            fields["evidence_details.has_evidence"] = True
        if params.metadata is not None:
            fields["metadata"] = merged_metadata(item.get("metadata") or {}, params.metadata)
        if not submit:
            if not self._move(item, item["status"], "stage", caller, **fields):
                raise ConflictError(f"Dispute {dispute_id} changed meanwhile; retry.")
            return self.retrieve(caller.merchant, dispute_id)
        return self._respond(caller, item, "submit", fields)

    def close(self, caller: Caller, dispute_id: str) -> Dispute:
        """Accept the dispute: it is lost (an inquiry: closed). Irreversible."""
        item = self.owned(caller.merchant.id, dispute_id)
        if item.get("pending"):
            item = self.finish_pending(item, caller)
        if item["status"] in CLOSED:
            raise InvalidRequestError("This dispute is already closed.", param="dispute")
        return self._respond(caller, item, "close", {})

    def _respond(
        self, caller: Caller | None, item: dict[str, Any], operation: str, fields: dict[str, Any]
    ) -> Dispute:
        """Write-ahead: the operation, its processor key and what it sends are stored on the
        dispute (in the resolver's due index) before the processor is called."""
        number = item["evidence_details"]["submission_count"] + (operation == "close")
        pending = {
            "operation": operation,
            "processor_key": f"{item['id']}:{operation}:{number}",
            "evidence": fields.get("evidence", item["evidence"]),
            "request_id": caller.request_id if caller else None,
        }
        now = int(self.clock())
        recorded = {**_applied(item, fields), "pending": pending, "version": item["version"] + 1}
        wish = status_change(
            item,
            f"dispute.{operation}.request",
            item["status"],
            set={**fields, "pending": pending, **due_keys(DUE_PROCESSOR, item["id"], now)},
        )
        if self.writer.commit(Transition([wish], caller)) is not None:
            raise ConflictError(f"Dispute {item['id']} changed meanwhile; retry.")
        return Dispute.from_item(self.finish_pending(recorded, caller))

    def finish_pending(self, item: dict[str, Any], caller: Caller | None) -> dict[str, Any]:
        """Make (again, under the same key) the processor call a dispute records as pending,
        and commit its answer. Returns the dispute as it then is."""
        pending = item["pending"]
        try:
            if pending["operation"] == "submit":
                answer = self.processor.submit_dispute_evidence(
                    idempotency_key=pending["processor_key"],
                    dispute_id=item["processor_dispute"],
                    evidence=dict(pending["evidence"]),
                )
            else:
                answer = self.processor.close_dispute(
                    idempotency_key=pending["processor_key"],
                    dispute_id=item["processor_dispute"],
                )
        except ProcessorUnavailable as exc:
            raise processor_unavailable() from exc  # stays pending; a retry finishes it
        except ProcessorRejected:
            # Decided meanwhile (the network closed it, or escalated it): what it is now.
            answer = self.processor.get_dispute(item["processor_dispute"])
            self._clear_pending(item, caller)
            fresh = self._read(item["pk"], "DISPUTE")
            assert fresh is not None
            self.receive(answer)
            return self._read(item["pk"], "DISPUTE") or fresh
        self._commit_response(item, caller, answer)
        return self._read(item["pk"], "DISPUTE") or item

    def _clear_pending(self, item: dict[str, Any], caller: Caller | None) -> None:
        due_by = item["evidence_details"].get("due_by")
        waiting = due_by and item["status"] in AWAITING_RESPONSE
        restore = due_keys(DUE_DISPUTE, item["id"], due_by) if waiting else {}
        change = status_change(
            item, "dispute.pending.clear", item["status"], set=restore, remove=("pending",)
        )
        self.writer.commit(Transition([change], caller))

    def _commit_response(
        self, item: dict[str, Any], caller: Caller | None, answer: ProcessorDispute
    ) -> None:
        operation = item["pending"]["operation"]
        if operation == "submit":
            status = WARNING_UNDER_REVIEW if item["status"].startswith("warning_") else UNDER_REVIEW
            fields: dict[str, Any] = {
                "evidence_details.submission_count": item["evidence_details"]["submission_count"]
                + 1,
                "evidence_details.has_evidence": True,
            }
        else:
            status = WARNING_CLOSED if item["status"].startswith("warning_") else LOST
            fields = {}
        after = {**_applied(item, fields), "status": status, "version": item["version"] + 1}
        after.pop("pending")
        event = "charge.dispute.closed" if status in CLOSED else "charge.dispute.updated"
        change = status_change(
            item, f"dispute.{operation}", status, set=fields, remove=("pending", *DUE_KEYS)
        )
        transition = Transition(
            [change],
            caller,
            [
                Announcement(
                    item["merchant"],
                    event,
                    Dispute.from_item(after),
                    operation=f"{event}:{after['version']}",
                    previous=Dispute.from_item({**item, "pending": None}),
                )
            ],
        )
        if self.writer.commit(transition) is not None:
            log.info("dispute %s was settled meanwhile", item["id"])
            return
        if answer.status != status and answer.status in CLOSED:
            fresh = self._read(item["pk"], "DISPUTE")
            if fresh is not None:
                self._follow(fresh, answer.status)  # already decided by the network

    # ---- the evidence deadline --------------------------------------------------------------

    def past_due(self, dispute_id: str, as_of: int) -> str:
        """A dispute whose evidence deadline has passed: staged evidence is submitted, as the
        merchant prepared it; with none, the dispute is accepted (lost). Once."""
        item = self._read(dispute_pk(dispute_id), "DISPUTE")
        if item is None or item["status"] not in AWAITING_RESPONSE:
            return "already settled"
        due_by = item["evidence_details"].get("due_by")
        if due_by is None or due_by > as_of:
            return "not due"
        if item.get("pending"):
            self.finish_pending(item, None)
            return "settled"
        marked = {"evidence_details.past_due": True}
        if not self._move(item, item["status"], "past_due", None, **marked):
            return "changed meanwhile"
        item = self._read(item["pk"], "DISPUTE") or item
        if item["evidence_details"].get("has_evidence"):
            self._respond(None, item, "submit", {})
            return "submitted"
        self._respond(None, item, "close", {})
        return "closed"
