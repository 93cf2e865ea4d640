"""Client for the bank's transfer API, through which payouts reach merchants' accounts.

The bank speaks the processor's protocol (an idempotency key on every transfer, a retried
key replaying the first answer, keys that can be looked up or revoked), so its client is
the same transport: a failure is `ProcessorUnavailable` (outcome unknown, retry with the
key) or `ProcessorRejected` (refused, nothing happened).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from clearline.processor import JsonApiClient, _segment

BANK_URL_ENV = "CLEARLINE_BANK_URL"


class Transfer(BaseModel):
    """An ACH-like credit transfer as the bank reports it."""

    model_config = ConfigDict(frozen=True)

    id: str
    status: Literal["in_transit", "paid", "returned"]
    amount: int
    currency: str
    reference: str  # our payout id
    arrival_date: int
    failure_code: str | None = None
    failure_message: str | None = None


class BankClient(JsonApiClient):
    def create_transfer(
        self,
        *,
        idempotency_key: str,
        amount: int,
        currency: str,
        routing_number: str,
        account_number: str,
        reference: str,
    ) -> Transfer:
        body = {
            "amount": amount,
            "currency": currency,
            "routing_number": routing_number,
            "account_number": account_number,
            "reference": reference,
        }
        data = self._request("POST", "/v1/transfers", body, idempotency_key)
        return self._parse(Transfer, data)

    def get_transfer(self, transfer_id: str) -> Transfer:
        data = self._request("GET", f"/v1/transfers/{_segment(transfer_id)}")
        return self._parse(Transfer, data)
