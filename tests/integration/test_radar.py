"""Radar value lists over the unmodified stripe SDK: the sets fraud rules name by alias."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests
import stripe

from .conftest import Stack

pytestmark = pytest.mark.integration


def key() -> dict[str, str]:
    return {"idempotency_key": str(uuid.uuid4())}


def test_a_value_list_is_made_filled_renamed_and_emptied(client: stripe.StripeClient) -> None:
    alias = f"blocked_bins_{uuid.uuid4().hex[:8]}"
    bins = client.v1.radar.value_lists.create(
        params={"alias": alias, "name": "Blocked BINs", "item_type": "card_bin"}, options=key()
    )
    assert bins.id.startswith("rsl_") and (bins.alias, bins.item_type) == (alias, "card_bin")
    assert bins.list_items.data == []

    added = [
        client.v1.radar.value_list_items.create(
            params={"value_list": bins.id, "value": value}, options=key()
        )
        for value in ("424242", "400000")
    ]
    assert all(i.id.startswith("rsli_") and i.value_list == bins.id for i in added)
    shown = client.v1.radar.value_lists.retrieve(bins.id)
    assert [i.value for i in shown.list_items.data] == ["400000", "424242"]  # newest first
    listed = client.v1.radar.value_list_items.list(params={"value_list": bins.id, "value": "4242"})
    assert [i.id for i in listed.data] == [added[0].id]

    # A value of the wrong kind, or one already there, changes nothing.
    for value, says in (("not-a-bin", "card_bin"), ("424242", "already")):
        with pytest.raises(stripe.InvalidRequestError) as refused:
            client.v1.radar.value_list_items.create(
                params={"value_list": bins.id, "value": value}, options=key()
            )
        assert refused.value.param == "value" and says in str(refused.value.user_message)
    assert len(client.v1.radar.value_list_items.list(params={"value_list": bins.id}).data) == 2

    renamed = client.v1.radar.value_lists.update(
        bins.id, params={"alias": alias + "_v2", "metadata": {"team": "risk"}}, options=key()
    )
    assert (renamed.alias, renamed.metadata.to_dict()) == (alias + "_v2", {"team": "risk"})
    found = client.v1.radar.value_lists.list(params={"alias": alias + "_v2"})
    assert [v.id for v in found.data] == [bins.id]
    # The old alias is free again; the new one is taken.
    again = client.v1.radar.value_lists.create(
        params={"alias": alias, "name": "Blocked BINs, again", "item_type": "card_bin"},
        options=key(),
    )
    with pytest.raises(stripe.InvalidRequestError) as taken:
        client.v1.radar.value_lists.create(
            params={"alias": alias + "_v2", "name": "Clash"}, options=key()
        )
    assert (taken.value.code, taken.value.param) == ("resource_already_exists", "alias")

    removed = client.v1.radar.value_list_items.delete(added[0].id)
    assert removed.deleted is True
    with pytest.raises(stripe.InvalidRequestError) as gone:
        client.v1.radar.value_list_items.retrieve(added[0].id)
    assert gone.value.http_status == 404
    assert client.v1.radar.value_lists.delete(bins.id).deleted is True
    assert client.v1.radar.value_lists.delete(again.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.radar.value_lists.retrieve(bins.id)


def test_another_merchants_list_does_not_exist_for_you(
    stack: Stack, client: stripe.StripeClient
) -> None:
    other: dict[str, Any] = stack.create_merchant("Other Risk Team")
    theirs = stripe.StripeClient(other["secret_key"], base_addresses={"api": stack.url})
    private = theirs.v1.radar.value_lists.create(
        params={"alias": "their_emails", "name": "Theirs", "item_type": "email"}, options=key()
    )
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.radar.value_lists.retrieve(private.id)
    assert missing.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError) as not_yours:
        client.v1.radar.value_list_items.create(
            params={"value_list": private.id, "value": "a@b.co"}, options=key()
        )
    assert not_yours.value.param == "value_list"


def test_operators_keep_a_merchants_rules_and_nobody_else_can(
    stack: Stack, merchant: dict[str, Any]
) -> None:
    """Clearline's own rules API (Stripe has none): an IAM-signed admin route, driven by
    `clearline radar rules`; a merchant's key, or no signature, is refused."""
    import json

    import requests

    def rules(*args: str) -> Any:
        done = stack.clearline("radar", "rules", *args, "--merchant", merchant["id"], "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["data"]

    before = {r["id"] for r in rules("list")}
    added = rules("add", "Block if :card_country: != 'US'")
    (new,) = [r for r in added if r["id"] not in before]
    assert (new["action"], new["predicate"]) == ("block", ":card_country: != 'US'")
    refused = stack.clearline(
        "radar", "rules", "add", "Block if :card_country: !== 'US'", "--merchant", merchant["id"]
    )
    assert refused.returncode == 2 and "position 26" in refused.stderr
    assert new["id"] in {r["id"] for r in rules("list")}

    url = f"{stack.url}/admin/merchants/{merchant['id']}/radar_rules"
    for headers in ({}, {"Authorization": f"Bearer {merchant['secret_key']}"}):
        answer = requests.post(url, json={"rule": "Allow if :amount: > 0"}, headers=headers)
        assert answer.status_code == 403, answer.text
    assert new["id"] not in {r["id"] for r in rules("remove", new["id"])}


def test_a_merchants_rule_blocks_a_charge_before_the_processor_over_the_sdk(
    stack: Stack,
) -> None:
    shop: dict[str, Any] = stack.create_merchant("Rule-Abiding Shop")
    sdk = stripe.StripeClient(shop["secret_key"], base_addresses={"api": stack.url})
    blocked_emails = sdk.v1.radar.value_lists.create(
        params={"alias": "blocked_emails", "name": "Blocked", "item_type": "email"},
        options=key(),
    )
    sdk.v1.radar.value_list_items.create(
        params={"value_list": blocked_emails.id, "value": "thief@example.com"}, options=key()
    )
    done = stack.clearline(
        "radar", "rules", "add", "Block if :email: in @blocked_emails", "--merchant", shop["id"]
    )
    assert done.returncode == 0, done.stderr

    with pytest.raises(stripe.CardError) as refused:
        sdk.v1.charges.create(
            params={
                "amount": 4200,
                "currency": "usd",
                "source": "tok_visa",
                "receipt_email": "Thief@Example.com",
            },
            options=key(),
        )
    assert (refused.value.code, refused.value.http_status) == ("card_declined", 402)
    assert refused.value.error.decline_code == "fraudulent"
    charge_id = refused.value.error.charge
    failed = sdk.v1.charges.retrieve(charge_id)
    assert (failed.status, failed.outcome.type) == ("failed", "blocked")
    assert failed.outcome.network_status == "not_sent_to_network"
    assert failed.outcome.rule.predicate == ":email: in @blocked_emails"
    assert not [a for a in stack.processor_authorizations() if a["reference"] == charge_id]

    paid = sdk.v1.charges.create(
        params={"amount": 4200, "currency": "usd", "source": "tok_visa"}, options=key()
    )
    assert (paid.status, paid.outcome.type) == ("succeeded", "authorized")


def test_risk_levels_from_stripes_test_cards_over_the_sdk(
    stack: Stack, client: stripe.StripeClient
) -> None:
    """Every charge is scored before the processor; Radar's default rules review the
    elevated and block the highest, whether the card is a token or a stored payment method."""
    plain = client.v1.charges.create(
        params={"amount": 1500, "currency": "usd", "source": "tok_visa"}, options=key()
    )
    assert (plain.outcome.type, plain.outcome.risk_level) == ("authorized", "normal")
    assert 0 <= plain.outcome.risk_score < 65

    for source in ("tok_riskLevelElevated", "pm_card_riskLevelElevated"):
        reviewed = client.v1.charges.create(
            params={"amount": 1500, "currency": "usd", "source": source}, options=key()
        )
        assert reviewed.status == "succeeded", source
        assert (reviewed.outcome.type, reviewed.outcome.reason) == (
            "manual_review",
            "elevated_risk_level",
        )
        assert reviewed.outcome.risk_level == "elevated"
        assert reviewed.outcome.rule.id == "manual_review_if_elevated_risk"

    for source in ("tok_riskLevelHighest", "pm_card_riskLevelHighest", "tok_radarBlock"):
        with pytest.raises(stripe.CardError) as blocked:
            client.v1.charges.create(
                params={"amount": 1500, "currency": "usd", "source": source}, options=key()
            )
        assert blocked.value.error.decline_code == "fraudulent", source
        failed = client.v1.charges.retrieve(blocked.value.error.charge)
        assert (failed.outcome.type, failed.outcome.risk_level) == ("blocked", "highest")
        assert failed.outcome.network_status == "not_sent_to_network"
        assert failed.outcome.reason == "highest_risk_level"
        sent = stack.processor_authorizations()
        assert not [a for a in sent if a["reference"] == failed.id], source


def test_a_velocity_rule_counts_a_cards_charges_over_the_sdk(stack: Stack) -> None:
    shop: dict[str, Any] = stack.create_merchant("Velocity Shop")
    sdk = stripe.StripeClient(shop["secret_key"], base_addresses={"api": stack.url})
    done = stack.clearline(
        "radar",
        "rules",
        "add",
        "Block if :charge_count_for_card_fingerprint_hourly: >= 2",
        "--merchant",
        shop["id"],
    )
    assert done.returncode == 0, done.stderr
    first_key = key()
    first = sdk.v1.charges.create(
        params={"amount": 1000, "currency": "usd", "source": "tok_visa"}, options=first_key
    )
    replay = sdk.v1.charges.create(
        params={"amount": 1000, "currency": "usd", "source": "tok_visa"}, options=first_key
    )
    assert replay.id == first.id  # a replay is not a second charge, and is not counted
    sdk.v1.charges.create(
        params={"amount": 1000, "currency": "usd", "source": "tok_visa"}, options=key()
    )
    with pytest.raises(stripe.CardError) as blocked:
        sdk.v1.charges.create(
            params={"amount": 1000, "currency": "usd", "source": "tok_visa"}, options=key()
        )
    failed = sdk.v1.charges.retrieve(blocked.value.error.charge)
    assert (failed.outcome.type, failed.outcome.reason) == ("blocked", "rule")
    other_card = sdk.v1.charges.create(
        params={"amount": 1000, "currency": "usd", "source": "tok_mastercard"}, options=key()
    )
    assert other_card.status == "succeeded"


class FromAddress(requests.adapters.HTTPAdapter):
    """Sends from one loopback address, as a browser in the country the stack places it."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def browser_token(stack: Stack, publishable_key: str, number: str, address: str) -> str:
    """A single-use token, made as Stripe.js makes one: from the browser, with the
    publishable key."""
    browser = requests.Session()
    browser.mount("http://", FromAddress(address))
    form = {
        "key": publishable_key,
        "card[number]": number,
        "card[exp_month]": "12",
        "card[exp_year]": "2031",
        "card[cvc]": "123",
    }
    answer = browser.post(f"{stack.info.vault_url}/v1/tokens", data=form)
    assert answer.status_code == 200, answer.text
    assert answer.json()["client_ip"] == address
    return str(answer.json()["id"])


def test_rules_on_the_cards_bin_and_the_browsers_country_and_address_over_the_sdk(
    stack: Stack,
) -> None:
    """`:card_bin:` from the vault's view of the number; `:ip_address:` and `:ip_country:`
    from the browser that tokenized the card; and card testing from one address caught by
    `:card_fingerprint_count_for_ip_hourly:`."""
    shop: dict[str, Any] = stack.create_merchant("Border Shop")
    sdk = stripe.StripeClient(shop["secret_key"], base_addresses={"api": stack.url})
    bins = sdk.v1.radar.value_lists.create(
        params={"alias": "blocked_bins", "name": "Blocked BINs", "item_type": "card_bin"},
        options=key(),
    )
    sdk.v1.radar.value_list_items.create(
        params={"value_list": bins.id, "value": "400005"}, options=key()
    )
    for rule in (
        "Block if :card_bin: in @blocked_bins",
        "Block if :card_country: != :ip_country:",
        "Block if :card_fingerprint_count_for_ip_hourly: > 1",
    ):
        done = stack.clearline("radar", "rules", "add", rule, "--merchant", shop["id"])
        assert done.returncode == 0, done.stderr

    def charge(source: str) -> stripe.Charge:
        return sdk.v1.charges.create(
            params={"amount": 2500, "currency": "usd", "source": source}, options=key()
        )

    def refused(source: str) -> stripe.Charge:
        with pytest.raises(stripe.CardError) as blocked:
            charge(source)
        assert blocked.value.error.decline_code == "fraudulent", source
        failed = sdk.v1.charges.retrieve(blocked.value.error.charge)
        assert (failed.outcome.type, failed.outcome.network_status) == (
            "blocked",
            "not_sent_to_network",
        )
        assert not [a for a in stack.processor_authorizations() if a["reference"] == failed.id]
        return failed

    # The BIN of a test token's number, as of a card typed in a browser.
    assert refused("tok_visa_debit").outcome.rule.predicate == ":card_bin: in @blocked_bins"
    assert charge("tok_visa").status == "succeeded"  # no browser: no country to differ from

    # A US card given from a browser in Great Britain; then from one in the US.
    abroad = browser_token(stack, shop["publishable_key"], "4242424242424242", "127.0.0.2")
    assert refused(abroad).outcome.rule.predicate == ":card_country: != :ip_country:"
    at_home = browser_token(stack, shop["publishable_key"], "4242424242424242", "127.0.0.3")
    assert charge(at_home).status == "succeeded"

    # A third card from the same US browser within the hour: card testing.
    second = browser_token(stack, shop["publishable_key"], "5555555555554444", "127.0.0.3")
    assert charge(second).status == "succeeded"
    third = browser_token(stack, shop["publishable_key"], "5200828282828210", "127.0.0.3")
    caught = refused(third)
    assert caught.outcome.rule.predicate == ":card_fingerprint_count_for_ip_hourly: > 1"

    # Where no rule of its own decides, a review shows where its payment came from.
    other: dict[str, Any] = stack.create_merchant("Reviewing Shop")
    theirs = stripe.StripeClient(other["secret_key"], base_addresses={"api": stack.url})
    elevated = browser_token(stack, other["publishable_key"], "4000000000009235", "127.0.0.2")
    reviewed = theirs.v1.charges.create(
        params={"amount": 2500, "currency": "usd", "source": elevated}, options=key()
    )
    assert reviewed.outcome.type == "manual_review"
    review = theirs.v1.reviews.retrieve(reviewed.review)
    assert review.ip_address == "127.0.0.2"
    assert review.ip_address_location.country == "GB"


def test_reviews_over_the_sdk_and_the_second_look_after_the_authorization(
    stack: Stack,
) -> None:
    """An elevated payment's review, listed and approved through the SDK; then, on the bus,
    the look after the authorization: a failed CVC opens a review, and a merchant's block
    rule on it reverses the payment, without anyone asking."""
    from tests.polling import eventually

    shop: dict[str, Any] = stack.create_merchant("Second Look Shop")
    sdk = stripe.StripeClient(shop["secret_key"], base_addresses={"api": stack.url})
    elevated = sdk.v1.charges.create(
        params={"amount": 2200, "currency": "usd", "source": "tok_riskLevelElevated"},
        options=key(),
    )
    assert elevated.review and elevated.review.startswith("prv_")
    listed = sdk.v1.reviews.list()
    assert [r.id for r in listed.data] == [elevated.review]
    review = sdk.v1.reviews.retrieve(elevated.review)
    assert (review.charge, review.open, review.opened_reason) == (elevated.id, True, "rule")
    approved = sdk.v1.reviews.approve(elevated.review, options=key())
    assert (approved.open, approved.closed_reason, approved.reason) == (
        False,
        "approved",
        "approved",
    )
    assert sdk.v1.reviews.list().data == []
    with pytest.raises(stripe.InvalidRequestError) as closed:
        sdk.v1.reviews.approve(elevated.review, options=key())
    assert closed.value.http_status == 400

    # No rule: a failed CVC seen after the authorization only opens a review.
    flagged = sdk.v1.charges.create(
        params={"amount": 2300, "currency": "usd", "source": "tok_cvcCheckFail"},
        options=key(),
    )
    assert flagged.review is None and flagged.outcome.type == "authorized"
    looked = eventually(
        lambda: (c := sdk.v1.charges.retrieve(flagged.id)).review and c,
        message="the second look opens a review",
    )
    assert looked.refunded is False and looked.outcome.type == "authorized"

    # The merchant's rule: reverse what fails the CVC.
    done = stack.clearline(
        "radar", "rules", "add", "Block if :cvc_check: = 'fail'", "--merchant", shop["id"]
    )
    assert done.returncode == 0, done.stderr
    for capture in (True, False):
        charge = sdk.v1.charges.create(
            params={
                "amount": 2400,
                "currency": "usd",
                "source": "tok_cvcCheckFail",
                "capture": capture,
            },
            options=key(),
        )
        reversed_ = eventually(
            lambda charge=charge: (c := sdk.v1.charges.retrieve(charge.id)).refunded and c,
            timeout=60,
            message="the second look reverses the payment",
        )
        assert reversed_.outcome.network_status == "reversed_after_approval"
        assert reversed_.outcome.type == "blocked"
        assert reversed_.fraud_details.stripe_report == "fraudulent"
        assert reversed_.amount_refunded == 2400 and reversed_.captured is capture
        eventually(  # closed right after the refund
            lambda review=reversed_.review: (
                sdk.v1.reviews.retrieve(review).closed_reason == "refunded_as_fraud"
            ),
            message="the review closes as refunded_as_fraud",
        )


def test_an_issuers_early_fraud_warning_reaches_the_merchant(
    stack: Stack, client: stripe.StripeClient
) -> None:
    """4000 0000 0000 5423: approved, then the issuer's warning arrives from the processor
    as a signed notification and becomes an issfr_ object the SDK lists by charge."""
    from tests.polling import eventually

    charge = client.v1.charges.create(
        params={"amount": 2600, "currency": "usd", "source": "tok_createIssuerFraudRecord"},
        options=key(),
    )
    assert charge.status == "succeeded"
    warnings = eventually(
        lambda: client.v1.radar.early_fraud_warnings.list(params={"charge": charge.id}).data,
        timeout=60,
        message="the early fraud warning",
    )
    (warning,) = warnings
    assert warning.id.startswith("issfr_")
    assert (warning.charge, warning.fraud_type, warning.actionable) == (
        charge.id,
        "made_with_stolen_card",
        True,
    )
    assert client.v1.radar.early_fraud_warnings.retrieve(warning.id).id == warning.id
    events = client.v1.events.list(params={"type": "radar.early_fraud_warning.created"}).data
    assert warning.id in {e.data.object["id"] for e in events}
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.radar.early_fraud_warnings.retrieve("issfr_nope")
    assert missing.value.http_status == 404


def test_an_operator_turns_a_default_rule_off_and_back_on_over_the_sdk(stack: Stack) -> None:
    """`clearline radar rules disable-default block_if_high_risk`: the merchant's
    highest-risk payers are charged, still scored highest; `enable-default`, and they are
    blocked again once the api's 30 s cache of the merchant's rules has passed."""
    import json

    from tests.polling import eventually

    shop: dict[str, Any] = stack.create_merchant("Default-Off Shop")
    sdk = stripe.StripeClient(shop["secret_key"], base_addresses={"api": stack.url})

    def rules(*args: str) -> dict[str, bool]:
        done = stack.clearline("radar", "rules", *args, "--merchant", shop["id"], "--json")
        assert done.returncode == 0, done.stderr
        return {d["id"]: d["enabled"] for d in json.loads(done.stdout)["defaults"]}

    assert rules("list") == {"block_if_high_risk": True, "manual_review_if_elevated_risk": True}
    off = {"block_if_high_risk": False, "manual_review_if_elevated_risk": True}
    assert rules("disable-default", "block_if_high_risk") == off
    assert rules("disable-default", "block_if_high_risk") == off  # again: no error
    unknown = stack.clearline(
        "radar", "rules", "disable-default", "block_if_highest_risk", "--merchant", shop["id"]
    )
    assert unknown.returncode == 2 and "block_if_high_risk" in unknown.stderr
    assert rules("list") == off

    def charge(source: str) -> stripe.Charge:
        return sdk.v1.charges.create(
            params={"amount": 1900, "currency": "usd", "source": source}, options=key()
        )

    for source in ("tok_riskLevelHighest", "pm_card_riskLevelHighest"):
        paid = charge(source)
        assert paid.status == "succeeded", source
        assert (paid.outcome.type, paid.outcome.risk_level) == ("authorized", "highest")
        assert [a for a in stack.processor_authorizations() if a["reference"] == paid.id]
    # A card the networks know as fraudulent is Clearline's to block, not a default rule.
    with pytest.raises(stripe.CardError) as always:
        charge("tok_radarBlock")
    assert always.value.error.decline_code == "fraudulent"

    assert rules("enable-default", "block_if_high_risk")["block_if_high_risk"] is True

    def blocked() -> list[stripe.CardError]:
        try:
            charge("tok_riskLevelHighest")
        except stripe.CardError as refused:
            return [refused]
        return []

    (refused,) = eventually(
        blocked, timeout=60, interval=2, message="block_if_high_risk blocks again"
    )
    assert (refused.code, refused.http_status) == ("card_declined", 402)
    assert refused.error.decline_code == "fraudulent"
    failed = sdk.v1.charges.retrieve(refused.error.charge)
    assert (failed.outcome.type, failed.outcome.reason) == ("blocked", "highest_risk_level")
    assert failed.outcome.network_status == "not_sent_to_network"


def test_a_disputed_payment_closes_its_review_over_the_sdk(stack: Stack) -> None:
    """A payment in review that its cardholder disputes: the processor's notification opens
    the dispute and closes the review as `disputed` (`review.closed`), once, however often the
    notification comes. The sandbox disputes only its dispute test cards, so the merchant's
    rule puts this one (4000 0000 0000 0259) in review."""
    import requests

    from tests.polling import eventually

    shop: dict[str, Any] = stack.create_merchant("Disputed Review Shop")
    sdk = stripe.StripeClient(shop["secret_key"], base_addresses={"api": stack.url})
    done = stack.clearline(
        "radar", "rules", "add", "Review if :amount: = 2700", "--merchant", shop["id"]
    )
    assert done.returncode == 0, done.stderr
    paid = sdk.v1.charges.create(
        params={"amount": 2700, "currency": "usd", "source": "tok_createDispute"},
        options=key(),
    )
    assert (paid.status, paid.outcome.type) == ("succeeded", "manual_review")
    assert paid.review and paid.review.startswith("prv_")

    dispute = eventually(
        lambda: sdk.v1.disputes.list(params={"charge": paid.id}).data,
        timeout=30,
        message="the processor's dispute",
    )[0]
    assert dispute.status == "needs_response"
    review = eventually(  # closed right after the dispute's own commit
        lambda: (r := sdk.v1.reviews.retrieve(paid.review)).closed_reason and r,
        message="the review closes as disputed",
    )
    assert (review.open, review.closed_reason, review.reason) == (False, "disputed", "disputed")
    assert sdk.v1.reviews.list().data == []

    def closings() -> list[Any]:
        events = sdk.v1.events.list(params={"type": "review.closed"}).data
        return [e for e in events if e.data.object["id"] == paid.review]

    assert len(closings()) == 1

    # The network sends the same notification again: the intake answers it, changing nothing.
    processor = stack.info.processor_url
    (theirs,) = [
        d
        for d in requests.get(f"{processor}/_sandbox/disputes", timeout=5).json()["data"]
        if d["reference"] == paid.id
    ]
    again = requests.post(f"{processor}/_sandbox/disputes/{theirs['id']}/notify", timeout=5)
    again.raise_for_status()

    def answered() -> bool:
        found = requests.get(f"{processor}/_sandbox/notifications", timeout=5).json()
        return again.json()["id"] not in {n["id"] for n in found["pending"]}

    eventually(answered, timeout=30, message="the redelivered notification is answered")
    assert len(closings()) == 1
    assert sdk.v1.disputes.retrieve(dispute.id).status == "needs_response"
