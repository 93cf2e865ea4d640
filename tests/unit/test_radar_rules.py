"""Fraud rules in Radar's language: what parses, what is refused (and where), how each test
evaluates, and the order actions run in."""

from __future__ import annotations

from typing import Any

import pytest

from clearline.radar_rules import (
    Counter,
    RuleSyntaxError,
    Value,
    decide,
    parse,
)

CHARGE: dict[str, Value] = {
    "amount_in_usd": 1250.0,
    "currency": "eur",
    "card_bin": "424242",
    "card_country": "US",
    "ip_country": "FR",
    "email_domain": "Example.com",
    "risk_level": "normal",
    "risk_score": 12.0,
    "is_3d_secure": False,
    "card_fingerprint_count_for_ip_hourly": 4.0,
    "customer": "cus_abc",
}
LISTS = {"blocked_bins": {"424242", "400000"}, "trusted_domains": {"example.org"}}


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("Block if :card_country: != :ip_country:", True),
        ("block if :card_country: = :ip_country:", False),
        ("Block if :card_bin: in @blocked_bins", True),
        ("Block if :card_bin: not in @blocked_bins", False),
        ("Review if :amount_in_usd: > 1000", True),
        ("Review if :amount_in_usd: <= 1000", False),
        ("Block if :card_fingerprint_count_for_ip_hourly: > 3", True),
        ("Block if :card_fingerprint_count_for_ip_hourly: > 4", False),
        ("Allow if :email_domain: in ('example.com', 'example.net')", True),  # any case
        ("Allow if :email_domain: in @trusted_domains", False),
        ("Block if :card_bin: in @no_such_list", False),  # an unknown list holds nothing
        ("Block if :card_country: = 'us' and :amount_in_usd: >= 1250", True),
        ("Block if :card_country: = 'CA' or :risk_score: < 20", True),
        ("Block if not (:card_country: = 'US' or :ip_country: = 'US')", False),
        ("Block if not :is_3d_secure: and :currency: = 'EUR'", True),
        ("Block if :is_3d_secure:", False),
        ("Review if is_missing(:email:)", True),
        ("Review if is_missing(:card_bin:)", False),
        # A test on an attribute the charge does not have is false, whatever it says.
        ("Block if :cvc_check: != 'pass'", False),
        ("Block if :email: not in ('a@b.co')", False),
        ("Block if :card_bin: in (424242, 400000)", True),  # a bin written as a number
        ("Block if :card_bin: in (0424242)", False),  # its leading zero counts
        # Undecided stays undecided through not, and, or: a missing attribute, or a list
        # that does not exist, never makes a rule match.
        ("Block if not :cvc_check: in ('pass')", False),
        ("Block if not :is_off_session:", False),
        ("Block if :email: not in @no_such_list", False),
        ("Block if not (:cvc_check: = 'fail' and :currency: = 'eur')", False),
        ("Block if :cvc_check: = 'fail' or :currency: = 'eur'", True),
        ("Block if not (:cvc_check: = 'fail' or :currency: = 'usd')", False),
        ("Block if :currency: = 'eur' and not :cvc_check: = 'pass'", False),
        # Identifiers compare exactly; other text without case.
        ("Block if :customer: = 'cus_ABC'", False),
        ("Block if :customer: = 'cus_abc'", True),
    ],
)
def test_each_kind_of_test_evaluates_as_radar_does(text: str, matches: bool) -> None:
    assert parse(text).matches(CHARGE, LISTS) is matches


def test_a_rule_says_what_it_needs() -> None:
    rule = parse(
        "Block if :card_fingerprint_count_for_ip_hourly: > 3 and :card_bin: in @blocked_bins "
        "or :charge_count_for_email_daily: >= 10",
        rule_id="rule_velocity",
    )
    assert rule.action == "block" and rule.id == "rule_velocity"
    assert rule.predicate.startswith(":card_fingerprint_count_for_ip_hourly: > 3")
    assert rule.value_lists == {"blocked_bins"}
    assert rule.counters == (
        Counter("card_fingerprint_count_for_ip_hourly", "card_fingerprint", "ip", 3600),
        Counter("charge_count_for_email_daily", "charge", "email", 86_400),
    )
    # Without a velocity attribute, a rule needs no counter (and so no read of one).
    assert parse("Review if :amount_in_usd: > 1000").counters == ()


@pytest.mark.parametrize(
    ("text", "position", "says"),
    [
        ("Refuse if :amount: > 1", 0, "allow, block or review"),
        ("Block when :amount: > 1", 6, "'if'"),
        ("Block if :amount: >", 19, "an :attribute: or a value"),
        ("Block if :no_such_thing: = 'x'", 9, "unknown attribute :no_such_thing:"),
        ("Block if :amount: > 1 and", 25, "an :attribute: or a value"),
        ("Block if (:amount: > 1", 22, "')'"),
        ("Block if :amount: in ('a'", 25, "')'"),
        ("Block if :card_bin: not = '4'", 24, "'in' after 'not'"),
        ("Block if :card_bin:", 19, "a comparison or 'in'"),
        ("Block if :amount: > 1 :amount:", 22, "the end of the rule"),
        ("Block if :amount: > 'many'", 20, "cannot compare"),
        ("Block if :amount: > 1 $", 22, "unexpected '$'"),
        ("Block if :card_bin: in", 22, "'(' or an @list"),
    ],
)
def test_a_rule_that_does_not_parse_is_refused_where_it_goes_wrong(
    text: str, position: int, says: str
) -> None:
    with pytest.raises(RuleSyntaxError) as refused:
        parse(text)
    assert refused.value.position == position, refused.value
    assert says in refused.value.description


def test_actions_run_in_radars_order_allow_then_block_then_review() -> None:
    review = parse("Review if :amount_in_usd: > 1000", "r1")
    block = parse("Block if :card_country: != :ip_country:", "b1")
    allow = parse("Allow if :email_domain: = 'example.com'", "a1")
    blocked_too = parse("Block if :card_bin: in @blocked_bins", "b2")

    decided = decide([review, block, blocked_too, allow], CHARGE, LISTS)
    assert (decided.action, decided.rule) == ("allow", allow)
    decided = decide([review, blocked_too, block], CHARGE, LISTS)
    assert (decided.action, decided.rule) == ("block", blocked_too)  # the first block rule
    decided = decide([review], CHARGE, LISTS)
    assert (decided.action, decided.rule) == ("review", review)
    nothing: dict[str, Any] = {**CHARGE, "amount_in_usd": 10.0}
    assert decide([review], nothing, LISTS).action is None


def test_a_rule_nested_past_reason_is_refused_not_overflowed() -> None:
    deep = "Block if " + "(" * 40 + ":amount: > 1" + ")" * 40
    with pytest.raises(RuleSyntaxError) as refused:
        parse(deep)
    assert "nested more than" in refused.value.description
    assert parse("Block if " + "(" * 10 + ":amount: > 1" + ")" * 10).matches({"amount": 2.0}, {})
