"""PaymentIntents (`pi_`): Stripe's state machine over one payment, whose money moves
through its charges.

    requires_payment_method -> requires_confirmation -> [requires_action] -> processing
        -> requires_capture -> succeeded
    (a decline, or a failed authentication, goes back to requires_payment_method; canceled
    from any state before succeeded, except processing)

A card whose issuer asks for 3-D Secure puts a confirmed intent in `requires_action`: the
vault runs the challenge, and the customer's browser comes back through
`complete_authentication`, which goes on to `processing` with the authentication's outcome
(the processor approves such a card only with it). An authentication moves no money, so
it needs no write-ahead of its own; the attempt after it is written ahead like any other.

A PaymentIntent moves no money itself. Confirming one is write-ahead: the intent is put in
`processing` naming the charge it is about to create (the charge's id derives from the
intent and the attempt number, so creating it again is a retry of the same charge); then
the charge is created through the charge path, which is exactly-once on its own; then the
intent follows the charge. Whatever a crash leaves, the intent can be brought to where its
latest charge says it should be (`follow`): on every read, on a retry, and by the resolver
for intents left in `processing`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from clearline import fx, listing
from clearline.audit import Caller
from clearline.charges import (
    AUTHORIZED,
    CANCELED,
    CAPTURED,
    DUE_KEYS,
    DUE_PROCESSOR,
    EXPIRED,
    FAILED,
    ChargeService,
    due_keys,
)
from clearline.customers import CustomerService
from clearline.errors import (
    ApiError,
    CardError,
    ConflictError,
    InvalidRequestError,
    ResourceMissingError,
    ServiceUnavailableError,
)
from clearline.ids import RESERVED_KEY_PREFIX, derived_id
from clearline.merchants import Merchant
from clearline.models import Page, PaymentIntent
from clearline.money import check_charge_amount, currency
from clearline.params import (
    ChargeCaptureParams,
    ChargeCreateParams,
    PaymentIntentCancelParams,
    PaymentIntentCaptureParams,
    PaymentIntentConfirmParams,
    PaymentIntentCreateParams,
    PaymentIntentUpdateParams,
    merged_metadata,
)
from clearline.payment_methods import PaymentMethodService, payment_method_pk
from clearline.processor import ProcessorError
from clearline.refunds import RefundService
from clearline.store import Store
from clearline.transitions import Announcement, Change, Transition, TransitionWriter

KIND = "pi"
REQUIRES_PAYMENT_METHOD = "requires_payment_method"
REQUIRES_CONFIRMATION = "requires_confirmation"
REQUIRES_ACTION = "requires_action"
PROCESSING = "processing"
REQUIRES_CAPTURE = "requires_capture"
SUCCEEDED = "succeeded"
CANCELED_INTENT = "canceled"
CONFIRMABLE = (REQUIRES_PAYMENT_METHOD, REQUIRES_CONFIRMATION)
CANCELABLE = (REQUIRES_PAYMENT_METHOD, REQUIRES_CONFIRMATION, REQUIRES_ACTION, REQUIRES_CAPTURE)
# How long the resolver waits for a customer to answer a 3-D Secure challenge.
AUTHENTICATION_WINDOW_SECONDS = 60 * 60
# Where a customer's browser comes back to after a 3-D Secure challenge (the vault sends it).
AUTHENTICATION_RETURN_PATH = "/v1/payment_intents/{intent}/authentication_return/{token}"


def intent_pk(intent_id: str) -> str:
    return f"PI#{intent_id}"


def attempt_key(intent_id: str, attempt: int) -> str:
    """The idempotency key of an attempt's charge: the same attempt is the same charge. In
    the reserved namespace, so that no merchant's own key can take it."""
    return f"{RESERVED_KEY_PREFIX}{intent_id}:attempt:{attempt}"


def unexpected_state(item: dict[str, Any], action: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"You cannot {action} this PaymentIntent because it has a status of {item['state']}.",
        code="payment_intent_unexpected_state",
    )


