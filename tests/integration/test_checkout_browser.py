"""The demo shop's checkout in a real browser (Debian's Chromium, driven by Selenium): the
customer types the card into the vault's iframe, the shop's page confirms with clearline.js,
and 3-D Secure goes through the vault's challenge page and back to the shop.

Then, at the end of the module, the card numbers typed here are looked for everywhere
Clearline keeps anything: its logs, every DynamoDB item (the vault's too, where only
envelopes may hold them), every S3 object and every event. Only the sandbox processor, the
card network's side, may know them, and it is not scanned.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import stripe
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from clearline.topology import VAULT_TABLE
from clearline_local.stack import aws_client
from tests.polling import eventually

from .conftest import Stack

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)

VISA = "4242424242424242"
DECLINED = "4000000000000002"
THREE_D_SECURE = "4000002500003155"
CARD_NUMBERS = (VISA, DECLINED, THREE_D_SECURE)
WAIT_SECONDS = 30

# The card numbers this module's browser has typed: the scan at the end looks for them.
TYPED: set[str] = set()

# ---- the browser ------------------------------------------------------------------------------


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        pytest.skip(
            f"BROWSER TESTS SKIPPED: {' and '.join(missing)} not found. Run `make browser` to "
            "install Debian's chromium and chromium-driver (never a downloaded browser)."
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.add_argument("--window-size=1000,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def demo(stack: Stack) -> stripe.StripeClient:
    """The demo shop's merchant, as its own server sees it (the stack records its keys)."""
    assert stack.info.checkout_url and stack.info.demo_secret_key, "the stack runs the demo shop"
    return stripe.StripeClient(stack.info.demo_secret_key, base_addresses={"api": stack.url})


def wait(driver: WebDriver) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, WAIT_SECONDS)


def fill_checkout(driver: WebDriver, stack: Stack, number: str) -> None:
    """Opens the checkout and types the card where a customer does: inside the vault's
    iframe. The shop's own page only ever holds the name."""
    driver.get(stack.info.checkout_url)
    frame = wait(driver).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#card-element iframe"))
    )
    assert str(frame.get_attribute("src")).startswith(f"{stack.info.vault_url}/card-field?")
    driver.switch_to.frame(frame)
    number_field = wait(driver).until(
        expected_conditions.element_to_be_clickable((By.ID, "cardnumber"))
    )
    number_field.send_keys(number)
    TYPED.add(number)
    driver.find_element(By.ID, "exp-date").send_keys("1234")
    driver.find_element(By.ID, "cvc").send_keys("123")
    assert driver.find_element(By.ID, "cardnumber").get_attribute("value") == " ".join(
        number[i : i + 4] for i in range(0, 16, 4)
    )
    driver.switch_to.default_content()
    driver.find_element(By.ID, "name").send_keys("Jenny Rosen")
    assert_top_page_holds_no_card(driver, number)


def assert_top_page_holds_no_card(driver: WebDriver, number: str) -> None:
    values = [
        str(field.get_attribute("value")) for field in driver.find_elements(By.TAG_NAME, "input")
    ]
    assert values == ["Jenny Rosen"], values  # the name field, and no other input
    assert not numbers_in(driver.page_source, (number,))
    # The field is another origin's document: the shop's scripts cannot even read it.
    assert (
        driver.execute_script(
            "return document.querySelector('#card-element iframe').contentDocument"
        )
        is None
    )


def pay(driver: WebDriver) -> None:
    driver.find_element(By.ID, "pay").click()


def payment_message(driver: WebDriver) -> str:
    """The outcome the page shows, once it shows one."""

    def shown(d: WebDriver) -> str | None:
        text = str(d.find_element(By.ID, "message").text)
        return text if text and text != "Processing..." else None

    return str(wait(driver).until(shown))


