"""Every JSON body the stripe SDK receives in the test session, kept for the conformance test.

`start_recording()` wraps `stripe.HTTPClient.request_with_retries` (and its async twin), the
one call every SDK client makes per request, whichever HTTP library it uses and whether it
was created before or after recording started; the body returned is recorded, errors too.
Tests that talk plain HTTP add theirs with `record_body`.

Memory stays bounded: identical bodies (a list polled until something appears) are kept
once; the first bodies of each kind (charge, list of refunds, error, ...) are always kept, so
that every kind the suite saw is checked; the rest are sampled evenly (reservoir sampling)
down to a fixed number, within a fixed number of bytes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import threading
from collections.abc import Callable
from typing import Any

import stripe

MAX_BODIES = 5000  # sampled evenly once more distinct bodies than this arrive
MAX_BYTES = 64 * 1024 * 1024  # of compact JSON text, across the sample
KEPT_PER_KIND = 25  # the first bodies of each kind, kept whatever the sample does
MAX_SEEN_DIGESTS = 200_000  # beyond this, duplicates are no longer recognized (and sampled)


def _kind(body: dict[str, Any]) -> str:
    kind = body.get("object")
    if kind is None and "error" in body:
        return "error"
    if kind == "list":
        data = body.get("data")
        first = data[0] if isinstance(data, list) and data else None
        return f"list of {first.get('object') if isinstance(first, dict) else 'nothing'}"
    return str(kind)


class _Recorder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._random = random.Random(0)
        self._seen: set[bytes] = set()
        self._kinds: dict[str, int] = {}
        self._kept: list[str] = []  # the first bodies of each kind
        self._sample: list[str] = []  # evenly sampled from the others
        self._sampled_from = 0
        self._sample_bytes = 0

    def add(self, body: dict[str, Any]) -> None:
        text = json.dumps(body, separators=(",", ":"), sort_keys=True)
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        with self._lock:
            if digest in self._seen:
                return
            if len(self._seen) < MAX_SEEN_DIGESTS:
                self._seen.add(digest)
            kind = _kind(body)
            if self._kinds.get(kind, 0) < KEPT_PER_KIND:
                self._kinds[kind] = self._kinds.get(kind, 0) + 1
                self._kept.append(text)
                return
            self._sampled_from += 1
            if len(self._sample) < MAX_BODIES:
                self._sample.append(text)
                self._sample_bytes += len(text)
            else:
                slot = self._random.randrange(self._sampled_from)
                if slot >= MAX_BODIES:
                    return
                self._sample_bytes += len(text) - len(self._sample[slot])
                self._sample[slot] = text
            while self._sample_bytes > MAX_BYTES and self._sample:
                evicted = self._sample.pop(self._random.randrange(len(self._sample)))
                self._sample_bytes -= len(evicted)

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            texts = [*self._kept, *self._sample]
        return [json.loads(text) for text in texts]

    def clear(self) -> None:
        with self._lock:
            self._reset()


_recorder = _Recorder()
_started = False
_start_lock = threading.Lock()


def record_body(body: Any) -> None:
    """Adds one parsed response body; anything but a JSON object is ignored."""
    if isinstance(body, dict):
        _recorder.add(body)


def record_raw(content: Any) -> None:
    """Adds one raw response body (bytes or text) if it is a JSON object."""
    if isinstance(content, bytes | bytearray):
        try:
            content = content.decode("utf-8")
        except UnicodeDecodeError:
            return
    if not isinstance(content, str):
        return  # a stream, or nothing
    try:
        parsed = json.loads(content)
    except ValueError:
        return
    record_body(parsed)


def recorded_bodies() -> list[dict[str, Any]]:
    """The recorded bodies, parsed: the first of each kind, then the even sample."""
    return _recorder.bodies()


def clear_recording() -> None:
    """Forgets every recorded body (recording, if started, goes on)."""
    _recorder.clear()


def is_recording() -> bool:
    return _started


def _recording_sync(request: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(request)
    def request_with_retries(*args: Any, **kwargs: Any) -> Any:
        response = request(*args, **kwargs)
        _record_response(response)
        return response

    return request_with_retries


def _recording_async(request: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(request)
    async def request_with_retries_async(*args: Any, **kwargs: Any) -> Any:
        response = await request(*args, **kwargs)
        _record_response(response)
        return response

    return request_with_retries_async


def _record_response(response: Any) -> None:
    try:
        content = response[0]
    except (TypeError, IndexError, KeyError):
        return
    try:
        record_raw(content)
    except Exception:
        return  # recording must never break the request it watches


def start_recording() -> None:
    """Records every response body the stripe SDK receives from now on; idempotent."""
    global _started
    with _start_lock:
        if _started:
            return
        # On the base class, which no stripe client overrides: every client, old or new.
        wrappers = (
            ("request_with_retries", _recording_sync),
            ("request_with_retries_async", _recording_async),
        )
        for name, wrap in wrappers:
            setattr(stripe.HTTPClient, name, wrap(getattr(stripe.HTTPClient, name)))
        _started = True
