from __future__ import annotations

import json
import time

import pytest
import stripe

from clearline.errors import InvalidRequestError
from clearline.webhooks import check_url, retry_delay, signature_header


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:3000/hooks", "http://localhost/hooks", "https://shop.example/hooks"]
)
def test_test_mode_urls_that_are_allowed(url: str) -> None:
    check_url(url, livemode=False)


@pytest.mark.parametrize(
    ("url", "livemode"),
    [
        ("http://shop.example/hooks", False),  # plain http only on loopback, in test mode
        ("ftp://shop.example/hooks", False),
        ("/hooks", False),
        ("http://127.0.0.1/hooks", True),  # live mode: https only
        ("https://127.0.0.1/hooks", True),  # ... and never loopback
        ("https://10.0.0.8/hooks", True),  # ... private
        ("https://169.254.169.254/latest", True),  # ... or link-local (instance metadata)
    ],
)
def test_urls_that_are_refused(url: str, livemode: bool) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        check_url(url, livemode=livemode)
    assert raised.value.param == "url"


def test_live_mode_accepts_a_public_https_address() -> None:
    check_url("https://93.184.216.34/hooks", livemode=True)


def test_signatures_verify_with_the_stripe_sdk() -> None:
    payload = json.dumps(
        {
            "id": "evt_1",
            "object": "event",
            "type": "charge.succeeded",
            "data": {"object": {"id": "ch_1"}},
        }
    )
    header = signature_header(payload, "whsec_test", int(time.time()))
    event = stripe.Webhook.construct_event(payload, header, "whsec_test")
    assert event.id == "evt_1"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, header, "whsec_other")


def test_retries_back_off_exponentially_over_about_three_days() -> None:
    # 16 attempts (the queue's maxReceiveCount): 15 waits between them.
    delays = [retry_delay(attempt, 60) for attempt in range(1, 16)]
    assert delays[:4] == [60, 120, 240, 480]
    assert max(delays) == 12 * 60 * 60
    assert 2.5 * 86400 < sum(delays) < 3.5 * 86400
