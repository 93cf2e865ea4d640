"""Risk before the processor: every charge scored, Radar's default rules on the score, and
velocity counters that rules read from DynamoDB windows."""

from __future__ import annotations

from typing import Any

import pytest

from clearline.audit import Caller
from clearline.charges import ChargeService
from clearline.errors import CardError
from clearline.fraud_rules import RuleBook
from clearline.merchants import create_merchant
from clearline.models import Charge
from clearline.params import ChargeCreateParams
from clearline.processor import ProcessorClient
from clearline.radar_rules import Counter, parse
from clearline.risk import ORDINARY_SCORE_RANGE, DeterministicScorer, Payer, RiskAssessment
from clearline.store import Store
from clearline.topology import COUNTERS_TABLE
from clearline.velocity import ChargeFacts, VelocityCounters
from clearline_local.sandbox_processor import SandboxProcessor

# ---- the scorer ------------------------------------------------------------------------------


def test_the_risk_test_cards_score_as_stripe_documents_them() -> None:
    scorer = DeterministicScorer()
    for token, level in (
        ("tok_riskLevelElevated", "elevated"),
        ("pm_card_riskLevelElevated", "elevated"),
        ("tok_riskLevelHighest", "highest"),
        ("tok_radarBlock", "highest"),
    ):
        assessment = scorer.assess(Payer(token, None, None))
        assert assessment.level == level, token
    assert scorer.assess(Payer("tok_radarBlock", None, None)).always_block
    assert not scorer.assess(Payer("tok_riskLevelHighest", None, None)).always_block


def test_a_stored_risk_test_card_is_known_by_its_fingerprint() -> None:
    """A card stored from 4000 0000 0000 9235 carries no alias, only the fingerprint the vault
    gives that number: the scorer asks the vault for the aliases' fingerprints once."""
    asked: list[str] = []

    def fingerprint_of(alias: str) -> str:
        asked.append(alias)
        return f"fp_{alias}"

    scorer = DeterministicScorer(fingerprint_of)
    assert scorer.assess(Payer(None, "fp_tok_riskLevelElevated", None)).level == "elevated"
    assert scorer.assess(Payer(None, "fp_tok_riskLevelHighest", None)).level == "highest"
    assert scorer.assess(Payer(None, "fp_tok_visa", None)).level == "normal"
    assert len(asked) == len(set(asked))  # each alias asked once, then kept


def test_a_vault_away_is_asked_again_rather_than_forgotten() -> None:
    answers: dict[str, str | None] = {}
    scorer = DeterministicScorer(lambda alias: answers.get(alias))
    assert scorer.assess(Payer(None, "fp_elevated", None)).level == "normal"
    answers["tok_riskLevelElevated"] = "fp_elevated"
    for alias in ("tok_riskLevelHighest", "tok_radarBlock", "tok_chargeDeclinedFraudulent"):
        answers[alias] = f"fp_{alias}"
    assert scorer.assess(Payer(None, "fp_elevated", None)).level == "elevated"


def test_ordinary_cards_score_the_same_every_time_and_stay_normal() -> None:
    scorer = DeterministicScorer()
    scores = {
        scorer.assess(Payer(None, f"fp_{n}", f"buyer{n}@example.com")).score for n in range(200)
    }
    assert max(scores) < ORDINARY_SCORE_RANGE <= 65
    assert len(scores) > 20  # a spread, not one number
    again = scorer.assess(Payer(None, "fp_7", "Buyer7@Example.com")).score
    assert again == scorer.assess(Payer(None, "fp_7", "buyer7@example.com")).score


@pytest.mark.parametrize(
    ("score", "level"),
    [
        (0, "normal"),
        (64, "normal"),
        (65, "elevated"),
        (74, "elevated"),
        (75, "highest"),
        (99, "highest"),
    ],
)
def test_levels_follow_radars_thresholds(score: int, level: str) -> None:
    assert RiskAssessment(score).level == level


# ---- on the charge path ----------------------------------------------------------------------


@pytest.fixture
def shop(store: Store, processor: SandboxProcessor) -> dict[str, Any]:
    merchant = create_merchant(store, "Risky Shop").merchant
    client = ProcessorClient(processor.url, timeout_seconds=2.0)
    counters = Store(COUNTERS_TABLE.name, store.client)
    return {
        "merchant": merchant,
        "caller": Caller(merchant, "req_risk"),
        "charges": ChargeService(store, client, counters=counters),
        "book": RuleBook(store),
        "processor": processor,
        "counters": counters,
    }


def pay(shop: dict[str, Any], key: str, source: str = "tok_visa", **params: Any) -> Charge:
    charge: Charge = shop["charges"].create(
        shop["caller"],
        ChargeCreateParams(source=source, **{"amount": 2000, "currency": "usd", **params}),
        idempotency_key=key,
    )
    return charge


def sent(shop: dict[str, Any], charge_id: str) -> bool:
    return any(a["reference"] == charge_id for a in shop["processor"].authorizations())


