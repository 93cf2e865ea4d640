"""Dashboard sign-in (moto in-process): a link opens one session once, within its 15
minutes; a session ends when signed out or when its time is up; only hashes are stored;
forms are checked against the session's CSRF token. And the balance history it draws."""

from __future__ import annotations

import datetime as dt
import hashlib
import time

import pytest

from clearline import balance, dashboard
from clearline.audit import Caller
from clearline.dashboard import (
    LINK_SECONDS,
    SESSION_SECONDS,
    DashboardSessions,
    SignInLinkInvalid,
    balance_history,
)
from clearline.errors import AuthenticationError, InvalidRequestError
from clearline.merchants import api_keys, authenticate, create_merchant, roll_secret_key
from clearline.store import Store


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sessions(store: Store, clock: Clock) -> DashboardSessions:
    return DashboardSessions(store, clock)


@pytest.fixture
def merchant_id(store: Store) -> str:
    return create_merchant(store, "Dashboard Shop").merchant.id


def test_a_link_opens_one_session_for_its_merchant_once(
    store: Store, sessions: DashboardSessions, merchant_id: str
) -> None:
    token = sessions.issue_link(merchant_id)
    session_id, session = sessions.sign_in(token)
    assert session.merchant_id == merchant_id
    assert sessions.session(session_id) == session
    with pytest.raises(SignInLinkInvalid):
        sessions.sign_in(token)  # used up
    # Neither secret is stored, only its hash; the link's state and the session's are audited.
    stored = [*store.scan("SIGNIN#"), *store.scan("SESSION#")]
    assert token not in str(stored) and session_id not in str(stored)
    digest = hashlib.sha256(token.encode()).hexdigest()
    audit = store.query_partition(f"SIGNIN#{digest}", "AUDIT#")
    assert [(a["operation"], a["to_state"]) for a in audit] == [
        ("dashboard.link", "unused"),
        ("dashboard.sign_in", "used"),
    ]


def test_a_link_past_its_time_and_an_unknown_one_open_nothing(
    store: Store, sessions: DashboardSessions, clock: Clock, merchant_id: str
) -> None:
    token = sessions.issue_link(merchant_id)
    clock.now += LINK_SECONDS
    with pytest.raises(SignInLinkInvalid):
        sessions.sign_in(token)
    with pytest.raises(SignInLinkInvalid):
        sessions.sign_in("not-a-link")
    assert list(store.scan("SESSION#")) == []


def test_a_session_ends_when_signed_out_or_when_its_time_is_up(
    sessions: DashboardSessions, clock: Clock, merchant_id: str
) -> None:
    first, _ = sessions.sign_in(sessions.issue_link(merchant_id))
    second, _ = sessions.sign_in(sessions.issue_link(merchant_id))
    sessions.sign_out(first)
    assert sessions.session(first) is None
    sessions.sign_out(first)  # again: nothing to do
    assert sessions.session(second) is not None
    clock.now += SESSION_SECONDS
    assert sessions.session(second) is None
    assert sessions.session(None) is None and sessions.session("made-up") is None


def test_a_form_is_accepted_only_with_its_sessions_csrf_token(
    sessions: DashboardSessions, merchant_id: str
) -> None:
    _, session = sessions.sign_in(sessions.issue_link(merchant_id))
    _, other = sessions.sign_in(sessions.issue_link(merchant_id))
    assert session.accepts(session.csrf_token)
    assert not session.accepts(other.csrf_token)
    assert not session.accepts("")
    assert not session.accepts(None)


def test_an_operations_link_opens_an_operations_session_named_in_the_audit(
    store: Store, sessions: DashboardSessions, merchant_id: str
) -> None:
    session_id, session = sessions.sign_in(sessions.issue_link(merchant_id, operations=True))
    assert session.operations and sessions.session(session_id) == session
    _, merchant_only = sessions.sign_in(sessions.issue_link(merchant_id))
    assert not merchant_only.operations
    # What a session does is audited under its name, which is not its cookie's value.
    assert session.actor == f"dashboard {session.id}" and session_id not in session.id
    digest = hashlib.sha256(session_id.encode()).hexdigest()
    audit = store.query_partition(f"SESSION#{digest}", "AUDIT#")
    assert [a["object"] for a in audit] == [session.id]


DAY = 86400


def moved(store: Store, merchant_id: str, txn_id: str, net: int, at: float, currency: str) -> None:
    for item in balance.transaction_items(
        txn_id,
        merchant_id=merchant_id,
        kind="charge",
        source=f"ch_{txn_id}",
        amount=net,
        fee=0,
        currency=currency,
        now=at,
    ):
        store.put(item)


