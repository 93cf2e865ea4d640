"""Radar's reviews: payments placed in the merchant's queue for a person to look at.

A review opens in the same transaction as the charge it is about: when a rule sends the
payment to review before the processor call (the charge's `outcome.type` is `manual_review`),
or when the second, asynchronous look after the authorization finds it risky
(`after_authorization`). One charge has at most one review (its id derives from the
charge's). Approving closes it; so does a refund of the whole charge.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from clearline import listing
from clearline.audit import Caller
from clearline.errors import InvalidRequestError
from clearline.ids import derived_id
from clearline.merchants import Merchant
from clearline.models import Page, Review
from clearline.store import Store
from clearline.transitions import Announcement, Change, Transition, TransitionWriter

OPEN = "open"
CLOSED = "closed"
CLOSED_REASONS = frozenset(
    {"approved", "refunded", "refunded_as_fraud", "disputed", "canceled", "redacted"}
)


def review_id_for(charge_id: str) -> str:
    return derived_id("prv", charge_id, "review")


def opening(
    charge: dict[str, Any], now: float, *, reason: str = "rule"
) -> tuple[Change, Announcement]:
    """The review a charge opens, to be written with the charge's own change."""
    review_id = review_id_for(charge["id"])
    created_ms = int(now * 1000)
    item = {
        "pk": f"REVIEW#{review_id}",
        "sk": "REVIEW",
        **listing.list_keys(charge["merchant"], "prv", created_ms, review_id),
        "id": review_id,
        "merchant": charge["merchant"],
        "charge": charge["id"],
        "payment_intent": charge.get("payment_intent"),
        "created": int(now),
        "created_ms": created_ms,
        "open": True,
        "opened_reason": "rule",
        "reason": reason,
        "ip_address": charge.get("client_ip"),
        "ip_country": charge.get("ip_country"),
        "state": OPEN,
    }
    change = Change(item["pk"], "REVIEW", review_id, "review.open", OPEN, create=item)
    return change, Announcement(charge["merchant"], "review.opened", Review.model_validate(item))


class ReviewService:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.writer = TransitionWriter(store, clock=lambda: self.clock())

    def retrieve(self, merchant: Merchant, review_id: str) -> Review:
        return Review.model_validate(
            listing.get_owned(self.store, merchant.id, review_id, "prv", "review")
        )

    def list(
        self,
        merchant: Merchant,
        *,
        limit: int,
        starting_after: str | None,
        ending_before: str | None,
        created: listing.Created | None = None,
    ) -> Page[Review]:
        """The open reviews, newest first, as Stripe lists them."""
        return listing.page(
            self.store,
            merchant.id,
            "prv",
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
            filters=[("open", "=", True)],
            created=created,
        ).of(Review.model_validate)

    def approve(self, caller: Caller, review_id: str) -> Review:
        return self.close(caller, review_id, "approved", merchant_asked=True)

    def close(
        self,
        caller: Caller | None,
        review_id: str,
        closed_reason: str,
        *,
        merchant_asked: bool = False,
        merchant: Merchant | None = None,
    ) -> Review:
        """Close an open review. Closing one already closed changes nothing: the merchant
        asking is told so; a refund closing it finds it closed and leaves it."""
        owner = caller.merchant if caller else merchant
        assert owner is not None, "a review is closed for its merchant"
        item = listing.get_owned(self.store, owner.id, review_id, "prv", "review")
        if not item["open"]:
            if merchant_asked:
                raise InvalidRequestError(
                    f"The review {review_id} is already closed ({item['closed_reason']}).",
                    param="review",
                )
            return Review.model_validate(item)
        changed = {"open": False, "closed_reason": closed_reason, "reason": closed_reason}
        closing = Change(
            item["pk"],
            "REVIEW",
            review_id,
            f"review.{closed_reason}",
            CLOSED,
            from_state=OPEN,
            set=changed,
        )
        closed = Review.model_validate({**item, **changed})
        event = Announcement(
            owner.id, "review.closed", closed, previous=Review.model_validate(item)
        )
        if self.writer.commit(Transition([closing], caller, [event])) is not None:
            return self.close(
                caller, review_id, closed_reason, merchant_asked=merchant_asked, merchant=owner
            )  # closed meanwhile: read it again
        return closed
