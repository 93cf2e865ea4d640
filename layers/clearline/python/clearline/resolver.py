"""The resolver: settles every money operation left pending, to what the processor did.

A pending record is the write-ahead of a processor call whose answer was never committed:
the processor timed out, the function died, or the commit failed. Each names the
processor idempotency key its call uses, so the resolver can always find out:

- a pending charge: the processor is asked what it committed under the key. Nothing means
  it never saw the call, and the charge fails (nobody was charged); an answer is committed
  as if the call had just returned. A charge whose commit the store refused for good is
  compensated at the processor (voided or refunded) and recorded as failed.
- a pending capture, void or refund, a dispute's evidence or acceptance, or a payout's
  transfer to the bank: the call is made again with the same key. The
  processor returns what it did the first time, or does it now if it never saw it (what
  the merchant asked for), and the answer is committed.

It runs on a schedule; the API does the same for a retried request. It also finishes what
the processor's rate limit held back: a refund answered `pending` for want of capacity.
Records younger than the grace period are left alone: their request may still be at the
processor.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from clearline.charges import DUE_PROCESSOR, OP_PENDING, PENDING, ChargeService
from clearline.disputes import DisputeService
from clearline.errors import ServiceUnavailableError
from clearline.payment_intents import REQUIRES_ACTION, PaymentIntentService
from clearline.payouts import PayoutService
from clearline.processor import Authorization, ProcessorBusy, ProcessorUnavailable
from clearline.refunds import RefundService
from clearline.scheduling import due_items

log = logging.getLogger(__name__)

# Longer than the api function's timeout (29 s) plus its processor timeout: no request
# that wrote a record this old can still be talking to the processor.
PENDING_GRACE_SECONDS = 60
# A record still pending this long after it was written needs a person: it is counted as
# unresolved, which the UnresolvedPendingOperations alarm watches.
UNRESOLVED_AFTER_SECONDS = 15 * 60

OUTCOMES = ("settled", "failed", "unreachable", "errors", "unresolved")


class Resolver:
    def __init__(
        self,
        charges: ChargeService,
        refunds: RefundService,
        payouts: PayoutService | None = None,
    ) -> None:
        self.charges = charges
        self.payouts = payouts
        self.refunds = refunds
        self.store = charges.store
        self.payment_intents = PaymentIntentService(self.store, charges, refunds)
        self.disputes = DisputeService(self.store, charges.processor, charges.shards)

    def run(self, now: int) -> dict[str, int]:
        """One pass over everything pending past the grace period. Each record is settled on
        its own: one that cannot be (a poison record) is counted and logged, never in the
        way of the rest."""
        outcome: Counter[str] = Counter(dict.fromkeys(OUTCOMES, 0))
        for record in due_items(self.store, DUE_PROCESSOR, now - PENDING_GRACE_SECONDS):
            try:
                outcome[self.resolve(record, now)] += 1
                continue
            # Unreachable, or no capacity under its rate limit (nothing sent): next pass.
            except (ProcessorUnavailable, ProcessorBusy, ServiceUnavailableError) as exc:
                outcome["unreachable"] += 1
                log.warning("resolver: %s left pending: %s", _name(record), exc)
            except Exception:
                outcome["errors"] += 1
                log.exception("resolver: %s could not be settled", _name(record))
            written_at = int(record["due_sk"].split("#", 1)[0])
            if written_at <= now - UNRESOLVED_AFTER_SECONDS:
                outcome["unresolved"] += 1
        return dict(outcome)

    def resolve(self, record: dict[str, Any], now: int = 0) -> str:
        """Settle one pending record; returns "settled", or "failed" when the processor never
        saw the call and nothing moved."""
        if record["sk"] == "CHARGE":
            return self._charge(record)
        if record["sk"] == "PI" and record["state"] == REQUIRES_ACTION:
            self.payment_intents.settle_authentication(record, now)
            return "settled"
        if record["sk"] == "DISPUTE":  # a response to a dispute, sent or not
            if record.get("pending"):
                self.disputes.finish_pending(record, None)
            return "settled"
        if record["sk"] == "PAYOUT":  # sent to the bank, its acceptance not committed
            if self.payouts is None:
                raise ProcessorUnavailable("this resolver has no bank to ask")
            self.payouts.send(record["id"])
            return "settled"
        if record["sk"] == "PI":  # an intent left processing: its charge, again, then follow it
            self.payment_intents.follow(self.payment_intents.resume(record, None))
            return "settled"
        charge = self.store.get(record["pk"], "CHARGE")
        assert charge is not None, "an operation record always has its charge"
        if record["status"] != OP_PENDING:
            return "settled"
        operation = record["operation"]
        if operation == "capture":
            self.charges.settle_capture(charge, record, None)
        elif operation == "void" and record["cause"] == "refund":
            self.refunds.settle_void(None, charge, record)
        elif operation == "void":
            self.charges.settle_void(charge, record, None)
        elif operation.startswith("refund#"):
            refund = self.store.get(f"REFUND#{record['refund']}", "REFUND")
            assert refund is not None, "a refund's operation record always has its refund"
            self.refunds.settle(None, refund, record, charge)
        else:
            raise ValueError(f"unknown operation {operation!r}")
        return "settled"

    def _charge(self, charge: dict[str, Any]) -> str:
        if charge["state"] != PENDING:
            return "settled"
        if charge.get("compensation"):
            self.charges.finish_compensation(charge)
            return "failed"
        if (charge.get("screening") or {}).get("action") == "block":
            self.charges.authorize_pending(charge, None)  # blocked: never sent, it fails
            return "failed"
        key = charge["processor_key"]
        committed = self.charges.processor.lookup(key)
        # Nothing there yet; a retry could still be on its way with the key. Revoking it
        # first makes "nothing" final, or shows what the retry committed.
        if committed is None and self.charges.processor.revoke(key):
            self.charges.fail_pending(
                charge,
                "The card processor did not complete this payment; the card was not charged.",
            )
            return "failed"
        if committed is None:
            committed = self.charges.processor.lookup(key)
        if committed is None:
            raise ProcessorUnavailable(f"the processor says it committed {key}, but shows nothing")
        # A decline settles as a failed charge: settled all the same.
        self.charges.commit_authorization(charge, None, Authorization.model_validate(committed))
        return "settled"


def _name(record: dict[str, Any]) -> str:
    return f"{record.get('id') or record.get('charge')} {record['sk']}"
