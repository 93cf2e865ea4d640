from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clearline.search_query import (
    MAX_CLAUSES,
    Clause,
    FieldType,
    FieldTypeName,
    Query,
    SearchQueryError,
    parse,
)

FIELDS: dict[str, FieldType | FieldTypeName] = {
    "amount": FieldType.NUMBER,
    "created": "number",
    "currency": "string",
    "description": "string",
    "paid": FieldType.BOOLEAN,
    "metadata": "metadata",
}
ALLOWED_FIELDS = "amount, created, currency, description, metadata, paid"

CHARGE: dict[str, Any] = {
    "amount": 2000,
    "created": 1_700_000_000,
    "currency": "usd",
    "description": "Order #6735 for Jenny Rosen",
    "paid": True,
    "metadata": {"order_id": "6735", "tier": "Gold"},
}


def matches(query: str, record: dict[str, Any] = CHARGE) -> bool:
    return parse(query, FIELDS).matches(record)


def error_for(query: str) -> SearchQueryError:
    with pytest.raises(SearchQueryError) as caught:
        parse(query, FIELDS)
    return caught.value


# --- the parsed shape -----------------------------------------------------------------


def test_parse_exposes_clauses_and_combinator() -> None:
    query = parse("amount>=1000 AND -metadata['order_id']:'6735' AND currency:null", FIELDS)

    assert query.combinator == "AND"
    assert query.clauses == (
        Clause("amount", None, ">=", 1000, negated=False),
        Clause("metadata", "order_id", ":", "6735", negated=True),
        Clause("currency", None, ":", None, negated=False),
    )


def test_a_single_clause_is_an_and_query() -> None:
    assert parse("paid:true", FIELDS) == Query((Clause("paid", None, ":", True),), "AND")


def test_query_and_clause_are_frozen_and_hashable() -> None:
    query = parse("amount>1 OR currency:'usd'", FIELDS)

    with pytest.raises(dataclasses.FrozenInstanceError):
        query.combinator = "AND"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        query.clauses[0].value = 5  # type: ignore[misc]
    assert hash(query) == hash(parse("amount>1 OR currency:'usd'", FIELDS))


def test_a_clause_can_be_evaluated_on_its_own() -> None:
    # A caller that serves one clause from an index still filters with the rest.
    query = parse("currency:'usd' AND amount>1500", FIELDS)
    indexed, *rest = query.clauses

    assert (indexed.field, indexed.operator, indexed.value) == ("currency", ":", "usd")
    assert all(clause.matches(CHARGE) for clause in rest)
    assert not rest[0].matches({**CHARGE, "amount": 1500})


# --- operators ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("amount:2000", True),
        ("amount:1999", False),
        ("amount>1999", True),
        ("amount>2000", False),
        ("amount<2001", True),
        ("amount<2000", False),
        ("amount>=2000", True),
        ("amount>=2001", False),
        ("amount<=2000", True),
        ("amount<=1999", False),
        ("amount>-1", True),
        ("created>1699999999", True),
        ("created<1700000000", False),
    ],
)
def test_number_operators(query: str, expected: bool) -> None:
    assert matches(query) is expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("currency:'usd'", True),
        ('currency:"usd"', True),
        ("currency:'USD'", False),  # exact match is case-sensitive
        ("currency:'us'", False),  # ... and whole-value
        ("description:'Order #6735 for Jenny Rosen'", True),
    ],
)
def test_exact_string_match(query: str, expected: bool) -> None:
    assert matches(query) is expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("description~'jenny'", True),  # substring is case-insensitive
        ("description~'ROSEN'", True),
        ("description~'Ord'", True),
        ("description~'#6735 for'", True),
        ("description~'jenny rosen!'", False),
        ("metadata['tier']~'gol'", True),
        ("metadata['tier']~'silver'", False),
    ],
)
def test_substring_match(query: str, expected: bool) -> None:
    assert matches(query) is expected