def answer_challenge(driver: WebDriver, stack: Stack, button: str) -> None:
    wait(driver).until(expected_conditions.url_contains(f"{stack.info.vault_url}/3ds/"))
    wait(driver).until(expected_conditions.element_to_be_clickable((By.ID, button))).click()


def wait_for_return(driver: WebDriver, stack: Stack) -> None:
    """Until the browser is back on the shop's /complete; if it is not, the browser's
    console says why (a Content-Security-Policy that held a redirect, say)."""
    back = f"{stack.info.checkout_url}/complete?"
    try:
        wait(driver).until(lambda d: d.current_url.startswith(back))
    except TimeoutException:
        console = [str(entry.get("message")) for entry in driver.get_log("browser")]
        raise AssertionError(
            f"never back at the shop: at {driver.current_url}; {console}"
        ) from None


def newest_intent(demo: stripe.StripeClient) -> Any:
    return demo.v1.payment_intents.list(params={"limit": 1}).data[0]


def wait_for_intent(demo: stripe.StripeClient, intent_id: str, status: str) -> Any:
    def settled() -> Any:
        intent = demo.v1.payment_intents.retrieve(intent_id)
        return intent if intent.status == status else None

    return eventually(settled, WAIT_SECONDS, f"{intent_id} {status}", interval=0.3)


# ---- the checkout -----------------------------------------------------------------------------


def test_a_card_typed_in_the_vaults_field_pays_the_shops_order(
    browser: WebDriver, stack: Stack, demo: stripe.StripeClient, tmp_path: Path
) -> None:
    fill_checkout(browser, stack, VISA)
    screenshot = tmp_path / "checkout.png"
    assert browser.save_screenshot(str(screenshot))
    image = screenshot.read_bytes()
    assert image.startswith(b"\x89PNG\r\n\x1a\n") and len(image) > 1000
    pay(browser)
    assert payment_message(browser) == "Payment succeeded"
    intent_id = browser.find_element(By.ID, "message").get_attribute("data-payment-intent")
    intent = demo.v1.payment_intents.retrieve(str(intent_id))
    assert (intent.status, intent.amount, intent.currency) == ("succeeded", 2000, "usd")
    method = demo.v1.payment_methods.retrieve(str(intent.payment_method))
    assert (method.card.brand, method.card.last4) == ("visa", "4242")
    assert method.billing_details.name == "Jenny Rosen"
    assert_top_page_holds_no_card(browser, VISA)


def test_a_declined_card_says_so_on_the_page(
    browser: WebDriver, stack: Stack, demo: stripe.StripeClient
) -> None:
    fill_checkout(browser, stack, DECLINED)
    pay(browser)
    assert payment_message(browser) == "Your card was declined."
    declined = newest_intent(demo)
    assert declined.status == "requires_payment_method"
    assert declined.last_payment_error.decline_code == "generic_decline"


def test_three_d_secure_completes_on_the_vaults_page_and_returns_to_the_shop(
    browser: WebDriver, stack: Stack, demo: stripe.StripeClient
) -> None:
    fill_checkout(browser, stack, THREE_D_SECURE)
    pay(browser)
    answer_challenge(browser, stack, "complete-authentication")
    wait_for_intent(demo, newest_intent(demo).id, "succeeded")
    wait_for_return(browser, stack)
    assert payment_message(browser) == "Payment succeeded"


def test_a_failed_challenge_returns_to_the_shop_as_a_failed_payment(
    browser: WebDriver, stack: Stack, demo: stripe.StripeClient
) -> None:
    fill_checkout(browser, stack, THREE_D_SECURE)
    pay(browser)
    answer_challenge(browser, stack, "fail-authentication")
    failed = wait_for_intent(demo, newest_intent(demo).id, "requires_payment_method")
    assert failed.last_payment_error.code == "payment_intent_authentication_failure"
    wait_for_return(browser, stack)
    assert payment_message(browser) == "Payment failed"
    assert browser.find_element(By.ID, "detail").text == failed.last_payment_error.message


