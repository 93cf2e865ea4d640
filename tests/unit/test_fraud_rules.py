"""A merchant's fraud rules, as operators keep them: parsed on the way in, in order, and
never lost to a concurrent edit."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from clearline.audit import Caller
from clearline.charges import ChargeService
from clearline.errors import CardError, ConflictError, InvalidRequestError, ResourceMissingError
from clearline.fraud_rules import RULES_TTL_SECONDS, RuleBook, Screener, Screening
from clearline.ids import derived_id
from clearline.merchants import create_merchant
from clearline.models import Charge
from clearline.params import (
    ChargeCreateParams,
    ValueListCreateParams,
    ValueListItemCreateParams,
    ValueListUpdateParams,
)
from clearline.processor import ProcessorClient
from clearline.refunds import RefundService
from clearline.resolver import Resolver
from clearline.risk import DeterministicScorer, Payer
from clearline.store import Store
from clearline.topology import (
    IDEMPOTENCY_TABLE,
    MAIN_TABLE,
    PROCESSOR_URL_ENV,
    TOPOLOGY,
    table_env_var,
)
from clearline.value_lists import ValueListService
from clearline.velocity import ChargeFacts
from clearline_local.frontdoor import build_event
from clearline_local.lambda_runtime import LocalLambdaContext, load_handler
from clearline_local.sandbox_processor import SandboxProcessor
from tests.unit.conftest import record_rates


def test_rules_are_kept_in_order_and_removed_by_id(store: Store) -> None:
    merchant = create_merchant(store, "Careful Shop").merchant
    book = RuleBook(store)
    assert book.rules(merchant.id) == ()
    block = book.add(merchant.id, "Block if   :card_country: != 'US'")
    review = book.add(merchant.id, "Review if :amount_in_usd: > 1000")
    rules = book.rules(merchant.id)
    assert [(r.id, r.action) for r in rules] == [(block.id, "block"), (review.id, "review")]
    assert rules[0].predicate == ":card_country: != 'US'"  # whitespace tidied
    assert rules[0].matches({"card_country": "FR"}, {})
    book.remove(merchant.id, block.id)
    assert [r.id for r in book.rules(merchant.id)] == [review.id]
    with pytest.raises(ResourceMissingError):
        book.remove(merchant.id, block.id)
    assert book.rules("acct_someone_else") == ()


def test_a_rule_that_does_not_parse_is_refused_and_not_kept(store: Store) -> None:
    merchant = create_merchant(store, "Typo Shop").merchant
    book = RuleBook(store)
    with pytest.raises(InvalidRequestError) as refused:
        book.add(merchant.id, "Block if :card_country: !== 'US'")
    assert refused.value.param == "rule"
    assert "position 26" in refused.value.message  # the second "="
    assert book.rules(merchant.id) == ()


def test_a_rule_that_could_never_match_is_refused(store: Store) -> None:
    """A rule naming what the screener does not know, or a list that does not exist,
    would be kept to no effect: it is refused, and a list a rule names cannot go."""
    merchant = create_merchant(store, "Strict Shop").merchant
    book, lists = RuleBook(store), ValueListService(store)
    caller = Caller(merchant, "req_strict")
    for text, says in (
        ("Review if :address_zip_check: = 'fail'", ":address_zip_check:"),
        ("Block if :email: in @vip", "@vip"),
    ):
        with pytest.raises(InvalidRequestError) as refused:
            book.add(merchant.id, text)
        assert says in refused.value.message
    vip = lists.create(
        caller,
        ValueListCreateParams(alias="vip", name="VIP", item_type="email"),
        idempotency_key="v",
    )
    rule = book.add(merchant.id, "Block if :email: not in @vip")
    for attempt in (
        lambda: lists.delete(caller, vip.id),
        lambda: lists.update(caller, vip.id, ValueListUpdateParams(alias="vip2")),
    ):
        with pytest.raises(InvalidRequestError) as kept:
            attempt()
        assert rule.id in kept.value.message
    book.remove(merchant.id, rule.id)
    assert lists.delete(caller, vip.id).deleted


def test_two_operators_editing_at_once_lose_nothing_silently(store: Store) -> None:
    merchant = create_merchant(store, "Busy Shop").merchant
    first, second = RuleBook(store), RuleBook(store)
    first.add(merchant.id, "Review if :amount_in_usd: > 500")
    seen: dict[str, Any] = {}

    class ReadEarly(Store):
        """The second operator's read, taken before the first operator's next write."""

        def get(self, pk: str, sk: str) -> dict[str, Any] | None:
            if "item" not in seen:
                seen["item"] = super().get(pk, sk)
                first.add(merchant.id, "Block if :card_brand: = 'amex'")
            return seen["item"]  # type: ignore[no-any-return]

    late = RuleBook(ReadEarly(store.table_name, store.client))
    with pytest.raises(ConflictError):
        late.add(merchant.id, "Block if :card_country: = 'XX'")
    assert len(second.rules(merchant.id)) == 2  # both of the first operator's, and only them


# ---- the rules on the charge path -------------------------------------------------------------


@pytest.fixture
def ruled(store: Store, processor: SandboxProcessor) -> dict[str, Any]:
    merchant = create_merchant(store, "Ruled Shop").merchant
    client = ProcessorClient(processor.url, timeout_seconds=2.0)
    charges = ChargeService(store, client)
    return {
        "merchant": merchant,
        "caller": Caller(merchant, "req_rules"),
        "charges": charges,
        "refunds": RefundService(store, client),
        "book": RuleBook(store),
        "processor": processor,
    }


def pay(ruled: dict[str, Any], key: str, **params: Any) -> Charge:
    charge: Charge = ruled["charges"].create(
        ruled["caller"],
        ChargeCreateParams(**{"source": "tok_visa", "amount": 2000, "currency": "usd", **params}),
        idempotency_key=key,
    )
    return charge


def sent(ruled: dict[str, Any], charge_id: str) -> bool:
    return any(a["reference"] == charge_id for a in ruled["processor"].authorizations())


def test_a_blocked_charge_fails_as_fraudulent_and_never_reaches_the_processor(
    store: Store, ruled: dict[str, Any]
) -> None:
    merchant, lists = ruled["merchant"], ValueListService(store)
    made = lists.create(
        ruled["caller"],
        ValueListCreateParams(alias="blocked_emails", name="Blocked", item_type="email"),
        idempotency_key="list",
    )
    lists.create_item(
        ruled["caller"],
        ValueListItemCreateParams(value_list=made.id, value="Thief@Example.com"),
        idempotency_key="item",
    )
    rule = ruled["book"].add(merchant.id, "Block if :email: in @blocked_emails")

    with pytest.raises(CardError) as refused:
        pay(ruled, "stolen", receipt_email="thief@example.com")
    assert (refused.value.code, refused.value.decline_code) == ("card_declined", "fraudulent")
    charge_id = refused.value.charge
    stored = store.get(f"CHARGE#{charge_id}", "CHARGE")
    assert stored is not None and stored["state"] == "failed"
    assert stored["outcome"]["type"] == "blocked"
    assert stored["outcome"]["network_status"] == "not_sent_to_network"
    assert stored["outcome"]["rule"]["id"] == rule.id
    assert stored["fraud_details"] == {"stripe_report": "fraudulent"}
    assert not sent(ruled, charge_id)
    with pytest.raises(CardError):  # its retry is the same answer, and still not sent
        pay(ruled, "stolen", receipt_email="thief@example.com")
    assert not sent(ruled, charge_id)

    honest = pay(ruled, "honest", receipt_email="buyer@example.com")
    assert honest.state == "captured" and honest.outcome is not None
    assert honest.outcome.type == "authorized"


def test_a_reviewed_charge_goes_through_marked_for_review(
    store: Store, ruled: dict[str, Any]
) -> None:
    record_rates(store)
    rule = ruled["book"].add(ruled["merchant"].id, "Review if :amount_in_usd: > 100")
    big = pay(ruled, "big", amount=15_000, currency="eur")  # about 163 dollars
    assert big.state == "captured" and big.outcome is not None
    assert (big.outcome.type, big.outcome.reason) == ("manual_review", "rule")
    assert big.outcome.rule == {"id": rule.id, "action": "review", "predicate": rule.predicate}
    small = pay(ruled, "small", amount=5_000, currency="eur")
    assert small.outcome is not None and small.outcome.type == "authorized"


def test_a_block_cut_short_after_its_write_ahead_is_finished_unsent(
    store: Store, ruled: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    record_rates(store)
    ruled["book"].add(ruled["merchant"].id, "Block if :currency: = 'gbp'")

    def crash(*_: Any) -> Any:
        raise RuntimeError("the execution environment died")

    monkeypatch.setattr(ChargeService, "_block", crash)
    with pytest.raises(RuntimeError):
        pay(ruled, "cut-short", currency="gbp")
    monkeypatch.undo()
    charge_id = derived_id("ch", ruled["merchant"].id, "cut-short")
    pending = store.get(f"CHARGE#{charge_id}", "CHARGE")
    assert pending is not None and pending["state"] == "pending"

    Resolver(ruled["charges"], ruled["refunds"]).run(int(time.time()) + 3600)
    finished = store.get(f"CHARGE#{charge_id}", "CHARGE")
    assert finished is not None and finished["state"] == "failed"
    assert finished["outcome"]["type"] == "blocked"
    assert not sent(ruled, charge_id)


# ---- Radar's default rules, turned off and on ------------------------------------------------


def test_a_default_rule_turned_off_lets_the_highest_risk_through_and_back_on_blocks_it(
    store: Store, ruled: dict[str, Any]
) -> None:
    merchant, book = ruled["merchant"], ruled["book"]
    book.set_default(merchant.id, "block_if_high_risk", enabled=False)
    assert book.disabled_defaults(merchant.id) == {"block_if_high_risk"}
    through = pay(ruled, "highest-off", source="tok_riskLevelHighest")
    assert through.state == "captured" and through.outcome is not None
    assert (through.outcome.type, through.outcome.risk_level) == ("authorized", "highest")
    assert sent(ruled, through.id)

    book.set_default(merchant.id, "block_if_high_risk", enabled=True)
    assert book.disabled_defaults(merchant.id) == frozenset()
    ruled["charges"].screener._cached.clear()  # past the rules' 30 s cache
    with pytest.raises(CardError) as blocked:
        pay(ruled, "highest-on", source="tok_riskLevelHighest")
    assert blocked.value.decline_code == "fraudulent"
    item = store.get(f"CHARGE#{blocked.value.charge}", "CHARGE")
    assert item is not None and item["outcome"]["reason"] == "highest_risk_level"
    assert not sent(ruled, blocked.value.charge)


def test_the_review_default_turned_off_leaves_elevated_risk_unreviewed(
    ruled: dict[str, Any],
) -> None:
    ruled["book"].set_default(ruled["merchant"].id, "manual_review_if_elevated_risk", False)
    charge = pay(ruled, "elevated-off", source="tok_riskLevelElevated")
    assert charge.outcome is not None and charge.review is None
    assert (charge.outcome.type, charge.outcome.risk_level) == ("authorized", "elevated")


def test_a_card_always_blocked_stays_blocked_with_every_default_off(
    store: Store, ruled: dict[str, Any]
) -> None:
    """4100 0000 0000 0019 is Clearline's to block, not a rule a merchant can turn off."""
    for rule_id in ("block_if_high_risk", "manual_review_if_elevated_risk"):
        ruled["book"].set_default(ruled["merchant"].id, rule_id, enabled=False)
    for source in ("tok_radarBlock", "tok_chargeDeclinedFraudulent"):
        with pytest.raises(CardError) as blocked:
            pay(ruled, f"always-{source}", source=source)
        item = store.get(f"CHARGE#{blocked.value.charge}", "CHARGE")
        assert item is not None and item["outcome"]["type"] == "blocked"
        assert not sent(ruled, blocked.value.charge)


