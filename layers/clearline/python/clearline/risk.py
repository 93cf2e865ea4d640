"""How risky a charge looks before the processor is called: Radar's `risk_score` (0-99) and
`risk_level`, which the default rules and the merchant's own rules read.

Clearline's scorer is deterministic, so that a merchant's tests and ours can count on it:
Stripe's risk test cards score as Stripe documents them, and any other card scores from a
hash of what identifies the payer, always within `normal`. A model would take its place
behind `RiskScorer` without anything else changing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from clearline.radar_rules import Rule, parse

RiskLevel = Literal["normal", "elevated", "highest"]
ELEVATED_AT = 65  # Radar's default thresholds
HIGHEST_AT = 75


@dataclass(frozen=True)
class RiskAssessment:
    score: int
    # A card the networks already know as fraudulent: blocked whatever the merchant's
    # rules allow, as Stripe blocks 4100 0000 0000 0019.
    always_block: bool = False

    @property
    def level(self) -> RiskLevel:
        if self.score >= HIGHEST_AT:
            return "highest"
        return "elevated" if self.score >= ELEVATED_AT else "normal"

    def as_item(self) -> dict[str, Any]:
        return {"score": self.score, "level": self.level, "always_block": self.always_block}


@dataclass(frozen=True)
class Payer:
    """What the scorer sees of a charge: the card (its fingerprint, or the test token that
    names it) and the email."""

    token: str | None
    fingerprint: str | None
    email: str | None


class RiskScorer(Protocol):
    def assess(self, payer: Payer) -> RiskAssessment: ...


# Stripe's risk test cards, by the alias that names each (the vault knows their numbers).
RISK_TEST_CARDS: dict[str, RiskAssessment] = {
    "tok_riskLevelElevated": RiskAssessment(70),
    "tok_riskLevelHighest": RiskAssessment(85),
    "tok_radarBlock": RiskAssessment(95, always_block=True),
    "tok_chargeDeclinedFraudulent": RiskAssessment(95, always_block=True),
}
ORDINARY_SCORE_RANGE = 50  # every other card scores below this: normal


class DeterministicScorer:
    """Scores Stripe's risk test cards as documented (a token, or a card stored from the same
    number: both carry the vault's fingerprint of it) and everything else from a hash."""

    def __init__(self, fingerprint_of: Callable[[str], str | None] | None = None) -> None:
        self.fingerprint_of = fingerprint_of
        self._by_fingerprint: dict[str, RiskAssessment] | None = None

    def _test_fingerprints(self) -> dict[str, RiskAssessment]:
        if self._by_fingerprint is None:
            found: dict[str, RiskAssessment] = {}
            if self.fingerprint_of is not None:
                for alias, assessment in RISK_TEST_CARDS.items():
                    fingerprint = self.fingerprint_of(alias)
                    if fingerprint:
                        found[fingerprint] = assessment
            # Kept only once every alias answered: a vault briefly away is asked again.
            if len(found) == len(RISK_TEST_CARDS) or self.fingerprint_of is None:
                self._by_fingerprint = found
            return found
        return self._by_fingerprint

    def assess(self, payer: Payer) -> RiskAssessment:
        if payer.token is not None:
            named = RISK_TEST_CARDS.get(payer.token.replace("pm_card_", "tok_", 1))
            if named is not None:
                return named
        if payer.fingerprint is not None:
            known = self._test_fingerprints().get(payer.fingerprint)
            if known is not None:
                return known
        seed = f"{payer.fingerprint or payer.token or ''}|{(payer.email or '').lower()}"
        digest = hashlib.sha256(seed.encode()).digest()
        return RiskAssessment(int.from_bytes(digest[:4], "big") % ORDINARY_SCORE_RANGE)


# Radar's default rules, by Stripe's ids: they run after the merchant's own (an allow rule of
# the merchant's lets an elevated or highest-risk charge through; nothing lets through a card
# that is always blocked).
BLOCK_IF_HIGHEST_RISK = parse("Block if :risk_level: = 'highest'", "block_if_high_risk")
REVIEW_IF_ELEVATED_RISK = parse(
    "Review if :risk_level: = 'elevated'", "manual_review_if_elevated_risk"
)
DEFAULT_RULES: tuple[Rule, ...] = (BLOCK_IF_HIGHEST_RISK, REVIEW_IF_ELEVATED_RISK)
DEFAULT_RULE_REASONS = {
    BLOCK_IF_HIGHEST_RISK.id: "highest_risk_level",
    REVIEW_IF_ELEVATED_RISK.id: "elevated_risk_level",
}
