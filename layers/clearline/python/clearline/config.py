"""Settings a function reads from its environment, named by the topology."""

from __future__ import annotations

import os
from dataclasses import dataclass

from clearline.topology import IDEMPOTENCY_TABLE, MAIN_TABLE, PROCESSOR_URL_ENV, table_env_var


@dataclass(frozen=True)
class Settings:
    main_table: str
    idempotency_table: str
    processor_url: str
    processor_timeout_seconds: float

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            main_table=os.environ[table_env_var(MAIN_TABLE.key)],
            idempotency_table=os.environ.get(table_env_var(IDEMPOTENCY_TABLE.key), ""),
            processor_url=os.environ.get(PROCESSOR_URL_ENV, ""),
            processor_timeout_seconds=float(os.environ.get("CLEARLINE_PROCESSOR_TIMEOUT", "10")),
        )
