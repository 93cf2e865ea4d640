"""Payouts: a merchant's available balance, sent to their bank account.

A payout is created `pending` (by the merchant, or by the daily automatic run) in one
transaction with its journal (available -> payouts in transit) and its balance transaction,
so the money is spoken for at once. Two payouts of one merchant and currency are
serialized on a lock item, so together they never take more than is available. Then it is
sent to the bank asynchronously (a queue and the payout worker), write-ahead like every
partner call: the transfer's idempotency key is stored on the payout before the bank is
called, and the bank's acceptance commits it `in_transit`. On its arrival date the bank
says paid (the cash has left: in transit -> settlement cash) or returned with a failure
code (in transit -> available again, with a `payout_failure` balance transaction). The
bank's daily report is reconciled against the same transitions, so whichever arrives
first settles the payout and the other finds it done.

A pending payout nobody has sent yet can be canceled; once the bank has it, it cannot.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

from clearline import balance, ledger, listing
from clearline.audit import Caller
from clearline.bank import BankClient, Transfer
from clearline.bank_accounts import BankAccounts
from clearline.charges import DUE_KEYS, DUE_PROCESSOR, due_keys
from clearline.errors import (
    ConflictError,
    InvalidRequestError,
    processor_unavailable,
)
from clearline.ids import derived_id
from clearline.merchants import Merchant
from clearline.models import Page, Payout
from clearline.money import check_payable, currency, format_amount
from clearline.params import PayoutCreateParams, PayoutUpdateParams, merged_metadata
from clearline.processor import ProcessorRejected, ProcessorUnavailable
from clearline.store import Store
from clearline.transitions import Announcement, Change, Transition, TransitionWriter, status_change

log = logging.getLogger(__name__)

PENDING, IN_TRANSIT, PAID, FAILED, CANCELED = "pending", "in_transit", "paid", "failed", "canceled"
# The due index's kind for payouts waiting on something: to be sent (pending), or their
# arrival date (in transit).
DUE_PAYOUT = "PAYOUT"
# Standard payouts arrive the next business day; the bank gives the real date on accepting.
ESTIMATED_ARRIVAL_SECONDS = 24 * 60 * 60
# Bank refusals of the transfer itself, as Stripe's payout failure codes.
_REFUSAL_CODES = {
    "invalid_account_number": "invalid_account_number",
    "invalid_routing_number": "could_not_process",
    "invalid_currency": "invalid_currency",
}


def payout_pk(payout_id: str) -> str:
    return f"PAYOUT#{payout_id}"


def _lock_key(merchant_id: str, cur: str) -> tuple[str, str]:
    return f"PAYOUTLOCK#{merchant_id}#{cur}", "LOCK"


class PayoutService:
    def __init__(
        self,
        store: Store,
        accounts: BankAccounts,
        bank: BankClient | None,
        shards: ledger.ShardPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.accounts = accounts
        self.bank = bank
        self.shards = shards or ledger.ShardPolicy()
        self.clock = clock
        self.writer = TransitionWriter(store, self.shards, lambda: self.clock())

    # ---- create -------------------------------------------------------------------------

    def create(self, caller: Caller, params: PayoutCreateParams, *, idempotency_key: str) -> Payout:
        merchant = caller.merchant
        cur = currency(params.currency)
        if params.amount <= 0:
            raise InvalidRequestError(
                "Payout amount must be positive.", param="amount", code="amount_too_small"
            )
        check_payable(params.amount, cur)
        account = self.accounts.get(merchant.id, cur.code)
        if account is None:
            raise InvalidRequestError(
                f"You have no bank account for payouts in {cur.code}.",
                param="currency",
                code="payouts_not_allowed",
            )
        if params.destination is not None and params.destination != account.id:
            # An id in a body that names nothing is the request's mistake: a 400, not a 404.
            raise InvalidRequestError(
                f"No such external account: '{params.destination}'",
                param="destination",
                code="resource_missing",
            )
        payout_id = derived_id("po", merchant.id, idempotency_key)
        details = {
            "description": params.description,
            "statement_descriptor": params.statement_descriptor,
            "metadata": dict(params.metadata),
            "method": params.method,
        }
        return self._create(caller, payout_id, cur.code, params.amount, account.id, details)

    def _create(
        self,
        caller: Caller | None,
        payout_id: str,
        cur: str,
        amount: int,
        destination: str,
        details: dict[str, Any],
        *,
        automatic: bool = False,
        merchant_id: str | None = None,
    ) -> Payout:
        merchant = merchant_id or (caller.merchant.id if caller else "")
        existing = self.store.get(payout_pk(payout_id), "PAYOUT")
        if existing is not None:
            return Payout.from_item(existing)
        lock_pk, lock_sk = _lock_key(merchant, cur)
        lock = self.store.get(lock_pk, lock_sk)
        available = self.available(merchant, cur)
        if amount > available:
            raise InvalidRequestError(
                f"Your available balance ({format_amount(max(available, 0), currency(cur))}) "
                f"is less than the payout ({format_amount(amount, currency(cur))}).",
                param="amount",
                code="balance_insufficient",
            )
        now = self.clock()
        txn_id = derived_id("txn", payout_id, "payout")
        item: dict[str, Any] = {
            "pk": payout_pk(payout_id),
            "sk": "PAYOUT",
            **listing.list_keys(merchant, "po", int(now * 1000), payout_id),
            **due_keys(DUE_PAYOUT, payout_id, int(now)),  # to be sent to the bank
            "id": payout_id,
            "merchant": merchant,
            "amount": amount,
            "currency": cur,
            "automatic": automatic,
            "arrival_date": int(now) + ESTIMATED_ARRIVAL_SECONDS,
            "created": int(now),
            "destination": destination,
            "balance_transaction": txn_id,
            "reconciliation_status": "in_progress" if automatic else "not_applicable",
            "version": 1,
            **{key: value for key, value in details.items() if value is not None},
        }
        # The lock: whoever commits first moves its version; the other read a stale
        # balance and must read again.
        if lock is None:
            lock_change = Change(
                lock_pk,
                lock_sk,
                merchant,
                "payout.lock",
                "open",
                create={"pk": lock_pk, "sk": lock_sk, "version": 1},
                audited=False,
            )
        else:
            lock_change = Change(
                lock_pk,
                lock_sk,
                merchant,
                "payout.lock",
                "open",
                from_state="open",
                add={"version": 1},
                condition="version = :version",
                values={":version": lock["version"]},
                audited=False,
            )
        transition = Transition(
            [
                Change(
                    item["pk"],
                    "PAYOUT",
                    payout_id,
                    "create",
                    PENDING,
                    state_attribute="status",
                    create=item,
                ),
                lock_change,
            ],
            caller,
            [
                Announcement(
                    merchant, "payout.created", Payout.from_item({**item, "status": PENDING})
                )
            ],
            journals=[self._journal(item, "payout", ledger.payout_entries(merchant, cur, amount))],
            records=balance.transaction_items(
                txn_id,
                merchant_id=merchant,
                kind="payout",
                source=payout_id,
                amount=-amount,
                fee=0,
                currency=cur,
                now=now,
                description=details.get("description") or "CLEARLINE PAYOUT",
                settles=False,
                payout=payout_id if automatic else None,
            ),
        )
        cancelled = self.writer.commit(transition)
        if cancelled is None:
            return Payout.from_item({**item, "status": PENDING})
        if cancelled.failed_at(0):
            found = self.store.get(item["pk"], "PAYOUT")
            if found is not None:
                return Payout.from_item(found)
        raise ConflictError("Another payout was being created at the same time; retry.")

    def available(self, merchant_id: str, cur: str) -> int:
        account = ledger.merchant_available(merchant_id, cur)
        return ledger.account_balances(self.store, [account], self.shards)[account].credit_balance

    def _journal(
        self, item: dict[str, Any], operation: str, entries: tuple[ledger.Entry, ...]
    ) -> ledger.Journal:
        return ledger.Journal(
            id=derived_id("jnl", item["id"], operation),
            currency=item["currency"],
            entries=entries,
            charge_id="",
            merchant_id=item["merchant"],
            operation=f"payout.{operation}",
            created=int(self.clock()),
            source=item["id"],
            partition=item["pk"],
        )

    # ---- the automatic daily run -----------------------------------------------------------

    def pay_out_available(self, day: dt.date) -> list[Payout]:
        """Every merchant's available balance in each currency with a bank account, paid out
        once a day: the payout's id derives from the day, so a rerun finds it made."""
        made = []
        for account in self.accounts.all():
            try:
                available = self.available(account.merchant, account.currency)
                if available <= 0:
                    continue
                payout_id = derived_id("po", account.merchant, account.currency, day.isoformat())
                made.append(
                    self._create(
                        None,
                        payout_id,
                        account.currency,
                        available,
                        account.id,
                        {"description": "CLEARLINE PAYOUT"},
                        automatic=True,
                        merchant_id=account.merchant,
                    )
                )
                self.cover(payout_id)
            except Exception:  # one merchant's trouble is not everyone's
                log.exception(
                    "automatic payout of %s in %s failed", account.merchant, account.currency
                )
        return made

    def cover(self, payout_id: str) -> int:
        """Name an automatic payout on every available movement it paid out (those that
        became available before it was made), so `?payout=` lists them; then mark its
        reconciliation completed. Resumable: a movement is named once, and a rerun goes on
        from what is left. Returns how many it named this time."""
        item = self._read(payout_id)
        if item is None or item.get("reconciliation_status") != "in_progress":
            return 0
        named = 0
        while True:
            waiting = self.store.query_index(
                "by_due",
                "due_pk",
                f"UNPAID#{item['merchant']}#{item['currency']}",
                "due_sk",
                before=f"{item['created']:010d}~",
                newest_first=False,
                limit=100,
            )
            for txn in waiting:
                named += self._name_payout(item, txn)
            if len(waiting) < 100:
                break
        after = {**item, "reconciliation_status": "completed"}
        done = Change(
            item["pk"],
            "PAYOUT",
            payout_id,
            "payout.reconciliation_completed",
            "completed",
            from_state="in_progress",
            state_attribute="reconciliation_status",
        )
        event = Announcement(
            item["merchant"], "payout.reconciliation_completed", Payout.from_item(after)
        )
        self.writer.commit(Transition([done], events=[event]))
        return named

    def _name_payout(self, payout: dict[str, Any], txn: dict[str, Any]) -> int:
        created_ms = int(txn["gsi1sk"].split("#", 1)[0])
        facets = {
            "payout": payout["id"],
            "type": txn["type"],
            "source": txn["source"],
            "currency": txn["currency"],
        }
        index = listing.facet_items(
            txn["merchant"], "txn", created_ms, (txn["pk"], "TXN"), txn["id"], facets
        )
        named = Change(
            txn["pk"],
            "TXN",
            txn["id"],
            "payout.cover",
            txn["settlement"],
            from_state=txn["settlement"],
            state_attribute="settlement",
            set={"payout": payout["id"]},
            remove=DUE_KEYS,
            condition="attribute_exists(due_pk)",
            audited=False,
        )
        transition = Transition(
            [named], index_items=[i for i in index if i["sk"] == "FACET#payout"]
        )
        return 1 if self.writer.commit(transition) is None else 0

    # ---- sending and settling ------------------------------------------------------------

    def _read(self, payout_id: str) -> dict[str, Any] | None:
        return self.store.get(payout_pk(payout_id), "PAYOUT")

    def send(self, payout_id: str) -> str:
        """Send a pending payout to the bank, once: write-ahead, then the transfer, then its
        acceptance committed. A retry, or the resolver, makes the same call with the same key."""
        item = self._read(payout_id)
        if item is not None and item.get("reconciliation_status") == "in_progress":
            self.cover(payout_id)  # the daily run was cut short before it named them all
        if item is None or item["status"] != PENDING:
            return "already sent"
        if self.bank is None:
            raise processor_unavailable()
        if not item.get("transfer_key"):
            key = f"{payout_id}:transfer"
            wish = status_change(
                item,
                "payout.send.request",
                PENDING,
                set={"transfer_key": key, **due_keys(DUE_PROCESSOR, payout_id, int(self.clock()))},
            )
            if self.writer.commit(Transition([wish])) is not None:
                return "changed meanwhile"  # canceled, or sent by another worker
            item = {**item, "transfer_key": key, "version": item["version"] + 1}
        account, number = self.accounts.number(item["merchant"], item["currency"])
        try:
            transfer = self.bank.create_transfer(
                idempotency_key=item["transfer_key"],
                amount=item["amount"],
                currency=item["currency"],
                routing_number=account.routing_number,
                account_number=number,
                reference=payout_id,
            )
        except ProcessorUnavailable:
            raise  # stays pending with its key: the retry, or the resolver, asks again
        except ProcessorRejected as exc:
            code = _REFUSAL_CODES.get(exc.code, "could_not_process")
            return "failed" if self._fail(item, code, exc.message) else "changed meanwhile"
        return "sent" if self._accepted(item, transfer) else "changed meanwhile"

    def _accepted(self, item: dict[str, Any], transfer: Transfer) -> bool:
        after = {
            **item,
            "status": IN_TRANSIT,
            "arrival_date": transfer.arrival_date,
            "transfer": transfer.id,
            "version": item["version"] + 1,
        }
        transition = Transition(
            [
                status_change(
                    item,
                    "payout.sent",
                    IN_TRANSIT,
                    set={
                        "arrival_date": transfer.arrival_date,
                        "transfer": transfer.id,
                        **due_keys(DUE_PAYOUT, item["id"], transfer.arrival_date),
                    },
                )
            ],
            events=[self._updated(after, item)],
        )
        return self.writer.commit(transition) is None

    def _updated(self, after: dict[str, Any], before: dict[str, Any]) -> Announcement:
        return Announcement(
            after["merchant"],
            "payout.updated",
            Payout.from_item(after),
            operation=f"payout.updated:{after['version']}",
            previous=Payout.from_item(before),
        )

    def check(self, payout_id: str) -> str:
        """Ask the bank how an in-transit payout ended, and commit it."""
        item = self._read(payout_id)
        if item is None or item["status"] != IN_TRANSIT:
            return "already settled"
        if self.bank is None:
            raise processor_unavailable()
        transfer = self.bank.get_transfer(item["transfer"])
        return self.settle(item, transfer.status, transfer.failure_code, transfer.failure_message)

    def settle(
        self,
        item: dict[str, Any],
        status: str,
        failure_code: str | None = None,
        failure_message: str | None = None,
    ) -> str:
        """Commit what the bank says of an in-transit payout (from asking it, or from its
        report): "paid", "failed", "in transit", or "changed meanwhile"."""
        if status == "in_transit":
            return "in transit"
        if status == "paid":
            return "paid" if self._paid(item) else "changed meanwhile"
        failed = self._fail(item, failure_code or "could_not_process", failure_message)
        return "failed" if failed else "changed meanwhile"

    def _paid(self, item: dict[str, Any]) -> bool:
        merchant, cur, amount = item["merchant"], item["currency"], item["amount"]
        after = {**item, "status": PAID, "version": item["version"] + 1}
        transition = Transition(
            [status_change(item, "payout.paid", PAID, remove=DUE_KEYS)],
            events=[
                Announcement(merchant, "payout.paid", Payout.from_item(after)),
                self._updated(after, item),
            ],
            journals=[
                self._journal(item, "paid", ledger.payout_paid_entries(merchant, cur, amount))
            ],
        )
        return self.writer.commit(transition) is None

    def _fail(self, item: dict[str, Any], code: str, message: str | None) -> bool:
        """The bank refused or returned it: the money is available again."""
        merchant, cur, amount = item["merchant"], item["currency"], item["amount"]
        txn_id = derived_id("txn", item["id"], "payout_failure")
        fields = {
            "failure_code": code,
            "failure_message": message or "The bank could not pay this payout.",
            "failure_balance_transaction": txn_id,
        }
        after = {**item, **fields, "status": FAILED, "version": item["version"] + 1}
        transition = Transition(
            [status_change(item, "payout.failed", FAILED, set=fields, remove=DUE_KEYS)],
            events=[
                Announcement(merchant, "payout.failed", Payout.from_item(after)),
                self._updated(after, item),
            ],
            journals=[
                self._journal(item, "failure", ledger.payout_return_entries(merchant, cur, amount))
            ],
            records=balance.transaction_items(
                txn_id,
                merchant_id=merchant,
                kind="payout_failure",
                source=item["id"],
                amount=amount,
                fee=0,
                currency=cur,
                now=self.clock(),
                description=f"Payout failure ({code})",
                settles=False,
            ),
        )
        return self.writer.commit(transition) is None

    # ---- the merchant's requests -----------------------------------------------------------

    def owned(self, merchant_id: str, payout_id: str) -> dict[str, Any]:
        return listing.get_owned(self.store, merchant_id, payout_id, "po", param="payout")

    def retrieve(self, merchant: Merchant, payout_id: str) -> Payout:
        return Payout.from_item(self.owned(merchant.id, payout_id))

    def update(self, caller: Caller, payout_id: str, params: PayoutUpdateParams) -> Payout:
        item = self.owned(caller.merchant.id, payout_id)
        if params.metadata is None:
            return Payout.from_item(item)
        metadata = merged_metadata(item.get("metadata") or {}, params.metadata)
        after = {**item, "metadata": metadata, "version": item["version"] + 1}
        change = status_change(item, "payout.update", item["status"], set={"metadata": metadata})
        if self.writer.commit(Transition([change], caller, [self._updated(after, item)])):
            raise ConflictError(f"Payout {payout_id} changed meanwhile; retry.")
        return Payout.from_item(after)

    def cancel(self, caller: Caller, payout_id: str) -> Payout:
        """Cancel a pending payout the bank has not been sent: its money is available again."""
        item = self.owned(caller.merchant.id, payout_id)
        if item["automatic"] or item["status"] != PENDING or item.get("transfer_key"):
            why = (
                "automatic payouts cannot be canceled"
                if item["automatic"]
                else "it has already been sent to the bank"
                if item["status"] == PENDING
                else f"it is {item['status']}"
            )
            raise InvalidRequestError(
                f"Payout {payout_id} cannot be canceled: {why}.", code="payout_not_cancelable"
            )
        merchant, cur, amount = item["merchant"], item["currency"], item["amount"]
        txn_id = derived_id("txn", payout_id, "payout_cancel")
        after = {
            **item,
            "status": CANCELED,
            "failure_balance_transaction": txn_id,
            "version": item["version"] + 1,
        }
        transition = Transition(
            [
                status_change(
                    item,
                    "payout.cancel",
                    CANCELED,
                    set={"failure_balance_transaction": txn_id},
                    remove=DUE_KEYS,
                    condition="attribute_not_exists(transfer_key)",
                )
            ],
            caller,
            [
                Announcement(merchant, "payout.canceled", Payout.from_item(after)),
                self._updated(after, item),
            ],
            journals=[
                self._journal(item, "cancel", ledger.payout_return_entries(merchant, cur, amount))
            ],
            records=balance.transaction_items(
                txn_id,
                merchant_id=merchant,
                kind="payout_cancel",
                source=payout_id,
                amount=amount,
                fee=0,
                currency=cur,
                now=self.clock(),
                description="Payout canceled",
                settles=False,
            ),
        )
        if self.writer.commit(transition) is not None:
            fresh = self.owned(caller.merchant.id, payout_id)
            raise InvalidRequestError(
                f"Payout {payout_id} cannot be canceled: it is {fresh['status']}"
                + (" and already sent to the bank." if fresh.get("transfer_key") else "."),
                code="payout_not_cancelable",
            )
        return Payout.from_item(after)

    def list(
        self,
        merchant: Merchant,
        *,
        limit: int,
        starting_after: str | None,
        ending_before: str | None,
        created: listing.Created | None = None,
        status: str | None = None,
        arrival: listing.Created | None = None,
    ) -> Page[Payout]:
        filters: list[tuple[str, str, Any]] = []
        if status:
            filters.append(("status", "=", status))
        if arrival is not None:  # Stripe's arrival_date[gt|gte|lt|lte], as created's
            bounds = (("gt", ">"), ("gte", ">="), ("lt", "<"), ("lte", "<="))
            for name, operator in bounds:
                value = getattr(arrival, name)
                if value is not None:
                    filters.append(("arrival_date", operator, value))
        return listing.page(
            self.store,
            merchant.id,
            "po",
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
            created=created,
            filters=filters,
        ).of(Payout.from_item)