def test_the_shops_return_page_shows_what_its_server_reads(
    browser: WebDriver, stack: Stack, demo: stripe.StripeClient
) -> None:
    """The page a 3-D Secure customer comes back to, reached directly: it shows the intent
    as the shop's server retrieved it, and only to the holder of its client secret."""
    paid = demo.v1.payment_intents.create(
        params={
            "amount": 2000,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
        },
        options={"idempotency_key": str(uuid.uuid4())},
    )
    failed = demo.v1.payment_intents.create(
        params={
            "amount": 2000,
            "currency": "usd",
            "payment_method": "pm_card_threeDSecure2Required",
            "confirm": True,
            "return_url": f"{stack.info.checkout_url}/complete",
        },
        options={"idempotency_key": str(uuid.uuid4())},
    )
    # The challenge failed in the browser, which is sent back to the shop's /complete.
    browser.get(str(failed.next_action.redirect_to_url.url))
    answer_challenge(browser, stack, "fail-authentication")
    wait_for_return(browser, stack)
    failed = demo.v1.payment_intents.retrieve(failed.id)
    assert failed.status == "requires_payment_method"

    def complete(intent: Any, client_secret: str, redirect_status: str = "succeeded") -> str:
        query = {
            "payment_intent": intent.id,
            "payment_intent_client_secret": client_secret,
            "redirect_status": redirect_status,
        }
        browser.get(f"{stack.info.checkout_url}/complete?{urlencode(query)}")
        return str(browser.find_element(By.ID, "message").text)

    assert complete(paid, str(paid.client_secret)) == "Payment succeeded"
    # The URL's redirect_status is the browser's claim; the page shows the server's answer.
    assert complete(failed, str(failed.client_secret)) == "Payment failed"
    assert browser.find_element(By.ID, "detail").text == failed.last_payment_error.message
    assert complete(paid, f"{paid.id}_secret_guessed") == "Payment not found"


# ---- the scan: the numbers typed above are nowhere but in the vault's envelopes -----------------

# A digit run with spaces or dashes between its digits, the way a card number is written.
_DIGIT_RUN = re.compile(r"\d(?:[ \-]*\d)*")
_BASE64 = re.compile(r"[A-Za-z0-9+/_\-]{16,}={0,2}")


def numbers_in(text: str, numbers: Iterable[str] = CARD_NUMBERS) -> set[str]:
    found: set[str] = set()
    for run in _DIGIT_RUN.findall(text):
        digits = re.sub(r"\D", "", run)
        found |= {number for number in numbers if number in digits}
    return found


def _decoded(text: str) -> str | None:
    """What a base64 string holds, as text: a number only base64-encoded is not sealed."""
    if not _BASE64.fullmatch(text):
        return None
    try:
        padded = text + "=" * (-len(text) % 4)
        return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True).decode(
            "latin-1"
        )
    except (binascii.Error, ValueError):
        return None