def test_substring_needs_three_characters() -> None:
    assert matches("currency~'usd'")

    error = error_for("currency~'us'")
    assert error.position == 9
    assert str(error) == (
        "Expected at least 3 characters for a substring match, found 2 at position 9"
    )


def test_substring_length_counts_characters_after_unescaping() -> None:
    # `'\\'a'` is five characters of query text but the two-character value `'a`.
    error = error_for(r"description~'\'a'")
    assert (error.position, error.description) == (
        12,
        "Expected at least 3 characters for a substring match, found 2",
    )
    assert matches(r"description~'\'a\''", {"description": "it's 'a' test"})


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("paid:true", True),
        ("paid:false", False),
        ("paid:'true'", True),
        ('paid:"false"', False),
    ],
)
def test_boolean_values_bare_or_quoted(query: str, expected: bool) -> None:
    assert matches(query) is expected


def test_types_do_not_cross_when_comparing_record_values() -> None:
    # bool is an int in Python; a search for amount 1 must not find `True`.
    assert not matches("amount:1", {"amount": True})
    assert not matches("paid:true", {"paid": 1})
    assert not matches("currency:'2000'", {"currency": 2000})
    assert not matches("amount>1", {"amount": "2000"})
    assert matches("amount:2000", {"amount": 2000.0})


# --- negation and null ----------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "amount:2000",
        "amount>100",
        "amount<=5",
        "currency:'usd'",
        "description~'jenny'",
        "paid:false",
        "metadata['order_id']:'6735'",
        "currency:null",
    ],
)
def test_leading_minus_negates_a_clause(query: str) -> None:
    assert matches("-" + query) is not matches(query)
    assert parse("-" + query, FIELDS).clauses[0].negated


@pytest.mark.parametrize(
    "record",
    [{}, {"currency": None}, {"currency": None, "amount": None, "metadata": None}],
)
def test_null_matches_a_missing_or_empty_field(record: dict[str, Any]) -> None:
    assert matches("currency:null", record)
    assert not matches("-currency:null", record)
    # A missing value satisfies no comparison, so only a negated one holds.
    assert not matches("amount>0", record)
    assert not matches("amount<0", record)
    assert matches("-amount>0", record)


def test_null_does_not_match_a_present_field() -> None:
    assert not matches("currency:null")
    assert matches("-currency:null")
    assert not matches("paid:null", {"paid": False})  # false is a value, not null
    assert not matches("amount:null", {"amount": 0})


def test_quoted_null_is_the_string_null() -> None:
    assert parse("currency:'null'", FIELDS).clauses[0].value == "null"
    assert matches("currency:'null'", {"currency": "null"})
    assert not matches("currency:'null'", {})


# --- metadata -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "metadata['order_id']:'6735'",
        'metadata["order_id"]:"6735"',
        "metadata[\"order_id\"]:'6735'",
    ],
)
def test_metadata_key_in_either_quote_style(query: str) -> None:
    assert parse(query, FIELDS).clauses[0].key == "order_id"
    assert matches(query)
    assert not matches(query, {"metadata": {"order_id": "6736"}})


def test_metadata_presence_and_absence() -> None:
    assert matches("-metadata['order_id']:null")
    assert not matches("metadata['order_id']:null")
    assert matches("metadata['coupon']:null")
    assert matches("metadata['coupon']:null", {})
    assert matches("metadata['coupon']:null", {"metadata": None})
    assert not matches("metadata['order_id']:'6735'", {})


def test_metadata_values_are_exact_and_case_sensitive() -> None:
    assert matches("metadata['tier']:'Gold'")
    assert not matches("metadata['tier']:'gold'")


def test_metadata_key_may_contain_spaces_and_escaped_quotes() -> None:
    record = {"metadata": {"customer's ref": "a b"}}

    assert matches(r"metadata['customer\'s ref']:'a b'", record)
    assert matches("metadata[\"customer's ref\"]:'a b'", record)


# --- combining clauses ----------------------------------------------------------------


def test_and_requires_every_clause() -> None:
    assert matches("currency:'usd' AND amount>1000")
    assert not matches("currency:'usd' AND amount>5000")


