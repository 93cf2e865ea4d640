"""A merchant's fraud rules, in Radar's language (`radar_rules.py`), kept in one item.

Stripe has no public API for rules (they are managed in its Dashboard), so these are
Clearline's own: operators add and remove them through an IAM-authorized admin route or the
`clearline radar rules` command. A rule is parsed when it is added, so a rule that does not
parse is refused with where it goes wrong and is never stored. Every change moves the item's
version on, guarded by the version it read: two operators editing at once cannot lose one
another's rule.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from clearline.errors import ConflictError, InvalidRequestError, ResourceMissingError
from clearline.radar_rules import Rule, RuleSyntaxError, parse
from clearline.store import Store
from clearline.transitions import Change, Transition, TransitionWriter

MAX_RULES = 100
MAX_RULE_LENGTH = 2000
ACTIVE = "active"


def _key(merchant_id: str) -> tuple[str, str]:
    return f"MERCHANT#{merchant_id}", "RADAR_RULES"


class RuleBook:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.writer = TransitionWriter(store, clock=lambda: self.clock())

    def _item(self, merchant_id: str) -> dict[str, Any] | None:
        return self.store.get(*_key(merchant_id))

    def rules(self, merchant_id: str) -> tuple[Rule, ...]:
        """The merchant's rules, in the order they were added."""
        item = self._item(merchant_id)
        stored = (item or {}).get("rules") or []
        return tuple(parse(rule["text"], rule["id"]) for rule in stored)

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
    ) -> None:
        pk, sk = _key(merchant_id)
        if item is None:
            created = {"pk": pk, "sk": sk, "id": merchant_id, "rules": rules, "version": 1}
            change = Change(pk, sk, merchant_id, operation, ACTIVE, create=created)
        else:
            change = Change.versioned(item, operation, ACTIVE, set={"rules": rules})
        if self.writer.commit(Transition([change])) is not None:
            raise ConflictError("The rules changed meanwhile; read them again and retry.")
