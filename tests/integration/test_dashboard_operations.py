"""The dashboard's queues view on a stack of its own (its dead-letter queues hold only what
this module puts there): a webhook delivery that failed every attempt is seen among the
dead letters and redriven from the page, and then delivered."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import stripe

from tests.polling import eventually

from .conftest import WEBHOOK_MAX_ATTEMPTS, Stack, running_stack
from .receivers import Receiver
from .test_dashboard import Browserless, csrf_of, key, operator_signed_in, signed_in

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory) as started:
        yield started


def dead_letters(page: str, queue: str) -> int:
    found = re.search(rf'id="queue-{queue}">.*?<span class="dead">(\d+)</span>', page, re.S)
    assert found is not None, f"no dead-letter count for {queue}"
    return int(found.group(1))


def test_an_operator_sees_dead_letters_and_redrives_them(own_stack: Stack) -> None:
    merchant = own_stack.create_merchant("Dead Letter Shop")
    sdk = stripe.StripeClient(merchant["secret_key"], base_addresses={"api": own_stack.url})
    receiver = Receiver(["500"] * WEBHOOK_MAX_ATTEMPTS)
    endpoint = sdk.v1.webhook_endpoints.create(
        params={"url": receiver.url, "enabled_events": ["charge.succeeded"]},
        options={"idempotency_key": key()},
    )
    receiver.secret = str(endpoint.secret)
    sdk.v1.charges.create(
        params={"amount": 1200, "currency": "usd", "source": "tok_visa"},
        options={"idempotency_key": key()},
    )
    operations = f"{own_stack.url}/dashboard/operations"
    operator = operator_signed_in(own_stack, merchant["id"])
    page = eventually(
        lambda: (p := operator.get(operations)[2]) and dead_letters(p, "webhooks") == 1 and p,
        timeout=60,
        message="the delivery to die",
    )
    assert dead_letters(page, "captures") == 0

    # Only an operator's session, with its CSRF token, for a queue that has dead letters.
    csrf = {"csrf_token": csrf_of(page)}
    merchant_session = signed_in(own_stack, merchant["id"])
    merchant_csrf = {
        "csrf_token": csrf_of(merchant_session.get(f"{own_stack.url}/dashboard/payments")[2])
    }
    assert merchant_session.post(f"{operations}/queues/webhooks/redrive", merchant_csrf)[0] == 404
    assert operator.post(f"{operations}/queues/webhooks/redrive", {"csrf_token": "x"})[0] == 403
    assert operator.post(f"{operations}/queues/nothing/redrive", csrf)[0] == 404
    assert Browserless().post(f"{operations}/queues/webhooks/redrive", csrf)[0] == 303

    status, headers, _ = operator.post(f"{operations}/queues/webhooks/redrive", csrf)
    assert status == 303 and "moved=1" in headers["Location"]
    assert "1 dead letter(s) moved back" in operator.get(f"{own_stack.url}{headers['Location']}")[2]
    eventually(lambda: len(receiver.accepted) == 1, timeout=60, message="the redriven delivery")
    assert receiver.accepted[0].type == "charge.succeeded"
    assert dead_letters(operator.get(operations)[2], "webhooks") == 0