def test_or_requires_any_clause() -> None:
    query = parse("currency:'eur' OR amount>1000", FIELDS)

    assert query.combinator == "OR"
    assert query.matches(CHARGE)
    assert not query.matches({**CHARGE, "amount": 999})


@pytest.mark.parametrize(
    "query",
    [
        "currency:'usd' amount>5000",
        "currency:'usd'\tamount>5000",
        "  currency:'usd'   amount>5000  ",
        "currency:'usd'\n AND \tamount>5000",
    ],
)
def test_whitespace_between_clauses_means_and(query: str) -> None:
    parsed = parse(query, FIELDS)

    assert parsed.combinator == "AND"
    assert len(parsed.clauses) == 2
    assert not parsed.matches(CHARGE)
    assert parsed.matches({**CHARGE, "amount": 6000})


def test_ten_clauses_are_allowed() -> None:
    query = " OR ".join(f"amount:{n}" for n in range(MAX_CLAUSES))

    parsed = parse(query, FIELDS)

    assert len(parsed.clauses) == MAX_CLAUSES == 10
    assert parsed.matches({"amount": 9})
    assert not parsed.matches({"amount": 10})


def test_an_eleventh_clause_is_an_error_at_its_start() -> None:
    ten = " AND ".join("amount>1" for _ in range(10))  # 10 * 8 + 9 * 5 = 125 characters
    query = ten + " AND paid:true"

    error = error_for(query)

    assert error.position == 130 == query.index("paid")
    assert str(error) == "Expected at most 10 clauses, found clause 11 at position 130"


@pytest.mark.parametrize(
    ("query", "position", "message"),
    [
        (
            "amount>1 AND paid:true OR currency:'usd'",
            23,
            "Expected AND between clauses like the rest of the query; AND and OR cannot be mixed",
        ),
        (
            "amount>1 OR paid:true AND currency:'usd'",
            22,
            "Expected OR between clauses like the rest of the query; AND and OR cannot be mixed",
        ),
        (
            "amount>1 OR paid:true currency:'usd'",
            22,
            "Expected OR between clauses like the rest of the query;"
            " AND and OR cannot be mixed (whitespace between clauses means AND)",
        ),
        (
            "amount>1 paid:true OR currency:'usd'",
            19,
            "Expected AND between clauses like the rest of the query; AND and OR cannot be mixed",
        ),
    ],
)
def test_mixing_and_with_or_is_an_error(query: str, position: int, message: str) -> None:
    error = error_for(query)

    assert error.position == position
    assert str(error) == f"{message} at position {position}"


# --- quoting and escaping -------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "value"),
    [
        ("description:'plain'", "plain"),
        ('description:"plain"', "plain"),
        (r"description:'it\'s'", "it's"),
        (r'description:"say \"hi\""', 'say "hi"'),
        ('description:"it\'s"', "it's"),
        ("description:'say \"hi\"'", 'say "hi"'),
        (r"description:'back\\slash'", "back\\slash"),
        (r"description:'\\'", "\\"),
        ("description:''", ""),
        ("description:'a AND b OR (c) -d:e'", "a AND b OR (c) -d:e"),
        ("description:'tab\there'", "tab\there"),
        ("description:'ünïcødé ✓'", "ünïcødé ✓"),
    ],
)
def test_quoted_values_are_unescaped(query: str, value: str) -> None:
    (clause,) = parse(query, FIELDS).clauses

    assert clause.value == value
    assert matches(query, {"description": value})