def test_turning_a_default_off_is_idempotent_and_keeps_the_merchants_rules(store: Store) -> None:
    merchant = create_merchant(store, "Quiet Shop").merchant
    book = RuleBook(store)
    key = (f"MERCHANT#{merchant.id}", "RADAR_RULES")
    book.set_default(merchant.id, "block_if_high_risk", enabled=True)  # on already
    assert store.get(*key) is None  # nothing to write
    rule = book.add(merchant.id, "Block if :card_country: = 'XX'")
    book.set_default(merchant.id, "block_if_high_risk", enabled=False)
    written = store.get(*key)
    assert written is not None and written["disabled_defaults"] == ["block_if_high_risk"]
    book.set_default(merchant.id, "block_if_high_risk", enabled=False)  # again: no error
    assert store.get(*key) == written  # and no write: the version did not move
    ruleset = book.read(merchant.id)
    assert [r.id for r in ruleset.rules] == [rule.id]
    assert [r.id for r in ruleset.defaults] == ["manual_review_if_elevated_risk"]


def test_an_unknown_default_rule_is_refused_and_nothing_is_written(store: Store) -> None:
    merchant = create_merchant(store, "Unknown Default Shop").merchant
    book = RuleBook(store)
    key = (f"MERCHANT#{merchant.id}", "RADAR_RULES")
    for rule_id in ("block_if_highest_risk", "manual_review_if_risky_after_authorization", ""):
        with pytest.raises(InvalidRequestError) as refused:
            book.set_default(merchant.id, rule_id, enabled=False)
        assert (refused.value.param, refused.value.code) == ("rule", "parameter_invalid")
        assert "block_if_high_risk, manual_review_if_elevated_risk" in refused.value.message
    assert store.get(*key) is None
    book.set_default(merchant.id, "manual_review_if_elevated_risk", enabled=False)
    before = store.get(*key)
    with pytest.raises(InvalidRequestError):
        book.set_default(merchant.id, "nope", enabled=True)
    assert store.get(*key) == before


