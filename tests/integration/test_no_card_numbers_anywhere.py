"""After every other test has run, with all the card numbers they sent on purpose: none of
them is in a log line of the stack or in any stored item."""

from __future__ import annotations

import re
from typing import Any

import pytest

from clearline.cards import contains_card_number

from .conftest import SENT_CARD_NUMBERS, Stack

pytestmark = [pytest.mark.integration, pytest.mark.after_everything]

# A digit run with any separators between its digits, the way a card number is written.
_DIGIT_RUN = re.compile(r"\d(?:[ \-./]*\d)*")


def sent_card_numbers_in(text: str) -> set[str]:
    found = set()
    for run in _DIGIT_RUN.findall(text):
        digits = re.sub(r"\D", "", run)
        found |= {number for number in SENT_CARD_NUMBERS if number in digits}
    return found


def test_the_scanner_finds_what_it_looks_for() -> None:
    assert sent_card_numbers_in("x 4242 4242-4242.4242/ y") == {"4242424242424242"}
    assert sent_card_numbers_in("ok 5555555555554443 1") == set()


def stored_texts(stack: Stack) -> list[tuple[str, str]]:
    client = stack.dynamodb()
    texts = []
    for table in (stack.info.main_table, stack.info.idempotency_table):
        kwargs: dict[str, Any] = {"TableName": table}
        while True:
            page = client.scan(**kwargs)
            texts += [(f"{table}: {item.get('pk')}", str(item)) for item in page["Items"]]
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return texts


def test_no_card_number_in_any_log_line_or_stored_item(stack: Stack) -> None:
    lines = stack.log_text().splitlines()
    assert lines, "the scan must see the run's logs"
    in_logs = [line for line in lines if sent_card_numbers_in(line)]
    assert not in_logs, in_logs[:5]
    assert not [line for line in lines if contains_card_number(line)][:5]

    items = stored_texts(stack)
    assert items, "the scan must see the run's items"
    stored = [(where, sent_card_numbers_in(text)) for where, text in items]
    assert not [found for found in stored if found[1]][:5]
    assert not [where for where, text in items if contains_card_number(text)][:5]