@given(st.text())
def test_any_text_survives_quoting(text: str) -> None:
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")

    (clause,) = parse(f"description:'{escaped}'", FIELDS).clauses

    assert clause.value == text


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "position", "message"),
    [
        ("", 0, "Expected a clause such as field:'value', got an empty query"),
        ("   ", 0, "Expected a clause such as field:'value', got an empty query"),
        ("amount:", 7, "Expected a value after ':', found the end of the query"),
        ("amount>= 5", 8, "Expected a value after '>=', found whitespace"),
        ("amount:1 AND", 12, "Expected a clause after AND, found the end of the query"),
        ("amount:1 OR  ", 13, "Expected a clause after OR, found the end of the query"),
        ("amount:1 AND AND paid:true", 13, "Expected a clause after AND, found the keyword AND"),
        ("AND amount:1", 0, "Expected a field name, found the keyword AND"),
        (
            "amount:1 ANDpaid:true",
            9,
            "Expected a field name (one of " + ALLOWED_FIELDS + "), found unknown field ANDpaid",
        ),
        ("amount:1 AND'x'", 12, "Expected whitespace after AND, found the quoted string 'x'"),
        (
            "currency:'usd'amount:1",
            14,
            "Expected whitespace, AND or OR after a clause, found the bare word amount",
        ),
        (
            "amount:1:2",
            8,
            "Expected whitespace, AND or OR after a clause, found ':'",
        ),
        ("- amount:1", 1, "Expected a field name after '-', found whitespace"),
        ("--amount:1", 1, "Expected a field name after '-', found '-'"),
        ("'amount':1", 0, "Expected a field name, found the quoted string 'amount'"),
        ("(amount:1)", 0, "Expected clauses joined by AND or OR; parentheses are not supported"),
        (
            "amount:1 AND (paid:true)",
            13,
            "Expected clauses joined by AND or OR; parentheses are not supported",
        ),
        (
            "amount:(1)",
            7,
            "Expected clauses joined by AND or OR; parentheses are not supported",
        ),
        (
            "amount=5",
            6,
            "Expected ':', '>', '<', '>=' or '<=' after field amount, found '='",
        ),
        (
            "amount",
            6,
            "Expected ':', '>', '<', '>=' or '<=' after field amount, found the end of the query",
        ),
        ("currency :'usd'", 8, "Expected ':' or '~' after field currency, found whitespace"),
        (
            "amount['x']:1",
            6,
            "Expected ':', '>', '<', '>=' or '<=' after field amount, found '['"
            "; only metadata fields take ['key']",
        ),
        ("metadata:'x'", 8, "Expected ['key'] after metadata field metadata, found ':'"),
        (
            "metadata[key]:'x'",
            9,
            "Expected a quoted metadata key after '[', found the bare word key",
        ),
        ("metadata['']:'x'", 9, "Expected a non-empty metadata key"),
        ("metadata['key':'x'", 14, "Expected ']' after the metadata key, found ':'"),
        ("currency:'usd", 13, "Expected a closing ' (the string starts at offset 9)"),
        ('currency:"usd\\"', 15, 'Expected a closing " (the string starts at offset 9)'),
        (
            r"currency:'\n'",
            10,
            "Expected \\\\, \\' or \\\" after a backslash inside a string",
        ),
        (
            "currency~null",
            9,
            "Expected a value other than null after '~'; null only works with ':'",
        ),
        ("amount>null", 7, "Expected a value other than null after '>'; null only works with ':'"),
        (
            "amount:1 and paid:true",
            9,
            "Expected a field name or the keyword AND in uppercase, found unknown field and",
        ),
        (
            "amount:1 or paid:true",
            9,
            "Expected a field name or the keyword OR in uppercase, found unknown field or",
        ),
        ("amount:1 ! paid:true", 9, "Expected a field name, found '!'"),
    ],
)
def test_syntax_errors_name_what_was_expected_and_where(
    query: str, position: int, message: str
) -> None:
    error = error_for(query)

    assert isinstance(error, ValueError)
    assert error.position == position
    assert error.description == message
    assert str(error) == error.message == f"{message} at position {position}"


def test_the_first_problem_is_reported() -> None:
    # The unterminated string comes later; the bare word before it is the first mistake.
    error = error_for("currency:usd AND description:'unterminated")

    assert error.position == 9