def test_the_balance_history_walks_back_from_todays_balance(store: Store, merchant_id: str) -> None:
    now = 1_800_000_000.0
    moved(store, merchant_id, "a", 1000, now - 40 * DAY, "usd")  # before the 30 days
    moved(store, merchant_id, "b", 500, now - 10 * DAY, "usd")
    moved(store, merchant_id, "c", -200, now - 2 * DAY, "usd")
    moved(store, merchant_id, "d", 300, now, "usd")
    moved(store, merchant_id, "e", 700, now - 1 * DAY, "eur")
    history = balance_history(store, merchant_id, {"usd": 1600, "eur": 700}, now)
    assert len(history.days) == 30 and history.complete
    assert history.days[-1] == dt.datetime.fromtimestamp(now, dt.UTC).date()
    usd = history.amounts["usd"]
    # Each day's balance is at its end: a movement counts from the day it was made.
    assert usd[0] == 1000 and usd[-12] == 1000 and usd[-11] == 1500
    assert usd[-4] == 1500 and usd[-3] == 1300 and usd[-2] == 1300 and usd[-1] == 1600
    assert history.amounts["eur"][-2:] == [700, 700] and history.amounts["eur"][-3] == 0


def test_a_history_with_more_movements_than_it_reads_says_so(
    store: Store, merchant_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard, "HISTORY_MOST_MOVEMENTS", 100)
    now = 1_800_000_000.0
    for n in range(150):  # five a day, over the last 30 days
        moved(store, merchant_id, f"t{n:03d}", 10, now - (n // 5) * DAY, "usd")
    history = balance_history(store, merchant_id, {"usd": 1500}, now)
    assert not history.complete
    # The 100 newest movements cover the last 20 days; the oldest of those may be partial.
    assert len(history.days) == 19
    assert history.amounts["usd"][-1] == 1500 and history.amounts["usd"][-2] == 1450


def test_a_rolled_secret_key_works_until_its_overlap_ends(store: Store) -> None:
    created = create_merchant(store, "Rolling Shop")
    caller = Caller(created.merchant, "req_roll", actor="dashboard session_1")
    t0 = time.time() - 60  # a minute ago: the second roll, to end "now", has ended
    new_key = roll_secret_key(store, caller, 3600, clock=lambda: t0)
    assert new_key.startswith("sk_test_") and new_key != created.secret_key
    # Both work during the overlap; the publishable key is untouched.
    for key in (created.secret_key, new_key, created.publishable_key):
        assert authenticate(store, key)[0].id == created.merchant.id
    listed = api_keys(store, created.merchant.id, t0)
    secret = [k for k in listed if k.kind == "secret"]
    assert len(secret) == 2 and sorted(k.expires or 0 for k in secret) == [0, int(t0) + 3600]
    assert all(new_key not in k.hint and created.secret_key not in k.hint for k in listed)
    # Rolled again, to end now (a key leaked): every older secret key stops, the one still
    # in its overlap too; only the newest works.
    newest = roll_secret_key(store, caller, 0, clock=lambda: t0 + 1)
    for stopped in (new_key, created.secret_key):
        with pytest.raises(AuthenticationError):
            authenticate(store, stopped)
    assert authenticate(store, newest)[0].id == created.merchant.id
    working = [k for k in api_keys(store, created.merchant.id, time.time()) if k.kind == "secret"]
    assert len(working) == 1 and working[0].expires is None
    audit = store.query_partition(f"MERCHANT#{created.merchant.id}", "AUDIT#")
    rolls = [a for a in audit if a["operation"] == "api_key.roll"]
    assert len(rolls) == 3 and {a["actor"] for a in rolls} == {"dashboard session_1"}


def test_an_operators_session_views_another_merchant_and_a_merchants_cannot(
    store: Store, sessions: DashboardSessions, merchant_id: str
) -> None:
    other = create_merchant(store, "Another Shop").merchant.id
    operator_id, _ = sessions.sign_in(sessions.issue_link(merchant_id, operations=True))
    sessions.view_as(operator_id, other)
    viewing = sessions.session(operator_id)
    assert viewing is not None and viewing.merchant_id == other and viewing.operations
    merchant_session, _ = sessions.sign_in(sessions.issue_link(merchant_id))
    with pytest.raises(InvalidRequestError):
        sessions.view_as(merchant_session, other)
    unchanged = sessions.session(merchant_session)
    assert unchanged is not None and unchanged.merchant_id == merchant_id
    digest = hashlib.sha256(operator_id.encode()).hexdigest()
    audit = store.query_partition(f"SESSION#{digest}", "AUDIT#")
    assert [a["operation"] for a in audit] == ["dashboard.session", "dashboard.view_as"]