def test_the_screener_reads_the_disabled_defaults_with_the_rules_in_one_call(
    store: Store,
) -> None:
    """The disabled defaults live in the rules' item: no call beyond its one GetItem per
    TTL, and a change is seen once that has passed."""
    merchant = create_merchant(store, "Counted Shop").merchant
    RuleBook(store).set_default(merchant.id, "block_if_high_risk", enabled=False)
    calls: list[str] = []

    class Counting(Store):
        def _call(self, operation: str, **kwargs: Any) -> Any:
            calls.append(operation)
            return super()._call(operation, **kwargs)

    now = [1000.0]
    screener = Screener(
        Counting(store.table_name, store.client), DeterministicScorer(), clock=lambda: now[0]
    )

    def screen() -> Screening:
        payer = Payer("tok_riskLevelHighest", None, None)
        facts = ChargeFacts("ch_counted", None, None, None)
        return screener.screen(merchant.id, {"amount": 2000.0}, lambda: 20.0, payer, facts)

    for _ in range(3):
        passed = screen()
        assert passed.action is None and passed.risk is not None
        assert passed.risk.level == "highest"
    assert calls == ["get_item"]
    RuleBook(store).set_default(merchant.id, "block_if_high_risk", enabled=True)
    assert screen().action is None  # cached until the TTL passes
    now[0] += RULES_TTL_SECONDS
    blocked = screen()
    assert (blocked.action, blocked.reason) == ("block", "highest_risk_level")
    assert calls == ["get_item", "get_item"]


