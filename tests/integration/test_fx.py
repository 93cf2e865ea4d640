"""Multi-currency, over its own local stack and the unmodified stripe SDK: charges in other
currencies settle into the merchant's settlement currency at the stored mid-market rate less
the FX fee, or exactly at a locked quote's rate; refunds and chargebacks go back at the
charge's rate whatever the market did since; stale rates refuse conversions (and only
them); and the processor's settlement file, in the customer's currency, settles the
merchant's side in theirs. `ledger verify` runs after each test.

Expected figures are computed here from the provider's own sheet with decimal arithmetic,
independently of the code under test."""

from __future__ import annotations

import csv
import time
import uuid
from collections.abc import Iterator
from decimal import ROUND_HALF_EVEN, Context, Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
import stripe

from clearline import fx, ledger
from tests.polling import eventually

from .conftest import Stack, running_stack, settled_on
from .test_dashboard import signed_in
from .test_money_out import dispute_of
from .test_reconciliation import report_for

pytestmark = pytest.mark.integration

TEN_DIGITS = Context(prec=10, rounding=ROUND_HALF_EVEN)
EXPONENT = {"usd": 2, "eur": 2, "gbp": 2, "jpy": 0, "kwd": 3}


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Its rates are moved, made stale and settled from: a stack of its own."""
    with running_stack(tmp_path_factory) as started:
        yield started


@pytest.fixture(autouse=True)
def ledger_verified_after_each_test(own_stack: Stack) -> Iterator[None]:
    """Whatever converted, every currency balances on its own and every conversion's legs
    name each other and agree with their rate."""
    yield
    report = ledger.verify(own_stack.store())
    assert report.ok, report.violations
    assert len(report.totals) > 1  # more than one currency was moved
    for currency, totals in report.totals.items():
        assert totals["debits"] == totals["credits"], currency


def sdk_for(stack: Stack, merchant: dict[str, Any]) -> stripe.StripeClient:
    return stripe.StripeClient(
        merchant["secret_key"], base_addresses={"api": stack.url}, max_network_retries=0
    )


@pytest.fixture(scope="module")
def shop(own_stack: Stack) -> tuple[dict[str, Any], stripe.StripeClient]:
    """Paid in US dollars, selling abroad: 3% per charge, and the default 1% FX fee."""
    merchant = own_stack.create_merchant("Abroad Shop", fee_percent=3, fee_fixed=0)
    return merchant, sdk_for(own_stack, merchant)


def key() -> str:
    return str(uuid.uuid4())


def provider(stack: Stack, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    url = f"{stack.info.rates_url}{path}"
    response = requests.post(url, json=body, timeout=5) if body is not None else requests.get(url)
    response.raise_for_status()
    return dict(response.json())


def pull_rates(stack: Stack) -> None:
    done = stack.clearline("invoke", "fx_rates")
    assert done.returncode == 0, done.stderr


def mid(stack: Stack, source: str, target: str) -> Decimal:
    """The stored mid-market rate, from the sheet the api reads."""
    latest = stack.store().get(fx.RATES_PK, fx.LATEST_SK)
    assert latest is not None
    rates = {code: Decimal(str(rate)) for code, rate in latest["rates"].items()}
    return TEN_DIGITS.divide(rates[target], rates[source])


def converted(amount: int, source: str, target: str, rate: Decimal) -> int:
    exact = (Decimal(amount) * rate).scaleb(EXPONENT[target] - EXPONENT[source])
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def all_in(rate: Decimal, fee: str = "0.01") -> Decimal:
    return TEN_DIGITS.multiply(rate, 1 - Decimal(fee))


def charge(sdk: stripe.StripeClient, currency: str, amount: int, **params: Any) -> Any:
    return sdk.v1.charges.create(
        params={"amount": amount, "currency": currency, "source": "tok_visa", **params},
        options={"idempotency_key": key()},
    )


def txn(sdk: stripe.StripeClient, txn_id: str) -> Any:
    return sdk.v1.balance_transactions.retrieve(txn_id)


def quote(sdk: stripe.StripeClient, *sources: str, to: str = "usd", lock: str = "hour") -> Any:
    """POST /v1/fx_quotes through the SDK's raw request (the SDK has no FX quote class)."""
    params: dict[str, Any] = {
        "from_currencies": list(sources),
        "to_currency": to,
        "lock_duration": lock,
        "idempotency_key": key(),
    }
    return sdk.deserialize(sdk.raw_request("post", "/v1/fx_quotes", **params), api_mode="V1")


