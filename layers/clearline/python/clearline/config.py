"""Settings a function reads from its environment, named by the topology."""

from __future__ import annotations

import os
from dataclasses import dataclass

from clearline.topology import (
    API_FUNCTION,
    IDEMPOTENCY_TABLE,
    MAIN_TABLE,
    PROCESSOR_URL_ENV,
    WEBHOOK_FUNCTION,
    table_env_var,
)

# The KMS key (id or ARN) under which webhook signing secrets are sealed at rest.
WEBHOOK_SECRETS_KEY_ENV = "CLEARLINE_WEBHOOK_SECRETS_KEY"
# Set only by the local stack: test-mode webhook endpoints may then be on loopback, except
# on the ports it lists (comma-separated), where the stack's own services listen. Unset,
# as in every deployment, loopback is refused like any other address that is not public.
WEBHOOK_ALLOW_LOOPBACK_ENV = "CLEARLINE_WEBHOOK_ALLOW_LOOPBACK"
# The functions that hold webhook signing secrets, and what each may do with the key: the
# api seals a new endpoint's secret (and opens it to replay the create); the dispatcher
# only opens them, to sign deliveries.
WEBHOOK_SECRET_USERS: dict[str, tuple[str, ...]] = {
    API_FUNCTION.key: ("seal", "open"),
    WEBHOOK_FUNCTION.key: ("open",),
}
WEBHOOK_ONLY_VARIABLES = frozenset({WEBHOOK_SECRETS_KEY_ENV, WEBHOOK_ALLOW_LOOPBACK_ENV})
# The processor's rate limit: money-moving calls (authorize, capture, void, refund) per
# second, across every function. Unset or 0: no limit is applied.
PROCESSOR_TPS_ENV = "CLEARLINE_PROCESSOR_TPS"
# How long a call may wait for a free second before it is refused, unsent (default 2 s).
PROCESSOR_CAPACITY_WAIT_ENV = "CLEARLINE_PROCESSOR_CAPACITY_WAIT"
DEFAULT_PROCESSOR_CAPACITY_WAIT_SECONDS = 2.0


def parse_processor_tps(value: str | None) -> int:
    """Calls per second the processor takes; 0 when unlimited."""
    if not value or not value.strip():
        return 0
    try:
        tps = int(value)
    except ValueError as exc:
        raise ValueError(f"{PROCESSOR_TPS_ENV} must be a whole number: {value!r}") from exc
    if tps < 0:
        raise ValueError(f"{PROCESSOR_TPS_ENV} must not be negative: {value!r}")
    return tps


def parse_capacity_wait(value: str | None) -> float:
    if not value or not value.strip():
        return DEFAULT_PROCESSOR_CAPACITY_WAIT_SECONDS
    try:
        seconds = float(value)
    except ValueError as exc:
        raise ValueError(f"{PROCESSOR_CAPACITY_WAIT_ENV} must be seconds: {value!r}") from exc
    if not 0 <= seconds <= 60:
        raise ValueError(f"{PROCESSOR_CAPACITY_WAIT_ENV} must be 0 to 60 seconds: {value!r}")
    return seconds


def parse_loopback_setting(value: str | None) -> frozenset[int] | None:
    """The loopback ports that stay refused, or None when loopback is not allowed at all."""
    if not value or not value.strip():
        return None
    try:
        ports = frozenset(int(part) for part in value.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(
            f"{WEBHOOK_ALLOW_LOOPBACK_ENV} must list the refused ports, comma-separated: {value!r}"
        ) from exc
    if not all(0 <= port <= 65535 for port in ports):
        raise ValueError(f"{WEBHOOK_ALLOW_LOOPBACK_ENV} names a port out of range: {value!r}")
    return ports


@dataclass(frozen=True)
class Settings:
    main_table: str
    idempotency_table: str
    processor_url: str
    processor_timeout_seconds: float
    webhook_secrets_key: str = ""
    # None: webhooks never go to loopback (every deployment). Otherwise test-mode endpoints
    # may, except on these ports (the local stack's own services).
    webhook_loopback_refused_ports: frozenset[int] | None = None
    # 0: the processor's calls are not limited here.
    processor_tps: int = 0
    processor_capacity_wait_seconds: float = DEFAULT_PROCESSOR_CAPACITY_WAIT_SECONDS

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            main_table=os.environ[table_env_var(MAIN_TABLE.key)],
            idempotency_table=os.environ.get(table_env_var(IDEMPOTENCY_TABLE.key), ""),
            processor_url=os.environ.get(PROCESSOR_URL_ENV, ""),
            processor_timeout_seconds=float(os.environ.get("CLEARLINE_PROCESSOR_TIMEOUT", "10")),
            webhook_secrets_key=os.environ.get(WEBHOOK_SECRETS_KEY_ENV, ""),
            webhook_loopback_refused_ports=parse_loopback_setting(
                os.environ.get(WEBHOOK_ALLOW_LOOPBACK_ENV)
            ),
            processor_tps=parse_processor_tps(os.environ.get(PROCESSOR_TPS_ENV)),
            processor_capacity_wait_seconds=parse_capacity_wait(
                os.environ.get(PROCESSOR_CAPACITY_WAIT_ENV)
            ),
        )
