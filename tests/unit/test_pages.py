"""The HTML pages: receipts and the error-code reference."""

from __future__ import annotations

import ast
import importlib.util
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from clearline_local.sandbox_processor import AUTHENTICATION_REQUIRED, TEST_TOKENS

ROOT = Path(__file__).resolve().parents[2]
# Where the code that builds error bodies lives: the library, the functions, the local stack.
SOURCE_DIRS = (
    ROOT / "layers" / "clearline" / "python" / "clearline",
    ROOT / "functions",
    ROOT / "local" / "clearline_local",
    ROOT / "layers" / "clearline" / "python" / "vault",  # its card errors reach browsers
)
# The sandbox processor answers in the processor's own codes, which Clearline reads and
# never returns; its declines, which Clearline does pass on, are checked on their own below.
# The sandbox partners speak their own codes, which Clearline never answers with.
NOT_CLEARLINES = {
    ROOT / "local" / "clearline_local" / "sandbox_processor.py",
    ROOT / "local" / "clearline_local" / "sandbox_bank.py",
    ROOT / "local" / "clearline_local" / "sandbox_http.py",
}


def _load_pages() -> Any:
    path = ROOT / "functions" / "api" / "pages.py"
    spec = importlib.util.spec_from_file_location("pages", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pages = _load_pages()

CREATED = 1_795_603_200  # 25 November 2026, 08:00 UTC
REFUNDED_AT = 1_795_780_800  # 27 November 2026


def charge(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "ch_3Receipt00000000000000",
        "object": "charge",
        "amount": 2000,
        "amount_captured": 2000,
        "amount_refunded": 0,
        "currency": "usd",
        "created": CREATED,
        "description": "Two coffees",
        "status": "succeeded",
        "paid": True,
        "refunded": False,
        "captured": True,
        "payment_method_details": {
            "type": "card",
            "card": {
                "brand": "visa",
                "last4": "4242",
                "exp_month": 11,
                "exp_year": 2031,
                "fingerprint": "Fp98765",
                "funding": "credit",
            },
        },
        "receipt_email": "jo@example.com",
        "refunds": {"object": "list", "data": [], "has_more": False},
    }
    base.update(changes)
    return base


# ---- well-formedness ------------------------------------------------------------------------

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}


class StrictParser(HTMLParser):
    """Fails on any mismatched or unclosed tag; collects the title, ids and links."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.title = ""
        self.ids: list[str] = []
        self.hrefs: list[str] = []
        self.tags: set[str] = set()
        self.doctype = ""

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name == "id" and value is not None:
                self.ids.append(value)
            if name == "href" and value is not None:
                self.hrefs.append(value)
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag not in _VOID:
            self.errors.append(f"self-closed <{tag}/>")

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            self.errors.append(f"end tag for void <{tag}>")
        elif not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "title":
            self.title += data


def parse(page: str) -> StrictParser:
    parser = StrictParser()
    parser.feed(page)
    parser.close()
    assert parser.errors == []
    assert parser.stack == [], f"unclosed: {parser.stack}"
    assert parser.doctype.lower() == "doctype html"
    assert parser.title.strip()
    assert "script" not in parser.tags
    assert len(parser.ids) == len(set(parser.ids)), "duplicate ids"
    return parser


def text_of(page: str) -> str:
    """The page's visible text, entities decoded, whitespace collapsed."""

    class Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.parts: list[str] = []
            self.skip = 0

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag in ("style", "head"):
                self.skip += 1

        def handle_endtag(self, tag: str) -> None:
            if tag in ("style", "head"):
                self.skip -= 1

        def handle_data(self, data: str) -> None:
            if not self.skip:
                self.parts.append(data)

    parser = Text()
    parser.feed(page)
    return " ".join(" ".join(parser.parts).split())


# ---- receipts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (2000, "usd", "20.00 USD"),
        (5, "eur", "0.05 EUR"),
        (123_456_78, "usd", "123,456.78 USD"),
        (500, "jpy", "500 JPY"),
        (1_000_000, "krw", "1,000,000 KRW"),
        (1230, "kwd", "1.230 KWD"),
        (500, "bhd", "0.500 BHD"),
        (-1230, "kwd", "-1.230 KWD"),
    ],
)
def test_amounts_use_the_currency_decimals(amount: int, currency: str, shown: str) -> None:
    assert pages.format_money(amount, currency) == shown


@pytest.mark.parametrize(
    ("amount", "currency", "shown", "absent"),
    [
        (2000, "usd", "20.00 USD", None),
        (500, "jpy", "500 JPY", "500.00"),
        (1230, "kwd", "1.230 KWD", "12.30"),
    ],
)
def test_receipt_shows_the_amount_paid(
    amount: int, currency: str, shown: str, absent: str | None
) -> None:
    page = pages.receipt_page(
        charge(amount=amount, amount_captured=amount, currency=currency), "Corner Café"
    )
    parse(page)
    text = text_of(page)
    assert shown in text
    if absent:
        assert absent not in text