@pytest.mark.parametrize(
    ("currency", "amount"), [("eur", 1000), ("jpy", 15_000), ("kwd", 12_340), ("gbp", 999)]
)
def test_a_charge_in_another_currency_settles_in_dollars_at_the_mid_rate_less_the_fx_fee(
    own_stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient], currency: str, amount: int
) -> None:
    _, sdk = shop
    rate = all_in(mid(own_stack, currency, "usd"))
    paid = charge(sdk, currency, amount)
    # What the customer saw stays on the charge.
    assert (paid.amount, paid.currency) == (amount, currency)
    assert paid.presentment_details.to_dict() == {
        "presentment_amount": amount,
        "presentment_currency": currency,
    }
    moved = txn(sdk, paid.balance_transaction)
    dollars = converted(amount, currency, "usd", rate)
    assert (moved.currency, moved.amount) == ("usd", dollars)
    assert Decimal(str(moved.exchange_rate)) == rate
    assert moved.fee == (dollars * 3 + 50) // 100  # 3%, on the converted amount
    assert moved.net == dollars - moved.fee

    # The ledger: two legs, each in its own currency, naming each other and the rate.
    legs = {
        j["currency"]: j
        for j in own_stack.store().query_partition(f"CHARGE#{paid.id}", "JOURNAL#")
        if j.get("fx")
    }
    assert set(legs) == {currency, "usd"}
    assert legs[currency]["fx"]["counterpart"] == legs["usd"]["id"]
    assert legs["usd"]["fx"]["counterpart"] == legs[currency]["id"]
    assert Decimal(legs["usd"]["fx"]["rate"]) == mid(own_stack, currency, "usd")


def test_over_plain_http_a_quote_and_a_charge_at_it(
    own_stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient]
) -> None:
    """What `curl` sends: form-encoded bodies, Basic auth with the secret key."""
    merchant, _ = shop
    auth = (merchant["secret_key"], "")

    def post(path: str, form: dict[str, str]) -> requests.Response:
        return requests.post(
            f"{own_stack.url}{path}",
            data=form,
            auth=auth,
            headers={"Idempotency-Key": key()},
            timeout=30,
        )

    made = post(
        "/v1/fx_quotes",
        {"from_currencies[0]": "jpy", "to_currency": "usd", "lock_duration": "day"},
    )
    assert made.status_code == 200, made.text
    locked = made.json()
    assert locked["object"] == "fx_quote" and locked["usage"]["type"] == "payment"
    rate = Decimal(str(locked["rates"]["jpy"]["exchange_rate"]))
    assert rate == all_in(mid(own_stack, "jpy", "usd"), "0.012")  # 1% fee, 0.2% for a day

    paid = post(
        "/v1/charges",
        {"amount": "98765", "currency": "jpy", "source": "tok_visa", "fx_quote": locked["id"]},
    )
    assert paid.status_code == 200, paid.text
    txn_id = paid.json()["balance_transaction"]
    moved = requests.get(
        f"{own_stack.url}/v1/balance_transactions/{txn_id}", auth=auth, timeout=30
    ).json()
    assert (moved["currency"], moved["amount"]) == ("usd", converted(98765, "jpy", "usd", rate))

    bad = post("/v1/fx_quotes", {"from_currencies[0]": "xyz", "to_currency": "usd"})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "from_currencies"
    same = post("/v1/fx_quotes", {"from_currencies[0]": "usd", "to_currency": "usd"})
    assert same.status_code == 400
    assert same.json()["error"]["param"] == "from_currencies"


def test_a_dollar_charge_converts_nothing(
    shop: tuple[dict[str, Any], stripe.StripeClient],
) -> None:
    _, sdk = shop
    paid = charge(sdk, "usd", 2500)
    moved = txn(sdk, paid.balance_transaction)
    assert (moved.currency, moved.amount, moved.exchange_rate) == ("usd", 2500, None)
    assert paid.presentment_details is None


