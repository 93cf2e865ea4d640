from __future__ import annotations

from collections import Counter

import pytest

from clearline import ledger
from clearline.store import Store, TransactionCancelled, Write


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
    with pytest.raises(ledger.UnbalancedJournal):
        journal("j3", (ledger.Entry("a:usd", "debit", 100), ledger.Entry("a:usd", "credit", 100)))


def test_posting_a_capture_updates_the_sharded_balances(store: Store) -> None:
    entries = ledger.capture_entries("acct_1", "usd", 5000, 150)
    store.transact(journal("jnl_1", entries).writes())
    payable = ledger.account_balance(store, ledger.merchant_payable("acct_1", "usd"))
    assert (payable.credits_posted, payable.debits_posted) == (4850, 0)
    assert ledger.account_balance(store, ledger.fee_revenue("usd")).credits_posted == 150
    assert ledger.account_balance(store, ledger.processor_receivable("usd")).debits_posted == 5000
    report = ledger.verify(store)
    assert (
        report.ok
        and report.journals == 1
        and report.totals["usd"] == {"debits": 5000, "credits": 5000}
    )


def test_a_journal_is_written_once(store: Store) -> None:
    writes = journal("jnl_once", ledger.capture_entries("acct_1", "usd", 5000, 150)).writes()
    store.transact(writes)
    with pytest.raises(TransactionCancelled) as raised:
        store.transact(writes)
    assert raised.value.failed_at(0)
    assert ledger.account_balance(store, ledger.fee_revenue("usd")).credits_posted == 150


def test_hot_account_writes_spread_over_its_shards() -> None:
    account = ledger.merchant_payable("acct_hot", "usd")
    shards = Counter(
        journal(f"jnl_{i}", ledger.capture_entries("acct_hot", "usd", 1000, 30)).shard_of(account)
        for i in range(3200)
    )
    assert len(shards) == ledger.MERCHANT_SHARDS
    assert max(shards.values()) < 3 * 3200 / ledger.MERCHANT_SHARDS


def test_verify_finds_a_shard_that_disagrees_with_its_entries(store: Store) -> None:
    store.transact(journal("jnl_2", ledger.capture_entries("acct_1", "usd", 1000, 30)).writes())
    store.transact(
        [
            Write.add(
                {"pk": f"ACCOUNT#{ledger.fee_revenue('usd')}#0", "sk": "BALANCE"},
                {"credits_posted": 1},
            )
        ]
    )
    report = ledger.verify(store)
    assert not report.ok
    assert any(ledger.fee_revenue("usd") in v for v in report.violations)


def test_verify_finds_an_unbalanced_or_mixed_currency_journal(store: Store) -> None:
    store.put(
        {
            "pk": "JOURNAL#bad",
            "sk": "JOURNAL",
            "id": "bad",
            "currency": "usd",
            "charge": "ch_x",
            "merchant": "acct_1",
            "operation": "x",
            "created": 0,
            "entries": [
                {"account": "a:usd", "direction": "debit", "amount": 10, "pending": False},
                {"account": "b:eur", "direction": "credit", "amount": 9, "pending": False},
            ],
        }
    )
    violations = ledger.verify(store).violations
    assert any("debits 10 != credits 9" in v for v in violations)
    assert any("b:eur is not in usd" in v for v in violations)
