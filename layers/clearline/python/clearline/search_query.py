"""Stripe's Search query language (`GET /v1/charges/search?query=...`).

A query is up to ten clauses such as `currency:'usd'`, `amount>=1000`,
`-status:'failed'` or `metadata['order_id']:'6735'`, joined by `AND` or by
`OR` (never both; whitespace alone means `AND`). `parse` turns the text into a
frozen `Query` whose clauses a caller can evaluate against records, or inspect
to pick an index.

The grammar, with whitespace significant because it separates clauses:

    query     := SPACE? clause (separator clause)* SPACE? END
    separator := SPACE (("AND" | "OR") SPACE)?
    clause    := "-"? FIELD ("[" STRING "]")? OPERATOR value
    value     := STRING | "-"? DIGITS | "null" | "true" | "false"

Tokens are produced lazily, so the first problem in the text is the one reported.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

MAX_CLAUSES = 10
# Shorter substrings would match too much to be useful; Stripe rejects them too.
MIN_SUBSTRING_LENGTH = 3

Operator = Literal[":", "~", ">", "<", ">=", "<="]
Combinator = Literal["AND", "OR"]
Value = str | int | bool | None


class FieldType(enum.StrEnum):
    STRING = "string"
    NUMBER = "number"
    BOOLEAN = "boolean"
    METADATA = "metadata"


FieldTypeName = Literal["string", "number", "boolean", "metadata"]

_OPERATORS_BY_TEXT: dict[str, Operator] = {
    ":": ":",
    "~": "~",
    ">": ">",
    "<": "<",
    ">=": ">=",
    "<=": "<=",
}
_OPERATORS_BY_TYPE: dict[FieldType, tuple[Operator, ...]] = {
    FieldType.STRING: (":", "~"),
    FieldType.NUMBER: (":", ">", "<", ">=", "<="),
    FieldType.BOOLEAN: (":",),
    FieldType.METADATA: (":", "~"),
}
_KEYWORDS: tuple[Combinator, ...] = ("AND", "OR")
_WHITESPACE = frozenset(" \t\r\n")
_DIGITS = frozenset("0123456789")
_WORD_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
# Dots allow nested field names such as `billing_details.name`.
_WORD_CHARS = _WORD_START | _DIGITS | {"."}
_QUOTES = frozenset("'\"")
_ESCAPABLE = frozenset("'\"\\")


class SearchQueryError(ValueError):
    """A query that does not parse; `position` is the 0-based offset of the problem."""

    def __init__(self, message: str, position: int) -> None:
        self.description = message
        self.position = position
        self.message = f"{message} at position {position}"
        super().__init__(self.message)


@dataclass(frozen=True)
class Clause:
    """One `field:value` test. `key` is set only for metadata clauses; `value` None means null."""

    field: str
    key: str | None
    operator: Operator
    value: Value
    negated: bool = False

    def matches(self, record: Mapping[str, Any]) -> bool:
        return self._holds_for(self._actual(record)) != self.negated

    def _actual(self, record: Mapping[str, Any]) -> Any:
        found = record.get(self.field)
        if self.key is None:
            return found
        return found.get(self.key) if isinstance(found, Mapping) else None

    def _holds_for(self, actual: Any) -> bool:
        expected = self.value
        if expected is None:
            return actual is None
        if self.operator == ":":
            return _equal(actual, expected)
        if self.operator == "~":
            return (
                isinstance(actual, str)
                and isinstance(expected, str)
                and expected.casefold() in actual.casefold()
            )
        # Only numeric clauses get this far; a missing or non-numeric value never compares.
        if not _is_number(actual) or not _is_number(expected):
            return False
        if self.operator == ">":
            return bool(actual > expected)
        if self.operator == "<":
            return bool(actual < expected)
        if self.operator == ">=":
            return bool(actual >= expected)
        return bool(actual <= expected)


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but `amount:1` must not match a `True`.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(actual: Any, expected: str | int | bool) -> bool:
    if isinstance(expected, bool):
        return isinstance(actual, bool) and actual is expected
    if isinstance(expected, int):
        return _is_number(actual) and bool(actual == expected)
    return isinstance(actual, str) and actual == expected


@dataclass(frozen=True)
class Query:
    """Parsed clauses joined by one combinator (a single clause counts as "AND")."""

    clauses: tuple[Clause, ...]
    combinator: Combinator = "AND"

    def matches(self, record: Mapping[str, Any]) -> bool:
        if self.combinator == "OR":
            return any(clause.matches(record) for clause in self.clauses)
        return all(clause.matches(record) for clause in self.clauses)


def parse(query: str, fields: Mapping[str, FieldType | FieldTypeName]) -> Query:
    """Parse `query`, allowing only the named fields; raises SearchQueryError."""
    return _Parser(query, _field_types(fields)).parse()


def _field_types(fields: Mapping[str, FieldType | FieldTypeName]) -> dict[str, FieldType]:
    """Check the caller's field list once, so bad configuration is not blamed on a query."""
    field_types: dict[str, FieldType] = {}
    for name, type_name in fields.items():
        if not name or name[0] not in _WORD_START or not set(name) <= _WORD_CHARS:
            raise ValueError(f"Field name {name!r} cannot be written in a search query")
        if name in _KEYWORDS:
            raise ValueError(f"Field name {name!r} is a search keyword")
        try:
            field_types[name] = FieldType(type_name)
        except ValueError:
            allowed = ", ".join(member.value for member in FieldType)
            raise ValueError(
                f"Field {name!r} has type {type_name!r}; expected one of {allowed}"
            ) from None
    return field_types