def stored(store: Store, charge_id: str) -> dict[str, Any]:
    item = store.get(f"CHARGE#{charge_id}", "CHARGE")
    assert item is not None
    return item


def test_every_charge_carries_its_score(shop: dict[str, Any]) -> None:
    charge = pay(shop, "plain")
    assert charge.outcome is not None
    assert (charge.outcome.type, charge.outcome.risk_level) == ("authorized", "normal")
    assert charge.outcome.risk_score is not None and 0 <= charge.outcome.risk_score < 65
    with pytest.raises(CardError) as declined:
        pay(shop, "declined", source="tok_chargeDeclined")
    failed = shop["charges"].retrieve(shop["merchant"], declined.value.charge)
    assert failed.outcome.type == "issuer_declined"
    assert failed.outcome.risk_level == "normal" and failed.outcome.risk_score is not None


def test_elevated_risk_goes_through_into_the_review_queue(shop: dict[str, Any]) -> None:
    charge = pay(shop, "elevated", source="tok_riskLevelElevated")
    assert charge.state == "captured" and charge.outcome is not None
    assert (charge.outcome.type, charge.outcome.reason) == ("manual_review", "elevated_risk_level")
    assert (charge.outcome.risk_level, charge.outcome.risk_score) == ("elevated", 70)
    assert charge.outcome.rule is not None
    assert charge.outcome.rule["id"] == "manual_review_if_elevated_risk"
    assert "elevated risk" in (charge.outcome.seller_message or "")
    assert sent(shop, charge.id)


def test_highest_risk_is_blocked_before_the_processor(store: Store, shop: dict[str, Any]) -> None:
    with pytest.raises(CardError) as blocked:
        pay(shop, "highest", source="tok_riskLevelHighest")
    assert (blocked.value.code, blocked.value.decline_code) == ("card_declined", "fraudulent")
    item = stored(store, blocked.value.charge)
    assert item["state"] == "failed"
    assert item["outcome"]["type"] == "blocked"
    assert item["outcome"]["reason"] == "highest_risk_level"
    assert item["outcome"]["rule"]["id"] == "block_if_high_risk"
    assert (item["outcome"]["risk_level"], item["outcome"]["risk_score"]) == ("highest", 85)
    assert item["outcome"]["seller_message"] == "Clearline blocked this payment as too risky."
    assert not sent(shop, blocked.value.charge)


def test_an_allow_rule_lets_a_high_risk_payer_through_but_never_a_known_fraudulent_card(
    store: Store, shop: dict[str, Any]
) -> None:
    shop["book"].add(shop["merchant"].id, "Allow if :email: = 'ceo@shop.example'")
    trusted = pay(shop, "trusted", source="tok_riskLevelHighest", receipt_email="ceo@shop.example")
    assert trusted.outcome is not None
    assert (trusted.outcome.type, trusted.outcome.risk_level) == ("authorized", "highest")
    assert sent(shop, trusted.id)
    for source in ("tok_radarBlock", "tok_chargeDeclinedFraudulent"):
        with pytest.raises(CardError) as blocked:
            pay(shop, f"always-{source}", source=source, receipt_email="ceo@shop.example")
        item = stored(store, blocked.value.charge)
        assert item["outcome"]["type"] == "blocked"
        assert item["outcome"]["network_status"] == "not_sent_to_network"
        assert not sent(shop, blocked.value.charge)


def test_merchant_rules_can_read_the_score(shop: dict[str, Any]) -> None:
    rule = shop["book"].add(shop["merchant"].id, "Review if :risk_score: >= 0 and :amount: > 5000")
    reviewed = pay(shop, "big", amount=9000)
    assert reviewed.outcome is not None and reviewed.outcome.type == "manual_review"
    assert reviewed.outcome.reason == "rule" and reviewed.outcome.rule is not None
    assert reviewed.outcome.rule["id"] == rule.id


# ---- velocity --------------------------------------------------------------------------------


class CountingStore(Store):
    """The counters table, counting the calls made to it."""

    calls = 0

    def _call(self, operation: str, **kwargs: Any) -> Any:
        CountingStore.calls += 1
        return super()._call(operation, **kwargs)


def test_a_velocity_rule_blocks_the_charge_past_its_count(
    store: Store, shop: dict[str, Any]
) -> None:
    shop["book"].add(shop["merchant"].id, "Block if :charge_count_for_email_hourly: >= 2")
    first = pay(shop, "v1", receipt_email="Fast@Example.com")
    assert pay(shop, "v1", receipt_email="Fast@Example.com").id == first.id  # a retry
    pay(shop, "v2", receipt_email="fast@example.com")  # the retry above did not count
    with pytest.raises(CardError) as blocked:
        pay(shop, "v3", receipt_email="fast@example.com")
    assert stored(store, blocked.value.charge)["outcome"]["reason"] == "rule"
    assert not sent(shop, blocked.value.charge)
    assert pay(shop, "other", receipt_email="slow@example.com").outcome is not None