def texts_of(value: Any) -> Iterator[str]:
    """Every string a stored value holds (DynamoDB's typed JSON, bytes as latin-1), and what
    any base64 among them decodes to."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield str(key)
            yield from texts_of(inner)
    elif isinstance(value, list | tuple | set):
        for inner in value:
            yield from texts_of(inner)
    elif isinstance(value, bytes | bytearray):
        yield bytes(value).decode("latin-1")
    elif value is not None:
        text = str(value)
        yield text
        decoded = _decoded(text)
        if decoded is not None:
            yield decoded


def findings(where: str, value: Any) -> list[tuple[str, set[str]]]:
    found: set[str] = set()
    for text in texts_of(value):
        found |= numbers_in(text)
    return [(where, found)] if found else []


def test_the_scan_finds_a_planted_number() -> None:
    """The scan below can fail: whatever way a number is written or stored, it is found."""
    assert numbers_in("a 4242 4242 4242 4242 b") == {VISA}
    assert numbers_in("4000-0000-0000-0002") == {DECLINED}
    assert numbers_in('{"n":"x4000002500003155y"}') == {THREE_D_SECURE}
    assert numbers_in("4242 4242 4242 4241, 4000 0000 0000 0003") == set()
    planted_base64 = base64.b64encode(f'{{"number":"{VISA}"}}'.encode()).decode()
    item = {
        "pk": {"S": "PM#pm_1"},
        "note": {"M": {"deep": {"L": [{"S": "4000 0025 0000 3155"}]}}},
        "raw": {"B": f"..{DECLINED}..".encode()},
        "sealed": {"M": {"ciphertext": {"S": planted_base64}}},
    }
    assert findings("planted", item) == [("planted", set(CARD_NUMBERS))]
    assert findings("clean", {"pk": {"S": "PM#pm_1"}, "last4": {"S": "4242"}}) == []


def every_item(dynamodb: Any, table: str) -> Iterator[dict[str, Any]]:
    for page in dynamodb.get_paginator("scan").paginate(TableName=table):
        yield from page["Items"]


def test_no_typed_card_number_is_anywhere_outside_the_vaults_envelopes(
    stack: Stack, demo: stripe.StripeClient
) -> None:
    if untyped := set(CARD_NUMBERS) - TYPED:
        pytest.skip(f"the browser tests above never typed {sorted(untyped)}: run the whole module")
    found: list[tuple[str, set[str]]] = []

    # (a) Clearline's logs: every line the stack wrote, the demo shop's included.
    lines = stack.log_text().splitlines()
    assert len(lines) > 10 and any("demo shop: POST /create-payment-intent" in x for x in lines)
    assert not [line for line in lines if "a card number reached the shop's server" in line]
    found += [
        (f"log line {n}", numbers_in(line)) for n, line in enumerate(lines) if numbers_in(line)
    ]

    # (b) Every item of every table: the main, idempotency and vault tables, and any other.
    dynamodb = stack.dynamodb()
    tables = dynamodb.list_tables()["TableNames"]
    assert {stack.info.main_table, stack.info.idempotency_table, VAULT_TABLE.name} <= set(tables)
    counts: dict[str, int] = {}
    envelopes = 0
    for table in tables:
        counts[table] = 0
        for item in every_item(dynamodb, table):
            counts[table] += 1
            found += findings(f"{table}: {item.get('pk')} {item.get('sk')}", item)
            if table == VAULT_TABLE.name and "ciphertext" in json.dumps(item.get("sealed", {})):
                envelopes += 1
    assert counts[stack.info.main_table] > 0 and counts[stack.info.idempotency_table] > 0, counts
    # The vault holds the typed cards, sealed: the scan looked where they are.
    assert counts[VAULT_TABLE.name] > 0 and envelopes >= len(CARD_NUMBERS), (counts, envelopes)

    # (c) Every object of every bucket.
    s3 = aws_client("s3", stack.info.aws_endpoint_url)
    buckets = [bucket["Name"] for bucket in s3.list_buckets()["Buckets"]]
    assert buckets, "the stack provisions its buckets"
    for bucket in buckets:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for entry in page.get("Contents", []):
                body = s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
                found += findings(f"s3://{bucket}/{entry['Key']}", body)

    # (d) Every event: the demo merchant's as the API lists them, and every event item
    # (already scanned above with its table, counted here so the check cannot be empty).
    events = list(demo.v1.events.list(params={"limit": 100}).auto_paging_iter())
    assert any(event.type == "payment_intent.succeeded" for event in events)
    found += [(f"event {e.id}", numbers_in(str(e))) for e in events if numbers_in(str(e))]
    event_items = [
        item
        for item in every_item(dynamodb, stack.info.main_table)
        if item["pk"]["S"].startswith("EVENT#")
    ]
    assert len(event_items) >= len(events) > 0
    found += [
        hit for item in event_items for hit in findings(f"event item {item['pk']['S']}", item)
    ]

    assert not found, found[:10]