def test_receipt_shows_merchant_date_card_and_receipt_number() -> None:
    page = pages.receipt_page(charge(), "Corner Café")
    parser = parse(page)
    text = text_of(page)
    assert "Corner Café" in parser.title
    assert "Corner Café" in text
    assert "25 November 2026" in text
    assert "Visa ending in 4242" in text
    assert "ch_3Receipt00000000000000" in text
    assert "Two coffees" in text
    assert "jo@example.com" in text
    assert "Refund" not in text  # nothing refunded: no refunds section


def test_receipt_shows_no_card_digits_but_the_last_four() -> None:
    card = {"brand": "mastercard", "last4": "5555444433334444", "exp_year": 2031}
    page = pages.receipt_page(
        charge(payment_method_details={"type": "card", "card": card}, description=None), "Shop"
    )
    text = text_of(page)
    assert "Mastercard ending in 4444" in text
    assert "5555" not in page
    assert "3333" not in page
    assert "2031" not in page
    assert "Fp98765" not in pages.receipt_page(charge(), "Shop")
    # besides the receipt number, the only digit runs are the amount, the date and the last four
    text = text.replace("ch_3Receipt00000000000000", "")
    assert set(re.findall(r"\d{4,}", text)) <= {"2026", "4444"}


def test_receipt_without_payment_method_details() -> None:
    page = pages.receipt_page(charge(payment_method_details=None), "Shop")
    parse(page)
    assert "ending in" not in page


def test_receipt_without_receipt_email_or_description() -> None:
    data = charge(description=None)
    del data["receipt_email"]
    page = pages.receipt_page(data, "Shop")
    parse(page)
    assert "Sent to" not in page
    assert "Description" not in page


def test_merchant_input_is_escaped() -> None:
    attack = '<script>alert("x")</script>'
    page = pages.receipt_page(
        charge(description=f"Order {attack}", receipt_email=f"a{attack}@example.com"),
        f"Evil & Co {attack}\"'",
    )
    parser = parse(page)
    assert "<script" not in page
    assert "&lt;script&gt;" in page
    assert "Evil &amp; Co" in page
    assert attack in parser.title
    text = text_of(page)
    assert f"Order {attack}" in text
    assert f"Evil & Co {attack}\"'" in text


def test_receipt_lists_refunds_and_the_net_amount() -> None:
    refunds = [
        {"id": "re_2", "amount": 300, "created": REFUNDED_AT + 86_400, "status": "pending"},
        {"id": "re_1", "amount": 500, "created": REFUNDED_AT, "status": "succeeded"},
    ]
    page = pages.receipt_page(
        charge(amount_refunded=800, refunds={"object": "list", "data": refunds}), "Shop"
    )
    parse(page)
    text = text_of(page)
    assert "Partially refunded" in text
    first = text.index("Refund on 27 November 2026 -5.00 USD")
    second = text.index("Refund on 28 November 2026 (pending) -3.00 USD")
    assert first < second
    assert "Net amount 12.00 USD" in text


def test_fully_refunded_receipt_nets_to_zero() -> None:
    refunds = [{"amount": 1230, "created": REFUNDED_AT, "status": "succeeded"}]
    page = pages.receipt_page(
        charge(
            amount=1230,
            amount_captured=1230,
            amount_refunded=1230,
            currency="kwd",
            refunded=True,
            refunds={"data": refunds},
        ),
        "Shop",
    )
    parse(page)
    text = text_of(page)
    assert "Refunded" in text
    assert "Refund on 27 November 2026 -1.230 KWD" in text
    assert "Net amount 0.000 KWD" in text


def test_failed_charge_is_not_shown_as_paid() -> None:
    page = pages.receipt_page(charge(status="failed", paid=False, amount_captured=0), "Shop")
    parse(page)
    text = text_of(page)
    assert "Payment failed" in text
    assert "Paid" not in text.replace("Amount paid", "")


# ---- error codes ----------------------------------------------------------------------------


def test_every_code_has_a_page_and_an_anchor_in_the_index() -> None:
    index = pages.error_codes_page(pages.ERROR_CODES)
    parser = parse(index)
    assert len(pages.ERROR_CODES) >= 30
    for code, explanation in pages.ERROR_CODES.items():
        assert re.fullmatch(r"[a-z]+(?:_[a-z0-9]+)*", code)
        assert 40 <= len(explanation) <= 400, code
        assert 1 <= explanation.count(". ") + 1 <= 3, code
        assert code in parser.ids
        assert f"#{code}" in parser.hrefs
        assert f"{pages.ERRORS_PATH}/{code}" in parser.hrefs
        page = pages.error_code_page(code, explanation)
        one = parse(page)
        assert code in one.title
        assert explanation in text_of(page)
        assert f"{pages.ERRORS_PATH}#{code}" in one.hrefs