def test_declines_are_counted_apart(store: Store, shop: dict[str, Any]) -> None:
    shop["book"].add(shop["merchant"].id, "Block if :declined_charge_count_for_customer_daily: > 1")
    from clearline.customers import CustomerService
    from clearline.params import CustomerCreateParams

    customer = CustomerService(store).create(
        shop["caller"], CustomerCreateParams(), idempotency_key="cus"
    )
    pay(shop, "ok", customer=customer.id)
    for n in range(2):
        with pytest.raises(CardError):
            pay(shop, f"no{n}", source="tok_chargeDeclined", customer=customer.id)
    with pytest.raises(CardError) as blocked:
        pay(shop, "then", customer=customer.id)
    item = stored(store, blocked.value.charge)
    assert item["outcome"]["type"] == "blocked" and not sent(shop, item["id"])


def test_windows_slide_and_expire(store: Store) -> None:
    now = [1_800_000_000.0]
    counters = VelocityCounters(Store(COUNTERS_TABLE.name, store.client), lambda: now[0])
    hourly = Counter("charge_count_for_email_hourly", "charge", "email", 3600)
    cards = Counter("card_fingerprint_count_for_email_hourly", "card_fingerprint", "email", 3600)
    for n, card in enumerate(("fp_a", "fp_a", "fp_b")):
        counters.record("acct_1", (hourly, cards), ChargeFacts(f"ch_{n}", card, "a@x.io", None))
        now[0] += 600
    facts = ChargeFacts("ch_next", "fp_c", "a@x.io", None)
    assert counters.counts("acct_1", (hourly, cards), facts) == {
        hourly.attribute: 3.0,
        cards.attribute: 2.0,  # distinct cards
    }
    assert counters.counts("acct_2", (hourly,), facts) == {hourly.attribute: 0.0}
    now[0] += 1800  # an hour after the first charge: its bucket has left the window
    assert counters.counts("acct_1", (hourly,), facts) == {hourly.attribute: 2.0}
    item = store.client.scan(TableName=COUNTERS_TABLE.name)["Items"][0]
    assert int(item["expires_at"]["N"]) > now[0] - 3600  # kept while a window can read it
    nobody = ChargeFacts("ch_x", None, None, None)
    assert counters.counts("acct_1", (hourly,), nobody) == {hourly.attribute: None}


def test_rules_without_counters_cost_no_counter_call(store: Store, shop: dict[str, Any]) -> None:
    counting = CountingStore(COUNTERS_TABLE.name, store.client)
    CountingStore.calls = 0
    shop["charges"] = ChargeService(
        shop["charges"].store, shop["charges"].processor, counters=counting
    )
    shop["book"].add(shop["merchant"].id, "Review if :amount: > 100000")
    pay(shop, "a", receipt_email="a@example.com")
    assert CountingStore.calls == 0
    shop["book"].add(shop["merchant"].id, "Review if :charge_count_for_email_daily: > 10")
    shop["charges"].screener._cached.clear()  # past the rules' 30 s cache
    pay(shop, "b", receipt_email="a@example.com")
    assert CountingStore.calls == 2  # one read of the window, one update


def test_a_browsers_address_counts_the_cards_it_gave(store: Store) -> None:
    """Card testing from one address: `:card_fingerprint_count_for_ip_hourly:` counts the
    distinct cards one browser gave, and a charge no browser gave is not counted by it."""
    book = RuleBook(store)
    merchant = create_merchant(store, "Velocity Shop").merchant
    rule = book.add(merchant.id, "Block if :card_fingerprint_count_for_ip_hourly: > 3")
    (cards,) = rule.counters
    assert (cards.what, cards.by, cards.window_seconds) == ("card_fingerprint", "ip", 3600)
    counters = VelocityCounters(Store(COUNTERS_TABLE.name, store.client))
    for n, card in enumerate(("fp_a", "fp_b", "fp_b", "fp_c")):
        counters.record(
            merchant.id, (cards,), ChargeFacts(f"ch_{n}", card, None, None, "198.51.100.7")
        )
    seen = ChargeFacts("ch_next", "fp_d", None, None, "198.51.100.7")
    assert counters.counts(merchant.id, (cards,), seen) == {cards.attribute: 3.0}
    elsewhere = ChargeFacts("ch_else", "fp_d", None, None, "192.0.2.1")
    assert counters.counts(merchant.id, (cards,), elsewhere) == {cards.attribute: 0.0}
    server = ChargeFacts("ch_server", "fp_d", None, None, None)
    assert counters.counts(merchant.id, (cards,), server) == {cards.attribute: None}
    assert parse("Block if :email_count_for_customer_weekly: > 3").counters[0].window_seconds == (
        7 * 86_400
    )


def test_counting_never_holds_a_charge_back(
    shop: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from clearline.store import StoreUnavailable

    shop["book"].add(shop["merchant"].id, "Block if :charge_count_for_email_daily: > 100")

    def away(*_: Any, **__: Any) -> None:
        raise StoreUnavailable("update_item failed: ServiceUnavailable")

    monkeypatch.setattr(Store, "add_to_sets", away)
    charge = pay(shop, "unlucky", receipt_email="a@example.com")
    assert charge.state == "captured" and sent(shop, charge.id)
