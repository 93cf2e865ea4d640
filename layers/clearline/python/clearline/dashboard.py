"""The dashboard's sign-in and the payment timeline it shows.

No secret key ever reaches a browser. A person signs in with a link (`issue_link`): a
random token, good once and for 15 minutes, of which only the hash is stored. Following it
opens a session: another random id, which the browser keeps in an HttpOnly cookie and which
is stored here only as its hash, with the merchant it is for and a CSRF token that every
form of the session must send back. Links, sessions and their ends are changes of state
like any other, written by the transition writer, with their audit items.

A payment's timeline is what happened to a charge, in order: its state transitions (and
its refunds' and disputes') from the audit trail, with who and which request; the ledger
journals it posted, with their lines; the balance transactions of its money; and the
events that announced them, each with its webhook delivery attempts. It is read from the
same items the API writes; nothing here writes it. So is the balance's history, walked
back from today's balance through the balance transactions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clearline import listing
from clearline.errors import InvalidRequestError
from clearline.ids import derived_id
from clearline.models import Charge
from clearline.store import Store
from clearline.transitions import Change, Transition, TransitionWriter
from clearline.webhooks import attempts_for

LINK_SECONDS = 15 * 60
SESSION_SECONDS = 12 * 3600
UNUSED, USED = "unused", "used"
ACTIVE, ENDED = "active", "ended"

# An event's id derives from its data object's id and the operation that announced it
# (events.event_writes), so a charge's events are found by naming them, without an index:
# these once each, an update once per version, and per refund its own.
CHARGE_OPERATIONS = (
    "charge.pending",
    "charge.succeeded",
    "charge.failed",
    "charge.captured",
    "charge.expired",
)
REFUND_OPERATIONS = ("refund.created", "refund.failed", "refund.canceled")


class SignInLinkInvalid(InvalidRequestError):
    """The link was used before, has expired, or never existed: all look the same."""

    def __init__(self) -> None:
        super().__init__(
            "This sign-in link is used up or has expired. Ask for a new one: "
            "`clearline dashboard link <merchant>`.",
            code="sign_in_link_invalid",
        )


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _session_name(session_id: str) -> str:
    return f"session_{_digest(session_id)[:16]}"


@dataclass(frozen=True)
class Session:
    id: str  # the session's name in the audit trail (from its hash; not the cookie's value)
    merchant_id: str
    csrf_token: str
    expires: int
    operations: bool = False  # an operator's: also sees the operations views
    person: str | None = None  # who signed in, when an identity provider said (an email)

    @property
    def actor(self) -> str:
        """Who the audit trail says acted, for what this session does."""
        return f"dashboard {self.id}" + (f" ({self.person})" if self.person else "")

    def accepts(self, csrf_token: str | None) -> bool:
        """Whether a form's CSRF token is this session's (in constant time)."""
        return bool(csrf_token) and hmac.compare_digest(
            self.csrf_token.encode(), str(csrf_token).encode("utf-8", "replace")
        )


class DashboardSessions:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.writer = TransitionWriter(store, clock=clock)

    def issue_link(self, merchant_id: str, *, operations: bool = False) -> str:
        """A one-time sign-in token for the merchant's dashboard; with `operations`, for an
        operator, who also sees the operations views (across every merchant)."""
        token = secrets.token_urlsafe(32)
        digest = _digest(token)
        expires = int(self.clock()) + LINK_SECONDS
        link: dict[str, Any] = {
            "pk": f"SIGNIN#{digest}",
            "sk": "SIGNIN",
            "merchant": merchant_id,
            "operations": operations,
        }
        issued = Change(
            link["pk"],
            "SIGNIN",
            f"signin_{digest[:16]}",
            "dashboard.link",
            UNUSED,
            create={**link, "expires": expires, "ttl": expires + 86400},
        )
        self.writer.commit(Transition([issued]))
        return token

    def sign_in(self, token: str) -> tuple[str, Session]:
        """The link used up, and a session opened by it, together: (the session's id, for
        the cookie; the session). A link used before or expired opens nothing."""
        digest = _digest(token)
        link = self.store.get(f"SIGNIN#{digest}", "SIGNIN")
        now = int(self.clock())
        if link is None or link.get("state") != UNUSED or link["expires"] <= now:
            raise SignInLinkInvalid()
        used = Change(
            link["pk"],
            "SIGNIN",
            f"signin_{digest[:16]}",
            "dashboard.sign_in",
            USED,
            from_state=UNUSED,
            condition="expires > :now",
            values={":now": now},
        )
        opened = self._open(link["merchant"], bool(link.get("operations")), None, [used])
        if opened is None:
            raise SignInLinkInvalid()  # another tab followed the same link first
        return opened

    def open_for(self, merchant_id: str, *, operations: bool, person: str) -> tuple[str, Session]:
        """A session for a person the identity provider vouched for (deployed: Cognito)."""
        opened = self._open(merchant_id, operations, person, [])
        assert opened is not None, "a new session's id is new"
        return opened

    def _open(
        self, merchant_id: str, operations: bool, person: str | None, with_changes: list[Change]
    ) -> tuple[str, Session] | None:
        now = int(self.clock())
        session_id = secrets.token_urlsafe(32)
        session = Session(
            _session_name(session_id),
            merchant_id,
            secrets.token_urlsafe(32),
            now + SESSION_SECONDS,
            operations,
            person,
        )
        pk = f"SESSION#{_digest(session_id)}"
        opened = Change(
            pk,
            "SESSION",
            session.id,
            "dashboard.session",
            ACTIVE,
            create={
                "pk": pk,
                "sk": "SESSION",
                "merchant": session.merchant_id,
                "csrf": session.csrf_token,
                "operations": session.operations,
                "person": person,
                "expires": session.expires,
                "ttl": session.expires + 86400,
            },
        )
        if self.writer.commit(Transition([*with_changes, opened])) is not None:
            return None
        return session_id, session

    def session(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        item = self.store.get(f"SESSION#{_digest(session_id)}", "SESSION")
        if item is None or item.get("state") != ACTIVE or item["expires"] <= self.clock():
            return None
        return Session(
            _session_name(session_id),
            item["merchant"],
            item["csrf"],
            int(item["expires"]),
            bool(item.get("operations")),
            item.get("person"),
        )

    def view_as(self, session_id: str, merchant_id: str) -> None:
        """An operator's session shows another merchant's views from now on (audited). Only
        an operator's, still active: any other changes nothing."""
        digest = _digest(session_id)
        switched = Change(
            f"SESSION#{digest}",
            "SESSION",
            _session_name(session_id),
            "dashboard.view_as",
            ACTIVE,
            from_state=ACTIVE,
            set={"merchant": merchant_id},
            condition="operations = :yes",
            values={":yes": True},
        )
        if self.writer.commit(Transition([switched])) is not None:
            raise InvalidRequestError("Only an operator's session can view another merchant.")

    def sign_out(self, session_id: str) -> None:
        digest = _digest(session_id)
        ended = Change(
            f"SESSION#{digest}",
            "SESSION",
            _session_name(session_id),
            "dashboard.sign_out",
            ENDED,
            from_state=ACTIVE,
        )
        self.writer.commit(Transition([ended]))  # ended before: nothing to do


