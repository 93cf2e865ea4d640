"""Checks JSON objects against Stripe's own response schemas (see SOURCE.md).

`check(obj, name)` validates one object against one schema of `stripe-schemas.json`:
`$ref`, `anyOf` (an expandable field is an id string or the expanded object), `nullable`,
`type` (an integer is never a bool; a number is an int or a float), `enum`, arrays and their
`items`, `additionalProperties` maps and nested objects. A stub (`{"type": "object",
"x-stub": name}`), which stands for an object Clearline does not serve, accepts any object.

Stripe returns every field of an object it always has, the nullable ones as null: a field is
missing when the schema lists it as required or nullable and the object lacks it. A field that
is neither (a charge's `transfer`, a webhook endpoint's `secret`) appears only when it applies,
so its absence is not reported; it still counts in `coverage`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

SCHEMAS_PATH = Path(__file__).with_name("stripe-schemas.json")
_REF_PREFIX = "#/components/schemas/"

# The Stripe objects Clearline serves, by their `object` field; each is also a schema name.
SERVED_OBJECTS = frozenset(
    {
        "charge",
        "refund",
        "balance_transaction",
        "balance",
        "event",
        "webhook_endpoint",
        "customer",
        "payment_intent",
        "payment_method",
        "dispute",
        "payout",
    }
)
# A deleted object is `{"id", "object", "deleted": true}`, checked against its own schema.
_DELETED_SCHEMAS = {
    "customer": "deleted_customer",
    "webhook_endpoint": "deleted_webhook_endpoint",
}

Schema = dict[str, Any]

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "integer": (int,),
    "number": (int, float),
    "string": (str,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


@cache
def _document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(SCHEMAS_PATH.read_text())
    return document


def source() -> dict[str, Any]:
    """Where the schemas were trimmed from: Stripe's OpenAPI repository, path and commit."""
    return dict(_document()["_source"])


def schema(name: str) -> Schema:
    """The named schema; a name the file does not have is an error in the caller."""
    schemas: dict[str, Schema] = _document()["schemas"]
    if name not in schemas:
        raise ValueError(f"no schema named {name!r} in {SCHEMAS_PATH.name}")
    return schemas[name]


def defined_fields(name: str) -> set[str]:
    """Every top-level property the named schema defines."""
    return set(schema(name).get("properties", {}))


def expected_fields(name: str) -> set[str]:
    """The top-level properties Stripe always returns: the required and the nullable ones."""
    return _expected(schema(name))


# Nullable fields Stripe's API reference documents as "not included by default" (returned
# only when expanded): the schema cannot say so, so they are not expected unasked.
INCLUDED_ONLY_WHEN_EXPANDED = frozenset({"cash_balance"})


def _expected(node: Schema) -> set[str]:
    required = set(node.get("required", ()))
    return {
        key
        for key, prop in node.get("properties", {}).items()
        if key in required
        or (prop.get("nullable") is True and key not in INCLUDED_ONLY_WHEN_EXPANDED)
    }


def _resolve(node: Schema) -> Schema:
    while "$ref" in node:
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith(_REF_PREFIX):
            raise ValueError(f"unsupported $ref {ref!r}")
        node = schema(ref.removeprefix(_REF_PREFIX))
    return node


def _describe(node: Schema) -> str:
    if "$ref" in node:
        return str(node["$ref"]).removeprefix(_REF_PREFIX)
    if "anyOf" in node:
        return " or ".join(dict.fromkeys(_describe(branch) for branch in node["anyOf"]))
    if "x-stub" in node:
        return str(node["x-stub"])
    return str(node.get("type", "any value"))