class PaymentIntentService:
    def __init__(
        self,
        store: Store,
        charges: ChargeService,
        refunds: RefundService,
        clock: Callable[[], float] = time.time,
        *,
        public_url: str = "",
    ) -> None:
        self.store = store
        self.charges = charges
        self.refunds = refunds
        self.clock = clock
        self.vault = charges.processor.vault
        self.cards = PaymentMethodService(store, self.vault, clock)
        self.public_url = public_url.rstrip("/")  # Clearline's own, as browsers reach it
        self.writer = TransitionWriter(store, clock=lambda: self.clock())

    # ---- create ---------------------------------------------------------------------------

    def create(
        self, caller: Caller, params: PaymentIntentCreateParams, *, idempotency_key: str
    ) -> PaymentIntent:
        merchant = caller.merchant
        check_charge_amount(params.amount, currency(params.currency))
        if params.customer is not None:
            CustomerService(self.store).chargeable(merchant.id, params.customer)
        if params.fx_quote is not None:  # refused now if it cannot convert this payment
            fx.conversion_for(
                self.store, self.charges.rates, merchant, params.currency.lower(), params.fx_quote
            )
        if params.off_session and not params.confirm:
            raise InvalidRequestError(
                "off_session can only be sent with confirm=true.", param="off_session"
            )
        intent_id = derived_id(KIND, merchant.id, idempotency_key)
        payment_method = params.payment_method and self._card(
            merchant, params.payment_method, params.customer, intent_id
        )
        now = self.clock()
        state = REQUIRES_CONFIRMATION if payment_method else REQUIRES_PAYMENT_METHOD
        item: dict[str, Any] = {
            "pk": intent_pk(intent_id),
            "sk": "PI",
            **listing.list_keys(merchant.id, KIND, int(now * 1000), intent_id),
            "id": intent_id,
            "merchant": merchant.id,
            "amount": params.amount,
            "currency": params.currency.lower(),
            "capture_method": params.capture_method,
            "customer": params.customer,
            "description": params.description,
            "fx_quote": params.fx_quote,
            "metadata": dict(params.metadata),
            "receipt_email": params.receipt_email,
            "setup_future_usage": params.setup_future_usage,
            "payment_method": payment_method,
            "return_url": params.return_url,
            "attempt": 0,
            "amount_received": 0,
            "amount_capturable": 0,
            # What a browser holds to confirm the intent; never enough to read anything else.
            "client_secret": f"{intent_id}_secret_{secrets.token_urlsafe(18)}",
            "created": int(now),
            "version": 1,
        }
        facets = listing.facet_items(
            merchant.id,
            KIND,
            int(now * 1000),
            (item["pk"], "PI"),
            intent_id,
            {"customer": params.customer},
        )
        transition = Transition(
            [Change(item["pk"], "PI", intent_id, "create", state, create=item)],
            caller,
            [
                Announcement(
                    merchant.id,
                    "payment_intent.created",
                    PaymentIntent.from_item({**item, "state": state}),
                )
            ],
            index_items=facets,
        )
        if self.writer.commit(transition) is not None:  # the key was used before
            existing = self.store.get(item["pk"], "PI")
            if existing is None or existing["merchant"] != merchant.id:
                raise ConflictError("This PaymentIntent id is taken; retry with another key.")
            return PaymentIntent.from_item(existing)
        created = {**item, "state": state}
        if params.confirm:
            confirming = PaymentIntentConfirmParams(off_session=params.off_session)
            return self.confirm(caller, intent_id, confirming, current=created)
        return PaymentIntent.from_item(created)

    # ---- update ---------------------------------------------------------------------------

    def update(
        self, caller: Caller, intent_id: str, params: PaymentIntentUpdateParams
    ) -> PaymentIntent:
        """What describes the intent, and its payment method, until it is confirmed."""
        item = self.follow(self.owned(caller.merchant.id, intent_id), caller)
        if item["state"] not in CONFIRMABLE:
            raise unexpected_state(item, "update")
        changes: dict[str, Any] = {}
        for name in ("description", "receipt_email", "payment_method"):
            if name in params.model_fields_set:
                changes[name] = getattr(params, name)
        if changes.get("payment_method"):
            changes["payment_method"] = self._card(
                caller.merchant,
                changes["payment_method"],
                item.get("customer"),
                f"{intent_id}:update:{item['version']}",
            )
        if params.metadata is not None:
            changes["metadata"] = merged_metadata(item.get("metadata") or {}, params.metadata)
        method = changes.get("payment_method", item.get("payment_method"))
        state = REQUIRES_CONFIRMATION if method else REQUIRES_PAYMENT_METHOD
        return PaymentIntent.from_item(
            self._move(item, state, caller, set=changes)  # Stripe announces no update
        )

    # ---- confirm --------------------------------------------------------------------------

    def confirm(
        self,
        caller: Caller,
        intent_id: str,
        params: PaymentIntentConfirmParams,
        *,
        current: dict[str, Any] | None = None,
    ) -> PaymentIntent:
        item = current or self.follow(self.owned(caller.merchant.id, intent_id))
        if item["state"] == PROCESSING:
            return PaymentIntent.from_item(self.resume(item, caller))
        if item["state"] == REQUIRES_ACTION and not params.payment_method:
            after = self._after_authentication(item, caller)
            return self._answer(after, str(after.get("latest_charge")))
        if item["state"] not in (*CONFIRMABLE, REQUIRES_ACTION):
            raise unexpected_state(item, "confirm")
        payment_method = params.payment_method or item.get("payment_method")
        if not payment_method and item.get("customer"):  # the customer's default card
            customer = CustomerService(self.store).chargeable(item["merchant"], item["customer"])
            payment_method = customer.get("default_payment_method") or customer.get(
                "default_source"
            )
        if not payment_method:
            raise InvalidRequestError(
                "You cannot confirm this PaymentIntent because it's missing a payment method.",
                param="payment_method",
                code="payment_intent_unexpected_state",
            )
        payment_method = self._card(
            caller.merchant,
            payment_method,
            item.get("customer"),
            f"{intent_id}:confirm:{int(item['attempt']) + 1}",
        )
        return_url = params.return_url or item.get("return_url")
        if not params.off_session:
            challenge = self._challenge(item, payment_method, return_url)
            if challenge is not None:
                return PaymentIntent.from_item(
                    self._move(
                        item,
                        REQUIRES_ACTION,
                        caller,
                        set={
                            "payment_method": payment_method,
                            "return_url": return_url,
                            "last_payment_error": None,
                            **challenge,
                            # The resolver goes on for a customer who passed the challenge
                            # but whose browser never came back.
                            **due_keys(DUE_PROCESSOR, item["id"], int(self.clock())),
                        },
                        event="payment_intent.requires_action",
                    )
                )
        return self._process(item, caller, payment_method, params.receipt_email, None)

    def _process(
        self,
        item: dict[str, Any],
        caller: Caller | None,
        payment_method: str,
        receipt_email: str | None,
        authentication: str | None,
    ) -> PaymentIntent:
        """The write-ahead of an attempt: the intent names the charge it is about to create,
        then the charge is created and followed."""
        intent_id = str(item["id"])
        attempt = int(item["attempt"]) + 1
        charge_id = derived_id("ch", item["merchant"], attempt_key(item["id"], attempt))
        changes: dict[str, Any] = {
            "attempt": attempt,
            "latest_charge": charge_id,
            "payment_method": payment_method,
            "last_payment_error": None,
            "authentication": authentication,
            "next_action_url": None,
            **due_keys(DUE_PROCESSOR, item["id"], int(self.clock())),
        }
        if receipt_email is not None:
            changes["receipt_email"] = receipt_email
        # Refused here, before anything is written, if the payment cannot convert (stale
        # rates, an expired quote): the intent stays as it was, for a retry.
        merchant = caller.merchant if caller else self.charges.merchant_of(item["merchant"])
        fx.conversion_for(
            self.store, self.charges.rates, merchant, item["currency"], item.get("fx_quote")
        )
        try:
            processing = self._move(item, PROCESSING, caller, set=changes)
        except ConflictError:
            current = self._read(intent_id)
            if current is None or current["state"] != PROCESSING:
                raise
            processing = current  # a concurrent confirmation: finish the same attempt
            charge_id = str(current["latest_charge"])
        return self._answer(self.resume(processing, caller), charge_id)

    # ---- 3-D Secure ---------------------------------------------------------------------

    def _card(self, merchant: Merchant, reference: str, customer: str | None, request: str) -> str:
        """The payment method an intent keeps for `reference`: a stored card's own id (an
        alias like `pm_card_visa` becomes a card of its own), checked to be the merchant's
        and, once attached, its customer's."""
        stored = self.cards.resolve(merchant, reference, param="payment_method", request=request)
        if stored is None:
            return reference
        if stored.customer is not None and stored.customer != customer:
            raise InvalidRequestError(
                f"The payment method {stored.id} is attached to customer {stored.customer}: "
                "the PaymentIntent must name that customer to use it.",
                param="payment_method",
                code="payment_method_unexpected_state",
            )
        return stored.id

    def _challenge(
        self, item: dict[str, Any], payment_method: str, return_url: str | None
    ) -> dict[str, Any] | None:
        """What the intent records when the card's issuer asks the customer to authenticate
        this payment, or None when it does not (or the card is not a stored one)."""
        if self.vault is None or not payment_method.startswith("pm_"):
            return None
        token = secrets.token_urlsafe(18)
        path = AUTHENTICATION_RETURN_PATH.format(intent=item["id"], token=token)
        try:
            answer = self.vault.authenticate(
                # One authentication per version of the intent: a confirmation after a failed
                # challenge asks for a new one; a retried confirmation finds its own.
                idempotency_key=f"{item['id']}:authenticate:{item['version']}",
                merchant=item["merchant"],
                payment_method=payment_method,
                amount=int(item["amount"]),
                currency=str(item["currency"]),
                reference=str(item["id"]),
                complete_url=self.public_url + path,
            )
        except ProcessorError as exc:
            raise ServiceUnavailableError(
                "The card vault did not answer; nothing was charged. Retry shortly."
            ) from exc
        if answer.get("status") != "challenge_required":
            return None
        return {
            "authentication": answer["id"],
            "authentication_return_token": token,
            "next_action_url": answer["url"],
        }

    def complete_authentication(self, intent_id: str, token: str) -> PaymentIntent:
        """Where the customer's browser lands after the challenge: the intent goes on with
        the authentication's outcome, which is asked of the vault (never taken from the
        browser). Refused alike for an unknown intent and a wrong token."""
        item = self._read(intent_id) if intent_id.startswith("pi_") else None
        expected = (item or {}).get("authentication_return_token") or ""
        if item is None or not secrets.compare_digest(expected.encode(), token.encode()):
            raise ResourceMissingError("payment_intent", intent_id)
        if item["state"] != REQUIRES_ACTION:
            return PaymentIntent.from_item(self.follow(item))  # already went on
        try:
            return PaymentIntent.from_item(self._after_authentication(item, None))
        except CardError as declined:  # the browser is shown the intent, declined or not
            assert declined.payment_intent is not None
            return declined.payment_intent

    def _after_authentication(self, item: dict[str, Any], caller: Caller | None) -> dict[str, Any]:
        """An intent in requires_action, moved on by its authentication's outcome: still
        waiting, failed (back to requires_payment_method), or passed (the attempt runs)."""
        assert self.vault is not None, "only a vault's card asks for authentication"
        try:
            answer = self.vault.authentication(str(item["authentication"])) or {}
        except ProcessorError as exc:
            raise ServiceUnavailableError(
                "The card vault did not answer; nothing was charged. Retry shortly."
            ) from exc
        status = answer.get("status")
        if status == "succeeded":
            who = caller or Caller(self.charges.merchant_of(item["merchant"]), "authentication")
            intent = self._process(
                item, who, str(item["payment_method"]), None, str(item["authentication"])
            )
            return self._read(intent.id) or item
        if status == "failed" or not answer:
            error = {
                "type": "card_error",
                "code": "payment_intent_authentication_failure",
                "message": "We are unable to authenticate your payment method. Please choose a "
                "different payment method and try again.",
            }
            return self._move(
                item,
                REQUIRES_PAYMENT_METHOD,
                caller,
                set={
                    "last_payment_error": error,
                    "payment_method": None,
                    "next_action_url": None,
                    "authentication": None,
                },
                remove=DUE_KEYS,
                event="payment_intent.payment_failed",
                lost_ok=True,
            )
        return item  # the customer has not answered the challenge yet

    def settle_authentication(self, item: dict[str, Any], now: int) -> dict[str, Any]:
        """For the resolver: an intent waiting in requires_action goes on once its challenge
        is answered, even if the customer's browser never came back. One nobody answered
        within AUTHENTICATION_WINDOW_SECONDS is no longer looked at: it waits, as Stripe's
        do, for the customer to confirm again or the merchant to cancel it."""
        try:
            after = self._after_authentication(item, None)
        except CardError:  # declined after authenticating: recorded on the intent
            return self._read(item["id"]) or item
        waiting_since = int(str(item.get("due_sk", "0")).split("#", 1)[0])
        if after is item and now - waiting_since > AUTHENTICATION_WINDOW_SECONDS:
            return self._move(item, REQUIRES_ACTION, None, remove=DUE_KEYS, lost_ok=True)
        return after

    @staticmethod
    def _answer(item: dict[str, Any], charge_id: str) -> PaymentIntent:
        """What a confirmation answers: the intent, or, when this attempt's charge was
        declined, a card error that carries it (as Stripe's 402 does)."""
        intent = PaymentIntent.from_item(item)
        error = item.get("last_payment_error")
        if intent.state == REQUIRES_PAYMENT_METHOD and error and error.get("charge") == charge_id:
            raise CardError(
                error.get("message") or "Your card was declined.",
                code=error.get("code"),
                decline_code=error.get("decline_code"),
                charge=charge_id,
                payment_intent=intent,
            )
        return intent

    def resume(self, item: dict[str, Any], caller: Caller | None) -> dict[str, Any]:
        """Create (again: the same attempt is the same charge) the charge of a processing
        intent, and follow it. Raises what the charge path refuses, after putting the
        intent back where it was."""
        if item["state"] != PROCESSING:
            return self.follow(item, caller)
        params = ChargeCreateParams(
            amount=item["amount"],
            currency=item["currency"],
            payment_method=item["payment_method"],
            capture=item["capture_method"] != "manual",
            customer=item.get("customer"),
            description=item.get("description"),
            receipt_email=item.get("receipt_email"),
            fx_quote=item.get("fx_quote"),
        )
        who = caller or Caller(self.charges.merchant_of(item["merchant"]), "resolver")
        try:
            self.charges.create(
                who,
                params,
                idempotency_key=attempt_key(item["id"], int(item["attempt"])),
                payment_intent=item["id"],
                authentication=item.get("authentication"),
            )
        except CardError:
            pass  # the failed charge is stored: following it records the decline
        except ServiceUnavailableError:
            # Refused for now (stale rates, a store or processor that did not answer): the
            # intent stays processing, and a retry or the resolver creates the same charge.
            raise
        except ApiError as refused:
            # Refused before anything moved (an unknown payment method): back as it was.
            if self.store.get(f"CHARGE#{item.get('latest_charge')}", "CHARGE") is None:
                self._move(
                    item,
                    REQUIRES_PAYMENT_METHOD,
                    caller,
                    set={"payment_method": None, "latest_charge": None},
                    remove=DUE_KEYS,
                    lost_ok=True,
                )
            raise refused
        return self.follow(self._read(item["id"]) or item, caller)

    # ---- follow the latest charge ---------------------------------------------------------

    def follow(self, item: dict[str, Any], caller: Caller | None = None) -> dict[str, Any]:
        """Bring the intent to where its latest charge says it should be. Moves no money:
        only the intent's own state, guarded, so that any number of readers may do it."""
        charge_id = item.get("latest_charge")
        if item["state"] not in (PROCESSING, REQUIRES_CAPTURE) or not charge_id:
            return item
        charge = self.store.get(f"CHARGE#{charge_id}", "CHARGE")
        if charge is None:
            return item  # its creation is still under way (or the resolver will redo it)
        state = charge["state"]
        if state == FAILED:
            error = {
                "type": "card_error",
                "code": charge.get("failure_code"),
                "decline_code": charge.get("decline_code"),
                "message": charge.get("failure_message"),
                "charge": charge_id,
            }
            return self._move(
                item,
                REQUIRES_PAYMENT_METHOD,
                caller,
                set={"last_payment_error": error, "payment_method": None},
                remove=DUE_KEYS,
                event="payment_intent.payment_failed",
                lost_ok=True,
            )
        if state == AUTHORIZED and item["state"] == PROCESSING:
            return self._move(
                item,
                REQUIRES_CAPTURE,
                caller,
                set={"amount_capturable": charge["amount"]},
                remove=DUE_KEYS,
                event="payment_intent.amount_capturable_updated",
                lost_ok=True,
                also=self._saving_card(item, caller),
            )
        if state == CAPTURED:
            return self._move(
                item,
                SUCCEEDED,
                caller,
                set={"amount_received": charge["amount_captured"], "amount_capturable": 0},
                remove=DUE_KEYS,
                event="payment_intent.succeeded",
                lost_ok=True,
                also=self._saving_card(item, caller) if item["state"] == PROCESSING else None,
            )
        if state in (CANCELED, EXPIRED):  # voided, or expired, before anyone captured it
            reason = item.get("cancellation_reason") or "automatic"
            return self._move(
                item,
                CANCELED_INTENT,
                caller,
                set={
                    "amount_capturable": 0,
                    "cancellation_reason": reason,
                    "canceled_at": int(self.clock()),
                },
                remove=DUE_KEYS,
                event="payment_intent.canceled",
                lost_ok=True,
            )
        return item

    # ---- capture and cancel ---------------------------------------------------------------

    def capture(
        self, caller: Caller, intent_id: str, params: PaymentIntentCaptureParams
    ) -> PaymentIntent:
        item = self.follow(self.owned(caller.merchant.id, intent_id), caller)
        if item["state"] != REQUIRES_CAPTURE:
            raise unexpected_state(item, "capture")
        self.charges.capture(
            caller, item["latest_charge"], ChargeCaptureParams(amount=params.amount_to_capture)
        )
        return PaymentIntent.from_item(self.follow(self._read(intent_id) or item, caller))

    def cancel(
        self, caller: Caller, intent_id: str, params: PaymentIntentCancelParams
    ) -> PaymentIntent:
        item = self.follow(self.owned(caller.merchant.id, intent_id), caller)
        if item["state"] not in CANCELABLE:
            raise unexpected_state(item, "cancel")
        reason = params.cancellation_reason or "requested_by_customer"
        if item["state"] != REQUIRES_CAPTURE:  # nothing is held: the intent just closes
            canceled = self._move(
                item,
                CANCELED_INTENT,
                caller,
                set={"cancellation_reason": reason, "canceled_at": int(self.clock())},
                event="payment_intent.canceled",
            )
            return PaymentIntent.from_item(canceled)
        # The hold is released through the charge's void (exactly-once on its own); the
        # reason is written first, so whoever follows the voided charge records it.
        wanting = self._move(item, REQUIRES_CAPTURE, caller, set={"cancellation_reason": reason})
        try:  # a void, never a refund: a capture that got there first keeps the money
            self.refunds.void_hold(
                caller,
                item["latest_charge"],
                idempotency_key=f"{RESERVED_KEY_PREFIX}{intent_id}:cancel",
            )
        except ApiError:
            current = self.follow(self._read(intent_id) or wanting, caller)
            if current["state"] not in CANCELABLE:
                raise unexpected_state(current, "cancel") from None
            raise
        return PaymentIntent.from_item(self.follow(self._read(intent_id) or wanting, caller))

    # ---- read -----------------------------------------------------------------------------

    def owned(self, merchant_id: str, intent_id: str) -> dict[str, Any]:
        return listing.get_owned(self.store, merchant_id, intent_id, KIND)

    def check_client_secret(self, merchant: Merchant, intent_id: str, client_secret: str) -> None:
        """What a publishable key must show to read or confirm one intent: its secret.
        Refused alike whether the intent is missing or the secret wrong."""
        item = self.store.get(intent_pk(intent_id), "PI") if intent_id.startswith("pi_") else None
        expected = (item or {}).get("client_secret") or ""
        if (
            item is None
            or item["merchant"] != merchant.id
            or not secrets.compare_digest(
                expected.encode(), client_secret.encode("utf-8", "replace")
            )
        ):
            raise InvalidRequestError(
                "The client_secret provided does not match the client_secret of any "
                "PaymentIntent of this account.",
                param="client_secret",
                code="payment_intent_invalid_parameter",
            )

    def retrieve(self, merchant: Merchant, intent_id: str) -> PaymentIntent:
        return PaymentIntent.from_item(self.follow(self.owned(merchant.id, intent_id)))

    def list(
        self,
        merchant: Merchant,
        *,
        limit: int,
        starting_after: str | None,
        ending_before: str | None,
        created: listing.Created | None = None,
        customer: str | None = None,
    ) -> Page[PaymentIntent]:
        items = listing.page(
            self.store,
            merchant.id,
            KIND,
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
            created=created,
            facets={"customer": [customer]} if customer else None,
        )
        return items.of(lambda item: PaymentIntent.from_item(self.follow(item)))

    # ---- the one way the intent changes ---------------------------------------------------

    def _read(self, intent_id: str) -> dict[str, Any] | None:
        return self.store.get(intent_pk(intent_id), "PI")

    def _saving_card(self, item: dict[str, Any], caller: Caller | None) -> Transition | None:
        """With setup_future_usage, a card that worked is attached to the intent's customer,
        in the transaction that records that it worked: saved exactly when it paid."""
        payment_method, customer = item.get("payment_method"), item.get("customer")
        if not (item.get("setup_future_usage") and customer and payment_method):
            return None
        stored = self.store.get(payment_method_pk(str(payment_method)), "PAYMENT_METHOD")
        if stored is None or stored.get("customer"):
            return None  # a processor's token, or already attached (to this customer)
        return self.cards.attaching(caller, stored, str(customer))

    def _move(
        self,
        item: dict[str, Any],
        to_state: str,
        caller: Caller | None,
        *,
        set: dict[str, Any] | None = None,
        remove: tuple[str, ...] = (),
        event: str | None = None,
        lost_ok: bool = False,
        also: Transition | None = None,
    ) -> dict[str, Any]:
        """One guarded step of the intent (its state and version as read), announced by
        `event`. Returns the intent after it. If somebody else moved it first: theirs when
        `lost_ok` (following a charge, where any follower's step is as good), else a 409,
        so that nothing acts on an intent it no longer knows."""
        version = int(item["version"])
        changes = {**(set or {}), "version": version + 1}
        after = {**item, **changes, "state": to_state}
        for name in remove:
            after.pop(name, None)
        change = Change(
            item["pk"],
            "PI",
            item["id"],
            f"{item['state']}->{to_state}",
            to_state,
            from_state=item["state"],
            set=changes,
            remove=remove,
            condition="version = :version",
            values={":version": version},
        )
        events = []
        if event is not None:
            events.append(
                Announcement(
                    item["merchant"],
                    event,
                    PaymentIntent.from_item(after),
                    operation=f"{event}:{version + 1}",
                )
            )
        transition = Transition([change], caller, events)
        if also is not None:  # committed with the step, or not at all
            transition.changes += also.changes
            transition.events += also.events
            transition.index_items += also.index_items
        if self.writer.commit(transition) is not None:
            current = self._read(item["id"])  # moved first by another request: theirs stands
            if current is None or not lost_ok:
                raise ConflictError("The PaymentIntent was changed by another request; retry.")
            return current
        return after
