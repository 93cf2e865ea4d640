from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from clearline import ledger
from clearline.balance import merchant_balance
from clearline.store import Store, TransactionCancelled, Write

SHARDS = ledger.ShardPolicy()


def journal(jid: str, entries: tuple[ledger.Entry, ...], currency: str = "usd") -> ledger.Journal:
    return ledger.Journal(
        id=jid,
        currency=currency,
        entries=entries,
        charge_id="ch_1",
        merchant_id="acct_1",
        operation="charge.capture",
        created=0,
    )


def charge(**fields: Any) -> dict[str, Any]:
    return {
        "pk": "CHARGE#ch_1",
        "sk": "CHARGE",
        "id": "ch_1",
        "currency": "usd",
        "amount": 5000,
        "amount_captured": 0,
        "amount_refunded": 0,
        **fields,
    }


def test_unbalanced_journals_cannot_be_built() -> None:
    with pytest.raises(ledger.UnbalancedJournal):
        journal("j1", (ledger.Entry("a:usd", "debit", 100), ledger.Entry("b:usd", "credit", 99)))
    with pytest.raises(ledger.UnbalancedJournal):  # pending and posted balance separately
        journal(
            "j2",
            (
                ledger.Entry("a:usd", "debit", 100, pending=True),
                ledger.Entry("b:usd", "credit", 100),
            ),
        )
    with pytest.raises(ledger.UnbalancedJournal):  # one currency per journal
        journal("j3", (ledger.Entry("a:usd", "debit", 100), ledger.Entry("b:eur", "credit", 100)))


@pytest.mark.parametrize(
    "entries",
    [
        ledger.capture_entries("acct_1", "usd", 5000, 150),
        ledger.hold_entries("acct_1", "usd", 5000),
        ledger.release_hold_entries("acct_1", "usd", 5000),
        ledger.capture_hold_entries("acct_1", "usd", 20000, 18000, 540),
        ledger.refund_entries("acct_1", "usd", 5000),
    ],
)
def test_every_posting_rule_balances(entries: tuple[ledger.Entry, ...]) -> None:
    journal("j", entries)  # raises if not


def test_posting_a_capture_updates_the_sharded_balances(store: Store) -> None:
    store.put(charge(amount_captured=5000))
    store.transact(
        ledger.journal_writes(
            [journal("jnl_1", ledger.capture_entries("acct_1", "usd", 5000, 150))], SHARDS
        )
    )
    payable = ledger.account_balance(store, ledger.merchant_payable("acct_1", "usd"))
    assert (payable.credits_posted, payable.debits_posted) == (4850, 0)
    assert ledger.account_balance(store, ledger.fee_revenue("usd")).credits_posted == 150
    assert ledger.account_balance(store, ledger.processor_receivable("usd")).debits_posted == 5000
    report = ledger.verify(store)
    assert report.violations == []
    assert report.journals == 1 and report.totals["usd"] == {"debits": 5000, "credits": 5000}


def test_capturing_part_of_a_hold_releases_all_of_it(store: Store) -> None:
    store.put(charge(amount=20000, amount_captured=18000))
    store.transact(
        ledger.journal_writes(
            [journal("jnl_h", ledger.hold_entries("acct_1", "usd", 20000))], SHARDS
        )
    )
    store.transact(
        ledger.journal_writes(
            [journal("jnl_c", ledger.capture_hold_entries("acct_1", "usd", 20000, 18000, 540))],
            SHARDS,
        )
    )
    receivable = ledger.account_balance(store, ledger.processor_receivable("usd"))
    assert receivable.debits_pending == receivable.credits_pending == 20000
    assert receivable.debits_posted == 18000
    assert ledger.verify(store).ok


def test_a_journal_is_written_once(store: Store) -> None:
    writes = ledger.journal_writes(
        [journal("jnl_once", ledger.capture_entries("acct_1", "usd", 5000, 150))], SHARDS
    )
    store.transact(writes)
    with pytest.raises(TransactionCancelled) as raised:
        store.transact(writes)
    assert raised.value.failed_at(0)
    assert ledger.account_balance(store, ledger.fee_revenue("usd")).credits_posted == 150


def test_hot_account_writes_spread_over_its_shards() -> None:
    account = ledger.merchant_payable("acct_hot", "usd")
    shards = Counter(
        journal(f"jnl_{i}", ledger.capture_entries("acct_hot", "usd", 1000, 30)).shard_of(
            account, SHARDS
        )
        for i in range(3200)
    )
    assert len(shards) == SHARDS.merchant
    assert max(shards.values()) < 3 * 3200 / SHARDS.merchant