def test_a_merchant_paid_in_two_currencies_keeps_euros_as_euros(own_stack: Stack) -> None:
    merchant = own_stack.create_merchant(
        "Two Purses", fee_percent=3, fee_fixed=0, settlement_currencies=("usd", "eur")
    )
    assert merchant["settlement_currencies"] == ["usd", "eur"]
    sdk = sdk_for(own_stack, merchant)
    in_euros = txn(sdk, charge(sdk, "eur", 1000).balance_transaction)
    assert (in_euros.currency, in_euros.amount, in_euros.exchange_rate) == ("eur", 1000, None)
    # gbp converts into the default (the first) unless a quote names the other.
    in_pounds = txn(sdk, charge(sdk, "gbp", 1000).balance_transaction)
    assert in_pounds.currency == "usd"
    to_euros = quote(sdk, "gbp", to="eur")
    quoted = charge(sdk, "gbp", 1000, fx_quote=to_euros.id)
    assert txn(sdk, quoted.balance_transaction).currency == "eur"
    balance = sdk.v1.balance.retrieve()
    assert {b.currency for b in balance.pending} == {"usd", "eur"}


def test_a_locked_quote_holds_its_rate_while_the_market_moves(
    own_stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient]
) -> None:
    _, sdk = shop
    locked = quote(sdk, "eur", "jpy")
    assert locked.id.startswith("fxq_") and locked.lock_status == "active"
    assert locked.lock_expires_at == pytest.approx(time.time() + 3600, abs=120)
    details = locked.rates["eur"]["rate_details"]
    base = Decimal(str(details["base_rate"]))
    assert base == mid(own_stack, "eur", "usd")
    assert Decimal(str(details["fx_fee_rate"])) == Decimal("0.01")
    assert Decimal(str(details["duration_premium"])) == Decimal("0.001")  # an hour's lock
    quoted_rate = Decimal(str(locked.rates["eur"]["exchange_rate"]))
    assert quoted_rate == all_in(base, "0.011")

    provider(own_stack, "/_sandbox/drift", {"percent": "-4", "currency": "eur"})
    try:
        pull_rates(own_stack)
        assert mid(own_stack, "eur", "usd") != base  # the market moved
        at_quote = charge(sdk, "eur", 10_000, fx_quote=locked.id)
        moved = txn(sdk, at_quote.balance_transaction)
        assert Decimal(str(moved.exchange_rate)) == quoted_rate
        assert moved.amount == converted(10_000, "eur", "usd", quoted_rate)
        at_market = txn(sdk, charge(sdk, "eur", 10_000).balance_transaction)
        assert Decimal(str(at_market.exchange_rate)) == all_in(mid(own_stack, "eur", "usd"))
        assert at_market.amount != moved.amount
    finally:
        provider(own_stack, "/_sandbox/reset", {})
        pull_rates(own_stack)

    fetched = sdk.deserialize(sdk.raw_request("get", f"/v1/fx_quotes/{locked.id}"), api_mode="V1")
    assert fetched.rates["eur"]["exchange_rate"] == locked.rates["eur"]["exchange_rate"]
    listed = sdk.deserialize(sdk.raw_request("get", "/v1/fx_quotes"), api_mode="V1")
    assert locked.id in [q["id"] for q in listed.data]


def test_a_payment_intent_converts_at_its_quote(
    shop: tuple[dict[str, Any], stripe.StripeClient],
) -> None:
    _, sdk = shop
    locked = quote(sdk, "eur", lock="five_minutes")
    intent = sdk.v1.payment_intents.create(
        params={
            "amount": 4200,
            "currency": "eur",
            "payment_method": "pm_card_visa",
            "confirm": True,
            "fx_quote": locked.id,
        },
        options={"idempotency_key": key()},
    )
    assert intent.status == "succeeded" and intent.fx_quote == locked.id
    paid = sdk.v1.charges.retrieve(intent.latest_charge)
    moved = txn(sdk, paid.balance_transaction)
    assert moved.exchange_rate == locked.rates["eur"]["exchange_rate"]