# ---- the operators' route --------------------------------------------------------------------

Admin = Callable[[str, str, bytes], tuple[int, dict[str, Any]]]


@pytest.fixture
def admin(
    store: Store, processor: SandboxProcessor, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Admin]:
    """The api handler in-process, called as the gateway calls it once IAM has verified an
    operator's signature (it names the caller's ARN)."""
    for name, value in {
        table_env_var(MAIN_TABLE.key): MAIN_TABLE.name,
        table_env_var(IDEMPOTENCY_TABLE.key): IDEMPOTENCY_TABLE.name,
        PROCESSOR_URL_ENV: processor.url,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "Clearline",
        "POWERTOOLS_SERVICE_NAME": "clearline",
    }.items():
        monkeypatch.setenv(name, value)
    handler = load_handler(TOPOLOGY.function("api"))
    import api_routes  # on the path once load_handler has run

    api_routes.services.cache_clear()  # rebuild clients inside this test's moto account

    def call(method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, Any]]:
        headers = [("Content-Type", "application/x-www-form-urlencoded")]
        event = build_event(method, path, headers, body, "127.0.0.1", "prod")
        event["requestContext"]["identity"]["userArn"] = "arn:aws:iam::000000000000:user/ops"
        context = LocalLambdaContext("api", 1024, 29, str(uuid.uuid4()))
        response = handler(event, context)
        return response["statusCode"], json.loads(response["body"])

    yield call
    api_routes.services.cache_clear()


def test_operators_turn_a_default_rule_off_and_on_through_the_admin_route(
    store: Store, admin: Admin
) -> None:
    merchant = create_merchant(store, "Operated Shop").merchant
    path = f"/admin/merchants/{merchant.id}/radar_rules"
    status, listed = admin("GET", path, b"")
    assert status == 200 and listed["data"] == []
    assert [(d["id"], d["action"], d["enabled"]) for d in listed["defaults"]] == [
        ("block_if_high_risk", "block", True),
        ("manual_review_if_elevated_risk", "review", True),
    ]
    assert listed["defaults"][0]["predicate"] == ":risk_level: = 'highest'"

    status, off = admin("POST", f"{path}/defaults/block_if_high_risk", b"enabled=false")
    assert status == 200, off
    assert {d["id"]: d["enabled"] for d in off["defaults"]} == {
        "block_if_high_risk": False,
        "manual_review_if_elevated_risk": True,
    }
    written = store.get(f"MERCHANT#{merchant.id}", "RADAR_RULES")

    for rule_id, body, param in (
        ("block_if_highest_risk", b"enabled=true", "rule"),
        ("block_if_high_risk", b"enabled=maybe", "enabled"),
        ("block_if_high_risk", b"", "enabled"),
        ("block_if_high_risk", b"enabled=true&rule=x", "rule"),
    ):
        status, refused = admin("POST", f"{path}/defaults/{rule_id}", body)
        assert status == 400, refused
        assert refused["error"]["type"] == "invalid_request_error"
        assert refused["error"]["param"] == param, refused
        assert refused["error"]["code"] in (
            "parameter_invalid",
            "parameter_missing",
            "parameter_unknown",
        )
    assert store.get(f"MERCHANT#{merchant.id}", "RADAR_RULES") == written  # nothing changed

    status, on = admin("POST", f"{path}/defaults/block_if_high_risk", b"enabled=true")
    assert status == 200 and all(d["enabled"] for d in on["defaults"])
    status, missing = admin("POST", "/admin/merchants/acct_nobody/radar_rules/defaults/x", b"")
    assert status == 404 and missing["error"]["param"] == "merchant"
