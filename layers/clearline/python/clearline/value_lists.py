"""Radar value lists (`rsl_`) and their items (`rsli_`): the sets a fraud rule names by
alias (`Block if :card_bin: in @blocked_bins`).

A list's alias is unique per merchant, claimed by an item of its own in the same
transaction that creates (or renames) the list. Each item is stored twice, in one
transaction: as an object (retrieved, listed and deleted by id) and as a member in its
list's partition, keyed by its value, so that a value is in a list at most once and a rule
reads a whole list with one query.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import time
from collections.abc import Callable
from typing import Any

from clearline import listing
from clearline.audit import Caller
from clearline.errors import InvalidRequestError
from clearline.ids import derived_id
from clearline.merchants import Merchant
from clearline.models import Page, ValueList, ValueListItem
from clearline.params import (
    ValueListCreateParams,
    ValueListItemCreateParams,
    ValueListUpdateParams,
    merged_metadata,
)
from clearline.radar_rules import CaseSensitive, parse
from clearline.store import Store
from clearline.transitions import Change, Transition, TransitionWriter

ACTIVE, DELETED = "active", "deleted"
MAX_ITEMS = 10_000  # Stripe's ceiling for a list
SHOWN_ITEMS = 10  # the newest items a list shows in `list_items`

_PATTERNS = {
    "card_bin": (r"[0-9]{6,8}", "six to eight digits"),
    "card_fingerprint": (r"[A-Za-z0-9]{16,64}", "a card fingerprint"),
    "country": (r"[A-Za-z]{2}", "a two-letter country code"),
    "customer_id": (r"cus_[A-Za-z0-9]+", "a customer id (cus_...)"),
    "email": (r"[^@\s]+@[^@\s]+", "an email address"),
}
SHAPES = {
    **{kind: shape for kind, (_, shape) in _PATTERNS.items()},
    "ip_address": "an IPv4 or IPv6 address",
    "string": "text",
    "case_sensitive_string": "text",
}


def valid_value(item_type: str, value: str) -> bool:
    if item_type in _PATTERNS:
        return re.fullmatch(_PATTERNS[item_type][0], value) is not None
    if item_type == "ip_address":
        return _is_ip(value)
    return True


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


# Kinds whose values compare without regard to case; ids and fingerprints keep theirs.
CASE_INSENSITIVE = frozenset({"string", "email", "country"})


def member_key(item_type: str, value: str) -> str:
    """How a value is kept and compared: case matters unless the type says it does not."""
    return value.lower() if item_type in CASE_INSENSITIVE else value


def _member_sk(key: str) -> str:
    """A member's sort key: its value, or the value's digest where the value is longer than
    a sort key may be (800 characters of text can be 3,200 bytes)."""
    if len(key.encode()) <= 512:
        return f"MEMBER#{key}"
    return f"MEMBER#sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def _list_pk(list_id: str) -> str:
    return f"VALUELIST#{list_id}"


def _alias_key(merchant_id: str, alias: str) -> tuple[str, str]:
    return f"MERCHANT#{merchant_id}", f"VALUELIST_ALIAS#{alias}"


class ValueListService:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.writer = TransitionWriter(store, clock=lambda: self.clock())

    # ---- lists -------------------------------------------------------------------------------

    def create(
        self, caller: Caller, params: ValueListCreateParams, *, idempotency_key: str
    ) -> ValueList:
        merchant = caller.merchant
        list_id = derived_id("rsl", merchant.id, idempotency_key)
        existing = self.store.get(_list_pk(list_id), "VALUELIST")
        if existing is not None and existing["merchant"] == merchant.id:
            if existing["state"] != ACTIVE:
                raise InvalidRequestError(
                    f"This Idempotency-Key made the value list {list_id}, which has since been "
                    "deleted: use a new key.",
                    code="idempotency_key_in_use",
                )
            return self._shown(existing)  # a retry of this create
        now = self.clock()
        item: dict[str, Any] = {
            "pk": _list_pk(list_id),
            "sk": "VALUELIST",
            **listing.list_keys(merchant.id, "rsl", int(now * 1000), list_id),
            "id": list_id,
            "merchant": merchant.id,
            "alias": params.alias,
            "name": params.name,
            "item_type": params.item_type,
            "metadata": dict(params.metadata),
            "created": int(now),
            "items": 0,
            "version": 1,
            "state": ACTIVE,
        }
        self._commit(
            Transition(
                [
                    Change(item["pk"], "VALUELIST", list_id, "create", ACTIVE, create=item),
                    self._claim(merchant.id, params.alias, list_id),
                ],
                caller,
            ),
            params.alias,
        )
        return self._shown(item)

    def _claim(self, merchant_id: str, alias: str, list_id: str) -> Change:
        pk, sk = _alias_key(merchant_id, alias)
        claim = {"pk": pk, "sk": sk, "value_list": list_id}
        return Change(pk, sk, list_id, "alias.claim", ACTIVE, create=claim, audited=False)

    def _commit(self, transition: Transition, alias: str | None = None) -> None:
        cancelled = self.writer.commit(transition)
        if cancelled is None:
            return
        if alias is not None:
            raise InvalidRequestError(
                f"A value list with the alias '{alias}' already exists: aliases are unique.",
                param="alias",
                code="resource_already_exists",
            )
        raise InvalidRequestError("The value list changed meanwhile; retry.", param="id")

    def owned(self, merchant: Merchant, list_id: str, param: str = "id") -> dict[str, Any]:
        item = listing.get_owned(self.store, merchant.id, list_id, "rsl", param)
        if item["state"] != ACTIVE:
            raise listing.ResourceMissingError("value list", list_id, param=param)
        return item

    def retrieve(self, merchant: Merchant, list_id: str) -> ValueList:
        return self._shown(self.owned(merchant, list_id))

    def update(self, caller: Caller, list_id: str, params: ValueListUpdateParams) -> ValueList:
        item = self.owned(caller.merchant, list_id)
        changes: dict[str, Any] = {}
        if params.name is not None:
            changes["name"] = params.name
        if params.metadata is not None:
            changes["metadata"] = merged_metadata(item.get("metadata") or {}, params.metadata)
        renamed = params.alias is not None and params.alias != item["alias"]
        if renamed:
            self._refuse_if_named(item, "renamed")
            changes["alias"] = params.alias
        updated = Change.versioned(item, "update", ACTIVE, set=changes)
        claims: list[Change] = []
        if renamed:
            assert params.alias is not None
            old_pk, old_sk = _alias_key(item["merchant"], item["alias"])
            claims = [
                self._claim(item["merchant"], params.alias, list_id),
                Change(
                    old_pk,
                    old_sk,
                    list_id,
                    "alias.release",
                    DELETED,
                    from_state=ACTIVE,
                    delete=True,
                    audited=False,
                ),
            ]
        self._commit(Transition([updated, *claims], caller), params.alias if renamed else None)
        return self._shown({**item, **changes, "version": item["version"] + 1})

    def delete(self, caller: Caller, list_id: str) -> ValueList:
        item = self.owned(caller.merchant, list_id)
        self._refuse_if_named(item, "deleted")
        pk, sk = _alias_key(item["merchant"], item["alias"])
        gone = Change.versioned(item, "delete", DELETED, remove=("gsi1pk", "gsi1sk"))
        released = Change(
            pk, sk, list_id, "alias.release", DELETED, from_state=ACTIVE, delete=True, audited=False
        )
        self._commit(Transition([gone, released], caller))
        return ValueList.model_validate({**item, "deleted": True, "list_items": ()})

    def _shown(self, item: dict[str, Any]) -> ValueList:
        """The list with its first items (by value), as Stripe embeds them in `list_items`:
        one short read, however long the list."""
        members = self.store.query_partition(_list_pk(item["id"]), "MEMBER#", SHOWN_ITEMS + 1)
        shown = tuple(ValueListItem.model_validate(m) for m in members[:SHOWN_ITEMS])
        return ValueList.model_validate(
            {**item, "list_items": shown, "has_more_items": len(members) > SHOWN_ITEMS}
        )

    # ---- items -------------------------------------------------------------------------------

    def members_of(self, list_id: str, limit: int = MAX_ITEMS) -> list[dict[str, Any]]:
        """A list's items, newest first: one query of its partition."""
        members = self.store.query_partition(_list_pk(list_id), "MEMBER#")
        return sorted(members, key=lambda m: (m["created_ms"], m["id"]), reverse=True)[:limit]

    def exists(self, merchant_id: str, alias: str) -> bool:
        return self.store.get(*_alias_key(merchant_id, alias)) is not None

    def _refuse_if_named(self, item: dict[str, Any], what: str) -> None:
        """A list a rule names stays, under its alias: the rule would otherwise test
        against nothing. Remove or change the rule first (as Stripe requires)."""
        rules = self.store.get(f"MERCHANT#{item['merchant']}", "RADAR_RULES") or {}
        naming = [
            rule["id"]
            for rule in rules.get("rules") or []
            if item["alias"] in parse(rule["text"]).value_lists
        ]
        if naming:
            raise InvalidRequestError(
                f"The value list {item['id']} cannot be {what}: the rule(s) "
                f"{', '.join(naming)} name @{item['alias']}.",
                param="alias" if what == "renamed" else "id",
            )

    def values_of(self, merchant_id: str, alias: str) -> frozenset[str] | None:
        """What a rule's `@alias` holds, marked for the rules when its case matters; None
        when the merchant has no such list (a test against it decides nothing)."""
        claim = self.store.get(*_alias_key(merchant_id, alias))
        if claim is None:
            return None
        value_list = self.store.get(_list_pk(claim["value_list"]), "VALUELIST") or {}
        keys = frozenset(m["key"] for m in self.members_of(claim["value_list"]))
        if value_list.get("item_type") in CASE_INSENSITIVE:
            return keys
        return CaseSensitive(keys)

    def create_item(
        self, caller: Caller, params: ValueListItemCreateParams, *, idempotency_key: str
    ) -> ValueListItem:
        merchant = caller.merchant
        value_list = self.owned(merchant, params.value_list, param="value_list")
        shape = SHAPES[value_list["item_type"]]
        value = params.value.strip()
        if not value or not valid_value(value_list["item_type"], value):
            raise InvalidRequestError(
                f"'{params.value}' is not a valid {value_list['item_type']}: the list "
                f"{value_list['id']} holds {shape}.",
                param="value",
            )
        item_id = derived_id("rsli", merchant.id, idempotency_key)
        existing = self.store.get(f"VALUELISTITEM#{item_id}", "VALUELISTITEM")
        if existing is not None and existing["merchant"] == merchant.id:
            return ValueListItem.model_validate(existing)  # a retry of this create
        if value_list["items"] >= MAX_ITEMS:
            raise InvalidRequestError(
                f"The value list {value_list['id']} holds its maximum of {MAX_ITEMS} items.",
                param="value_list",
            )
        now = self.clock()
        key = member_key(value_list["item_type"], value)
        item = {
            "pk": f"VALUELISTITEM#{item_id}",
            "sk": "VALUELISTITEM",
            **listing.list_keys(merchant.id, "rsli", int(now * 1000), item_id),
            "id": item_id,
            "merchant": merchant.id,
            "value": value,
            "value_list": value_list["id"],
            "created": int(now),
            "created_ms": int(now * 1000),
            "state": ACTIVE,
        }
        member = {**item, "pk": _list_pk(value_list["id"]), "sk": _member_sk(key), "key": key}
        for name in ("gsi1pk", "gsi1sk"):
            member.pop(name)
        counted = Change(
            value_list["pk"],
            "VALUELIST",
            value_list["id"],
            f"item.add:{item_id}",
            ACTIVE,
            from_state=ACTIVE,
            add={"items": 1},
        )
        transition = Transition(
            [
                Change(item["pk"], "VALUELISTITEM", item_id, "create", ACTIVE, create=item),
                Change(
                    member["pk"],
                    member["sk"],
                    item_id,
                    "member.add",
                    ACTIVE,
                    create=member,
                    audited=False,
                ),
                counted,
            ],
            caller,
        )
        if self.writer.commit(transition) is not None:
            raise InvalidRequestError(
                f"'{value}' is already in the value list {value_list['id']}.",
                param="value",
                code="resource_already_exists",
            )
        return ValueListItem.model_validate(item)

    def retrieve_item(self, merchant: Merchant, item_id: str) -> ValueListItem:
        return ValueListItem.model_validate(self._owned_item(merchant, item_id))

    def _owned_item(self, merchant: Merchant, item_id: str) -> dict[str, Any]:
        item = listing.get_owned(self.store, merchant.id, item_id, "rsli")
        if item["state"] != ACTIVE:
            raise listing.ResourceMissingError("value list item", item_id)
        return item

    def delete_item(self, caller: Caller, item_id: str) -> ValueListItem:
        item = self._owned_item(caller.merchant, item_id)
        value_list = self.store.get(_list_pk(item["value_list"]), "VALUELIST") or {}
        key = member_key(value_list.get("item_type", "string"), item["value"])
        changes = [
            Change(
                item["pk"],
                "VALUELISTITEM",
                item_id,
                "delete",
                DELETED,
                from_state=ACTIVE,
                delete=True,
            ),
            Change(
                _list_pk(item["value_list"]),
                _member_sk(key),
                item_id,
                "member.remove",
                DELETED,
                from_state=ACTIVE,
                delete=True,
                audited=False,
            ),
        ]
        if value_list.get("state") == ACTIVE:
            changes.append(
                Change(
                    value_list["pk"],
                    "VALUELIST",
                    value_list["id"],
                    f"item.remove:{item_id}",
                    ACTIVE,
                    from_state=ACTIVE,
                    add={"items": -1},
                )
            )
        if self.writer.commit(Transition(changes, caller)) is not None:
            raise listing.ResourceMissingError("value list item", item_id)
        return ValueListItem.model_validate({**item, "deleted": True})

    def list_items(
        self,
        merchant: Merchant,
        list_id: str,
        *,
        limit: int,
        starting_after: str | None,
        ending_before: str | None,
        value: str | None = None,
    ) -> Page[ValueListItem]:
        self.owned(merchant, list_id, param="value_list")
        members = self.members_of(list_id)
        if value:
            members = [m for m in members if value.lower() in m["value"].lower()]
        return listing.page_in_memory(
            [ValueListItem.model_validate(m) for m in members],
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
        )

    def list(
        self,
        merchant: Merchant,
        *,
        limit: int,
        starting_after: str | None,
        ending_before: str | None,
        alias: str | None = None,
        created: listing.Created | None = None,
    ) -> Page[ValueList]:
        return listing.page(
            self.store,
            merchant.id,
            "rsl",
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
            created=created,
            filters=[("alias", "=", alias)] if alias else None,
        ).of(self._shown)