class _Kind(enum.Enum):
    WORD = "word"  # field names, digits, null/true/false and the keywords
    STRING = "string"
    OPERATOR = "operator"
    MINUS = "minus"
    OPEN_BRACKET = "open bracket"
    CLOSE_BRACKET = "close bracket"
    PARENTHESIS = "parenthesis"
    SPACE = "space"
    OTHER = "other"
    END = "end"


@dataclass(frozen=True)
class _Token:
    kind: _Kind
    text: str  # as written in the query
    position: int
    string: str = ""  # a STRING token's contents, with escapes resolved

    def describe(self) -> str:
        if self.kind is _Kind.END:
            return "the end of the query"
        if self.kind is _Kind.SPACE:
            return "whitespace"
        if self.kind is _Kind.STRING:
            return f"the quoted string {self.text}"
        if self.kind is _Kind.WORD:
            if self.text in _KEYWORDS:
                return f"the keyword {self.text}"
            if set(self.text) <= _DIGITS:
                return f"the number {self.text}"
            return f"the bare word {self.text}"
        return f"'{self.text}'"


class _Lexer:
    """Splits the query into tokens on demand; whitespace runs are tokens too."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.offset = 0

    def next_token(self) -> _Token:
        text, start = self.text, self.offset
        if start >= len(text):
            return _Token(_Kind.END, "", start)
        char = text[start]
        if char in _WHITESPACE:
            end = start
            while end < len(text) and text[end] in _WHITESPACE:
                end += 1
            return self._take(_Kind.SPACE, end)
        if char in _WORD_CHARS:
            end = start
            while end < len(text) and text[end] in _WORD_CHARS:
                end += 1
            return self._take(_Kind.WORD, end)
        if char in _QUOTES:
            return self._string(char)
        if text.startswith((">=", "<="), start):
            return self._take(_Kind.OPERATOR, start + 2)
        if char in _OPERATORS_BY_TEXT:
            return self._take(_Kind.OPERATOR, start + 1)
        single_characters = {
            "-": _Kind.MINUS,
            "[": _Kind.OPEN_BRACKET,
            "]": _Kind.CLOSE_BRACKET,
            "(": _Kind.PARENTHESIS,
            ")": _Kind.PARENTHESIS,
        }
        return self._take(single_characters.get(char, _Kind.OTHER), start + 1)

    def _take(self, kind: _Kind, end: int) -> _Token:
        token = _Token(kind, self.text[self.offset : end], self.offset)
        self.offset = end
        return token

    def _string(self, quote: str) -> _Token:
        text, start = self.text, self.offset
        contents: list[str] = []
        index = start + 1
        while index < len(text):
            char = text[index]
            if char == quote:
                self.offset = index + 1
                return _Token(_Kind.STRING, text[start : index + 1], start, "".join(contents))
            if char == "\\":
                escaped = text[index + 1 : index + 2]
                if escaped not in _ESCAPABLE:
                    raise SearchQueryError(
                        "Expected \\\\, \\' or \\\" after a backslash inside a string", index
                    )
                contents.append(escaped)
                index += 2
                continue
            contents.append(char)
            index += 1
        raise SearchQueryError(
            f"Expected a closing {quote} (the string starts at offset {start})", len(text)
        )


class _Parser:
    """Recursive descent over the grammar in the module docstring, one token of lookahead."""

    def __init__(self, text: str, fields: dict[str, FieldType]) -> None:
        self.fields = fields
        self.lexer = _Lexer(text)
        self.current = self.lexer.next_token()

    def peek(self) -> _Token:
        if self.current.kind is _Kind.PARENTHESIS:
            raise SearchQueryError(
                "Expected clauses joined by AND or OR; parentheses are not supported",
                self.current.position,
            )
        return self.current

    def advance(self) -> _Token:
        token = self.peek()
        self.current = self.lexer.next_token()
        return token

    def skip_space(self) -> None:
        if self.peek().kind is _Kind.SPACE:
            self.advance()

    def parse(self) -> Query:
        self.skip_space()
        if self.peek().kind is _Kind.END:
            raise SearchQueryError("Expected a clause such as field:'value', got an empty query", 0)
        clauses = [self.clause()]
        combinator: Combinator | None = None
        while True:
            token = self.peek()
            if token.kind is _Kind.END:
                break
            if token.kind is not _Kind.SPACE:
                raise SearchQueryError(
                    f"Expected whitespace, AND or OR after a clause, found {token.describe()}",
                    token.position,
                )
            self.advance()
            token = self.peek()
            if token.kind is _Kind.END:
                break
            joiner, implicit = self.joiner()
            if combinator is None:
                combinator = joiner
            elif joiner != combinator:
                how = " (whitespace between clauses means AND)" if implicit else ""
                raise SearchQueryError(
                    f"Expected {combinator} between clauses like the rest of the query;"
                    f" AND and OR cannot be mixed{how}",
                    token.position,
                )
            clause_start = self.peek().position
            if len(clauses) == MAX_CLAUSES:
                raise SearchQueryError(
                    f"Expected at most {MAX_CLAUSES} clauses, found clause {MAX_CLAUSES + 1}",
                    clause_start,
                )
            clauses.append(self.clause())
        return Query(tuple(clauses), combinator or "AND")

    def joiner(self) -> tuple[Combinator, bool]:
        """Consume an `AND`/`OR` keyword if present; returns it and whether it was implied."""
        token = self.peek()
        if token.kind is not _Kind.WORD or token.text not in _KEYWORDS:
            return "AND", True
        keyword: Combinator = "AND" if token.text == "AND" else "OR"
        self.advance()
        after = self.peek()
        if after.kind not in (_Kind.SPACE, _Kind.END):
            raise SearchQueryError(
                f"Expected whitespace after {keyword}, found {after.describe()}", after.position
            )
        self.skip_space()
        after = self.peek()
        if after.kind is _Kind.END or (after.kind is _Kind.WORD and after.text in _KEYWORDS):
            raise SearchQueryError(
                f"Expected a clause after {keyword}, found {after.describe()}", after.position
            )
        return keyword, False

    def clause(self) -> Clause:
        negated = self.peek().kind is _Kind.MINUS
        if negated:
            self.advance()
        name_token = self.peek()
        name = self.field_name(name_token, after_minus=negated)
        self.advance()
        field_type = self.fields[name]

        key = self.metadata_key(name) if field_type is FieldType.METADATA else None
        operator_token = self.peek()
        allowed = _OPERATORS_BY_TYPE[field_type]
        allowed_text = _alternatives(allowed)
        if operator_token.kind is not _Kind.OPERATOR:
            hint = "; only metadata fields take ['key']" if operator_token.text == "[" else ""
            raise SearchQueryError(
                f"Expected {allowed_text} after field {name}, found {operator_token.describe()}"
                + hint,
                operator_token.position,
            )
        operator = _OPERATORS_BY_TEXT[operator_token.text]
        if operator not in allowed:
            raise SearchQueryError(
                f"Expected {allowed_text} after {field_type.value} field {name},"
                f" found '{operator}'",
                operator_token.position,
            )
        self.advance()
        value = self.value(name, field_type, operator)
        return Clause(name, key, operator, value, negated)

    def field_name(self, token: _Token, *, after_minus: bool) -> str:
        where = " after '-'" if after_minus else ""
        if token.kind is not _Kind.WORD or token.text in _KEYWORDS:
            raise SearchQueryError(
                f"Expected a field name{where}, found {token.describe()}", token.position
            )
        if token.text in self.fields:
            return token.text
        allowed = ", ".join(sorted(self.fields))
        if token.text.upper() in _KEYWORDS:
            raise SearchQueryError(
                f"Expected a field name or the keyword {token.text.upper()} in uppercase,"
                f" found unknown field {token.text}",
                token.position,
            )
        raise SearchQueryError(
            f"Expected a field name (one of {allowed}), found unknown field {token.text}",
            token.position,
        )

    def metadata_key(self, name: str) -> str:
        opening = self.peek()
        if opening.kind is not _Kind.OPEN_BRACKET:
            raise SearchQueryError(
                f"Expected ['key'] after metadata field {name}, found {opening.describe()}",
                opening.position,
            )
        self.advance()
        key_token = self.peek()
        if key_token.kind is not _Kind.STRING:
            raise SearchQueryError(
                f"Expected a quoted metadata key after '[', found {key_token.describe()}",
                key_token.position,
            )
        if not key_token.string:
            raise SearchQueryError("Expected a non-empty metadata key", key_token.position)
        self.advance()
        closing = self.peek()
        if closing.kind is not _Kind.CLOSE_BRACKET:
            raise SearchQueryError(
                f"Expected ']' after the metadata key, found {closing.describe()}",
                closing.position,
            )
        self.advance()
        return key_token.string

    def value(self, name: str, field_type: FieldType, operator: Operator) -> Value:
        token = self.peek()
        if token.kind in (_Kind.END, _Kind.SPACE):
            raise SearchQueryError(
                f"Expected a value after '{operator}', found {token.describe()}", token.position
            )
        if token.kind is _Kind.WORD and token.text == "null":
            if operator != ":":
                raise SearchQueryError(
                    f"Expected a value other than null after '{operator}';"
                    " null only works with ':'",
                    token.position,
                )
            self.advance()
            return None
        if field_type is FieldType.NUMBER:
            return self.number(name)
        if field_type is FieldType.BOOLEAN:
            return self.boolean(name)
        return self.string(name, field_type, operator)

    def number(self, name: str) -> int:
        start = self.peek()
        negative = start.kind is _Kind.MINUS
        if negative:
            self.advance()
        token = self.peek()
        if token.kind is not _Kind.WORD or not set(token.text) <= _DIGITS:
            raise SearchQueryError(
                f"Expected a whole number for number field {name}, found {token.describe()}",
                token.position,
            )
        self.advance()
        return -int(token.text) if negative else int(token.text)

    def boolean(self, name: str) -> bool:
        token = self.peek()
        written = token.string if token.kind is _Kind.STRING else token.text
        if token.kind not in (_Kind.WORD, _Kind.STRING) or written not in ("true", "false"):
            raise SearchQueryError(
                f"Expected true or false for boolean field {name}, found {token.describe()}",
                token.position,
            )
        self.advance()
        return written == "true"

    def string(self, name: str, field_type: FieldType, operator: Operator) -> str:
        token = self.peek()
        if token.kind is not _Kind.STRING:
            raise SearchQueryError(
                f"Expected a quoted string for {field_type.value} field {name},"
                f" found {token.describe()}",
                token.position,
            )
        if operator == "~" and len(token.string) < MIN_SUBSTRING_LENGTH:
            raise SearchQueryError(
                f"Expected at least {MIN_SUBSTRING_LENGTH} characters for a substring match,"
                f" found {len(token.string)}",
                token.position,
            )
        self.advance()
        return token.string


def _alternatives(operators: tuple[Operator, ...]) -> str:
    quoted = [f"'{operator}'" for operator in operators]
    if len(quoted) == 1:
        return quoted[0]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]
