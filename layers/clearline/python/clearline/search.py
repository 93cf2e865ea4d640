"""Search over a merchant's charges and customers with Stripe's query language.

Like Stripe's, search reads an index that trails writes (here the merchant's list index,
a DynamoDB global secondary index, typically well under a second behind), so a charge
just created may not be found yet. Its cost is bounded: one request examines at most
`SCAN_BUDGET` objects, newest first; when the budget runs out before the page is full, the
answer carries a `next_page` token that resumes where it stopped. A `created` range in the
query narrows the index range read, so a recent window costs only what it holds.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from clearline import listing
from clearline.errors import InvalidRequestError
from clearline.models import Charge, Customer
from clearline.search_query import FieldType, Query, SearchQueryError, parse
from clearline.store import Store

SCAN_BUDGET = 1000
_BATCH = 100

# The fields a charge query may name, as Stripe's charge search names them.
CHARGE_FIELDS: dict[str, FieldType] = {
    "amount": FieldType.NUMBER,
    "created": FieldType.NUMBER,
    "currency": FieldType.STRING,
    "customer": FieldType.STRING,
    "description": FieldType.STRING,
    "disputed": FieldType.BOOLEAN,
    "metadata": FieldType.METADATA,
    "payment_intent": FieldType.STRING,
    "payment_method_details.card.brand": FieldType.STRING,
    "payment_method_details.card.fingerprint": FieldType.STRING,
    "payment_method_details.card.last4": FieldType.STRING,
    "refunded": FieldType.BOOLEAN,
    "status": FieldType.STRING,
}


M = TypeVar("M")


@dataclass(frozen=True)
class SearchPage(Generic[M]):
    found: tuple[M, ...]
    next_page: str | None


@dataclass(frozen=True)
class Searchable(Generic[M]):
    """What can be searched: the list it reads, the fields a query may name, and how a
    stored item becomes the model and the model the record a query is matched against."""

    kind: str  # the list (and id prefix)
    fields: dict[str, FieldType]
    model: Callable[[dict[str, Any]], M]
    record: Callable[[M], dict[str, Any]]


def charge_record(charge: Charge) -> dict[str, Any]:
    """A charge as the query language sees it."""
    card = charge.card
    return {
        "amount": charge.amount,
        "created": charge.created,
        "currency": charge.currency,
        "customer": charge.customer,
        "description": charge.description,
        "disputed": False,
        "metadata": dict(charge.metadata),
        "payment_intent": charge.payment_intent,
        "payment_method_details.card.brand": card.brand if card else None,
        "payment_method_details.card.fingerprint": card.fingerprint if card else None,
        "payment_method_details.card.last4": card.last4 if card else None,
        "refunded": charge.fully_refunded,
        "status": charge.status,
    }


CUSTOMER_FIELDS: dict[str, FieldType] = {
    "created": FieldType.NUMBER,
    "email": FieldType.STRING,
    "metadata": FieldType.METADATA,
    "name": FieldType.STRING,
    "phone": FieldType.STRING,
}


def customer_record(customer: Customer) -> dict[str, Any]:
    return {
        "created": customer.created,
        "email": customer.email,
        "metadata": dict(customer.metadata),
        "name": customer.name,
        "phone": customer.phone,
    }


CHARGES = Searchable("ch", CHARGE_FIELDS, Charge.from_item, charge_record)
CUSTOMERS = Searchable("cus", CUSTOMER_FIELDS, Customer.from_item, customer_record)


def parse_query(text: str, searchable: Searchable[Any]) -> Query:
    try:
        return parse(text, searchable.fields)
    except SearchQueryError as exc:
        raise InvalidRequestError(
            f"Invalid search query: {exc}", param="query", code="parameter_invalid"
        ) from exc


def created_range(query: Query) -> listing.Created:
    """The `created` bounds every match must meet (only when clauses are ANDed)."""
    if query.combinator != "AND" and len(query.clauses) > 1:
        return listing.Created()
    bounds: dict[str, int] = {}
    for clause in query.clauses:
        if clause.field != "created" or clause.negated or not isinstance(clause.value, int):
            continue
        value = clause.value
        if clause.operator in (">", ">="):
            name = "gt" if clause.operator == ">" else "gte"
            bounds[name] = max(bounds.get(name, value), value)
        elif clause.operator in ("<", "<="):
            name = "lt" if clause.operator == "<" else "lte"
            bounds[name] = min(bounds.get(name, value), value)
        elif clause.operator == ":":
            bounds["gte"], bounds["lte"] = value, value
    return listing.Created(**bounds)


def _page_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": last_id}).encode()).decode()


def _resume_after(page: str | None, kind: str) -> str | None:
    if not page:
        return None
    try:
        after = json.loads(base64.urlsafe_b64decode(page.encode()))["after"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise InvalidRequestError(
            "Invalid page: use the next_page of an earlier search, unchanged.", param="page"
        ) from exc
    if not isinstance(after, str) or not after.startswith(kind + "_"):
        raise InvalidRequestError(
            "Invalid page: use the next_page of an earlier search, unchanged.", param="page"
        )
    return after


def search(
    store: Store,
    merchant_id: str,
    searchable: Searchable[M],
    query: Query,
    *,
    limit: int,
    page: str | None,
) -> SearchPage[M]:
    """Up to `limit` of the merchant's objects matching `query`, newest first."""
    after = _resume_after(page, searchable.kind)
    created = created_range(query)
    found: list[M] = []
    examined = 0
    while True:
        batch = listing.page(
            store,
            merchant_id,
            searchable.kind,
            limit=_BATCH,
            starting_after=after,
            ending_before=None,
            created=created,
        )
        for item in batch.items:
            examined += 1
            after = item["id"]
            candidate = searchable.model(item)
            if query.matches(searchable.record(candidate)):
                found.append(candidate)
            last = item is batch.items[-1]
            if len(found) == limit or examined >= SCAN_BUDGET:
                more = batch.has_more or not last
                return SearchPage(tuple(found), _page_token(after) if more else None)
        if not batch.has_more:
            return SearchPage(tuple(found), None)
