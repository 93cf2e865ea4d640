"""A merchant's fraud rules, in Radar's language (`radar_rules.py`), kept in one item.

Stripe has no public API for rules (they are managed in its Dashboard), so these are
Clearline's own: operators add and remove them through an IAM-authorized admin route or the
`clearline radar rules` command, and may turn Radar's default rules off for a merchant (as
Stripe lets a merchant disable them) and back on. A rule is parsed when it is added, so a
rule that does not parse is refused with where it goes wrong and is never stored. Every
change moves the item's version on, guarded by the version it read: two operators editing
at once cannot lose one another's change.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from clearline.errors import ConflictError, InvalidRequestError, ResourceMissingError
from clearline.radar_rules import Action, Counter, Rule, RuleSyntaxError, Value, decide, parse
from clearline.risk import (
    BLOCK_IF_HIGHEST_RISK,
    DEFAULT_RULE_REASONS,
    DEFAULT_RULES,
    Payer,
    RiskAssessment,
    RiskScorer,
)
from clearline.store import Store
from clearline.transitions import Change, Transition, TransitionWriter
from clearline.value_lists import ValueListService
from clearline.velocity import ChargeFacts, VelocityCounters, supported

# What the screener knows of a charge before the processor call; a rule naming any other
# attribute could never match, so it is refused when added rather than kept to no effect.
SCREENED_ATTRIBUTES = frozenset(
    {
        "amount",
        "amount_in_usd",
        "currency",
        "customer",
        "email",
        "email_domain",
        "card_fingerprint",
        "card_bin",
        "card_brand",
        "card_country",
        "card_funding",
        # The browser's that gave the card (tokenized it, or made its payment method).
        "ip_address",
        "ip_country",
        "risk_level",
        "risk_score",
        "cvc_check",  # known only after the authorization: read by the second look
    }
)
MAX_RULES = 100
MAX_RULE_LENGTH = 2000
ACTIVE = "active"


def _key(merchant_id: str) -> tuple[str, str]:
    return f"MERCHANT#{merchant_id}", "RADAR_RULES"


DEFAULT_RULE_IDS = tuple(rule.id for rule in DEFAULT_RULES)


@dataclass(frozen=True)
class RuleSet:
    """What one read of a merchant's item says: its own rules, in order, and the ids of
    Radar's default rules it has turned off."""

    rules: tuple[Rule, ...] = ()
    disabled_defaults: frozenset[str] = frozenset()

    @property
    def defaults(self) -> tuple[Rule, ...]:
        """Radar's default rules still on, in their order."""
        return tuple(rule for rule in DEFAULT_RULES if rule.id not in self.disabled_defaults)


