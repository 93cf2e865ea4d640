"""Early fraud warnings: an issuer's report, from the processor's signed notification to an
`issfr_` object, kept once however often it is delivered."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from clearline import processor_notifications as notices
from clearline.audit import Caller
from clearline.charges import ChargeService
from clearline.early_fraud_warnings import EarlyFraudWarnings, UnknownCharge, warning_id_of
from clearline.errors import ResourceMissingError
from clearline.merchants import create_merchant
from clearline.params import ChargeCreateParams, RefundCreateParams
from clearline.processor import ProcessorClient, ProcessorFraudWarning
from clearline.refunds import RefundService
from clearline.store import Store
from clearline_local.sandbox_processor import SandboxProcessor


@pytest.fixture
def shop(store: Store, processor: SandboxProcessor) -> dict[str, Any]:
    merchant = create_merchant(store, "Warned Shop").merchant
    client = ProcessorClient(processor.url, timeout_seconds=2.0, capacity=None)
    return {
        "merchant": merchant,
        "caller": Caller(merchant, "req_efw"),
        "charges": ChargeService(store, client),
        "refunds": RefundService(store, client),
        "warnings": EarlyFraudWarnings(store),
        "processor": processor,
    }


def charged(shop: dict[str, Any], source: str = "tok_createIssuerFraudRecord") -> Any:
    return shop["charges"].create(
        shop["caller"],
        ChargeCreateParams(amount=3100, currency="usd", source=source),
        idempotency_key=str(uuid.uuid4()),
    )


def notice_for(shop: dict[str, Any], charge_id: str, warning: str = "efw_1") -> Any:
    (auth,) = [a for a in shop["processor"].authorizations() if a["reference"] == charge_id]
    return ProcessorFraudWarning(
        id=warning,
        authorization=auth["id"],
        reference=charge_id,
        fraud_type="made_with_stolen_card",
        created=int(time.time()),
    )


def warning_events(store: Store, warning_id: str) -> list[str]:
    return [
        item["type"]
        for item in store.scan("EVENT#")
        if item["sk"] == "EVENT" and warning_id in json.dumps(item.get("data", ""), default=str)
    ]


def test_a_warning_is_kept_once_however_often_it_is_delivered(
    store: Store, shop: dict[str, Any]
) -> None:
    charge = charged(shop)
    notice = notice_for(shop, charge.id)
    first = shop["warnings"].receive(notice)
    assert first.id == warning_id_of("efw_1") and first.id.startswith("issfr_")
    assert (first.charge, first.fraud_type, first.actionable) == (
        charge.id,
        "made_with_stolen_card",
        True,
    )
    assert shop["warnings"].receive(notice) == first
    assert warning_events(store, first.id) == ["radar.early_fraud_warning.created"]
    page = shop["warnings"].list(
        shop["merchant"],
        limit=10,
        starting_after=None,
        ending_before=None,
        facets={"charge": [charge.id]},
    )
    assert [w.id for w in page.items] == [first.id]
    other = create_merchant(store, "Someone Else").merchant
    with pytest.raises(ResourceMissingError):
        shop["warnings"].retrieve(other, first.id)


def test_a_warning_on_a_refunded_charge_is_not_actionable(shop: dict[str, Any]) -> None:
    charge = charged(shop)
    shop["refunds"].create(
        shop["caller"], RefundCreateParams(charge=charge.id), idempotency_key="refund-it"
    )
    warning = shop["warnings"].receive(notice_for(shop, charge.id, "efw_2"))
    assert warning.actionable is False


def test_a_warning_about_a_charge_we_do_not_have_stores_nothing(
    store: Store, shop: dict[str, Any]
) -> None:
    charge = charged(shop)
    stranger = notice_for(shop, charge.id, "efw_3").model_copy(update={"authorization": "pa_x"})
    with pytest.raises(UnknownCharge):
        shop["warnings"].receive(stranger)
    assert store.get(f"EFW#{warning_id_of('efw_3')}", "EFW") is None


def test_the_notice_is_read_from_the_processors_signed_body() -> None:
    body = json.dumps(
        {
            "id": "ntf_1",
            "type": "early_fraud_warning.created",
            "created": 1,
            "early_fraud_warning": {
                "id": "efw_9",
                "authorization": "pa_1",
                "reference": "ch_1",
                "fraud_type": "misc",
                "created": 1,
            },
        }
    ).encode()
    notice = notices.parse(body)
    assert notice.dispute is None and notice.warning is not None
    assert (notice.warning.id, notice.warning.reference) == ("efw_9", "ch_1")
    with pytest.raises(notices.NotANotice):
        notices.parse(b'{"id": "ntf_2", "type": "early_fraud_warning.created"}')


def test_the_sandbox_processor_warns_about_its_fraud_record_card(
    shop: dict[str, Any],
) -> None:
    """4000 0000 0000 5423 is approved, then its issuer's warning is queued for the platform."""
    charge = charged(shop)
    assert charge.state == "captured"
    from tests.polling import eventually

    pending = eventually(
        lambda: [
            n
            for n in shop["processor"].notifications_pending()
            if n["type"] == "early_fraud_warning.created"
            and n["early_fraud_warning"]["reference"] == charge.id
        ],
        timeout=10,
        message="the issuer's warning",
    )
    assert pending[0]["early_fraud_warning"]["fraud_type"] == "made_with_stolen_card"
    ordinary = charged(shop, "tok_visa")
    assert not [
        n
        for n in shop["processor"].notifications_pending()
        if n.get("early_fraud_warning", {}).get("reference") == ordinary.id
    ]
