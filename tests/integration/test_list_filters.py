"""created[...] on every list route, through the stripe SDK: a sync job asking for the
last window gets that window, not the whole history."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import stripe

from tests.polling import eventually

from .conftest import Stack

pytestmark = pytest.mark.integration


def test_created_filters_every_list(stack: Stack) -> None:
    merchant = stack.create_merchant("Window Shop")
    sdk = stripe.StripeClient(merchant["secret_key"], base_addresses={"api": stack.url})

    def charge() -> Any:
        created = sdk.v1.charges.create(
            params={"amount": 2000, "currency": "usd", "source": "tok_visa"},
            options={"idempotency_key": str(uuid.uuid4())},
        )
        sdk.v1.refunds.create(
            params={"charge": created.id, "amount": 500},
            options={"idempotency_key": str(uuid.uuid4())},
        )
        return created

    old = charge()
    time.sleep(1.1)  # the filter's unit is the second
    new = charge()
    since = {"gte": new.created}
    window = {"gte": old.created, "lt": new.created}

    assert [c.id for c in sdk.v1.charges.list(params={"created": since})] == [new.id]
    assert [c.id for c in sdk.v1.charges.list(params={"created": window})] == [old.id]
    assert [c.id for c in sdk.v1.charges.list(params={"created": {"gt": new.created}})] == []

    refunds = sdk.v1.refunds.list(params={"created": since})
    assert [r.charge for r in refunds] == [new.id]
    nested = sdk.v1.refunds.list(params={"charge": old.id, "created": since})
    assert list(nested) == []

    txns = sdk.v1.balance_transactions.list(params={"created": window})
    assert {t.source for t in txns} >= {old.id}
    assert new.id not in {t.source for t in txns}

    events = eventually(
        lambda: list(sdk.v1.events.list(params={"created": since, "type": "charge.succeeded"})),
        message="the new charge's event",
    )
    assert [e.data.object.id for e in events] == [new.id]