def test_quotes_that_cannot_convert_the_payment_are_refused_and_nothing_is_charged(
    own_stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient]
) -> None:
    merchant, sdk = shop
    pounds = quote(sdk, "gbp")
    unlocked = quote(sdk, "eur", lock="none")
    assert unlocked.lock_status == "none" and unlocked.lock_expires_at is None
    expiring = quote(sdk, "eur", lock="five_minutes")
    # Five minutes pass: the stored lock ends a second ago.
    item = own_stack.store().get(f"FXQUOTE#{expiring.id}", "FXQUOTE")
    assert item is not None
    own_stack.store().put({**item, "lock_expires_at": int(time.time()) - 1})
    assert (
        sdk.deserialize(sdk.raw_request("get", f"/v1/fx_quotes/{expiring.id}"), api_mode="V1")
    ).lock_status == "expired"
    other = own_stack.create_merchant("Someone Else", fee_percent=3, fee_fixed=0)
    theirs = quote(sdk_for(own_stack, other), "eur")

    before = len(sdk.v1.charges.list(params={"limit": 100}).data)
    cases = [
        (pounds.id, "fx_quote_invalid"),  # gbp quoted, eur charged
        (unlocked.id, "fx_quote_expired"),
        (expiring.id, "fx_quote_expired"),
        (theirs.id, "fx_quote_invalid"),  # as if it did not exist
    ]
    for quote_id, code in cases:
        with pytest.raises(stripe.InvalidRequestError) as refused:
            charge(sdk, "eur", 1000, fx_quote=quote_id)
        assert refused.value.http_status == 400
        assert (refused.value.code, refused.value.param) == (code, "fx_quote")
    with pytest.raises(stripe.InvalidRequestError) as not_held:
        quote(sdk, "eur", to="jpy")  # not a currency the merchant is paid in
    assert not_held.value.param == "to_currency"
    assert len(sdk.v1.charges.list(params={"limit": 100}).data) == before
    assert merchant["settlement_currencies"] == ["usd"]


def test_a_refund_after_the_rate_moved_goes_back_at_the_charge_rate(
    own_stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient]
) -> None:
    _, sdk = shop
    store = own_stack.store()
    paid = charge(sdk, "eur", 20_000)
    captured = txn(sdk, paid.balance_transaction)
    gain_loss_before = ledger.account_balance(store, ledger.fx_gain_loss("usd")).credit_balance

    provider(own_stack, "/_sandbox/drift", {"percent": "-5", "currency": "eur"})
    try:
        pull_rates(own_stack)  # fewer euros per dollar: buying euros back costs more
        today = mid(own_stack, "eur", "usd")
        partial = sdk.v1.refunds.create(
            params={"charge": paid.id, "amount": 5_000}, options={"idempotency_key": key()}
        )
        rest = sdk.v1.refunds.create(params={"charge": paid.id}, options={"idempotency_key": key()})
    finally:
        provider(own_stack, "/_sandbox/reset", {})
        pull_rates(own_stack)
    back = [txn(sdk, r.balance_transaction) for r in (partial, rest)]
    rate = Decimal(str(captured.exchange_rate))
    assert [b.currency for b in back] == ["usd", "usd"]
    assert [Decimal(str(b.exchange_rate)) for b in back] == [rate, rate]
    assert [b.amount for b in back] == [
        -converted(5_000, "eur", "usd", rate),
        -converted(15_000, "eur", "usd", rate),
    ]
    # The merchant gives back what the charge gave them (rounded per refund), no more.
    assert abs(sum(b.amount for b in back) + captured.amount) <= 1
    # What buying the euros back cost beyond that is ours: a loss, never the merchant's.
    cost = converted(5_000, "eur", "usd", today) + converted(15_000, "eur", "usd", today)
    loss = cost + sum(b.amount for b in back)
    assert loss > 0
    gain_loss = ledger.account_balance(store, ledger.fx_gain_loss("usd")).credit_balance
    assert gain_loss - gain_loss_before == -loss


def test_a_chargeback_of_a_converted_charge_withdraws_at_the_charge_rate(
    own_stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient]
) -> None:
    _, sdk = shop
    paid = charge(sdk, "eur", 3_000, source="tok_createDispute")
    captured = txn(sdk, paid.balance_transaction)
    dispute = dispute_of(sdk, paid.id, "needs_response")
    assert (dispute.amount, dispute.currency) == (3_000, "eur")
    (withdrawal,) = dispute.balance_transactions
    rate = Decimal(str(captured.exchange_rate))
    assert withdrawal.currency == "usd"
    assert Decimal(str(withdrawal.exchange_rate)) == rate
    assert withdrawal.amount == -captured.amount
    assert withdrawal.fee == 1500  # 15.00 USD
    assert withdrawal.net == -captured.amount - 1500


