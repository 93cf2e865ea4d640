"""What the vault function reads from its environment, named by the topology."""

from __future__ import annotations

import os
from dataclasses import dataclass

from clearline.topology import (
    MAIN_TABLE,
    PROCESSOR_URL_ENV,
    VAULT_FINGERPRINT_KEY_ENV,
    VAULT_KEY_ENV,
    VAULT_PUBLIC_URL_ENV,
    VAULT_RATE_PER_IP_ENV,
    VAULT_RATE_PER_KEY_ENV,
    VAULT_TABLE,
    table_env_var,
)

# Clearline's API origin as browsers reach it; the name presentation.links reads it by
# (not imported: the domain stays clear of the presentation layer).
API_PUBLIC_URL_ENV = "CLEARLINE_PUBLIC_URL"
DEFAULT_LIMIT_PER_KEY = 100  # publishable-key requests a minute
DEFAULT_LIMIT_PER_IP = 20
# Below API Gateway's 29 s integration limit, so a slow processor is answered with a 502
# (outcome unknown: the caller retries with the same key), not cut off by the gateway.
PROCESSOR_TIMEOUT_SECONDS = 25.0


def _positive_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    number = int(value)
    if number < 1:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return number


@dataclass(frozen=True)
class VaultSettings:
    vault_table: str
    main_table: str
    card_key_id: str
    fingerprint_key_id: str
    processor_url: str
    vault_public_url: str
    api_public_url: str
    limit_per_key: int = DEFAULT_LIMIT_PER_KEY
    limit_per_ip: int = DEFAULT_LIMIT_PER_IP
    processor_timeout_seconds: float = PROCESSOR_TIMEOUT_SECONDS

    @classmethod
    def from_env(cls) -> VaultSettings:
        return cls(
            vault_table=os.environ[table_env_var(VAULT_TABLE.key)],
            main_table=os.environ[table_env_var(MAIN_TABLE.key)],
            card_key_id=os.environ.get(VAULT_KEY_ENV, ""),
            fingerprint_key_id=os.environ.get(VAULT_FINGERPRINT_KEY_ENV, ""),
            processor_url=os.environ.get(PROCESSOR_URL_ENV, ""),
            vault_public_url=os.environ.get(VAULT_PUBLIC_URL_ENV, "").rstrip("/"),
            api_public_url=os.environ.get(API_PUBLIC_URL_ENV, "").rstrip("/"),
            limit_per_key=_positive_int(VAULT_RATE_PER_KEY_ENV, DEFAULT_LIMIT_PER_KEY),
            limit_per_ip=_positive_int(VAULT_RATE_PER_IP_ENV, DEFAULT_LIMIT_PER_IP),
        )