class RuleBook:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.writer = TransitionWriter(store, clock=lambda: self.clock())

    def _item(self, merchant_id: str) -> dict[str, Any] | None:
        return self.store.get(*_key(merchant_id))

    def read(self, merchant_id: str) -> RuleSet:
        """The merchant's rules and the defaults it turned off, from one read."""
        item = self._item(merchant_id) or {}
        stored = item.get("rules") or []
        return RuleSet(
            tuple(parse(rule["text"], rule["id"]) for rule in stored),
            frozenset(item.get("disabled_defaults") or ()),
        )

    def rules(self, merchant_id: str) -> tuple[Rule, ...]:
        """The merchant's rules, in the order they were added."""
        return self.read(merchant_id).rules

    def disabled_defaults(self, merchant_id: str) -> frozenset[str]:
        """The ids of Radar's default rules the merchant has turned off."""
        return self.read(merchant_id).disabled_defaults

    def set_default(self, merchant_id: str, rule_id: str, enabled: bool) -> None:
        """Turns one of Radar's default rules off or back on for the merchant, as Stripe
        lets a merchant disable them. Setting the state it already has writes nothing."""
        if rule_id not in DEFAULT_RULE_IDS:
            raise InvalidRequestError(
                f"{rule_id!r} is not one of Radar's default rules: {', '.join(DEFAULT_RULE_IDS)}.",
                param="rule",
                code="parameter_invalid",
            )
        item = self._item(merchant_id)
        disabled = set((item or {}).get("disabled_defaults") or ())
        if (rule_id not in disabled) == enabled:
            return
        disabled.symmetric_difference_update({rule_id})
        kept = [default for default in DEFAULT_RULE_IDS if default in disabled]
        operation = "rule.default_enable" if enabled else "rule.default_disable"
        stored = list((item or {}).get("rules") or [])
        self._write(merchant_id, item, stored, operation, disabled_defaults=kept)

    def add(self, merchant_id: str, text: str) -> Rule:
        text = " ".join(text.split())
        if len(text) > MAX_RULE_LENGTH:
            raise InvalidRequestError(
                f"A rule is at most {MAX_RULE_LENGTH} characters.", param="rule"
            )
        try:
            rule = parse(text, f"rule_{secrets.token_hex(8)}")
        except RuleSyntaxError as exc:
            raise InvalidRequestError(
                f"The rule does not parse: {exc.description} at position {exc.position} "
                f"of {text!r}.",
                param="rule",
            ) from None
        counted = {c.attribute for c in rule.counters if supported(c)}
        unknown = sorted(rule.attributes - SCREENED_ATTRIBUTES - counted)
        if unknown:
            raise InvalidRequestError(
                f"Rules cannot use {', '.join(f':{name}:' for name in unknown)} yet: Clearline "
                f"screens charges on {', '.join(sorted(SCREENED_ATTRIBUTES))}, and counts "
                "{charge,declined_charge,card_fingerprint,email}_count_for_"
                "{card_fingerprint,email,customer,ip}_{hourly,daily,weekly}.",
                param="rule",
            )
        for alias in sorted(rule.value_lists):
            if not ValueListService(self.store).exists(merchant_id, alias):
                raise InvalidRequestError(
                    f"The rule names @{alias}, and there is no value list with that alias.",
                    param="rule",
                )
        item = self._item(merchant_id)
        stored = list((item or {}).get("rules") or [])
        if len(stored) >= MAX_RULES:
            raise InvalidRequestError(f"A merchant has at most {MAX_RULES} rules.", param="rule")
        entry = {"id": rule.id, "text": text, "created": int(self.clock())}
        self._write(merchant_id, item, [*stored, entry], "rule.add")
        return rule

    def remove(self, merchant_id: str, rule_id: str) -> None:
        item = self._item(merchant_id)
        stored = list((item or {}).get("rules") or [])
        kept = [rule for rule in stored if rule["id"] != rule_id]
        if item is None or len(kept) == len(stored):
            raise ResourceMissingError("rule", rule_id, param="rule")
        self._write(merchant_id, item, kept, "rule.remove")

    def _write(
        self,
        merchant_id: str,
        item: dict[str, Any] | None,
        rules: list[dict[str, Any]],
        operation: str,
        *,
        disabled_defaults: list[str] | None = None,
    ) -> None:
        """Writes the rules (and the disabled defaults, when given) guarded by the version
        read: a concurrent change of either fails this one rather than being lost."""
        pk, sk = _key(merchant_id)
        fields: dict[str, Any] = {"rules": rules}
        if disabled_defaults is not None:
            fields["disabled_defaults"] = disabled_defaults
        if item is None:
            created = {"pk": pk, "sk": sk, "id": merchant_id, **fields, "version": 1}
            change = Change(pk, sk, merchant_id, operation, ACTIVE, create=created)
        else:
            change = Change.versioned(item, operation, ACTIVE, set=fields)
        if self.writer.commit(Transition([change])) is not None:
            raise ConflictError("The rules changed meanwhile; read them again and retry.")


# ---- screening a charge before the processor ------------------------------------------------

RULES_TTL_SECONDS = 30.0  # a rule added or removed applies to new charges within this