def test_stale_rates_refuse_conversions_only_and_recover(
    own_stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient]
) -> None:
    _, sdk = shop
    store = own_stack.store()
    provider(own_stack, "/_sandbox/outage", {"mode": "error_500"})
    try:
        failed = own_stack.clearline("invoke", "fx_rates")
        assert failed.returncode != 0  # the pull fails loudly, and stores nothing
        # An hour and more without a good pull: the last sheet is two hours old.
        latest = store.get(fx.RATES_PK, fx.LATEST_SK)
        assert latest is not None
        store.put({**latest, "as_of": int(time.time()) - 2 * 3600})
        stale = own_stack.clearline("fx", "rates")
        assert stale.returncode == 0 and "STALE" in stale.stdout

        before = len(sdk.v1.charges.list(params={"limit": 100}).data)
        with pytest.raises(stripe.APIError) as refused:
            charge(sdk, "eur", 1000)
        assert refused.value.http_status == 503
        assert refused.value.json_body["error"]["code"] == "fx_rates_unavailable"
        assert refused.value.headers["Stripe-Should-Retry"] == "true"
        with pytest.raises(stripe.APIError):
            quote(sdk, "eur")
        assert len(sdk.v1.charges.list(params={"limit": 100}).data) == before
        # A charge in the settlement currency needs no rate.
        assert charge(sdk, "usd", 1000).status == "succeeded"

        # A provider serving an old sheet does not make the rates fresh either.
        provider(own_stack, "/_sandbox/outage", {"mode": "stale"})
        assert own_stack.clearline("invoke", "fx_rates").returncode != 0
        with pytest.raises(stripe.APIError):
            charge(sdk, "eur", 1000)
    finally:
        provider(own_stack, "/_sandbox/outage", {"mode": "none"})
    pull_rates(own_stack)
    assert charge(sdk, "eur", 1000).status == "succeeded"


def test_the_settlement_file_in_euros_settles_the_merchants_dollars(
    own_stack: Stack, tmp_path: Path
) -> None:
    merchant = own_stack.create_merchant("Settled Abroad", fee_percent=3, fee_fixed=0)
    sdk = sdk_for(own_stack, merchant)
    paid, paid_on = settled_on(lambda: charge(sdk, "eur", 8_000))
    captured = txn(sdk, paid.balance_transaction)
    output = tmp_path / "settlement.csv"
    done = own_stack.clearline(
        "settlements", "generate", "--date", paid_on, "--output", str(output)
    )
    assert done.returncode == 0, done.stderr
    key_ = done.stdout.strip().splitlines()[-1].split("s3://", 1)[1].split("/", 1)[1]
    with output.open() as source:
        (row,) = [r for r in csv.DictReader(source) if r["charge_id"] == paid.id]
    assert (row["currency"], int(row["amount"])) == ("eur", 8_000)  # the processor's currency
    report = report_for(own_stack, key_)
    assert not [m for m in report["mismatches"] if m.get("charge_id") == paid.id]

    settled = eventually(
        lambda: [
            j
            for j in own_stack.store().query_partition(f"CHARGE#{paid.id}", "JOURNAL#")
            if j["operation"] == "settlement"
        ],
        message="the settlement journals",
    )
    assert sorted(j["currency"] for j in settled) == ["eur", "usd"]
    assert txn(sdk, paid.balance_transaction).status == "available"
    balance = sdk.v1.balance.retrieve()
    assert [(b.currency, b.amount) for b in balance.available] == [("usd", captured.net)]
    assert [(b.currency, b.amount) for b in balance.pending] == [("usd", 0)]


def test_the_dashboards_balance_page_lists_the_merchants_fx_quotes(
    own_stack: Stack, shop: tuple[dict[str, Any], stripe.StripeClient]
) -> None:
    merchant, sdk = shop
    locked = quote(sdk, "eur", "jpy")
    charge(sdk, "eur", 1000)  # a conversion too: the check after each test wants two currencies
    page = signed_in(own_stack, merchant["id"]).get(f"{own_stack.url}/dashboard/balance")[2]
    row = page.split(f"<code>{locked.id}</code>", 1)[1].split("</tr>", 1)[0]
    assert f"1 EUR = {locked.rates['eur'].exchange_rate} USD" in row
    assert f"1 JPY = {locked.rates['jpy'].exchange_rate} USD" in row and "active" in row
