"""Envelopes under KMS (moto in-process): what is stored, what opens, what fails closed."""

from __future__ import annotations

import base64
import json
from typing import Any

import boto3
import pytest

from clearline.secrets import SEALED, SealedFields, SecretBox, SecretUnavailable

CONTEXT = {"merchant": "acct_1", "webhook_endpoint": "we_1"}
SECRET = "whsec_" + "ab" * 24


class CountingKms:
    """The moto KMS client, counting the calls that reach it."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: list[str] = []

    def generate_data_key(self, **kwargs: Any) -> Any:
        self.calls.append("GenerateDataKey")
        return self.client.generate_data_key(**kwargs)

    def decrypt(self, **kwargs: Any) -> Any:
        self.calls.append("Decrypt")
        return self.client.decrypt(**kwargs)


@pytest.fixture
def kms(aws: Any) -> CountingKms:
    return CountingKms(boto3.client("kms", region_name="us-east-1"))


@pytest.fixture
def key_arn(kms: CountingKms) -> str:
    return str(kms.client.create_key(Description="test")["KeyMetadata"]["Arn"])


def flip(text: str, index: int = -1) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def test_a_sealed_secret_opens_under_its_context_and_is_stored_nowhere_in_the_clear(
    kms: CountingKms, key_arn: str
) -> None:
    box = SecretBox(key_arn, kms)
    envelope = box.seal(SECRET, CONTEXT)
    assert set(envelope) == {"alg", "key", "nonce", "ciphertext"}
    stored = json.dumps(envelope)
    assert "whsec_" not in stored and "ab" * 24 not in stored
    assert SecretBox(key_arn, kms).open(envelope, CONTEXT) == SECRET
    assert kms.calls == ["GenerateDataKey", "Decrypt"]


def test_every_secret_gets_its_own_data_key(kms: CountingKms, key_arn: str) -> None:
    box = SecretBox(key_arn, kms)
    first, second = box.seal(SECRET, CONTEXT), box.seal(SECRET, CONTEXT)
    assert first["key"] != second["key"]
    assert first["ciphertext"] != second["ciphertext"]


def test_opening_again_reuses_the_data_key_for_a_while(kms: CountingKms, key_arn: str) -> None:
    now = [1000.0]
    box = SecretBox(key_arn, kms, cache_seconds=300, clock=lambda: now[0])
    envelope = box.seal(SECRET, CONTEXT)
    for _ in range(3):
        assert box.open(envelope, CONTEXT) == SECRET
    assert kms.calls == ["GenerateDataKey", "Decrypt"]  # one KMS call for three deliveries
    now[0] += 301
    assert box.open(envelope, CONTEXT) == SECRET
    assert kms.calls == ["GenerateDataKey", "Decrypt", "Decrypt"]


def test_the_data_key_cache_is_bounded(kms: CountingKms, key_arn: str) -> None:
    box = SecretBox(key_arn, kms, cache_size=2)
    envelopes = [box.seal(SECRET, {**CONTEXT, "webhook_endpoint": f"we_{i}"}) for i in range(3)]
    for i, envelope in enumerate(envelopes):
        box.open(envelope, {**CONTEXT, "webhook_endpoint": f"we_{i}"})
    assert len(box._data_keys) == 2


@pytest.mark.parametrize("part", ["ciphertext", "nonce", "key"])
def test_an_altered_envelope_fails_closed(kms: CountingKms, key_arn: str, part: str) -> None:
    box = SecretBox(key_arn, kms)
    envelope = box.seal(SECRET, CONTEXT)
    with pytest.raises(SecretUnavailable):
        box.open({**envelope, part: flip(envelope[part])}, CONTEXT)


@pytest.mark.parametrize(
    "other",
    [
        {"merchant": "acct_2", "webhook_endpoint": "we_1"},
        {"merchant": "acct_1", "webhook_endpoint": "we_2"},
        {"merchant": "acct_1"},
    ],
)
def test_an_envelope_opens_under_no_other_context(
    kms: CountingKms, key_arn: str, other: dict[str, str]
) -> None:
    box = SecretBox(key_arn, kms)
    envelope = box.seal(SECRET, CONTEXT)
    assert box.open(envelope, CONTEXT) == SECRET  # its data key is now cached...
    with pytest.raises(SecretUnavailable):
        box.open(envelope, other)  # ...yet another context gets nothing from the cache
    assert kms.calls.count("Decrypt") == 2, "the other context was put to KMS, which refused"


def test_an_envelope_opens_under_no_other_key(kms: CountingKms, key_arn: str) -> None:
    envelope = SecretBox(key_arn, kms).seal(SECRET, CONTEXT)
    other_key = kms.client.create_key()["KeyMetadata"]["Arn"]
    with pytest.raises(SecretUnavailable, match=r"AccessDenied|InvalidCiphertext"):
        SecretBox(other_key, kms).open(envelope, CONTEXT)


@pytest.mark.parametrize(
    "envelope",
    [{}, {"alg": "AES-256-GCM"}, {"alg": "ROT13", "key": "", "nonce": "", "ciphertext": ""}],
)
def test_a_malformed_envelope_fails_closed(
    kms: CountingKms, key_arn: str, envelope: dict[str, str]
) -> None:
    with pytest.raises(SecretUnavailable):
        SecretBox(key_arn, kms).open(envelope, CONTEXT)
    assert kms.calls == []


def test_without_a_key_nothing_is_sealed(kms: CountingKms) -> None:
    with pytest.raises(SecretUnavailable, match="no KMS key"):
        SecretBox("", kms).seal(SECRET, CONTEXT)
    assert kms.calls == []


def test_a_kms_that_refuses_is_unavailable_not_a_crash(kms: CountingKms) -> None:
    box = SecretBox("arn:aws:kms:us-east-1:123456789012:key/no-such-key", kms)
    with pytest.raises(SecretUnavailable, match="KMS refused"):
        box.seal(SECRET, CONTEXT)


# ---- sealed fields of a stored response -----------------------------------------------------


def test_sealed_fields_keep_their_place_and_open_back(kms: CountingKms, key_arn: str) -> None:
    fields = SealedFields(SecretBox(key_arn, kms))
    body = {"id": "we_1", "object": "webhook_endpoint", "secret": SECRET, "url": "https://x"}
    context = {"merchant": "acct_1", "record": "r1"}
    sealed = fields.seal(body, context)
    assert list(sealed) == list(body)
    assert set(sealed["secret"]) == {SEALED}
    assert "whsec_" not in json.dumps(sealed)
    assert fields.open(sealed, context) == body
    with pytest.raises(SecretUnavailable):
        fields.open(sealed, {"merchant": "acct_1", "record": "r2"})


def test_bodies_without_secrets_pass_untouched(kms: CountingKms, key_arn: str) -> None:
    fields = SealedFields(SecretBox(key_arn, kms))
    body = {"id": "ch_1", "object": "charge", "amount": 500}
    assert fields.seal(body, {}) is body
    assert fields.open(body, {}) is body
    assert kms.calls == []
