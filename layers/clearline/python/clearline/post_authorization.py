"""The second look at a payment, after the processor approved it.

The authorization tells more than was known before it: the issuer's CVC check, above all.
A second scorer reads it, and the merchant's rules that name what only this look knows
(`:cvc_check:`, or the score itself: `:risk_level:`, `:risk_score:`) run again, with
Radar's order. A payment found risky opens a review; a merchant's block rule that matches
reverses it: an uncaptured authorization is released, a captured one refunded as
fraudulent, and its outcome says `reversed_after_approval`.

Each step is idempotent, so a look cut short anywhere is finished by the next delivery of
the same event: the review and the outcome are one conditional write, and the reversal is
a refund with a key derived from the charge.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from clearline.audit import Caller
from clearline.charges import AUTHORIZED, CAPTURED, ChargeService, charge_pk
from clearline.errors import ConflictError
from clearline.fraud_rules import RuleBook
from clearline.ids import derived_id
from clearline.models import Charge
from clearline.params import RefundCreateParams
from clearline.radar_rules import Rule, Value, decide, parse
from clearline.refunds import RefundService
from clearline.reviews import ReviewService, opening, review_id_for
from clearline.risk import RiskAssessment
from clearline.transitions import Change, Transition
from clearline.value_lists import ValueListService

log = logging.getLogger(__name__)

# What only the look after the authorization knows: rules naming none of it already ran.
AFTER_AUTHORIZATION_ATTRIBUTES = frozenset({"cvc_check", "risk_level", "risk_score"})
CVC_FAILED_SCORE = 80  # a card whose CVC did not match: highest risk
REVIEW_DEFAULT = "manual_review_if_elevated_risk"  # turning it off turns this look's off
REVIEW_IF_RISKY = parse(
    "Review if :risk_level: != 'normal'", "manual_review_if_risky_after_authorization"
)
Verdict = Literal["passed", "reviewed", "reversed", "skipped"]


def second_score(charge: dict[str, Any]) -> RiskAssessment:
    """The score with the issuer's answer in: the first score, raised by a failed CVC."""
    first = int((charge.get("outcome") or {}).get("risk_score") or 0)
    cvc = ((charge.get("card") or {}).get("checks") or {}).get("cvc_check")
    return RiskAssessment(max(first, CVC_FAILED_SCORE) if cvc == "fail" else first)


def _attributes(charge: dict[str, Any], assessment: RiskAssessment) -> dict[str, Value]:
    card = charge.get("card") or {}
    email = charge.get("receipt_email")
    return {
        "amount": float(charge["amount"]),
        "currency": charge["currency"],
        "customer": charge.get("customer"),
        "email": email,
        "email_domain": email.rsplit("@", 1)[-1] if email else None,
        "card_fingerprint": card.get("fingerprint"),
        "card_brand": card.get("brand"),
        "card_country": card.get("country"),
        "card_funding": card.get("funding"),
        "cvc_check": (card.get("checks") or {}).get("cvc_check"),
        "risk_level": assessment.level,
        "risk_score": float(assessment.score),
    }


def _settled_otherwise(charge: dict[str, Any]) -> bool:
    """Disputed, or refunded in full: a reversal could take nothing back."""
    shown = Charge.from_item(charge)
    return shown.disputed or shown.fully_refunded


def _reversed(charge: dict[str, Any]) -> bool:
    return (charge.get("outcome") or {}).get("network_status") == "reversed_after_approval"