@dataclass(frozen=True)
class Screening:
    """What screening decided for a charge: its risk, and the rule that matched (None when
    none did)."""

    risk: RiskAssessment | None = None
    action: Action | None = None
    rule: Rule | None = None
    # The velocity counters the merchant's rules read, which this charge is added to.
    counters: tuple[Counter, ...] = ()

    @property
    def reason(self) -> str | None:
        """Stripe's outcome reason: the default rules have their own, a merchant's is `rule`."""
        if self.rule is None:
            return None
        return DEFAULT_RULE_REASONS.get(self.rule.id, "rule")

    def as_item(self) -> dict[str, Any] | None:
        item: dict[str, Any] = {}
        if self.risk is not None:
            item["risk"] = self.risk.as_item()
        if self.action is not None and self.rule is not None:
            rule = {
                "id": self.rule.id,
                "action": self.rule.action,
                "predicate": self.rule.predicate,
            }
            item.update(action=self.action, rule=rule, reason=self.reason)
        return item or None


class Screener:
    """Scores a charge and runs the merchant's rules and Radar's defaults on it before the
    processor call. Rules, and the defaults the merchant turned off, are read together at
    most once per `RULES_TTL_SECONDS` per merchant and execution environment; value lists,
    the dollar amount and velocity counters only when a rule names them, so a merchant
    without such rules costs no call at all once its rules are cached."""

    def __init__(
        self,
        store: Store,
        scorer: RiskScorer,
        velocity: VelocityCounters | None = None,
        clock: Callable[[], float] = time.monotonic,
        ttl_seconds: float = RULES_TTL_SECONDS,
    ) -> None:
        self.book = RuleBook(store)
        self.lists = ValueListService(store)
        self.scorer = scorer
        self.velocity = velocity
        self.clock = clock
        self.ttl_seconds = ttl_seconds
        self._cached: dict[str, tuple[float, RuleSet]] = {}
        self._lists: dict[tuple[str, str], tuple[float, frozenset[str] | None]] = {}

    def ruleset(self, merchant_id: str) -> RuleSet:
        now = self.clock()
        cached = self._cached.get(merchant_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        ruleset = self.book.read(merchant_id)
        if len(self._cached) > 10_000:  # bounded: merchants come and go
            self._cached.clear()
        self._cached[merchant_id] = (now + self.ttl_seconds, ruleset)
        return ruleset

    def rules(self, merchant_id: str) -> tuple[Rule, ...]:
        return self.ruleset(merchant_id).rules

    def _values(self, merchant_id: str, alias: str) -> frozenset[str] | None:
        """A list's values, read at most once per TTL (a list is read whole)."""
        now = self.clock()
        cached = self._lists.get((merchant_id, alias))
        if cached is not None and cached[0] > now:
            return cached[1]
        values = self.lists.values_of(merchant_id, alias)
        if len(self._lists) > 1_000:  # bounded: each entry may hold a long list
            self._lists.clear()
        self._lists[(merchant_id, alias)] = (now + self.ttl_seconds, values)
        return values

    def screen(
        self,
        merchant_id: str,
        attributes: Mapping[str, Value],
        amount_in_usd: Callable[[], float],
        payer: Payer,
        facts: ChargeFacts,
    ) -> Screening:
        risk = self.scorer.assess(payer)
        if risk.always_block:
            return Screening(risk, "block", BLOCK_IF_HIGHEST_RISK)
        ruleset = self.ruleset(merchant_id)
        rules = ruleset.rules
        known = {**attributes, "risk_score": float(risk.score), "risk_level": risk.level}
        named = frozenset().union(*(rule.attributes for rule in rules))
        if "amount_in_usd" in named:
            known["amount_in_usd"] = amount_in_usd()
        counters = tuple(
            sorted({c for rule in rules for c in rule.counters}, key=lambda c: c.attribute)
        )
        if counters and self.velocity is not None:
            known.update(self.velocity.counts(merchant_id, counters, facts))
        aliases = frozenset().union(*(rule.value_lists for rule in rules))
        found = {alias: self._values(merchant_id, alias) for alias in aliases}
        lists = {alias: values for alias, values in found.items() if values is not None}
        # Only the defaults the merchant left on; the always-blocked cards above are not a
        # rule it can turn off.
        decided = decide((*rules, *ruleset.defaults), known, lists)
        return Screening(risk, decided.action, decided.rule, counters)
