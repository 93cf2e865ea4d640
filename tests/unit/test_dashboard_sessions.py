"""Dashboard sign-in (moto in-process): a link opens one session once, within its 15
minutes; a session ends when signed out or when its time is up; only hashes are stored;
forms are checked against the session's CSRF token."""

from __future__ import annotations

import hashlib

import pytest

from clearline.dashboard import (
    LINK_SECONDS,
    SESSION_SECONDS,
    DashboardSessions,
    SignInLinkInvalid,
)
from clearline.merchants import create_merchant
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
