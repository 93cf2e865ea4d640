"""Where Clearline's public pages are: receipts and the error code reference."""

from __future__ import annotations

import os
from dataclasses import dataclass

# The public base URL of the API (its stage URL): set by the CDK app and the local stack.
PUBLIC_URL_ENV = "CLEARLINE_PUBLIC_URL"


@dataclass(frozen=True)
class Links:
    base_url: str

    @classmethod
    def from_env(cls, fallback: str = "") -> Links:
        return cls((os.environ.get(PUBLIC_URL_ENV) or fallback).rstrip("/"))

    def receipt(self, charge_id: str, token: str | None) -> str | None:
        if not token or not self.base_url:
            return None
        return f"{self.base_url}/receipts/{charge_id}/{token}"

    def error_code(self, code: str) -> str:
        return f"{self.base_url}/errors/{code}"
