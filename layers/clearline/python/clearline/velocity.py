"""Velocity attributes for fraud rules: how many charges (or declined charges, or distinct
cards or emails) one card, email or customer had in the last hour, day or week.

A window is summed from `BUCKETS_PER_WINDOW` buckets, one item each, so a count is exact to a
twelfth of its window. A bucket keeps sets (of charge ids, fingerprints, emails), not
numbers: adding the same charge twice changes nothing, so a retried charge is never counted
twice, and each update is one atomic UpdateItem. Items expire (DynamoDB TTL) once no window
can reach them. Only the counters a merchant's rules name are read and kept, so a merchant
without velocity rules costs no call at all; counting starts when the first such rule is
added.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from clearline.radar_rules import Counter
from clearline.store import Store, StoreRejected

log = logging.getLogger(__name__)

BUCKETS_PER_WINDOW = 12
# What a counter may be kept by, and what it may count. `ip` is the address of the browser
# that gave the card (a charge on a card no browser gave is not counted by it).
COUNTED_BY = frozenset({"card_fingerprint", "email", "customer", "ip"})
COUNTED = frozenset({"charge", "declined_charge", "card_fingerprint", "email"})


@dataclass(frozen=True)
class ChargeFacts:
    """What a charge adds to the counters: its id, and the values it is counted by."""

    charge_id: str
    card_fingerprint: str | None
    email: str | None
    customer: str | None
    ip: str | None = None

    def value_of(self, name: str) -> str | None:
        value: str | None = getattr(self, name)
        return value.lower() if value and name == "email" else value


def supported(counter: Counter) -> bool:
    return counter.by in COUNTED_BY and counter.what in COUNTED


def _digest(value: str) -> str:
    # Keys carry no email or card fingerprint in the clear.
    return hashlib.sha256(value.encode()).hexdigest()[:32]


class VelocityCounters:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    @staticmethod
    def _pk(merchant_id: str, by: str, value: str) -> str:
        return f"VELOCITY#{merchant_id}#{by}#{_digest(value)}"

    @staticmethod
    def _bucket(window_seconds: int, at: float) -> int:
        size = window_seconds // BUCKETS_PER_WINDOW
        return int(at) // size * size

    def counts(
        self, merchant_id: str, counters: Iterable[Counter], facts: ChargeFacts
    ) -> dict[str, float | None]:
        """Each counter's value before this charge; None when the charge lacks what it is
        counted by (the rule naming it stays undecided). One query per (by, window)."""
        wanted: dict[tuple[str, int], list[Counter]] = defaultdict(list)
        values: dict[str, float | None] = {}
        for counter in counters:
            if facts.value_of(counter.by) is None or not supported(counter):
                values[counter.attribute] = None
            else:
                wanted[(counter.by, counter.window_seconds)].append(counter)
        now = self.clock()
        for (by, window), named in wanted.items():
            value = facts.value_of(by)
            assert value is not None
            first = self._bucket(window, now - window + window // BUCKETS_PER_WINDOW)
            items = self._query(self._pk(merchant_id, by, value), window, first)
            for counter in named:
                seen: set[str] = set()
                for item in items:
                    seen |= set(item.get(counter.what) or ())
                seen.discard(facts.charge_id)  # a retry does not count itself
                values[counter.attribute] = float(len(seen))
        return values

    def _query(self, pk: str, window: int, first_bucket: int) -> list[dict[str, Any]]:
        # A partition holds at most two windows of buckets per window kept (they expire).
        items = self.store.query_partition(pk, f"{window}#")
        return [item for item in items if str(item["sk"]) >= f"{window}#{first_bucket:012d}"]

    def record(
        self,
        merchant_id: str,
        counters: Iterable[Counter],
        facts: ChargeFacts,
        *,
        declined: bool = False,
    ) -> None:
        """Add the charge to every bucket its merchant's counters read: one update per
        (by, window). `declined` adds it to the declined charges as well."""
        whats: dict[tuple[str, int], set[str]] = defaultdict(set)
        for counter in counters:
            if supported(counter) and facts.value_of(counter.by) is not None:
                whats[(counter.by, counter.window_seconds)].add(counter.what)
        now = self.clock()
        for (by, window), what in whats.items():
            members = self._members(what, facts, declined)
            if not members:
                continue
            value = facts.value_of(by)
            assert value is not None
            bucket = self._bucket(window, now)
            key = (self._pk(merchant_id, by, value), f"{window}#{bucket:012d}")
            self._add(*key, members, expires_at=bucket + 2 * window)

    @staticmethod
    def _members(what: set[str], facts: ChargeFacts, declined: bool) -> dict[str, str]:
        members: dict[str, str] = {}
        if "charge" in what and not declined:
            members["charge"] = facts.charge_id
        if "declined_charge" in what and declined:
            members["declined_charge"] = facts.charge_id
        for name in ("card_fingerprint", "email"):
            value = facts.value_of(name)
            if name in what and value and not declined:
                members[name] = _digest(value)
        return members

    def _add(self, pk: str, sk: str, members: Mapping[str, str], *, expires_at: int) -> None:
        try:
            self.store.add_to_sets(pk, sk, members, expires_at=expires_at)
        except StoreRejected as exc:  # a bucket past DynamoDB's item size: the count saturates
            log.warning("velocity bucket not updated: %s", exc)
