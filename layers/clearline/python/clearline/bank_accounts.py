"""Merchants' bank accounts, one per payout currency.

An operator sets them (they are where a merchant's money goes: never something a leaked
API key may change). The account number is sealed under KMS the moment it arrives and
opened only by the payout worker, to instruct the bank; everything else sees its last four
digits.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator

from clearline.errors import InvalidRequestError
from clearline.ids import new_id
from clearline.models import BankAccount
from clearline.money import currency as check_currency
from clearline.secrets import SecretBox
from clearline.store import Store

# Every account is listed in one partition of the facet index, for the daily payout run.
ACCOUNTS_PARTITION = "BANK_ACCOUNTS"
_ROUTING = re.compile(r"[0-9]{9}")
_ACCOUNT = re.compile(r"[0-9]{4,17}")
TEST_BANK_NAME = "STRIPE TEST BANK"


def routing_number_valid(number: str) -> bool:
    """An ABA routing number: nine digits whose weighted sum (3, 7, 1) is a multiple of 10."""
    if not _ROUTING.fullmatch(number):
        return False
    weights = (3, 7, 1) * 3
    return sum(int(d) * w for d, w in zip(number, weights, strict=True)) % 10 == 0


def _key(merchant_id: str, currency: str) -> tuple[str, str]:
    return f"MERCHANT#{merchant_id}", f"BANK#{currency}"


def _context(merchant_id: str, currency: str) -> dict[str, str]:
    """What a sealed number is bound to: it opens only as this merchant's, in this currency."""
    return {"merchant": merchant_id, "currency": currency, "purpose": "bank_account"}


class BankAccounts:
    def __init__(
        self, store: Store, secrets: SecretBox, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.secrets = secrets
        self.clock = clock

    def set(
        self,
        merchant_id: str,
        currency: str,
        *,
        routing_number: str,
        account_number: str,
        account_holder_name: str | None = None,
    ) -> BankAccount:
        """The merchant's account for `currency`, replacing any before it. Payouts already
        on their way keep the account they were sent to."""
        cur = check_currency(currency).code
        if not routing_number_valid(routing_number):
            raise InvalidRequestError(
                "The routing number is not a valid ABA routing number.",
                param="routing_number",
                code="routing_number_invalid",
            )
        if not _ACCOUNT.fullmatch(account_number):
            raise InvalidRequestError(
                "The account number must be 4 to 17 digits.",
                param="account_number",
                code="account_number_invalid",
            )
        pk, sk = _key(merchant_id, cur)
        account = BankAccount(
            id=new_id("ba"),
            merchant=merchant_id,
            currency=cur,
            bank_name=TEST_BANK_NAME if routing_number == "110000000" else None,
            routing_number=routing_number,
            last4=account_number[-4:],
            account_holder_name=account_holder_name,
            created=int(self.clock()),
        )
        self.store.put(
            {
                "pk": pk,
                "sk": sk,
                "gsi2pk": ACCOUNTS_PARTITION,
                "gsi2sk": f"{merchant_id}#{cur}",
                **account.model_dump(exclude={"kind"}),
                "sealed_number": self.secrets.seal(account_number, _context(merchant_id, cur)),
            }
        )
        return account

    def get(self, merchant_id: str, currency: str) -> BankAccount | None:
        item = self.store.get(*_key(merchant_id, currency))
        return BankAccount.model_validate(item) if item else None

    def number(self, merchant_id: str, currency: str) -> tuple[BankAccount, str]:
        """The account and its whole number: for instructing the bank, nothing else."""
        item = self.store.get(*_key(merchant_id, currency))
        if item is None:
            raise LookupError(f"{merchant_id} has no bank account in {currency}")
        number = self.secrets.open(item["sealed_number"], _context(merchant_id, currency))
        return BankAccount.model_validate(item), number

    def all(self) -> Iterator[BankAccount]:
        """Every merchant's accounts, for the daily payout run."""
        cursor = None
        while True:
            items = self.store.query_index(
                "by_facet",
                "gsi2pk",
                ACCOUNTS_PARTITION,
                "gsi2sk",
                after=cursor,
                newest_first=False,
                limit=100,
            )
            for item in items:
                yield BankAccount.model_validate(item)
            if len(items) < 100:
                return
            cursor = items[-1]["gsi2sk"]
