"""Fraud rules in Stripe Radar's language, parsed and evaluated before a charge reaches the
processor.

A rule is an action and a predicate over the charge's attributes:

    Block if :card_country: != :ip_country:
    Block if :card_bin: in @blocked_bins and not :is_3d_secure:
    Review if :amount_in_usd: > 1000
    Block if :card_fingerprint_count_for_ip_hourly: > 3
    Allow if :email_domain: in ('example.com', 'example.org')

The grammar (keywords in any case; whitespace separates tokens and means nothing else):

    rule       := ACTION "if" or END
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | "(" or ")" | test
    test       := operand (COMPARE operand | "not"? "in" set) | "is_missing" "(" ATTR ")"
                | ATTR                                  (a boolean attribute)
    operand    := ATTR | STRING | NUMBER
    set        := "(" literal ("," literal)* ")" | "@" NAME   (a value list, by alias)

An attribute the charge does not have makes every test on it false (`is_missing` says so),
as Radar does. Strings compare without regard to case. Rules run in Radar's order: any
allow rule that matches lets the charge through; else the first block rule that matches
blocks it; else the first review rule that matches sends it to review.

Velocity attributes (`{what}_count_for_{by}_{window}`) are counters the caller keeps;
`Rule.counters` names the ones a rule needs, so a merchant without such rules costs none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Literal

Action = Literal["allow", "block", "review"]
ACTIONS: tuple[Action, ...] = ("allow", "block", "review")  # also the order they run in
Value = str | float | bool | None
Lists = Mapping[str, "AbstractSet[str]"]  # value lists by alias
Compare = Literal["=", "!=", "<", ">", "<=", ">="]

# The attributes a rule may name, and their kinds.
ATTRIBUTES: dict[str, Literal["string", "number", "boolean"]] = {
    "amount_in_usd": "number",
    "amount": "number",
    "currency": "string",
    "card_bin": "string",
    "card_brand": "string",
    "card_country": "string",
    "card_funding": "string",
    "card_fingerprint": "string",
    "cvc_check": "string",
    "address_zip_check": "string",
    "ip_address": "string",
    "ip_country": "string",
    "email": "string",
    "email_domain": "string",
    "customer": "string",
    "risk_level": "string",
    "risk_score": "number",
    "is_3d_secure": "boolean",
    "is_off_session": "boolean",
}
VELOCITY = re.compile(
    r"^(?P<what>charge|declined_charge|card_fingerprint|email)_count_for_"
    r"(?P<by>ip|card_fingerprint|email|customer)_(?P<window>hourly|daily|weekly)$"
)
WINDOW_SECONDS = {"hourly": 3600, "daily": 86_400, "weekly": 7 * 86_400}


class CaseSensitive(frozenset[str]):
    """A value list whose case matters (ids, fingerprints, case-sensitive text)."""


MAX_DEPTH = 32  # nested parentheses and nots: far beyond any rule a person writes


class RuleSyntaxError(ValueError):
    """A rule that does not parse; `position` is the 0-based offset of the problem."""

    def __init__(self, message: str, position: int) -> None:
        self.description = message
        self.position = position
        super().__init__(f"{message} at position {position}")


@dataclass(frozen=True)
class Counter:
    """A velocity attribute: how many `what` (charges, declined charges, distinct card
    fingerprints or emails) one `by` (ip, card, email, customer) had in the window."""

    attribute: str
    what: str
    by: str
    window_seconds: int


def kind_of(name: str) -> Literal["string", "number", "boolean"] | None:
    if name in ATTRIBUTES:
        return ATTRIBUTES[name]
    return "number" if VELOCITY.match(name) else None


# ---- the expression tree -----------------------------------------------------------------


@dataclass(frozen=True)
class Attr:
    name: str


@dataclass(frozen=True)
class Constant:
    value: str | float


@dataclass(frozen=True)
class ListRef:
    alias: str


Operand = Attr | Constant


@dataclass(frozen=True)
class Comparison:
    left: Operand
    op: Compare
    right: Operand


@dataclass(frozen=True)
class Membership:
    operand: Operand
    values: tuple[str | float, ...] | ListRef
    negated: bool = False


@dataclass(frozen=True)
class IsMissing:
    attr: Attr


@dataclass(frozen=True)
class Truthy:
    attr: Attr


@dataclass(frozen=True)
class Not:
    inner: Expr


@dataclass(frozen=True)
class BoolOp:
    op: Literal["and", "or"]
    parts: tuple[Expr, ...]


Expr = Comparison | Membership | IsMissing | Truthy | Not | BoolOp


@dataclass(frozen=True)
class Rule:
    action: Action
    predicate: str  # as written, after the action's "if"
    expr: Expr = field(compare=False)
    id: str = ""

    @property
    def attributes(self) -> frozenset[str]:
        return frozenset(_attributes(self.expr))

    @property
    def counters(self) -> tuple[Counter, ...]:
        found = []
        for name in sorted(self.attributes):
            match = VELOCITY.match(name)
            if match:
                window = WINDOW_SECONDS[match["window"]]
                found.append(Counter(name, match["what"], match["by"], window))
        return tuple(found)

    @property
    def value_lists(self) -> frozenset[str]:
        return frozenset(_lists(self.expr))

    def matches(self, attributes: Mapping[str, Value], lists: Lists) -> bool:
        """True only when the predicate holds: one that cannot be decided (it needs an
        attribute the charge lacks, or a list that does not exist) does not match."""
        return _evaluate(self.expr, attributes, lists) is True


def _children(expr: Expr) -> tuple[Expr, ...]:
    if isinstance(expr, Not):
        return (expr.inner,)
    if isinstance(expr, BoolOp):
        return expr.parts
    return ()


def _attributes(expr: Expr) -> list[str]:
    names: list[str] = []
    if isinstance(expr, Comparison):
        names += [o.name for o in (expr.left, expr.right) if isinstance(o, Attr)]
    elif isinstance(expr, Membership) and isinstance(expr.operand, Attr):
        names.append(expr.operand.name)
    elif isinstance(expr, IsMissing | Truthy):
        names.append(expr.attr.name)
    for child in _children(expr):
        names += _attributes(child)
    return names


def _lists(expr: Expr) -> list[str]:
    found = (
        [expr.values.alias]
        if isinstance(expr, Membership) and isinstance(expr.values, ListRef)
        else []
    )
    for child in _children(expr):
        found += _lists(child)
    return found


# ---- tokens ------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<attr>:[a-z0-9_]+:)
    | (?P<list>@[a-zA-Z0-9_\-]+)
    | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<op><=|>=|!=|=|<|>)
    | (?P<punct>[(),])
    | (?P<word>[a-zA-Z_]+)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    position: int


def _tokens(text: str) -> list[Token]:
    tokens, position = [], 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None or match.lastgroup is None:
            start = len(text) - len(text[position:].lstrip())
            raise RuleSyntaxError(f"unexpected {text[start]!r}", start)
        kind = match.lastgroup
        tokens.append(Token(kind, match.group(kind), match.start(kind)))
        position = match.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


# ---- the parser --------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.at = 0
        self.depth = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.at]

    def _word(self, *words: str) -> bool:
        return self.token.kind == "word" and self.token.text.lower() in words

    def _take(self) -> Token:
        token = self.token
        self.at += 1
        return token

    def _expect(self, kind: str, text: str | None, what: str) -> Token:
        token = self.token
        matches = token.kind == kind and (text is None or token.text.lower() == text)
        if not matches:
            found = f"{token.text!r}" if token.text else "the end of the rule"
            raise RuleSyntaxError(f"expected {what}, found {found}", token.position)
        return self._take()

    def rule(self) -> tuple[Action, Expr, int]:
        action = self._expect("word", None, "allow, block or review")
        if action.text.lower() not in ACTIONS:
            raise RuleSyntaxError(
                f"a rule starts with allow, block or review, not {action.text!r}",
                action.position,
            )
        self._expect("word", "if", "'if'")
        start = self.token.position
        expr = self._or()
        self._expect("end", None, "the end of the rule")
        return action.text.lower(), expr, start  # type: ignore[return-value]

    def _or(self) -> Expr:
        parts = [self._and()]
        while self._word("or"):
            self._take()
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else BoolOp("or", tuple(parts))

    def _and(self) -> Expr:
        parts = [self._not()]
        while self._word("and"):
            self._take()
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else BoolOp("and", tuple(parts))

    def _not(self) -> Expr:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise RuleSyntaxError(f"nested more than {MAX_DEPTH} deep", self.token.position)
            return self._negated_or_grouped()
        finally:
            self.depth -= 1

    def _negated_or_grouped(self) -> Expr:
        if self._word("not"):
            self._take()
            return Not(self._not())
        if self.token.kind == "punct" and self.token.text == "(":
            self._take()
            inner = self._or()
            self._expect("punct", ")", "')'")
            return inner
        return self._test()

    def _test(self) -> Expr:
        if self._word("is_missing"):
            self._take()
            self._expect("punct", "(", "'('")
            attr = self._attr(self._expect("attr", None, "an :attribute:"))
            self._expect("punct", ")", "')'")
            return IsMissing(attr)
        left = self._operand()
        if self.token.kind == "op":
            op = self._take().text
            right = self._operand()
            self._check_kinds(left, right)
            return Comparison(left, op, right)  # type: ignore[arg-type]
        negated = self._word("not")
        if negated:
            self._take()
        if self._word("in"):
            self._take()
            return Membership(left, self._set(), negated)
        if negated:
            raise RuleSyntaxError("expected 'in' after 'not'", self.token.position)
        if isinstance(left, Attr) and kind_of(left.name) == "boolean":
            return Truthy(left)
        found = f"{self.token.text!r}" if self.token.text else "the end of the rule"
        raise RuleSyntaxError(f"expected a comparison or 'in', found {found}", self.token.position)

    def _operand(self) -> Operand:
        token = self.token
        if token.kind == "attr":
            return self._attr(self._take())
        if token.kind in ("string", "number"):
            return Constant(self._literal(self._take()))
        found = f"{token.text!r}" if token.text else "the end of the rule"
        raise RuleSyntaxError(f"expected an :attribute: or a value, found {found}", token.position)

    def _attr(self, token: Token) -> Attr:
        name = token.text.strip(":")
        if kind_of(name) is None:
            raise RuleSyntaxError(f"unknown attribute :{name}:", token.position)
        return Attr(name)

    @staticmethod
    def _literal(token: Token) -> str | float:
        if token.kind == "number":
            return float(token.text)
        return re.sub(r"\\(.)", r"\1", token.text[1:-1])

    def _set(self) -> tuple[str | float, ...] | ListRef:
        if self.token.kind == "list":
            return ListRef(self._take().text[1:])
        self._expect("punct", "(", "'(' or an @list")
        # A number in a set keeps its text: a BIN written 042424 is not 42424.
        values = [self._member_literal(self._value())]
        while self.token.kind == "punct" and self.token.text == ",":
            self._take()
            values.append(self._member_literal(self._value()))
        self._expect("punct", ")", "')'")
        return tuple(values)

    def _member_literal(self, token: Token) -> str:
        return token.text if token.kind == "number" else str(self._literal(token))

    def _value(self) -> Token:
        if self.token.kind in ("string", "number"):
            return self._take()
        raise RuleSyntaxError("expected a value", self.token.position)

    def _check_kinds(self, left: Operand, right: Operand) -> None:
        kinds = {
            kind_of(o.name)
            if isinstance(o, Attr)
            else ("number" if isinstance(o.value, float) else "string")
            for o in (left, right)
        }
        if len(kinds) > 1:
            raise RuleSyntaxError(
                f"cannot compare a {' with a '.join(sorted(str(k) for k in kinds))}",
                self.tokens[self.at - 1].position,
            )


def parse(text: str, rule_id: str = "") -> Rule:
    """A rule from its text, or RuleSyntaxError naming the position of the problem."""
    action, expr, start = _Parser(text).rule()
    return Rule(action, text[start:].strip(), expr, rule_id)


# ---- evaluation --------------------------------------------------------------------------


def _value(operand: Operand, attributes: Mapping[str, Value]) -> Value:
    if isinstance(operand, Attr):
        return attributes.get(operand.name)
    return operand.value


def _folded(value: Value) -> Value:
    return value.lower() if isinstance(value, str) else value


# Attributes whose text is an identifier: compared exactly, never without case.
EXACT = frozenset({"customer", "card_fingerprint", "ip_address"})

Truth = bool | None  # None: cannot be decided (a missing attribute or list), as in Radar


def _exact(*operands: Operand) -> bool:
    return any(isinstance(o, Attr) and o.name in EXACT for o in operands)


def _compare(left: Value, op: str, right: Value, exact: bool) -> Truth:
    if left is None or right is None:
        return None
    a, b = (left, right) if exact else (_folded(left), _folded(right))
    if op == "=":
        return a == b
    if op == "!=":
        return a != b
    if not (isinstance(a, int | float) and isinstance(b, int | float)):
        return False
    return {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]


def _all(results: Iterable[Truth]) -> Truth:
    found = list(results)
    return False if False in found else (None if None in found else True)


def _any(results: Iterable[Truth]) -> Truth:
    found = list(results)
    return True if True in found else (None if None in found else False)


def _evaluate(expr: Expr, attributes: Mapping[str, Value], lists: Lists) -> Truth:
    """Three-valued, as Radar evaluates: what cannot be decided stays undecided through
    `not`, `and` and `or`, and only `is_missing` asks about it."""
    if isinstance(expr, BoolOp):
        results = (_evaluate(part, attributes, lists) for part in expr.parts)
        return _all(results) if expr.op == "and" else _any(results)
    if isinstance(expr, Not):
        inner = _evaluate(expr.inner, attributes, lists)
        return None if inner is None else not inner
    if isinstance(expr, IsMissing):
        return attributes.get(expr.attr.name) is None
    if isinstance(expr, Truthy):
        value = attributes.get(expr.attr.name)
        return None if value is None else value is True
    if isinstance(expr, Comparison):
        left, right = _value(expr.left, attributes), _value(expr.right, attributes)
        return _compare(left, expr.op, right, _exact(expr.left, expr.right))
    value = _value(expr.operand, attributes)
    if value is None:
        return None
    exact = _exact(expr.operand)
    if isinstance(expr.values, ListRef):
        if expr.values.alias not in lists:
            return None  # no such list: nothing can be said
        listed: AbstractSet[str] = lists[expr.values.alias]
        exact = exact or isinstance(listed, CaseSensitive)
        members = set(listed) if exact else {_member(v) for v in listed}
    else:
        members = {str(v) if exact else _member(v) for v in expr.values}
    found = (_member(value) if not exact or not isinstance(value, str) else value) in members
    return found != expr.negated


def _member(value: Value) -> str:
    """A value as set membership sees it: text without case, 424242 and '424242' alike."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).lower()


@dataclass(frozen=True)
class Decision:
    action: Action | None  # None: no rule matched
    rule: Rule | None


def decide(rules: Sequence[Rule], attributes: Mapping[str, Value], lists: Lists) -> Decision:
    """Radar's order: an allow rule that matches lets the charge through; else the first
    block rule that matches; else the first review rule that matches."""
    for action in ACTIONS:
        for rule in rules:
            if rule.action == action and rule.matches(attributes, lists):
                return Decision(action, rule)
    return Decision(None, None)