def test_unknown_field_names_the_field_and_lists_the_allowed_ones() -> None:
    error = error_for("amount>1 AND customer:'cus_123'")

    assert error.position == 13
    assert "unknown field customer" in str(error)
    assert f"(one of {ALLOWED_FIELDS})" in str(error)
    assert str(error) == (
        f"Expected a field name (one of {ALLOWED_FIELDS}), found unknown field customer"
        " at position 13"
    )


@pytest.mark.parametrize(
    ("query", "position", "message"),
    [
        (
            "amount:'1000'",
            7,
            "Expected a whole number for number field amount, found the quoted string '1000'",
        ),
        (
            "amount>'1000'",
            7,
            "Expected a whole number for number field amount, found the quoted string '1000'",
        ),
        (
            "amount:1.5",
            7,
            "Expected a whole number for number field amount, found the bare word 1.5",
        ),
        (
            "amount:1e3",
            7,
            "Expected a whole number for number field amount, found the bare word 1e3",
        ),
        (
            "amount:true",
            7,
            "Expected a whole number for number field amount, found the bare word true",
        ),
        ("amount:-x", 8, "Expected a whole number for number field amount, found the bare word x"),
        (
            "amount~'100'",
            6,
            "Expected ':', '>', '<', '>=' or '<=' after number field amount, found '~'",
        ),
        ("currency>5", 8, "Expected ':' or '~' after string field currency, found '>'"),
        ("currency<='usd'", 8, "Expected ':' or '~' after string field currency, found '<='"),
        ("currency:5", 9, "Expected a quoted string for string field currency, found the number 5"),
        (
            "currency:usd",
            9,
            "Expected a quoted string for string field currency, found the bare word usd",
        ),
        (
            "currency:true",
            9,
            "Expected a quoted string for string field currency, found the bare word true",
        ),
        (
            "metadata['k']:5",
            14,
            "Expected a quoted string for metadata field metadata, found the number 5",
        ),
        ("metadata['k']>'5'", 13, "Expected ':' or '~' after metadata field metadata, found '>'"),
        (
            "paid:'yes'",
            5,
            "Expected true or false for boolean field paid, found the quoted string 'yes'",
        ),
        ("paid:TRUE", 5, "Expected true or false for boolean field paid, found the bare word TRUE"),
        ("paid:1", 5, "Expected true or false for boolean field paid, found the number 1"),
        ("paid~'true'", 4, "Expected ':' after boolean field paid, found '~'"),
    ],
)
def test_type_mismatches_are_errors(query: str, position: int, message: str) -> None:
    error = error_for(query)

    assert (error.position, error.description) == (position, message)


def test_negative_numbers_are_values() -> None:
    assert parse("amount>-5", FIELDS).clauses[0].value == -5
    assert parse("-amount:-5", FIELDS).clauses[0] == Clause("amount", None, ":", -5, True)


# --- field configuration --------------------------------------------------------------


def test_fields_accept_the_enum_or_its_names() -> None:
    by_enum = parse("amount>1", {"amount": FieldType.NUMBER})
    by_name = parse("amount>1", {"amount": "number"})

    assert by_enum == by_name


