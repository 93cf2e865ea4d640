"""The one way to change state: declare a transition, and one writer commits it atomically.

A transition names the objects it changes, each guarded by the state it must be in (or
by being new), and what the change carries: the audit item of every object it changes
(who, when, from-state, to-state, request id), the outbox events that announce it, the
ledger journals and their balance deltas, and any new records (operation items, balance
transactions). `TransitionWriter.commit` turns the declaration into one
TransactWriteItems, so a change is either wholly there or not at all, and a guard that
fails means somebody else already made a change: the caller decides what that means.

Capabilities add declarations; none of them assembles its own transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from clearline import ledger
from clearline.audit import Caller, audit_item
from clearline.events import event_writes
from clearline.models import Model
from clearline.store import Store, TransactionCancelled, Write, commit


@dataclass
class Change:
    """A change of one object's item, guarded by its state.

    `create` puts a new item (refused if it exists); `replace` puts the whole item over one
    in `from_state`; `delete` removes one in `from_state`; otherwise `set`, `add` and
    `remove` update it in place. `condition` adds a guard beyond the state
    (`refundable >= :amount`, `version = :version`), with its own names and values.
    """

    pk: str
    sk: str
    object_id: str
    operation: str  # what happened, for the audit trail ("capture", "refund.succeed", ...)
    to_state: str
    from_state: str | None = None  # None: the object is created by this change
    state_attribute: str = "state"
    create: dict[str, Any] | None = None
    replace: dict[str, Any] | None = None
    delete: bool = False
    set: dict[str, Any] = field(default_factory=dict)
    add: dict[str, int] = field(default_factory=dict)
    remove: tuple[str, ...] = ()
    condition: str | None = None
    names: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    # An operation record (OP#...) changes with its object, whose change is the audited one.
    audited: bool = True

    @classmethod
    def versioned(
        cls,
        item: dict[str, Any],
        operation: str,
        to_state: str,
        *,
        state_attribute: str = "state",
        set: dict[str, Any] | None = None,
        remove: tuple[str, ...] = (),
        condition: str | None = None,
    ) -> Change:
        """A change of a stored item guarded by its state and by the version it was read
        at, which the change moves on by one: anybody's change in between makes this one
        fail, and the caller reads again."""
        guard = "version = :version" + (f" AND {condition}" if condition else "")
        return cls(
            item["pk"],
            item["sk"],
            item["id"],
            operation,
            to_state,
            from_state=item[state_attribute],
            state_attribute=state_attribute,
            set=set or {},
            add={"version": 1},
            remove=remove,
            condition=guard,
            values={":version": item["version"]},
        )

    def write(self) -> Write:
        if self.create is not None:
            return Write.put_new({**self.create, self.state_attribute: self.to_state})
        guard = "#state = :from_state"
        names = {"#state": self.state_attribute, **self.names}
        values: dict[str, Any] = {":from_state": self.from_state, **self.values}
        if self.condition:
            guard = f"{guard} AND ({self.condition})"
        if self.replace is not None:
            item = {**self.replace, self.state_attribute: self.to_state}
            return Write("Put", item=item, condition=guard, names=names, values=values)
        if self.delete:
            key = {"pk": self.pk, "sk": self.sk}
            return Write("Delete", key=key, condition=guard, names=names, values=values)
        # Storage drops nulls, so a field set to None is removed: it reads back as None.
        assignments = {self.state_attribute: self.to_state}
        assignments |= {path: value for path, value in self.set.items() if value is not None}
        removed = (*self.remove, *(path for path, value in self.set.items() if value is None))
        sets = []
        for i, (path, value) in enumerate(assignments.items()):
            values[f":s{i}"] = value
            sets.append(f"{_path(path, f's{i}', names)} = :s{i}")
        clauses = ["SET " + ", ".join(sets)]
        if self.add:
            adds = []
            for i, (path, amount) in enumerate(self.add.items()):
                values[f":a{i}"] = amount
                adds.append(f"{_path(path, f'a{i}', names)} :a{i}")
            clauses.append("ADD " + ", ".join(adds))
        if removed:
            paths = [_path(path, f"r{i}", names) for i, path in enumerate(removed)]
            clauses.append("REMOVE " + ", ".join(paths))
        return Write(
            "Update",
            key={"pk": self.pk, "sk": self.sk},
            update=" ".join(clauses),
            condition=guard,
            names=names,
            values=values,
        )


def _path(path: str, tag: str, names: dict[str, str]) -> str:
    """`refunds.re_1` as `#t_0.#t_1`, every part a placeholder (ids may be reserved words)."""
    parts = []
    for i, part in enumerate(path.split(".")):
        names[f"#{tag}_{i}"] = part
        parts.append(f"#{tag}_{i}")
    return ".".join(parts)


@dataclass(frozen=True)
class Announcement:
    """An outbox event: its id derives from (data object, operation), so it exists once."""

    merchant: str
    type: str
    object: Model  # the object as the change leaves it
    operation: str | None = None  # defaults to the event type
    previous: Model | None = None  # the object before an update


@dataclass
class Transition:
    changes: list[Change]
    caller: Caller | None = None
    events: list[Announcement] = field(default_factory=list)
    journals: list[ledger.Journal] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)  # new items, written once
    # Index items derived from an object (its facets): rewritten or removed as it changes.
    index_items: list[dict[str, Any]] = field(default_factory=list)
    index_removals: list[tuple[str, str]] = field(default_factory=list)
    idempotency_key: str | None = None  # of the request, carried on its events
    # The object the request that makes this transition answers with, once it is written
    # (a capture's charge): the request's own record of its answer can ride along.
    answer: Model | None = None


class Rider(Protocol):
    """Items of the request at hand that ride on the transactions its operation makes (its
    idempotency record: claimed by the first, answered by the one that sets `answer`), so
    that the request costs no writes of its own."""

    def writes(self, transition: Transition) -> list[Write]: ...

    def committed(self) -> None:
        """The writes last asked for are written."""

    def cancelled(self, cancelled: TransactionCancelled, first: int) -> None:
        """The transaction was refused; the rider's writes were from index `first` on. Raises
        when one of them was what failed (the request's key is somebody else's)."""


riding: ContextVar[Rider | None] = ContextVar("riding", default=None)


class TransitionWriter:
    """Commits transitions. Changes come first in the transaction, in their order, so
    `TransactionCancelled.failed_at(i)` says whether change i's guard failed."""

    def __init__(
        self,
        store: Store,
        shards: ledger.ShardPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.shards = shards or ledger.ShardPolicy()
        self.clock = clock

    def writes(self, transition: Transition, now: float) -> list[Write]:
        writes = [change.write() for change in transition.changes]
        for change in transition.changes:
            if not change.audited:
                continue
            writes.append(
                Write.put_new(
                    audit_item(
                        change.pk,
                        change.object_id,
                        caller=transition.caller,
                        operation=change.operation,
                        from_state=change.from_state,
                        to_state=change.to_state,
                        now=now,
                        item_sk=change.sk,
                    )
                )
            )
        for order, event in enumerate(transition.events):
            writes.extend(
                event_writes(
                    event.merchant,
                    event.type,
                    event.object,
                    previous=event.previous,
                    operation=event.operation or event.type,
                    # A millisecond apart: listed (newest first) in the order they happened.
                    now=now + order / 1000,
                    caller=transition.caller,
                    idempotency_key=transition.idempotency_key,
                )
            )
        written_ms = int(now * 1000)  # orders what the change wrote among its audit items
        writes += ledger.journal_writes(transition.journals, self.shards, written_ms)
        writes += [Write.put_new({**r, "written_ms": written_ms}) for r in transition.records]
        writes += [Write("Put", item=item) for item in transition.index_items]
        writes += [
            Write("Delete", key={"pk": pk, "sk": sk}) for pk, sk in transition.index_removals
        ]
        return writes

    def commit(self, transition: Transition) -> TransactionCancelled | None:
        """Write the transition all or nothing. None when written; the cancellation when a
        guard failed. A conflict or an unreachable store is raised as retryable (409/503);
        a transaction the store refuses outright raises StoreRejected."""
        writes = self.writes(transition, self.clock())
        rider = riding.get()
        extra = rider.writes(transition) if rider is not None else []
        cancelled = commit(self.store, writes + extra)
        if rider is not None and extra:
            if cancelled is None:
                rider.committed()
            else:
                rider.cancelled(cancelled, len(writes))
        return cancelled


# The guarded change of an object whose state Stripe calls `status` (disputes, payouts).
status_change = partial(Change.versioned, state_attribute="status")
