"""Request bodies as Stripe clients send them: form-encoded with bracket notation, or JSON.

`metadata[order]=6735&expand[0]=balance_transaction` becomes
`{"metadata": {"order": "6735"}, "expand": ["balance_transaction"]}`.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

from clearline.errors import InvalidRequestError

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_MAX_DEPTH = 5


def _malformed(detail: str) -> InvalidRequestError:
    return InvalidRequestError(f"Invalid request body: {detail}", code="parameter_invalid")


def _path_of(key: str) -> list[str]:
    match = _KEY.match(key)
    if not match:
        raise _malformed(f"cannot parse parameter name '{key[:40]}'")
    head, brackets = match.groups()
    parts = [head, *re.findall(r"\[([^\[\]]*)\]", brackets)]
    if len(parts) > _MAX_DEPTH:
        raise _malformed(f"parameter '{head}' is nested too deeply")
    return parts


def _listify(node: Any) -> Any:
    """Dicts keyed 0..n-1 (from `x[0]=..&x[1]=..`) become lists."""
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        indexes = sorted(int(k) for k in converted)
        if indexes == list(range(len(indexes))):
            return [converted[str(i)] for i in indexes]
    return converted


def parse_form(body: str) -> dict[str, Any]:
    try:
        pairs = parse_qsl(body, keep_blank_values=True, strict_parsing=bool(body), errors="strict")
    except (ValueError, UnicodeDecodeError) as exc:
        raise _malformed("it is not valid application/x-www-form-urlencoded") from exc
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = _path_of(key)
        node = root
        for i, part in enumerate(parts[:-1]):
            if part == "":  # `x[]=a&x[]=b`: append
                part = str(len(node))
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise _malformed(f"parameter '{'.'.join(parts[: i + 1])}' given twice")
            node = child
        last = parts[-1] if parts[-1] != "" else str(len(node))
        if last in node:
            raise _malformed(f"parameter '{key}' given twice")
        node[last] = value
    result = _listify(root)
    assert isinstance(result, dict)
    return result


def parse_json(body: str) -> dict[str, Any]:
    try:
        parsed = json.loads(body) if body.strip() else {}
    except ValueError as exc:
        raise _malformed("it is not valid JSON") from exc
    if not isinstance(parsed, dict):
        raise _malformed("a JSON body must be an object")
    return parsed


def parse_body(body: str | None, content_type: str | None) -> dict[str, Any]:
    if not body:
        return {}
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type == "application/json":
        return parse_json(body)
    return parse_form(body)