def test_dotted_field_names_are_allowed() -> None:
    query = parse("billing_details.name:'Jenny'", {"billing_details.name": "string"})

    assert query.matches({"billing_details.name": "Jenny"})


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"amount": "money"}, "has type 'money'"),
        ({"1amount": "number"}, "cannot be written"),
        ({"amount-due": "number"}, "cannot be written"),
        ({"AND": "string"}, "is a search keyword"),
    ],
)
def test_bad_field_configuration_is_a_plain_value_error(
    fields: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        parse("amount>1", fields)

    assert not isinstance(caught.value, SearchQueryError)


# --- properties -----------------------------------------------------------------------

ATOMS = [
    "amount:2000",
    "amount>1000",
    "amount<500",
    "amount>=0",
    "amount<=2000",
    "amount:null",
    "created>1700000000",
    "currency:'usd'",
    "currency:'USD'",
    "currency:null",
    "description~'jen'",
    "description:'Refund'",
    "paid:true",
    "paid:null",
    "metadata['order_id']:'6735'",
    "metadata['tier']~'GOL'",
    "metadata['tier']:null",
]
RECORDS = st.fixed_dictionaries(
    {},
    optional={
        "amount": st.none() | st.integers(-10, 3000),
        "created": st.none() | st.integers(1_699_999_990, 1_700_000_010),
        "currency": st.none() | st.sampled_from(["usd", "USD", "eur"]),
        "description": st.none() | st.sampled_from(["Refund", "Jenny's order", "refunded"]),
        "paid": st.none() | st.booleans(),
        "metadata": st.none()
        | st.dictionaries(
            st.sampled_from(["order_id", "tier"]), st.sampled_from(["6735", "gold", "Golden"])
        ),
    },
)
CLAUSE_LISTS = st.lists(
    st.tuples(st.booleans(), st.sampled_from(ATOMS)).map(
        lambda pair: ("-" if pair[0] else "") + pair[1]
    ),
    min_size=1,
    max_size=MAX_CLAUSES,
)


def test_every_atom_matches_some_records_and_not_others() -> None:
    # Keeps the properties below from holding vacuously.
    samples = [
        CHARGE,
        {},
        {"amount": 100, "currency": "USD", "description": "Refund", "paid": False},
        {"metadata": {"tier": "golden"}, "created": 1_700_000_001},
    ]
    for atom in ATOMS:
        outcomes = {matches(atom, record) for record in samples}
        assert outcomes == {True, False}, atom


@given(CLAUSE_LISTS, RECORDS)
def test_and_is_the_conjunction_of_its_clauses(clauses: list[str], record: dict[str, Any]) -> None:
    expected = all(matches(clause, record) for clause in clauses)

    assert matches(" AND ".join(clauses), record) is expected
    assert matches(" ".join(clauses), record) is expected


@given(CLAUSE_LISTS, RECORDS)
def test_or_is_the_disjunction_of_its_clauses(clauses: list[str], record: dict[str, Any]) -> None:
    expected = any(matches(clause, record) for clause in clauses)

    assert matches(" OR ".join(clauses), record) is expected


@given(st.sampled_from(ATOMS), RECORDS)
def test_negation_is_the_complement(atom: str, record: dict[str, Any]) -> None:
    assert matches("-" + atom, record) is not matches(atom, record)


@given(st.sampled_from([">", "<", ">=", "<=", ":"]), st.integers(-5000, 5000), RECORDS)
def test_number_comparisons_agree_with_python(
    operator: str, threshold: int, record: dict[str, Any]
) -> None:
    amount = record.get("amount")
    compare = {
        ">": lambda a, b: a > b,
        "<": lambda a, b: a < b,
        ">=": lambda a, b: a >= b,
        "<=": lambda a, b: a <= b,
        ":": lambda a, b: a == b,
    }[operator]
    expected = amount is not None and compare(amount, threshold)

    assert matches(f"amount{operator}{threshold}", record) is expected


@given(
    st.text(alphabet="abcABC 'x", min_size=3, max_size=6),
    st.text(alphabet="abcABC 'x", max_size=12),
)
def test_substring_agrees_with_casefolded_containment(needle: str, haystack: str) -> None:
    query = "description~'" + needle.replace("'", "\\'") + "'"

    expected = needle.casefold() in haystack.casefold()

    assert matches(query, {"description": haystack}) is expected


@given(st.text(alphabet=" \t-:~<>=[]()'\"\\abcdnulmoptry0129ANDOR", max_size=40))
def test_any_text_parses_or_fails_with_a_position_inside_it(query: str) -> None:
    fields: dict[str, FieldType | FieldTypeName] = {
        "a": "number",
        "b": "string",
        "c": "boolean",
        "d": "metadata",
    }
    try:
        parsed = parse(query, fields)
    except SearchQueryError as error:
        assert 0 <= error.position <= len(query)
        assert str(error).startswith("Expected ")
        assert str(error).endswith(f" at position {error.position}")
    else:
        assert 1 <= len(parsed.clauses) <= MAX_CLAUSES
        assert parsed.combinator in ("AND", "OR")