# ---- a payment's timeline ------------------------------------------------------------------


@dataclass(frozen=True)
class JournalLine:
    account: str
    direction: str
    amount: int
    pending: bool


@dataclass(frozen=True)
class Attempt:
    at_ms: int
    url: str
    status: int  # the endpoint's HTTP status; 0 when it did not answer
    latency_ms: int | None
    error: str | None
    response_body: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def delivery_attempts(store: Store, event_id: str) -> list[Attempt]:
    """Every delivery attempt of an event, oldest first."""
    return [
        Attempt(
            int(a["sk"].split("#")[1]),
            str(a.get("url", "")),
            int(a.get("status") or 0),
            a.get("latency_ms"),
            a.get("error"),
            str(a.get("response_body") or ""),
        )
        for a in attempts_for(store, event_id)
    ]


@dataclass(frozen=True)
class BalanceMove:
    amount: int
    fee: int
    net: int
    available_on: int


@dataclass
class TimelineEntry:
    at_ms: int
    kind: str  # transition, journal, balance, event
    title: str
    object_id: str
    actor: str | None = None
    request_id: str | None = None
    currency: str | None = None
    lines: list[JournalLine] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    balance: BalanceMove | None = None


def timeline(store: Store, charge: Charge) -> list[TimelineEntry]:
    """Everything that happened to the charge and its refunds, oldest first."""
    entries: list[TimelineEntry] = []
    version = 0
    for item in store.query_partition(f"CHARGE#{charge.id}"):
        if item["sk"].startswith("AUDIT#"):
            entries.append(_transition(item))
        elif item["sk"].startswith("JOURNAL#"):
            entries.append(_journal(item))
        elif item["sk"] == "CHARGE":
            version = int(item.get("version") or 0)
    announced = [(charge.id, operation) for operation in CHARGE_OPERATIONS]
    announced += [(charge.id, f"charge.updated:{v}") for v in range(1, version + 1)]
    for refund in charge.refunds:
        entries += [_transition(i) for i in store.query_partition(f"REFUND#{refund.id}", "AUDIT#")]
        announced.append((charge.id, f"charge.refunded:{refund.id}"))
        announced += [(refund.id, operation) for operation in REFUND_OPERATIONS]
    # Its disputes' changes, and the balance transactions of its money's movements.
    disputes = listing.page(
        store,
        charge.merchant,
        "du",
        limit=10,
        starting_after=None,
        ending_before=None,
        facets={"charge": [charge.id]},
    ).items
    for dispute in disputes:
        entries += [_transition(i) for i in store.query_partition(dispute["pk"], "AUDIT#")]
    moved = listing.page(
        store,
        charge.merchant,
        "txn",
        limit=100,
        starting_after=None,
        ending_before=None,
        facets={
            "source": [charge.id, *(r.id for r in charge.refunds), *(d["id"] for d in disputes)]
        },
    ).items
    entries += [_balance_transaction(txn) for txn in moved]
    event_keys = [(f"EVENT#{derived_id('evt', *named)}", "EVENT") for named in announced]
    for event in store.get_many(event_keys):
        if event.get("merchant") == charge.merchant:
            entries.append(_event(store, event))
    # A change's audit item, then what it posted and announced, at the same millisecond.
    order = {"transition": 0, "journal": 1, "balance": 2, "event": 3}
    return sorted(entries, key=lambda e: (e.at_ms, order[e.kind]))