def test_error_pages_escape_their_input() -> None:
    page = pages.error_code_page("<b>x</b>", 'Use "<script>" & more.')
    parse(page)
    assert "<b>x" not in page
    assert "<script" not in page
    index = pages.error_codes_page({"a<i>": "<script>alert(1)</script>"})
    parse(index)
    assert "<script" not in index
    assert "<i>" not in index


def test_decline_codes_say_where_they_appear() -> None:
    assert "decline_code" in pages.error_code_page("lost_card", pages.ERROR_CODES["lost_card"])
    page = pages.error_code_page("resource_missing", pages.ERROR_CODES["resource_missing"])
    assert "decline_code" not in text_of(page)


# ---- completeness: no code ships undocumented ------------------------------------------------

_CODE_NAMES = {"code", "decline_code", "failure_code"}


def _strings(node: ast.AST | None) -> Iterator[str]:
    """The string literals an expression can evaluate to: a literal, or either branch of a
    conditional expression (`"a" if ... else "b"`); nothing for any other expression."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.IfExp):
        yield from _strings(node.body)
        yield from _strings(node.orelse)


def _codes_in(tree: ast.AST) -> Iterator[str]:
    """String literals given to anything named code: keyword arguments (`code="..."`),
    parameter defaults, assignments, and dict entries (`"code": "..."`)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg in _CODE_NAMES:
            yield from _strings(node.value)
        elif isinstance(node, ast.Assign):
            names = {t.id for t in node.targets if isinstance(t, ast.Name)}
            if names & _CODE_NAMES:
                yield from _strings(node.value)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            if isinstance(node.target, ast.Name) and node.target.id in _CODE_NAMES:
                yield from _strings(node.value)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value in _CODE_NAMES:
                    yield from _strings(value)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            positional = [*args.posonlyargs, *args.args]
            pairs = [
                *zip(
                    positional[len(positional) - len(args.defaults) :], args.defaults, strict=True
                ),
                *zip(args.kwonlyargs, args.kw_defaults, strict=True),
            ]
            for arg, default in pairs:
                if arg.arg in _CODE_NAMES:
                    yield from _strings(default)


def codes_in_source() -> dict[str, set[str]]:
    """Every code literal in the source, with the files it appears in."""
    found: dict[str, set[str]] = {}
    for directory in SOURCE_DIRS:
        for path in sorted(set(directory.rglob("*.py")) - NOT_CLEARLINES):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for code in _codes_in(tree):
                found.setdefault(code, set()).add(str(path.relative_to(ROOT)))
    return found


def test_the_source_scan_finds_codes_however_they_are_written() -> None:
    found = codes_in_source()
    assert {
        "resource_missing",  # code="..."
        "lock_timeout",  # code: str = "..."
        "service_unavailable",  # "code": "..." and a default
        "parameter_unknown",  # code = (... if ... else ...)
        "amount_too_small",  # code="..." if ... else "..."
        "processing_error",  # "failure_code": "..."
    } <= set(found)
    # and a plain text search agrees on the simplest spelling
    grepped = {
        match
        for directory in SOURCE_DIRS
        for path in set(directory.rglob("*.py")) - NOT_CLEARLINES
        for match in re.findall(r"\bcode=\"([a-z_]+)\"", path.read_text(encoding="utf-8"))
    }
    assert grepped and grepped <= set(found)


def test_every_code_in_the_source_is_documented() -> None:
    missing = {
        code: sorted(paths)
        for code, paths in codes_in_source().items()
        if code not in pages.ERROR_CODES
    }
    assert missing == {}, "add an explanation to ERROR_CODES in functions/api/pages.py"


def test_every_sandbox_decline_is_documented() -> None:
    declines = [card.decline for card in TEST_TOKENS.values() if card.decline is not None]
    declines.append(AUTHENTICATION_REQUIRED)
    assert declines
    for code, decline_code, _message in declines:
        assert code in pages.ERROR_CODES
        assert decline_code in pages.ERROR_CODES
        assert decline_code in pages.DECLINE_CODES


def test_no_documented_code_is_stale() -> None:
    declines = {name for card in TEST_TOKENS.values() if card.decline for name in card.decline[:2]}
    declines |= set(AUTHENTICATION_REQUIRED[:2])
    assert set(pages.ERROR_CODES) - set(codes_in_source()) - declines == set()