class AfterAuthorization:
    def __init__(self, charges: ChargeService, refunds: RefundService) -> None:
        self.charges = charges
        self.refunds = refunds
        self.reviews = ReviewService(charges.store, charges.clock)
        self.book = RuleBook(charges.store)
        self.lists = ValueListService(charges.store)

    def look(self, charge_id: str) -> Verdict:
        charge = self.charges.store.get(charge_pk(charge_id), "CHARGE")
        if charge is not None and _reversed(charge):
            self._reverse(charge)  # marked, and maybe cut short after: finish it
            return "reversed"
        if charge is None or charge["state"] not in (AUTHORIZED, CAPTURED):
            return "skipped"  # declined, blocked, or already released
        if _settled_otherwise(charge):
            return "skipped"  # refunded or disputed meanwhile: nothing left to reverse
        if (charge.get("screening") or {}).get("action") == "allow":
            return "passed"  # the merchant's allow rule let this payer through: it stands
        assessment = second_score(charge)
        merchant_id = charge["merchant"]
        # The merchant's allow rules keep their say (Radar's order), beside the rules that
        # read what only this look knows; the others already ran before the processor.
        ruleset = self.book.read(merchant_id)
        rules: tuple[Rule, ...] = tuple(
            rule
            for rule in ruleset.rules
            if rule.action == "allow" or rule.attributes & AFTER_AUTHORIZATION_ATTRIBUTES
        )
        # A merchant that turned Radar's review of risky payments off gets none from here.
        if REVIEW_DEFAULT not in ruleset.disabled_defaults:
            rules = (*rules, REVIEW_IF_RISKY)
        aliases = frozenset().union(*(rule.value_lists for rule in rules))
        found = {alias: self.lists.values_of(merchant_id, alias) for alias in aliases}
        lists = {alias: values for alias, values in found.items() if values is not None}
        decided = decide(rules, _attributes(charge, assessment), lists)
        if decided.action in (None, "allow") or decided.rule is None:
            return "passed"
        reverse = decided.action == "block"
        self._mark(charge, assessment, decided.rule, reverse=reverse)
        if not reverse:
            return "reviewed"
        self._reverse(charge)
        return "reversed"

    def _mark(
        self, charge: dict[str, Any], assessment: RiskAssessment, rule: Rule, *, reverse: bool
    ) -> None:
        """Open the charge's review and, for a reversal, say so in its outcome: one write,
        guarded by the charge's state; done already, it is left as it is."""
        changes: dict[str, Any] = {}
        change_list = []
        events = []
        if not charge.get("review"):
            review, opened = opening(charge, self.charges.clock())
            changes["review"] = review.object_id
            change_list.append(review)
            events.append(opened)
        if reverse and not _reversed(charge):
            changes["outcome"] = {
                "network_status": "reversed_after_approval",
                "reason": "rule",
                "risk_level": assessment.level,
                "risk_score": assessment.score,
                "rule": {"id": rule.id, "action": rule.action, "predicate": rule.predicate},
                "seller_message": "Clearline reversed this payment after its authorization: it "
                f"matched your rule '{rule.action} if {rule.predicate}'.",
                "type": "blocked",
            }
            changes["fraud_details"] = {"stripe_report": "fraudulent"}
        if not changes:
            return
        marked = Change(
            charge["pk"],
            "CHARGE",
            charge["id"],
            "review" if not reverse else "reverse_after_approval",
            charge["state"],
            from_state=charge["state"],
            set=changes,
            # A dispute opened since the read settles the charge otherwise: its review
            # must not open after the dispute closed the rest.
            condition="attribute_not_exists(#disputed) OR #disputed = :not_disputed",
            names={"#disputed": "disputed"},
            values={":not_disputed": False},
        )
        if self.charges.writer.commit(Transition([marked, *change_list], None, events)):
            # The charge moved meanwhile (captured, refunded): the next delivery looks again.
            raise ConflictError(f"Charge {charge['id']} changed while it was looked at again.")

    def _reverse(self, charge: dict[str, Any]) -> None:
        """Release or refund the whole payment, then close its review. A payment the
        merchant refunded, or its customer disputed, before the reversal got to it has
        nothing left to reverse: its review closes for that reason instead."""
        merchant = self.charges.merchant_of(charge["merchant"])
        caller = Caller(merchant, f"req_after_authorization_{charge['id']}")
        key = f"{charge['id']}:reversed_after_approval"
        reason = "refunded_as_fraud"
        current = self.charges.store.get(charge_pk(charge["id"]), "CHARGE") or charge
        ours = derived_id("re", merchant.id, key) in (current.get("refunds") or {})
        if not ours and _settled_otherwise(current):
            reason = "disputed" if Charge.from_item(current).disputed else "refunded"
        else:
            self.refunds.create(
                caller,
                RefundCreateParams(charge=charge["id"], reason="fraudulent"),
                idempotency_key=key,
            )
        self.reviews.close(None, review_id_for(charge["id"]), reason, merchant=merchant)
