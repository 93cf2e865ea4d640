"""Search over a merchant's charges with Stripe's query language.

Like Stripe's, search reads an index that trails writes (here the merchant's list index,
a DynamoDB global secondary index, typically well under a second behind), so a charge
just created may not be found yet. Its cost is bounded: one request examines at most
`SCAN_BUDGET` charges, newest first; when the budget runs out before the page is full, the
answer carries a `next_page` token that resumes where it stopped. A `created` range in the
query narrows the index range read, so a recent window costs only what it holds.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from clearline import listing
from clearline.errors import InvalidRequestError
from clearline.models import Charge
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


@dataclass(frozen=True)
class SearchPage:
    charges: tuple[Charge, ...]
    next_page: str | None


def searchable(charge: Charge) -> dict[str, Any]:
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


def parse_charge_query(text: str) -> Query:
    try:
        return parse(text, CHARGE_FIELDS)
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


def _resume_after(page: str | None) -> str | None:
    if not page:
        return None
    try:
        after = json.loads(base64.urlsafe_b64decode(page.encode()))["after"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise InvalidRequestError(
            "Invalid page: use the next_page of an earlier search, unchanged.", param="page"
        ) from exc
    if not isinstance(after, str) or not after.startswith("ch_"):
        raise InvalidRequestError(
            "Invalid page: use the next_page of an earlier search, unchanged.", param="page"
        )
    return after


def search_charges(
    store: Store, merchant_id: str, query: Query, *, limit: int, page: str | None
) -> SearchPage:
    """Up to `limit` of the merchant's charges matching `query`, newest first."""
    after = _resume_after(page)
    created = created_range(query)
    found: list[Charge] = []
    examined = 0
    while True:
        batch = listing.page(
            store,
            merchant_id,
            "ch",
            limit=_BATCH,
            starting_after=after,
            ending_before=None,
            created=created,
        )
        for item in batch.items:
            examined += 1
            after = item["id"]
            charge = Charge.from_item(item)
            if query.matches(searchable(charge)):
                found.append(charge)
                if len(found) == limit:
                    more = batch.has_more or item is not batch.items[-1]
                    return SearchPage(tuple(found), _page_token(after) if more else None)
            if examined >= SCAN_BUDGET:
                more = batch.has_more or item is not batch.items[-1]
                return SearchPage(tuple(found), _page_token(after) if more else None)
        if not batch.has_more:
            return SearchPage(tuple(found), None)
