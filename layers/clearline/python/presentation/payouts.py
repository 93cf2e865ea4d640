"""The payout object."""

from __future__ import annotations

from typing import Any

from clearline.models import BankAccount, Payout

DEFAULT_DESCRIPTION = "CLEARLINE PAYOUT"


def render_payout(payout: Payout) -> dict[str, Any]:
    return {
        "id": payout.id,
        "object": "payout",
        "amount": payout.amount,
        "application_fee": None,
        "application_fee_amount": None,
        "arrival_date": payout.arrival_date,
        "automatic": payout.automatic,
        "balance_transaction": payout.balance_transaction,
        "created": payout.created,
        "currency": payout.currency,
        "description": payout.description or DEFAULT_DESCRIPTION,
        "destination": payout.destination,
        "failure_balance_transaction": payout.failure_balance_transaction,
        "failure_code": payout.failure_code,
        "failure_message": payout.failure_message,
        "livemode": False,
        "metadata": dict(payout.metadata),
        "method": payout.method,
        "original_payout": None,
        "reconciliation_status": payout.reconciliation_status,
        "reversed_by": None,
        "source_type": "card",
        "statement_descriptor": payout.statement_descriptor,
        "status": payout.status,
        "type": "bank_account",
    }


def render_bank_account(account: BankAccount) -> dict[str, Any]:
    """Stripe's bank account: never the whole number."""
    return {
        "id": account.id,
        "object": "bank_account",
        "account": account.merchant,
        "account_holder_name": account.account_holder_name,
        "account_holder_type": "company",
        "bank_name": account.bank_name,
        "country": account.country,
        "currency": account.currency,
        "default_for_currency": True,
        "last4": account.last4,
        "routing_number": account.routing_number,
        "status": "new",
    }