def test_shard_counts_are_configurable_per_account(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        ledger.SHARDS_ENV, '{"merchant_payable:acct_big": 128, "fee_revenue:usd": 8}'
    )
    policy = ledger.ShardPolicy.from_env()
    assert policy.count(ledger.merchant_payable("acct_big", "usd")) == 128
    assert policy.count(ledger.merchant_payable("acct_small", "usd")) == policy.merchant
    assert policy.count(ledger.fee_revenue("usd")) == 8
    assert policy.count(ledger.fee_revenue("eur")) == policy.platform


def test_verify_finds_a_shard_that_disagrees_with_its_entries(store: Store) -> None:
    store.put(charge(amount_captured=1000))
    store.transact(
        ledger.journal_writes(
            [journal("jnl_2", ledger.capture_entries("acct_1", "usd", 1000, 30))], SHARDS
        )
    )
    store.transact(
        [
            Write.add(
                {"pk": f"ACCOUNT#{ledger.fee_revenue('usd')}#0", "sk": "BALANCE"},
                {"credits_posted": 1},
            )
        ]
    )
    report = ledger.verify(store)
    assert any(ledger.fee_revenue("usd") in v for v in report.violations)


def test_verify_finds_a_charge_that_disagrees_with_its_journals(store: Store) -> None:
    store.put(charge(amount_captured=999))
    store.transact(
        ledger.journal_writes(
            [journal("jnl_3", ledger.capture_entries("acct_1", "usd", 1000, 30))], SHARDS
        )
    )
    assert any("amount_captured 999 != journals 1000" in v for v in ledger.verify(store).violations)


def test_verify_finds_an_unbalanced_or_mixed_currency_journal_and_orphans(store: Store) -> None:
    entries = [
        {"account": "a:usd", "direction": "debit", "amount": 10, "pending": False},
        {"account": "b:eur", "direction": "credit", "amount": 9, "pending": False},
    ]
    store.put(
        {
            "pk": "CHARGE#ch_gone",
            "sk": "JOURNAL#bad",
            "id": "bad",
            "currency": "usd",
            "charge": "ch_gone",
            "merchant": "acct_1",
            "operation": "x",
            "created": 0,
            "entries": entries,
        }
    )
    violations = ledger.verify(store).violations
    assert any("debits 10 != credits 9" in v for v in violations)
    assert any("b:eur is not in usd" in v for v in violations)
    assert any("journals of ch_gone belong to no charge" in v for v in violations)


def test_a_balance_sums_the_shards_of_its_settlement_currencies_only(
    aws: Any, store: Store
) -> None:
    for jid, cur in (("jnl_u", "usd"), ("jnl_e", "eur")):
        store.transact(
            ledger.journal_writes(
                [journal(jid, ledger.capture_entries("acct_1", cur, 5000, 150), cur)], SHARDS
            )
        )
    calls: Counter[str] = Counter()
    aws.meta.events.register(
        "provide-client-params.dynamodb", lambda model, **_: calls.update([model.name])
    )

    both = merchant_balance(store, "acct_1", SHARDS, ("usd", "eur"))
    assert [(a.currency, a.amount) for a in both.pending] == [("eur", 4850), ("usd", 4850)]
    # Two accounts of 64 shards in each currency, 100 keys to a BatchGetItem.
    assert calls == Counter({"BatchGetItem": 3})

    calls.clear()
    euros = merchant_balance(store, "acct_1", SHARDS, ("eur",))
    assert [(a.currency, a.amount) for a in euros.pending] == [("eur", 4850)]
    assert calls == Counter({"BatchGetItem": 2})

    # Only currencies with money are shown; with none, the merchant's default, at zero.
    nothing = merchant_balance(store, "acct_1", SHARDS, ("gbp", "usd"))
    assert [(a.currency, a.amount) for a in nothing.pending] == [("usd", 4850)]
    fresh = merchant_balance(store, "acct_2", SHARDS, ("gbp",))
    assert [(a.currency, a.amount) for a in fresh.available] == [("gbp", 0)]
    # Every currency's, when the merchant's are not given.
    assert [a.currency for a in merchant_balance(store, "acct_1", SHARDS).pending] == [
        "eur",
        "usd",
    ]