def _transition(item: dict[str, Any]) -> TimelineEntry:
    moved = f"{item.get('from_state') or 'new'} → {item['to_state']}"
    return TimelineEntry(
        int(item["at"]),
        "transition",
        f"{item['operation']}: {moved}",
        str(item.get("object", "")),
        actor=item.get("actor"),
        request_id=item.get("request_id"),
    )


def _journal(item: dict[str, Any]) -> TimelineEntry:
    lines = [
        JournalLine(e["account"], e["direction"], int(e["amount"]), bool(e.get("pending")))
        for e in item.get("entries", [])
    ]
    return TimelineEntry(
        int(item.get("written_ms") or int(item["created"]) * 1000),
        "journal",
        f"journal {item['operation']}",
        str(item["id"]),
        currency=item.get("currency"),
        lines=lines,
    )


def _balance_transaction(txn: dict[str, Any]) -> TimelineEntry:
    """A movement of the merchant's balance: amount, fee and net, and when it is available.
    It stands where the change that wrote it does (a refund's is created with the refund but
    written when the refund succeeds)."""
    listed_ms = str(txn.get("gsi1sk", "")).split("#")[0]
    created_ms = int(listed_ms) if listed_ms.isdigit() else int(txn["created"]) * 1000
    return TimelineEntry(
        int(txn.get("written_ms") or created_ms),
        "balance",
        f"balance transaction {txn['type']}",
        str(txn["id"]),
        currency=str(txn["currency"]),
        balance=BalanceMove(
            int(txn["amount"]), int(txn["fee"]), int(txn["net"]), int(txn["available_on"])
        ),
    )


def _event(store: Store, event: dict[str, Any]) -> TimelineEntry:
    attempts = delivery_attempts(store, event["id"])
    # The list's sort key holds the event's time to the millisecond.
    created_ms = str(event.get("gsi1sk", "")).split("#")[0]
    return TimelineEntry(
        int(created_ms) if created_ms.isdigit() else int(event["created"]) * 1000,
        "event",
        str(event["type"]),
        str(event["id"]),
        request_id=(event.get("request") or {}).get("id"),
        attempts=attempts,
    )


# ---- the balance over time -----------------------------------------------------------------

HISTORY_DAYS = 30
HISTORY_MOST_MOVEMENTS = 2000  # read at most this many balance transactions to draw it


@dataclass(frozen=True)
class BalanceHistory:
    """The balance (available and pending together) at the end of each of the last days,
    per currency, oldest first. `complete` is false when there were more movements in the
    period than are read to draw it: the earliest days are then left out."""

    days: list[dt.date]
    amounts: dict[str, list[int]]
    complete: bool


def balance_history(
    store: Store,
    merchant_id: str,
    totals: dict[str, int],
    now: float,
    days: int = HISTORY_DAYS,
) -> BalanceHistory:
    """Walks back from today's balance (`totals`, per currency), taking away each balance
    transaction of the period on the day it was created: the balance transactions are every
    movement of the merchant's money, so what remains is the balance at each day's end."""
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    day_list = [today - dt.timedelta(days=back) for back in range(days - 1, -1, -1)]
    start = dt.datetime.combine(day_list[0], dt.time(), dt.UTC)
    moved: dict[tuple[str, dt.date], int] = {}
    read, after, complete = 0, None, True
    oldest = today
    while True:
        page = listing.page(
            store,
            merchant_id,
            "txn",
            limit=100,
            starting_after=after,
            ending_before=None,
            created=listing.Created(gte=int(start.timestamp())),
        )
        for txn in page.items:
            day = dt.datetime.fromtimestamp(int(txn["created"]), dt.UTC).date()
            key = (str(txn["currency"]), day)
            moved[key] = moved.get(key, 0) + int(txn["net"])
            oldest = min(oldest, day)
        read += len(page.items)
        if not page.has_more or not page.items:
            break
        if read >= HISTORY_MOST_MOVEMENTS:
            complete = False
            break
        after = str(page.items[-1]["id"])
    if not complete:  # the oldest day read may be partial: draw only the days after it
        day_list = [day for day in day_list if day > oldest]
    amounts: dict[str, list[int]] = {}
    for currency in sorted({*totals, *(c for c, _ in moved)}):
        balance = totals.get(currency, 0)
        series = []
        for day in reversed(day_list):
            series.append(balance)
            balance -= moved.get((currency, day), 0)
        amounts[currency] = list(reversed(series))
    return BalanceHistory(day_list, amounts, complete)
