"""Request bodies as Stripe clients send them: form-encoded with bracket notation, or JSON.

`metadata[order]=6735&expand[0]=balance_transaction` becomes
`{"metadata": {"order": "6735"}, "expand": ["balance_transaction"]}`.

Anything else is refused with a 400 before it is parsed further: bytes that are not
UTF-8, NUL characters, nesting deeper than any Stripe parameter, and media types other
than the two (a multipart body is not a form, whatever its fields look like).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any
from urllib.parse import parse_qsl

from clearline.errors import InvalidRequestError

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_MAX_DEPTH = 5  # `a[b][c][d][e]`: deeper than any Stripe parameter (shipping[address][line1])
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


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
    # Only canonical indexes (`0`, `1`, not `00`) make a list; `x[00]` stays a hash key.
    if converted and all(k.isdigit() and k == str(int(k)) for k in converted):
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
    # The body itself is a hash of named parameters, never a list (`0=a&1=b`).
    return {name: _listify(value) for name, value in root.items()}


def _json_depth(body: str) -> int:
    """How deeply objects and arrays nest, counted without parsing: a parser recursing
    through 30,000 brackets would exhaust the stack before it could refuse them."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in body:  # one pass, so hostile quoting costs no more than the body's length
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_json(body: str) -> dict[str, Any]:
    if _json_depth(body) > _MAX_DEPTH:
        raise _malformed(f"it nests objects and arrays more than {_MAX_DEPTH} deep")
    try:
        parsed = json.loads(body) if body.strip() else {}
    except (ValueError, RecursionError) as exc:
        raise _malformed("it is not valid JSON") from exc
    if not isinstance(parsed, dict):
        raise _malformed("a JSON body must be an object")
    return parsed


def _holds_nul(value: Any) -> bool:
    if isinstance(value, dict):
        return any("\x00" in str(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return isinstance(value, str) and "\x00" in value


def body_bytes(body: str | None, base64_encoded: bool, limit: int) -> bytes:
    """A request's body as bytes (a gateway hands it over as text, or as base64 when it is
    binary); refuses one over `limit` bytes, or base64 that is not."""
    if not body:
        return b""
    if base64_encoded:
        try:
            raw = base64.b64decode(body, validate=True)
        except binascii.Error as exc:
            raise InvalidRequestError("Invalid request body: it is not valid base64.") from exc
    else:
        raw = body.encode("utf-8", "surrogatepass")
    if len(raw) > limit:
        raise InvalidRequestError(
            f"Request bodies are limited to {limit} bytes.", code="request_too_large"
        )
    return raw


def decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _malformed("it is not valid UTF-8") from exc


def parse_body(body: str | None, content_type: str | None) -> dict[str, Any]:
    if not body:
        return {}
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type == JSON:
        params = parse_json(body)
    elif media_type in (FORM, ""):  # a client that names no type sends a form, as curl -d does
        params = parse_form(body)
    else:
        raise InvalidRequestError(
            f"Unsupported Content-Type {media_type[:100]!r}: send the parameters as {FORM} "
            f"(as the Stripe libraries do) or as {JSON}.",
            code="parameter_invalid",
        )
    for key, value in params.items():
        if _holds_nul(key) or _holds_nul(value):
            raise InvalidRequestError(
                "Parameters may not contain NUL characters.",
                param=None if "\x00" in key else key,
                code="parameter_invalid",
            )
    return params