def _got(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _is_type(value: Any, kind: str) -> bool:
    if kind not in _JSON_TYPES:
        return True
    if isinstance(value, bool):
        return kind == "boolean"
    return isinstance(value, _JSON_TYPES[kind])


def _same(value: Any, allowed: Any) -> bool:
    return type(value) is type(allowed) and value == allowed


def _ref_name(node: Schema) -> str | None:
    ref = node.get("$ref")
    return ref.removeprefix(_REF_PREFIX) if isinstance(ref, str) else None


def _object_names(node: Schema) -> list[Any]:
    """The values a schema allows for its `object` field (empty if it has none)."""
    prop = node.get("properties", {}).get("object", {})
    return list(prop.get("enum", ())) if isinstance(prop, dict) else []


def _accepts_kind(node: Schema, value: Any) -> bool:
    """Whether a schema's top-level JSON type admits the value (its content aside)."""
    node = _resolve(node)
    if "anyOf" in node:
        return any(_accepts_kind(branch, value) for branch in node["anyOf"])
    if "x-stub" in node:
        return isinstance(value, dict)
    kind = node.get("type")
    return kind is None or _is_type(value, kind)


@dataclass
class Report:
    """What `check` found. `missing` names top-level fields, `nested_missing` dotted paths
    into sub-objects (an outcome, an address) that lack a field Stripe always returns."""

    schema_name: str
    violations: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    present: set[str] = field(default_factory=set)
    defined: set[str] = field(default_factory=set)
    nested_missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        """Present top-level fields over the fields the schema defines."""
        return len(self.present) / len(self.defined) if self.defined else 1.0

    @property
    def ok(self) -> bool:
        return not (self.violations or self.missing or self.nested_missing)


class _Checker:
    def __init__(self, nested_objects: bool) -> None:
        self.nested_objects = nested_objects
        self.violations: list[str] = []
        self.nested_missing: list[str] = []

    def value(self, value: Any, node: Schema, path: str) -> None:
        if value is None:
            if not (node.get("nullable") is True or _resolve(node).get("nullable") is True):
                self.violations.append(f"{path}: expected {_describe(node)}, got null")
            return
        node = _resolve(node)
        if "anyOf" in node:
            self.any_of(value, node["anyOf"], path)
            return
        if "x-stub" in node:
            if not isinstance(value, dict):
                self.violations.append(f"{path}: expected {node['x-stub']}, got {_got(value)}")
            return
        kind = node.get("type")
        if isinstance(kind, str) and not _is_type(value, kind):
            self.violations.append(f"{path}: expected {kind}, got {_got(value)}")
            return
        if "enum" in node and not any(_same(value, allowed) for allowed in node["enum"]):
            self.violations.append(f"{path}: {value!r} is not one of {node['enum']}")
        if isinstance(value, list) and isinstance(node.get("items"), dict):
            for index, item in enumerate(value):
                self.value(item, node["items"], f"{path}[{index}]")
        if isinstance(value, dict):
            self.object(value, node, path, top=False)

    def object(self, value: dict[str, Any], node: Schema, path: str, *, top: bool) -> None:
        if not top and not self.nested_objects and object_schema(value) is not None:
            return  # a Stripe object of its own, which `walk` yields to be checked by itself
        properties: dict[str, Schema] = node.get("properties", {})
        for key, prop in properties.items():
            if key in value:
                self.value(value[key], prop, f"{path}.{key}")
        if not top:
            self.nested_missing += [
                f"{path}.{key}" for key in sorted(_expected(node) - value.keys())
            ]
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                if key not in properties:
                    self.value(item, extra, f"{path}.{key}")

    def any_of(self, value: Any, branches: list[Schema], path: str) -> None:
        # An expanded Stripe object is checked against the branch for its own type: the
        # branch of its schema (a deleted customer is a `customer` too), else the only
        # branch whose `object` it has.
        if isinstance(value, dict) and isinstance(value.get("object"), str):
            own = object_schema(value)
            matching = [
                branch
                for branch in branches
                if "$ref" in branch and value["object"] in _object_names(_resolve(branch))
            ]
            chosen = [branch for branch in matching if _ref_name(branch) == own]
            if chosen or len(matching) == 1:
                self.value(value, (chosen or matching)[0], path)
                return
        trials: list[_Checker] = []
        for branch in branches:
            trial = _Checker(self.nested_objects)
            trial.value(value, branch, path)
            if not trial.violations:
                self.nested_missing += trial.nested_missing
                return
            if _accepts_kind(branch, value):
                trials.append(trial)
        if not trials:
            expected = " or ".join(dict.fromkeys(_describe(branch) for branch in branches))
            self.violations.append(f"{path}: expected {expected}, got {_got(value)}")
            return
        closest = min(trials, key=lambda trial: len(trial.violations))
        self.violations += closest.violations
        self.nested_missing += closest.nested_missing


def check(obj: Any, schema_name: str, *, nested_objects: bool = True) -> Report:
    """Validates obj against the named schema; paths in the report start with the name.

    With nested_objects=False, a nested object that is a Stripe object of its own (an
    expanded balance transaction, a charge's refunds) is only checked to be an object: for
    callers that check every object `walk` yields, so that each is reported once, by itself.
    """
    node = schema(schema_name)
    report = Report(schema_name, defined=set(node.get("properties", {})))
    if not isinstance(obj, dict):
        report.violations.append(f"{schema_name}: expected object, got {_got(obj)}")
        return report
    checker = _Checker(nested_objects)
    checker.object(obj, node, schema_name, top=True)
    report.violations = checker.violations
    report.nested_missing = checker.nested_missing
    report.present = report.defined & obj.keys()
    report.missing = sorted(_expected(node) - obj.keys())
    report.extra = sorted(obj.keys() - report.defined)
    return report


def object_schema(obj: Any) -> str | None:
    """The schema for a response object, by its `object` field; None for a list envelope
    (whose `data` `walk` visits) or anything Clearline does not serve."""
    if not isinstance(obj, dict):
        return None
    kind = obj.get("object")
    if kind is None and isinstance(obj.get("error"), dict):
        return "error"
    if isinstance(kind, str) and kind in _DELETED_SCHEMAS and obj.get("deleted") is True:
        return _DELETED_SCHEMAS[kind]
    if isinstance(kind, str) and kind in SERVED_OBJECTS:
        return kind
    return None


def walk(obj: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(schema name, object) for obj and every Stripe object nested in it: the items of a
    list envelope, an event's `data.object`, expanded fields (a charge's `customer` or
    `payment_intent`, a PaymentIntent's `customer` or `latest_charge`), a charge's
    `refunds.data`, and the PaymentIntent an error body carries (`error.payment_intent`).
    An event's `previous_attributes` holds partial objects, and is not visited."""
    if isinstance(obj, list):
        for item in obj:
            yield from walk(item)
        return
    if not isinstance(obj, dict):
        return
    name = object_schema(obj)
    if name is not None:
        yield name, obj
    for key, value in obj.items():
        if key != "previous_attributes":
            yield from walk(value)
