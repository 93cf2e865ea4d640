"""Secrets at rest, sealed in envelopes under a KMS key.

Each secret gets its own data key (KMS GenerateDataKey, AES-256) and is encrypted with
AES-GCM under it. KMS binds the data key to an encryption context naming what the secret
belongs to (a merchant and a webhook endpoint, say), and the same context is the
cipher's associated data; what is stored is the data key as KMS encrypted it, the nonce
and the ciphertext, never the plaintext. An envelope opens only under the context it was
sealed with, so one copied onto another object, or altered, fails closed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

# boto3 and cryptography are imported where they are used: most cold starts (every API
# request but a webhook endpoint's create) never seal or open a secret.

ALGORITHM = "AES-256-GCM"
NONCE_BYTES = 12
SEALED = "sealed"  # marks a sealed field inside a stored response

Context = Mapping[str, str]


class SecretUnavailable(Exception):
    """A secret could not be sealed or opened: no key is configured, KMS refused or did not
    answer, or the envelope was altered or belongs elsewhere. Nothing may be done with a
    secret that did not open."""


def _aad(context: Context) -> bytes:
    return json.dumps(dict(context), sort_keys=True, separators=(",", ":")).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _kms_failure(action: str, exc: Exception) -> SecretUnavailable:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code") or type(exc).__name__
    return SecretUnavailable(f"KMS refused to {action}: {code}")


class SecretBox:
    """Seals and opens secrets under one KMS key.

    Opening keeps the plaintext data keys it got from KMS for `cache_seconds` (at most
    `cache_size` of them), keyed by the encrypted data key and its context, so a dispatcher
    signing many deliveries for one endpoint asks KMS once, not once per delivery. Only
    data keys are kept, never an opened secret; a context that differs finds no entry and
    asks KMS, which refuses it."""

    def __init__(
        self,
        key_id: str,
        kms: Any = None,
        *,
        cache_size: int = 256,
        cache_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key_id = key_id
        self._kms = kms
        self.cache_size = cache_size
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._data_keys: OrderedDict[tuple[bytes, bytes], tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def _client(self) -> Any:
        if not self.key_id:
            raise SecretUnavailable("no KMS key is configured for secrets")
        if self._kms is None:  # most requests never touch a secret: no client until one does
            import boto3
            from botocore.config import Config

            self._kms = boto3.client(
                "kms",
                config=Config(
                    retries={"max_attempts": 3, "mode": "standard"},
                    connect_timeout=2,
                    read_timeout=5,
                ),
            )
        return self._kms

    def seal(self, plaintext: str, context: Context) -> dict[str, str]:
        """An envelope for `plaintext`, which only `open` with the same context reverses."""
        from botocore.exceptions import BotoCoreError, ClientError
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        client = self._client()
        try:
            answer = client.generate_data_key(
                KeyId=self.key_id, KeySpec="AES_256", EncryptionContext=dict(context)
            )
        except (BotoCoreError, ClientError) as exc:
            raise _kms_failure("generate a data key", exc) from exc
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = AESGCM(answer["Plaintext"]).encrypt(nonce, plaintext.encode(), _aad(context))
        return {
            "alg": ALGORITHM,
            "key": _b64(answer["CiphertextBlob"]),
            "nonce": _b64(nonce),
            "ciphertext": _b64(ciphertext),
        }

    def open(self, envelope: Mapping[str, Any], context: Context) -> str:
        """The plaintext sealed in `envelope` under `context`, or SecretUnavailable."""
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        try:
            if envelope.get("alg") != ALGORITHM:
                raise SecretUnavailable(f"not an {ALGORITHM} envelope")
            encrypted_key, nonce, ciphertext = (
                base64.b64decode(envelope[part], validate=True)
                for part in ("key", "nonce", "ciphertext")
            )
        except (AttributeError, KeyError, TypeError, binascii.Error) as exc:
            raise SecretUnavailable("the envelope is malformed") from exc
        if len(nonce) != NONCE_BYTES:
            raise SecretUnavailable("the envelope is malformed")
        data_key = self._data_key(encrypted_key, context)
        try:
            plaintext = AESGCM(data_key).decrypt(nonce, ciphertext, _aad(context))
        except InvalidTag as exc:
            raise SecretUnavailable("the envelope was altered, or sealed for another") from exc
        return plaintext.decode()

    def _data_key(self, encrypted_key: bytes, context: Context) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        cache_key = (encrypted_key, _aad(context))
        now = self.clock()
        with self._lock:
            cached = self._data_keys.get(cache_key)
            if cached is not None and cached[0] > now:
                self._data_keys.move_to_end(cache_key)
                return cached[1]
        client = self._client()
        try:
            answer = client.decrypt(
                CiphertextBlob=encrypted_key, EncryptionContext=dict(context), KeyId=self.key_id
            )
        except (BotoCoreError, ClientError) as exc:
            raise _kms_failure("decrypt the data key", exc) from exc
        data_key = bytes(answer["Plaintext"])
        with self._lock:
            self._data_keys[cache_key] = (now + self.cache_seconds, data_key)
            self._data_keys.move_to_end(cache_key)
            while len(self._data_keys) > self.cache_size:
                self._data_keys.popitem(last=False)
        return data_key


class SealedFields:
    """Seals named string fields of a response before it is stored (an idempotency record,
    say) and opens them when the stored response is replayed.

    A sealed field keeps its place, its value replaced by `{"sealed": envelope}`. Each
    field's context is the caller's plus the field's name."""

    def __init__(self, box: SecretBox, fields: tuple[str, ...] = ("secret",)) -> None:
        self.box = box
        self.fields = fields

    def seal(self, body: dict[str, Any], context: Context) -> dict[str, Any]:
        if not any(isinstance(body.get(name), str) for name in self.fields):
            return body
        return {
            name: (
                {SEALED: self.box.seal(value, {**context, "field": name})}
                if name in self.fields and isinstance(value, str)
                else value
            )
            for name, value in body.items()
        }

    def open(self, body: dict[str, Any], context: Context) -> dict[str, Any]:
        def sealed(name: str, value: Any) -> bool:
            return name in self.fields and isinstance(value, dict) and SEALED in value

        if not any(sealed(name, value) for name, value in body.items()):
            return body
        return {
            name: (
                self.box.open(value[SEALED], {**context, "field": name})
                if sealed(name, value)
                else value
            )
            for name, value in body.items()
        }


def digest(text: str) -> str:
    """A stable stand-in for `text` in an encryption context, which KMS logs in the clear."""
    return hashlib.sha256(text.encode()).hexdigest()
