"""Radar's early fraud warnings: an issuer's report that a payment was fraudulent, which
often comes before a dispute and sometimes instead of one. They arrive from the processor
as signed notifications (processor_notifications) and are kept as `issfr_` objects, each
announced once with `radar.early_fraud_warning.created`. A warning is `actionable` while
its charge is neither disputed nor fully refunded: refunding it then heads off the dispute.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from clearline import listing
from clearline.charges import charge_pk
from clearline.errors import store_unavailable
from clearline.ids import derived_id
from clearline.merchants import Merchant
from clearline.models import Charge, EarlyFraudWarning, Page
from clearline.processor import ProcessorFraudWarning
from clearline.store import Store, StoreUnavailable
from clearline.transitions import Announcement, Change, Transition, TransitionWriter

OPEN = "open"


class UnknownCharge(ValueError):
    """A warning about a charge we do not have: nothing is stored."""


def warning_id_of(processor_id: str) -> str:
    """One warning per processor warning: a redelivered notification finds the same one."""
    return derived_id("issfr", processor_id)


def _actionable(charge: dict[str, Any]) -> bool:
    shown = Charge.from_item(charge)
    return not shown.disputed and not shown.fully_refunded


class EarlyFraudWarnings:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.writer = TransitionWriter(store, clock=lambda: self.clock())

    def _read(self, pk: str, sk: str) -> dict[str, Any] | None:
        try:
            return self.store.get(pk, sk)
        except StoreUnavailable as exc:
            raise store_unavailable() from exc

    def receive(self, notice: ProcessorFraudWarning) -> EarlyFraudWarning:
        """Store the warning (once, however often it is delivered) and announce it."""
        warning_id = warning_id_of(notice.id)
        existing = self._read(f"EFW#{warning_id}", "EFW")
        if existing is not None:
            return EarlyFraudWarning.model_validate(existing)
        charge = self._read(charge_pk(notice.reference), "CHARGE") if notice.reference else None
        if charge is None or charge.get("processor_authorization") != notice.authorization:
            raise UnknownCharge(
                f"processor warning {notice.id} names {notice.reference}, which is not the "
                f"charge of authorization {notice.authorization}"
            )
        now = self.clock()
        created_ms = int(now * 1000)
        pk = f"EFW#{warning_id}"
        item = {
            "pk": pk,
            "sk": "EFW",
            **listing.list_keys(charge["merchant"], "issfr", created_ms, warning_id),
            "id": warning_id,
            "merchant": charge["merchant"],
            "charge": charge["id"],
            "payment_intent": charge.get("payment_intent"),
            "fraud_type": notice.fraud_type,
            "actionable": _actionable(charge),
            "processor_warning": notice.id,
            "created": int(now),
            "created_ms": created_ms,
            "state": OPEN,
        }
        warning = EarlyFraudWarning.model_validate(item)
        facets = listing.facet_items(
            charge["merchant"],
            "issfr",
            created_ms,
            (pk, "EFW"),
            warning_id,
            {"charge": charge["id"], "payment_intent": charge.get("payment_intent")},
        )
        created = Change(pk, "EFW", warning_id, "early_fraud_warning.create", OPEN, create=item)
        announced = Announcement(charge["merchant"], "radar.early_fraud_warning.created", warning)
        if self.writer.commit(Transition([created], None, [announced], index_items=facets)):
            stored = self._read(pk, "EFW")  # a concurrent delivery stored it first
            assert stored is not None
            return EarlyFraudWarning.model_validate(stored)
        return warning

    def retrieve(self, merchant: Merchant, warning_id: str) -> EarlyFraudWarning:
        item = listing.get_owned(
            self.store, merchant.id, warning_id, "issfr", "early_fraud_warning"
        )
        return EarlyFraudWarning.model_validate(item)

    def list(
        self,
        merchant: Merchant,
        *,
        limit: int,
        starting_after: str | None,
        ending_before: str | None,
        created: listing.Created | None = None,
        facets: dict[str, list[str]] | None = None,
    ) -> Page[EarlyFraudWarning]:
        return listing.page(
            self.store,
            merchant.id,
            "issfr",
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
            created=created,
            facets=facets,
        ).of(EarlyFraudWarning.model_validate)
