"""The charge state machine: create, capture, void, expire, retrieve and list charges.

Every move of money here is write-ahead. Before the processor is called, the intent is
stored: a new charge as `pending`, a capture or void of an authorization as a pending
operation record (`OP#capture`, `OP#void`) with the charge locked to it. The intent
names the processor idempotency key the call uses. Only then is the processor called,
and its answer committed by the transition writer in one transaction with the journal,
balance transaction, audit and events. A crash anywhere leaves either nothing at the
processor or a pending record that says what to ask it; the resolver (resolver.py)
settles every such record to exactly what the processor did.

The charge id derives from (merchant, idempotency key), so a retried request lands on
the same charge, and every guard is a condition of the write, never a read before it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from collections.abc import Callable
from decimal import Decimal
from functools import cached_property
from typing import Any, NoReturn, TypeVar

from clearline import (
    balance,
    fraud_rules,
    fx,
    ledger,
    listing,
    money,
    radar_rules,
    reviews,
    risk,
    velocity,
)
from clearline.audit import Caller
from clearline.customers import CustomerService
from clearline.errors import (
    ApiError,
    CardError,
    ConflictError,
    InvalidRequestError,
    ResourceMissingError,
    processor_unavailable,
    store_unavailable,
)
from clearline.ids import derived_id
from clearline.ip_geolocation import ip_countries
from clearline.merchants import Merchant, get_merchant
from clearline.models import Charge, Page, PaymentMethod, PaymentMethodCard
from clearline.params import (
    ChargeCaptureParams,
    ChargeCreateParams,
    ChargeUpdateParams,
    merged_metadata,
)
from clearline.payment_methods import PaymentMethodService
from clearline.processor import (
    Authorization,
    ProcessorBusy,
    ProcessorClient,
    ProcessorError,
    ProcessorRejected,
    ProcessorUnavailable,
    UnknownToken,
)
from clearline.store import Store, StoreRejected, StoreUnavailable
from clearline.transitions import Announcement, Change, Transition, TransitionWriter

log = logging.getLogger(__name__)
T = TypeVar("T")

# What the processor answers for a key the resolver revoked.
REVOKED_KEY = "idempotency_key_revoked"

# Internal states; Stripe's `status`, `captured` and `refunded` are derived from them.
PENDING, AUTHORIZED, CAPTURED, FAILED = "pending", "authorized", "captured", "failed"
CANCELED, EXPIRED = "canceled", "expired"
# Refused by the processor before anything was authorized (an unknown token): the intent
# is withdrawn, and only its audit trail remains.
REJECTED = "rejected"
# An operation record's status.
OP_PENDING, OP_SUCCEEDED, OP_FAILED = "pending", "succeeded", "failed"

# Authorizations not captured within this window are voided and marked expired.
AUTHORIZATION_WINDOW_SECONDS = int(
    os.environ.get("CLEARLINE_AUTHORIZATION_WINDOW_SECONDS", str(7 * 24 * 60 * 60))
)
DUE_INDEX = "by_due"
DUE_SHARDS = 8  # spreads the sparse `by_due` index over partitions
DUE_AUTHORIZATION, DUE_PROCESSOR = "AUTH", "PENDING"


DUE_KEYS = ("due_pk", "due_sk")


def due_keys(kind: str, object_id: str, at: int) -> dict[str, str]:
    """Puts an item in the sparse `by_due` index: `kind` work is due at `at` (Unix time)."""
    shard = int.from_bytes(hashlib.sha256(object_id.encode()).digest()[:2], "big") % DUE_SHARDS
    return {"due_pk": f"{kind}#{shard}", "due_sk": f"{at:010d}#{object_id}"}


def operation_sk(operation: str) -> str:
    """The record of one operation on a charge: unique, so it can happen only once."""
    return f"OP#{operation}"


def operation_record(
    charge: dict[str, Any],
    operation: str,
    *,
    processor_key: str,
    amount: int,
    caller: Caller | None,
    now: float,
    **details: Any,
) -> dict[str, Any]:
    """A pending operation: what it is, the processor key it calls with, and when it is due
    for the resolver if nothing finishes it first."""
    return {
        "pk": charge["pk"],
        "sk": operation_sk(operation),
        **due_keys(DUE_PROCESSOR, f"{charge['id']}:{operation}", int(now)),
        "charge": charge["id"],
        "merchant": charge["merchant"],
        "operation": operation,
        "processor_key": processor_key,
        "amount": amount,
        "request_id": caller.request_id if caller else None,
        "created_ms": int(now * 1000),
        **details,
    }


def finish_operation(record: dict[str, Any], status: str, **result: Any) -> Change:
    """The change that closes a pending operation record (and takes it off the due index)."""
    return Change(
        record["pk"],
        record["sk"],
        record["charge"],
        record["operation"],
        from_state=OP_PENDING,
        to_state=status,
        state_attribute="status",
        set=result,
        remove=DUE_KEYS,
        audited=False,
    )


def charge_pk(charge_id: str) -> str:
    return f"CHARGE#{charge_id}"


def _card_details(auth: Authorization, fingerprint: str | None = None) -> dict[str, Any]:
    """The card as the charge keeps it (a CardDetails model's fields). A stored card keeps
    the vault's fingerprint, the one its PaymentMethod shows, not the processor's."""
    card = auth.card
    return {
        **card.model_dump(exclude={"cvc_check"}),
        "checks": {"cvc_check": card.cvc_check} if card.cvc_check else None,
        **({"fingerprint": fingerprint} if fingerprint else {}),
    }


def _risk(screening: dict[str, Any] | None) -> dict[str, Any]:
    """The outcome's risk fields: as scored before the processor call, when it was."""
    risk = (screening or {}).get("risk")
    if risk is None:
        return {"risk_level": "not_assessed"}  # what Stripe says when nothing assessed it
    return {"risk_level": risk["level"], "risk_score": risk["score"]}


def _rule_message(screening: dict[str, Any]) -> str:
    rule, action = screening["rule"], screening["action"]
    if screening.get("reason") == "highest_risk_level":
        return "Clearline blocked this payment as too risky."
    if screening.get("reason") == "elevated_risk_level":
        return (
            "Clearline evaluated this payment as having elevated risk, and placed it in your "
            "manual review queue."
        )
    done = "blocked this payment" if action == "block" else "placed this payment in review"
    return f"Clearline {done}: it matched your rule '{rule['action']} if {rule['predicate']}'."


def _outcome(auth: Authorization, screening: dict[str, Any] | None = None) -> dict[str, Any]:
    if auth.approved and screening and screening.get("action") == "review":
        return {
            "network_status": "approved_by_network",
            "reason": screening.get("reason", "rule"),
            **_risk(screening),
            "rule": screening["rule"],
            "seller_message": _rule_message(screening),
            "type": "manual_review",
        }
    if auth.approved:
        return {
            "network_status": "approved_by_network",
            "reason": None,
            **_risk(screening),
            "seller_message": "Payment complete.",
            "type": "authorized",
        }
    return {
        "network_status": "declined_by_network",
        "reason": auth.decline_code,
        **_risk(screening),
        "type": "issuer_declined",
        "seller_message": "The bank did not return any further details with this decline.",
    }


def _unlocked(charge: dict[str, Any], state: str, **changes: Any) -> dict[str, Any]:
    """The charge as a committed operation leaves it: in `state`, and free again."""
    after = {**charge, **changes, "state": state}
    after.pop("pending_op", None)
    return after


def _card_error(item: dict[str, Any]) -> CardError:
    return CardError(
        item["failure_message"],
        code=item["failure_code"],
        decline_code=item.get("decline_code"),
        charge=item["id"],
    )


def not_capturable(item: dict[str, Any]) -> ApiError:
    """Why a charge cannot be captured (or voided) any more, in Stripe's words."""
    charge_id, state = item["id"], item["state"]
    if state == CAPTURED:
        return InvalidRequestError(
            f"Charge {charge_id} has already been captured.", code="charge_already_captured"
        )
    if state == CANCELED:
        return InvalidRequestError(
            f"Charge {charge_id} has already been refunded.", code="charge_already_refunded"
        )
    if state == EXPIRED:
        return InvalidRequestError(
            f"Charge {charge_id} has expired: it was not captured within the authorization "
            "window, and its hold was released.",
            code="charge_expired_for_capture",
        )
    if state == FAILED:
        return InvalidRequestError(
            f"Charge {charge_id} failed and has nothing to capture.", code="charge_not_capturable"
        )
    if item.get("pending_op"):
        return ConflictError(
            f"A {item['pending_op']} of charge {charge_id} is in progress; retry shortly."
        )
    return ConflictError(f"Charge {charge_id} is still being processed; retry shortly.")


class MoneyService:
    """What every service that moves money works with: the store, the processor, the
    ledger's shard policy, a clock, and the one transition writer."""

    def __init__(
        self,
        store: Store,
        processor: ProcessorClient,
        shards: ledger.ShardPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.processor = processor
        self.shards = shards or ledger.ShardPolicy()
        self.clock = clock
        self.writer = TransitionWriter(store, self.shards, lambda: self.clock())

    def _read(self, pk: str, sk: str) -> dict[str, Any] | None:
        try:
            return self.store.get(pk, sk)
        except StoreUnavailable as exc:
            raise store_unavailable() from exc


def capture_fee(merchant: Merchant, charge: dict[str, Any], captured: int) -> int:
    """Our fee on a capture, in the currency the merchant is paid in."""
    conversion = fx.Conversion.from_item(charge.get("fx"))
    return merchant.fee_for(conversion.to_merchant(captured) if conversion else captured)


class ChargeService(MoneyService):
    def __init__(
        self,
        store: Store,
        processor: ProcessorClient,
        shards: ledger.ShardPolicy | None = None,
        clock: Callable[[], float] = time.time,
        *,
        counters: Store | None = None,
    ) -> None:
        super().__init__(store, processor, shards, clock)
        # Where fraud rules' velocity counters are kept; without it, rules that read them
        # stay undecided (only the api creates charges, and it has the table).
        self.velocity = velocity.VelocityCounters(counters) if counters is not None else None

    @property
    def rates(self) -> fx.RateBook:
        return fx.RateBook(self.store, self.clock)

    def _get(self, charge_id: str) -> dict[str, Any] | None:
        return self._read(charge_pk(charge_id), "CHARGE")

    def merchant_of(self, merchant_id: str) -> Merchant:
        merchant = get_merchant(self.store, merchant_id)
        assert merchant is not None, "a charge always has its merchant"
        return merchant

    def _settled(self, item: dict[str, Any]) -> Charge:
        """The answer for a stored charge: a failed one is a card error, as it was the first
        time."""
        if item["state"] == FAILED:
            raise _card_error(item)
        return Charge.from_item(item)

    # ---- create ---------------------------------------------------------------------------

    def create(
        self,
        caller: Caller,
        params: ChargeCreateParams,
        *,
        idempotency_key: str,
        payment_intent: str | None = None,
        authentication: str | None = None,
    ) -> Charge:
        """Charge a card, once per key. `payment_intent` names the intent this charge is an
        attempt of, when it is one; `authentication`, the 3-D Secure authentication its
        customer passed for this payment."""
        merchant = caller.merchant
        money.check_charge_amount(params.amount, money.currency(params.currency))
        conversion = self._conversion(merchant, params, idempotency_key)
        customer = None
        if params.customer is not None:
            customer = CustomerService(self.store).chargeable(merchant.id, params.customer)
        # Without a card of its own, a charge naming a customer uses the customer's default.
        token = (
            params.source
            or params.payment_method
            or (customer or {}).get("default_payment_method")
            or (customer or {}).get("default_source")
        )
        if not token and params.customer is not None:
            raise InvalidRequestError(
                f"Customer {params.customer} has no default payment method: send source or "
                "payment_method with it.",
                param="source",
                code="parameter_missing",
            )
        if not token:
            raise InvalidRequestError(
                "Must provide source or payment_method.", param="source", code="parameter_missing"
            )
        stored = None
        if token:
            stored = PaymentMethodService(self.store, self.processor.vault).resolve(
                merchant,
                token,
                param="source" if params.source else "payment_method",
                request=idempotency_key,
            )
        if stored is not None:
            token = stored.id
            if stored.customer is not None and stored.customer != params.customer:
                raise InvalidRequestError(
                    f"The payment method {stored.id} is attached to customer "
                    f"{stored.customer}: send customer={stored.customer} with it.",
                    param="customer",
                    code="payment_method_unexpected_state",
                )
        now = self.clock()
        if params.capture_at is not None:
            if params.capture:
                raise InvalidRequestError(
                    "capture_at schedules the capture of an authorization: send capture=false "
                    "with it.",
                    param="capture_at",
                )
            if not now < params.capture_at <= now + AUTHORIZATION_WINDOW_SECONDS:
                raise InvalidRequestError(
                    "capture_at must be in the future and within the authorization window "
                    f"({AUTHORIZATION_WINDOW_SECONDS // 86400} days).",
                    param="capture_at",
                )

        # A stored card as the vault described it; a test token's, as the vault describes
        # its number (so the fingerprint is the one a payment method of it has).
        card = stored.card if stored else self._test_card(token)
        fingerprint = card.fingerprint if card else None
        charge_id = derived_id("ch", merchant.id, idempotency_key)
        client_ip = stored.client_ip if stored else None
        ip_country = ip_countries().country(client_ip)
        counted = velocity.ChargeFacts(
            charge_id, fingerprint, params.receipt_email, params.customer, client_ip
        )
        screening = self._unless_written(
            merchant,
            idempotency_key,
            lambda: self._screen(merchant, params, stored, token, card, counted, ip_country),
        )
        pending = self._pending_item(merchant, params, charge_id, token, now, idempotency_key)
        pending["payment_intent"] = payment_intent
        pending["card_fingerprint"] = fingerprint
        if client_ip is not None:  # a review of this charge shows where it came from
            pending["client_ip"] = client_ip
            pending["ip_country"] = ip_country
        if screening is not None and screening.as_item() is not None:
            # Written ahead: a charge a rule blocks is never sent, whoever finishes it.
            pending["screening"] = screening.as_item()
        if conversion is not None:
            # A quote's rate may be hours old: the desk exchanges at today's.
            market = (
                fx.market_rate_item(self.rates, {"fx": conversion.as_item()})
                if conversion.quote
                else {"fx_market_rate": fx.rate_text(conversion.base_rate)}
            )
            pending.update(
                fx=conversion.as_item(),
                settlement_currency=conversion.to_currency,
                exchange_rate=fx.rate_text(conversion.exchange_rate),
                **market,
            )
        if stored is not None:  # the vault sends this card to the processor
            pending["stored_card"] = True
            pending["payment_method_id"] = stored.id
            pending["authentication"] = authentication
        created = Change(
            pending["pk"], "CHARGE", charge_id, "create", to_state=PENDING, create=pending
        )
        by_customer = listing.facet_items(  # and by payment intent
            merchant.id,
            "ch",
            int(now * 1000),
            (pending["pk"], "CHARGE"),
            charge_id,
            {"customer": params.customer, "payment_intent": payment_intent},
        )
        indexed = Transition([created], caller, index_items=by_customer)
        if self.writer.commit(indexed) is not None:
            # The key was used before: this is a retry (or a concurrent twin) of that charge.
            existing = self._get(charge_id)
            if existing is None or existing["merchant"] != merchant.id:
                raise ConflictError("This charge id is taken; retry with another key.")
            if existing["state"] != PENDING:
                return self._settled(existing)
            pending = existing
        counters = screening.counters if screening is not None else ()
        self._count(merchant.id, counters, counted)
        settled = self.authorize_pending(pending, caller)
        if settled["state"] == FAILED:
            self._count(merchant.id, counters, counted, declined=True)
        return self._settled(settled)

    def _count(
        self,
        merchant_id: str,
        counters: tuple[radar_rules.Counter, ...],
        counted: velocity.ChargeFacts,
        *,
        declined: bool = False,
    ) -> None:
        """Add the charge to the velocity counters its merchant's rules read. A counter
        missed (DynamoDB away) undercounts by one; it never holds the charge back."""
        if not counters or self.velocity is None:
            return
        try:
            self.velocity.record(merchant_id, counters, counted, declined=declined)
        except StoreUnavailable as exc:
            log.warning("velocity counters not updated for %s: %s", counted.charge_id, exc)

    def _conversion(
        self, merchant: Merchant, params: ChargeCreateParams, idempotency_key: str
    ) -> fx.Conversion | None:
        """The rate a new charge locks: the capture, refunds and disputes all convert at it."""
        return self._unless_written(
            merchant,
            idempotency_key,
            lambda: fx.conversion_for(
                self.store, self.rates, merchant, params.currency.lower(), params.fx_quote
            ),
        )

    def _unless_written(
        self, merchant: Merchant, idempotency_key: str, decide: Callable[[], T]
    ) -> T | None:
        """What a new charge decides before its write-ahead (its rate, its rules' verdict).
        A retry of a charge already written needs none of it (the write-ahead holds it), so
        an expired quote or stale rates refuse only a charge that does not exist yet."""
        try:
            return decide()
        except ApiError:
            if self._get(derived_id("ch", merchant.id, idempotency_key)) is None:
                raise
            return None  # the create below finds the charge and follows it

    @cached_property
    def screener(self) -> fraud_rules.Screener:
        vault = self.processor.vault
        scorer = risk.DeterministicScorer(vault.test_card_fingerprint if vault else None)
        return fraud_rules.Screener(self.store, scorer, self.velocity)

    def _screen(
        self,
        merchant: Merchant,
        params: ChargeCreateParams,
        stored: PaymentMethod | None,
        token: str,
        card: PaymentMethodCard | None,
        counted: velocity.ChargeFacts,
        ip_country: str | None,
    ) -> fraud_rules.Screening:
        """The charge's risk, and the merchant's fraud rules and Radar's defaults on what is
        known before the processor is called."""
        cur = params.currency.lower()
        email = params.receipt_email
        attributes: dict[str, radar_rules.Value] = {
            "amount": float(params.amount),
            "currency": cur,
            "customer": params.customer,
            "email": email,
            "email_domain": email.rsplit("@", 1)[-1] if email else None,
            "card_fingerprint": counted.card_fingerprint,
            "card_bin": card.iin if card else None,
            "card_brand": card.brand if card else None,
            "card_country": card.country if card else None,
            "card_funding": card.funding if card else None,
            "ip_address": counted.ip,
            "ip_country": ip_country,
        }

        def amount_in_usd() -> float:
            cents = ledger.exchange(params.amount, self.rates.mid(cur, "usd"), cur, "usd")
            return cents / 100

        payer = risk.Payer(
            None if stored else token, counted.card_fingerprint, params.receipt_email
        )
        return self.screener.screen(merchant.id, attributes, amount_in_usd, payer, counted)

    def _test_card(self, token: str) -> PaymentMethodCard | None:
        """The card of a processor's test token (`tok_visa`), as the vault describes its
        number. Without an answer from the vault, none: the processor's own description
        follows, and the charge does not wait on one."""
        vault = self.processor.vault
        if vault is None:
            return None
        try:
            return vault.test_card(token)
        except ProcessorError as exc:
            log.warning("no description from the vault of a test token: %s", exc)
            return None

    def _pending_item(
        self,
        merchant: Merchant,
        params: ChargeCreateParams,
        charge_id: str,
        token: str,
        now: float,
        idempotency_key: str,
    ) -> dict[str, Any]:
        """The write-ahead record of a charge: everything settling it needs, and due for the
        resolver in case nobody else settles it."""
        return {
            "pk": charge_pk(charge_id),
            "sk": "CHARGE",
            **listing.list_keys(merchant.id, "ch", int(now * 1000), charge_id),
            **due_keys(DUE_PROCESSOR, charge_id, int(now)),
            "id": charge_id,
            "merchant": merchant.id,
            "state": PENDING,
            "amount": params.amount,
            "currency": params.currency.lower(),
            "amount_captured": 0,
            "amount_refunded": 0,
            "amount_released": 0,
            "refundable": 0,
            "refunds": {},
            "description": params.description,
            "metadata": dict(params.metadata),
            "statement_descriptor": params.statement_descriptor,
            "statement_descriptor_suffix": params.statement_descriptor_suffix,
            "receipt_email": params.receipt_email,
            "shipping": params.shipping.model_dump() if params.shipping else None,
            "transfer_group": params.transfer_group,
            "customer": params.customer,
            "payment_method": token,
            # The card as a payment method of its own, named once per charge.
            "payment_method_id": derived_id("pm", charge_id, "card"),
            # The unguessable part of the receipt's public URL.
            "receipt_token": secrets.token_urlsafe(24),
            "created": int(now),
            "idempotency_key": idempotency_key,
            "processor_key": f"{charge_id}:authorize",
            "request_params": params.model_dump(mode="json"),
        }

    def authorize_pending(self, item: dict[str, Any], caller: Caller | None) -> dict[str, Any]:
        """Call the processor for a pending charge with its key (a first call, or a retry that
        returns the first answer) and commit what it says. Returns the charge as stored."""
        if item.get("compensation"):  # a compensation cut short: finish it
            self._finish_compensation_or_retry(item)
            return self._get(item["id"]) or item
        if (item.get("screening") or {}).get("action") == "block":
            return self._block(item, caller)
        params = ChargeCreateParams.model_validate(item["request_params"])
        try:
            auth = self.processor.authorize(
                idempotency_key=item["processor_key"],
                token=item["payment_method"],
                amount=params.amount,
                currency=params.currency.lower(),
                capture=params.capture,
                reference=item["id"],
                stored_card_of=item["merchant"] if item.get("stored_card") else None,
                authentication=item.get("authentication"),
            )
        except UnknownToken:
            self._reject(item, caller, params)
        except ProcessorRejected as exc:
            if exc.code != REVOKED_KEY:
                raise
            # The resolver found nothing at the processor and revoked the key: the charge
            # is failed (or about to be), and nothing was or will be authorized.
            return self._get(item["id"]) or item
        except ProcessorUnavailable:
            # The processor may or may not have charged the card. The charge stays pending;
            # a retry with the same key, or the resolver, asks again with the same key.
            self._announce_pending(item, caller)
            return item
        return self.commit_authorization(item, caller, auth)

    def commit_authorization(
        self, item: dict[str, Any], caller: Caller | None, auth: Authorization
    ) -> dict[str, Any]:
        """Settle a pending charge to the processor's answer, once."""
        params = ChargeCreateParams.model_validate(item["request_params"])
        merchant = caller.merchant if caller else self.merchant_of(item["merchant"])
        final = self._charge_item(merchant, params, item, auth)
        transition = Transition(
            [
                Change(
                    item["pk"],
                    "CHARGE",
                    item["id"],
                    "authorize",
                    from_state=PENDING,
                    to_state=final["state"],
                    replace=final,
                )
            ],
            caller,
            idempotency_key=item["idempotency_key"],
        )
        opened = None
        if final["outcome"]["type"] == "manual_review":  # a rule sent it to the review queue
            review, opened = reviews.opening(final, self.clock())
            final["review"] = review.object_id
            transition.changes.append(review)
        charge = Charge.from_item(final)
        kind = "charge.failed" if final["state"] == FAILED else "charge.succeeded"
        transition.events.append(Announcement(item["merchant"], kind, charge))
        if final["state"] != FAILED:  # a decline answers as a card error, not as the charge
            transition.answer = charge
        if opened is not None:
            transition.events.append(opened)
        if final["state"] == CAPTURED:
            self._add_capture(
                transition,
                final,
                final["amount"],
                final["fee"],
                held=0,
                market_rate=item.get("fx_market_rate"),
            )
        elif final["state"] == AUTHORIZED:
            transition.journals.append(
                self._journal(
                    final,
                    "authorize",
                    ledger.hold_entries(item["merchant"], final["currency"], final["amount"]),
                )
            )
        try:
            cancelled = self.writer.commit(transition)
        except StoreRejected:
            return self._compensate(item, caller, auth)
        if cancelled is not None:  # settled meanwhile by another path: theirs stands
            return self._get(item["id"]) or final
        return final

    def _reject(
        self, item: dict[str, Any], caller: Caller | None, params: ChargeCreateParams
    ) -> NoReturn:
        """The processor does not know the token, so nothing was authorized: the intent is
        withdrawn (its audit trail stays) and the request refused, as bad input is."""
        withdrawn = Change(
            item["pk"], "CHARGE", item["id"], "reject", REJECTED, from_state=PENDING, delete=True
        )
        # Its filter index items go with it, so that no filtered list points at nothing.
        facets = [(item["pk"], f"FACET#{name}") for name in ("customer", "payment_intent")]
        self.writer.commit(Transition([withdrawn], caller, index_removals=facets))
        param = "source" if params.source else "payment_method"
        raise InvalidRequestError(
            f"No such token: '{item['payment_method']}'", param=param, code="resource_missing"
        )

    def _block(self, item: dict[str, Any], caller: Caller | None) -> dict[str, Any]:
        """A charge a rule blocks (the merchant's, or Radar's default on the highest risk):
        failed, and never sent to the processor."""
        screening = item["screening"]
        failed = {
            "failure_code": "card_declined",
            "decline_code": "fraudulent",
            "failure_message": "Your card was declined.",
            "fraud_details": {"stripe_report": "fraudulent"},
            "outcome": {
                "network_status": "not_sent_to_network",
                "reason": screening.get("reason", "rule"),
                **_risk(screening),
                "rule": screening["rule"],
                "seller_message": _rule_message(screening),
                "type": "blocked",
            },
        }
        change = Change(
            item["pk"],
            "CHARGE",
            item["id"],
            "block",
            from_state=PENDING,
            to_state=FAILED,
            set=failed,
            remove=DUE_KEYS,
        )
        blocked = {**item, **failed, "state": FAILED}
        self.writer.commit(
            Transition(
                [change],
                caller,
                [Announcement(item["merchant"], "charge.failed", Charge.from_item(blocked))],
                idempotency_key=item["idempotency_key"],
            )
        )
        return self._get(item["id"]) or blocked

    def _announce_pending(self, item: dict[str, Any], caller: Caller | None) -> None:
        """charge.pending, once: the processor's answer is not known yet."""
        waiting = Change(
            item["pk"], "CHARGE", item["id"], "processor_unknown", PENDING, from_state=PENDING
        )
        self.writer.commit(
            Transition(
                [waiting],
                caller,
                [Announcement(item["merchant"], "charge.pending", Charge.from_item(item))],
                idempotency_key=item["idempotency_key"],
            )
        )

    def fail_pending(self, item: dict[str, Any], reason: str, **details: Any) -> None:
        """Nothing is left at the processor for this charge: it failed, nobody was charged."""
        failed = {
            "failure_code": "processing_error",
            "failure_message": reason,
            "outcome": {"network_status": "not_sent_to_network", "type": "invalid"},
            **details,
        }
        change = Change(
            item["pk"],
            "CHARGE",
            item["id"],
            "fail",
            from_state=PENDING,
            to_state=FAILED,
            set=failed,
            remove=DUE_KEYS,
        )
        snapshot = Charge.from_item({**item, **failed, "state": FAILED})
        self.writer.commit(
            Transition(
                [change],
                None,
                [Announcement(item["merchant"], "charge.failed", snapshot)],
                idempotency_key=item["idempotency_key"],
            )
        )

    # ---- compensation ---------------------------------------------------------------------

    def _compensate(
        self, item: dict[str, Any], caller: Caller | None, auth: Authorization
    ) -> dict[str, Any]:
        """The processor authorized, but the store refuses the charge for good: undo it at the
        processor (void the hold, or refund the capture) and record the charge as failed.
        The intent is written first, so a crash here is finished by the resolver."""
        if not auth.approved:
            self.fail_pending(item, "The charge could not be recorded; the card was declined.")
            return self._get(item["id"]) or item
        action = "refund" if auth.captured else "void"
        intent = Change(
            item["pk"],
            "CHARGE",
            item["id"],
            "compensate.request",
            PENDING,
            from_state=PENDING,
            set={
                "compensation": action,
                "processor_authorization": auth.id,
                "compensation_amount": auth.amount_captured,
            },
        )
        self.writer.commit(Transition([intent], caller))
        current = self._get(item["id"]) or item
        if current["state"] == PENDING:
            self._finish_compensation_or_retry(current)
        return self._get(item["id"]) or item

    def _finish_compensation_or_retry(self, item: dict[str, Any]) -> None:
        try:
            self.finish_compensation(item)
        except (ProcessorUnavailable, ProcessorBusy) as exc:
            # The card was authorized and its undoing is pending: not "nothing was sent".
            raise processor_unavailable() from exc

    def finish_compensation(self, item: dict[str, Any]) -> None:
        """Undo the authorization at the processor with the compensation's own key, then
        record the failed charge. Raises ProcessorUnavailable: the resolver tries again."""
        key = f"{item['id']}:compensate"
        try:
            if item["compensation"] == "refund":
                self.processor.refund(
                    idempotency_key=key,
                    authorization_id=item["processor_authorization"],
                    amount=item["compensation_amount"],
                    reference=item["id"],
                )
            else:
                self.processor.void(
                    idempotency_key=key, authorization_id=item["processor_authorization"]
                )
        except ProcessorRejected:
            pass  # already undone (a replay the processor refuses): nothing is held
        self.fail_pending(
            item,
            "The charge could not be recorded, so the payment was reversed at the processor.",
            compensated=item["compensation"],
        )

    # ---- the settled charge ---------------------------------------------------------------

    def _charge_item(
        self,
        merchant: Merchant,
        params: ChargeCreateParams,
        pending: dict[str, Any],
        auth: Authorization,
    ) -> dict[str, Any]:
        state = (CAPTURED if params.capture else AUTHORIZED) if auth.approved else FAILED
        captured = params.amount if state == CAPTURED else 0
        charge_id, created = pending["id"], pending["created"]
        item: dict[str, Any] = {
            key: value for key, value in pending.items() if key not in ("request_params", *DUE_KEYS)
        }
        item.update(
            state=state,
            amount_captured=captured,
            # What refunds may still take: decremented under a condition, never below zero.
            refundable=captured,
            card=_card_details(auth, pending.get("card_fingerprint")),
            outcome=_outcome(auth, pending.get("screening")),
            processor_authorization=auth.id,
        )
        if state == FAILED:
            item.update(
                failure_code=auth.code,
                decline_code=auth.decline_code,
                failure_message=auth.message or "Your card was declined.",
            )
        elif state == CAPTURED:
            item.update(
                fee=capture_fee(merchant, pending, captured),
                balance_transaction=derived_id("txn", charge_id, "capture"),
            )
        else:  # authorized: due for its scheduled capture, or else for expiry
            expires_at = int(created) + AUTHORIZATION_WINDOW_SECONDS
            item.update(capture_at=params.capture_at, expires_at=expires_at)
            item.update(due_keys(DUE_AUTHORIZATION, charge_id, params.capture_at or expires_at))
        return item

    def _journal(
        self,
        charge: dict[str, Any],
        operation: str,
        entries: tuple[ledger.Entry, ...],
        currency: str | None = None,
    ) -> ledger.Journal:
        return ledger.Journal(
            id=derived_id("jnl", charge["id"], operation),
            currency=currency or charge["currency"],
            entries=entries,
            charge_id=charge["id"],
            merchant_id=charge["merchant"],
            operation=f"charge.{operation.split(':')[0]}",
            created=int(self.clock()),
        )

    def _add_capture(
        self,
        transition: Transition,
        item: dict[str, Any],
        captured: int,
        fee: int,
        *,
        held: int,
        market_rate: str | None = None,
    ) -> None:
        """The journal and balance transaction of a capture (of a hold of `held`, if any):
        converted into the merchant's settlement currency at the charge's locked rate. The
        FX desk exchanges at `market_rate` (the day's mid, recorded before the processor was
        called); its difference from the locked mid is our gain or loss."""
        charge_id, currency, merchant_id = item["id"], item["currency"], item["merchant"]
        released = ledger.release_hold_entries(merchant_id, currency, held) if held else ()
        conversion = fx.Conversion.from_item(item.get("fx"))
        settled_amount, settled_in, rate = captured, currency, None
        if conversion is None:
            entries = released + ledger.capture_entries(merchant_id, currency, captured, fee)
            transition.journals.append(self._journal(item, "capture", entries))
        else:
            settled_in = conversion.to_currency
            settled_amount = conversion.to_merchant(captured)
            desk_rate = Decimal(market_rate) if market_rate else conversion.base_rate
            exchanged = ledger.exchange(captured, desk_rate, currency, settled_in)
            customer_leg = self._journal(
                item, "capture", released + ledger.fx_in_entries(currency, captured)
            )
            settlement_leg = self._journal(
                item,
                "capture:fx",
                ledger.fx_settled_in_entries(
                    merchant_id,
                    settled_in,
                    exchanged=exchanged,
                    to_merchant=settled_amount,
                    fee=fee,
                    fx_fee=conversion.at_mid(captured) - settled_amount,
                ),
                currency=settled_in,
            )
            transition.journals.extend(
                ledger.linked(
                    customer_leg,
                    settlement_leg,
                    rate=fx.rate_text(desk_rate),
                    from_amount=captured,
                    to_amount=exchanged,
                )
            )
            rate = fx.rate_text(conversion.exchange_rate)
        transition.records.extend(
            balance.transaction_items(
                derived_id("txn", charge_id, "capture"),
                merchant_id=merchant_id,
                kind="charge",
                source=charge_id,
                amount=settled_amount,
                fee=fee,
                currency=settled_in,
                now=self.clock(),
                description=item.get("description"),
                presentment=(captured, currency),
                exchange_rate=rate,
            )
        )

    # ---- operations on an authorization: capture, void, expire ----------------------------

    def _lock(
        self,
        charge: dict[str, Any],
        caller: Caller | None,
        operation: str,
        record: dict[str, Any],
    ) -> dict[str, Any] | None:
        """Write-ahead for an operation on an authorization: the charge is locked to it and
        the pending record stored, in one transaction. None if the charge was not free."""
        lock = Change(
            charge["pk"],
            "CHARGE",
            charge["id"],
            f"{operation}.request",
            AUTHORIZED,
            from_state=AUTHORIZED,
            set={"pending_op": operation},
            condition="attribute_not_exists(pending_op)",
        )
        create = Change(
            record["pk"],
            record["sk"],
            charge["id"],
            operation,
            OP_PENDING,
            state_attribute="status",
            create=record,
            audited=False,
        )
        if self.writer.commit(Transition([lock, create], caller)) is not None:
            return None
        return record

    def _operation(self, charge: dict[str, Any], operation: str) -> dict[str, Any] | None:
        return self._read(charge["pk"], operation_sk(operation))

    def capture(
        self,
        caller: Caller | None,
        charge_id: str,
        params: ChargeCaptureParams,
        merchant_id: str | None = None,
    ) -> Charge:
        """Capture an authorization. `caller` is None for Clearline's scheduled captures."""
        owner = caller.merchant.id if caller else merchant_id
        assert owner is not None
        item = self.owned(owner, charge_id)
        if item.get("pending_op") == "capture":  # a capture cut short: finish it
            record = self._operation(item, "capture")
            if record is not None and record["status"] == OP_PENDING:
                wanted = item["amount"] if params.amount is None else params.amount
                if wanted != record["amount"]:  # another capture, not a retry of this one
                    raise ConflictError(
                        f"A capture of {record['amount']} of charge {charge_id} is in "
                        "progress; retry shortly to see its result."
                    )
                return self._captured(self.settle_capture(item, record, caller))
        if item["state"] != AUTHORIZED or item.get("pending_op"):
            raise not_capturable(item)
        amount = item["amount"] if params.amount is None else params.amount
        if not 0 < amount <= item["amount"]:
            raise InvalidRequestError(
                f"Capture amount must be between 1 and the authorized {item['amount']}.",
                param="amount",
                code="amount_too_large" if amount > 0 else "amount_too_small",
            )
        money.check_payable(amount, money.currency(item["currency"]))
        record = self._lock(
            item,
            caller,
            "capture",
            operation_record(
                item,
                "capture",
                processor_key=f"{charge_id}:capture",
                amount=amount,
                caller=caller,
                now=self.clock(),
                # Captured days after the charge: exchanged at that day's rate.
                **fx.market_rate_item(self.rates, item),
            ),
        )
        if record is None:  # another operation got there first, or an earlier one failed
            raise self._not_captured(self._get(charge_id) or item)
        return self._captured(
            self.settle_capture({**item, "pending_op": "capture"}, record, caller)
        )

    def _captured(self, charge: dict[str, Any]) -> Charge:
        """The answer to a capture this request made, given the charge as it now stands."""
        if charge["state"] == CAPTURED:
            return Charge.from_item(charge)
        raise self._not_captured(charge)

    def _not_captured(self, charge: dict[str, Any]) -> ApiError:
        if charge["state"] == AUTHORIZED and not charge.get("pending_op"):
            previous = self._operation(charge, "capture")
            if previous is not None and previous["status"] == OP_FAILED:
                return InvalidRequestError(
                    f"The processor refused to capture charge {charge['id']}: "
                    f"{previous.get('failure_reason')}",
                    code="charge_not_capturable",
                )
        return not_capturable(charge)

    def settle_capture(
        self, charge: dict[str, Any], record: dict[str, Any], caller: Caller | None
    ) -> dict[str, Any]:
        """Capture at the processor with the record's key and commit the answer. A processor
        that does not answer leaves the record pending (503: retry, or the resolver will)."""
        try:
            self.processor.capture(
                idempotency_key=record["processor_key"],
                authorization_id=charge["processor_authorization"],
                amount=record["amount"],
            )
        except ProcessorUnavailable as exc:
            raise processor_unavailable() from exc
        except ProcessorRejected as exc:
            self._fail_operation(charge, record, caller, exc.message)
            return self._get(charge["id"]) or charge
        amount = record["amount"]
        merchant = caller.merchant if caller else self.merchant_of(charge["merchant"])
        fee = capture_fee(merchant, charge, amount)
        txn_id = derived_id("txn", charge["id"], "capture")
        captured = {
            "amount_captured": amount,
            "amount_released": charge["amount"] - amount,
            "refundable": amount,
            "fee": fee,
            "balance_transaction": txn_id,
        }
        after = _unlocked(charge, CAPTURED, **captured)
        answer = Charge.from_item(after)
        transition = Transition(
            [
                Change(
                    charge["pk"],
                    "CHARGE",
                    charge["id"],
                    "capture",
                    CAPTURED,
                    from_state=AUTHORIZED,
                    set=captured,
                    remove=("pending_op", *DUE_KEYS),
                    condition="pending_op = :op",
                    values={":op": "capture"},
                ),
                finish_operation(record, OP_SUCCEEDED),
            ],
            caller,
            [Announcement(charge["merchant"], "charge.captured", answer)],
            answer=answer,
        )
        self._add_capture(
            transition,
            charge,
            amount,
            fee,
            held=charge["amount"],
            market_rate=record.get("fx_market_rate"),
        )
        if self.writer.commit(transition) is None:
            return after
        return self._get(charge["id"]) or after  # a guard failed: settled meanwhile

    def _fail_operation(
        self, charge: dict[str, Any], record: dict[str, Any], caller: Caller | None, reason: str
    ) -> None:
        """The processor refused the operation: nothing moved. Unlock the charge."""
        unlock = Change(
            charge["pk"],
            "CHARGE",
            charge["id"],
            f"{record['operation']}.fail",
            AUTHORIZED,
            from_state=AUTHORIZED,
            remove=("pending_op",),
            condition="pending_op = :op",
            values={":op": record["operation"]},
        )
        closed = finish_operation(record, OP_FAILED, failure_reason=reason)
        self.writer.commit(Transition([unlock, closed], caller))

    def request_void(
        self,
        charge: dict[str, Any],
        caller: Caller | None,
        cause: str,
        **details: Any,
    ) -> dict[str, Any] | None:
        """Write-ahead for releasing an authorization (`cause`: refund or expire). None if the
        charge was not free to void."""
        return self._lock(
            charge,
            caller,
            "void",
            operation_record(
                charge,
                "void",
                processor_key=f"{charge['id']}:void",
                amount=charge["amount"],
                caller=caller,
                now=self.clock(),
                cause=cause,
                **details,
            ),
        )

    def settle_void(
        self,
        charge: dict[str, Any],
        record: dict[str, Any],
        caller: Caller | None,
        completion: Callable[[Transition, dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Void at the processor with the record's key and commit: the charge is canceled (a
        refund of an uncaptured charge; `completion` adds the refund) or expired."""
        try:
            self.processor.void(
                idempotency_key=record["processor_key"],
                authorization_id=charge["processor_authorization"],
            )
        except ProcessorUnavailable as exc:
            raise processor_unavailable() from exc
        except ProcessorRejected as exc:
            self._fail_operation(charge, record, caller, exc.message)
            return self._get(charge["id"]) or charge
        amount, expired = charge["amount"], record["cause"] == "expire"
        state = EXPIRED if expired else CANCELED
        after = _unlocked(charge, state, amount_released=amount)
        transition = Transition(
            [
                Change(
                    charge["pk"],
                    "CHARGE",
                    charge["id"],
                    "expire" if expired else "void",
                    state,
                    from_state=AUTHORIZED,
                    set={"amount_released": amount},
                    remove=("pending_op", *DUE_KEYS),
                    condition="pending_op = :op",
                    values={":op": "void"},
                ),
                finish_operation(record, OP_SUCCEEDED),
            ],
            caller,
            journals=[
                self._journal(
                    charge,
                    "void",
                    ledger.release_hold_entries(charge["merchant"], charge["currency"], amount),
                )
            ],
        )
        if expired:
            transition.events.append(
                Announcement(charge["merchant"], "charge.expired", Charge.from_item(after))
            )
        elif completion is not None:
            completion(transition, after)
        if self.writer.commit(transition) is None:
            return after
        return self._get(charge["id"]) or after  # a guard failed: settled meanwhile

    def expire(self, charge_id: str) -> bool:
        """Void an authorization that was not captured in time. False if it had moved on."""
        item = self._get(charge_id)
        if item is None or item["state"] != AUTHORIZED or item.get("pending_op"):
            return False
        record = self.request_void(item, None, "expire")
        if record is None:
            return False
        settled = self.settle_void({**item, "pending_op": "void"}, record, None)
        return bool(settled["state"] == EXPIRED)

    # ---- update ---------------------------------------------------------------------------

    def update(self, caller: Caller, charge_id: str, params: ChargeUpdateParams) -> Charge:
        """Change what describes a charge (never its money): a transition guarded by the
        charge's state and update version, announced as charge.updated with what it was."""
        for _ in range(3):  # a capture or refund committing meanwhile: read again
            item = self.owned(caller.merchant.id, charge_id)
            if item["state"] == PENDING:
                raise ConflictError(f"Charge {charge_id} is still being processed; retry shortly.")
            changes = self._described(item, params)
            after = {**item, **changes}
            version = int(item.get("version", 0))
            change = Change(
                item["pk"],
                "CHARGE",
                charge_id,
                "update",
                item["state"],
                from_state=item["state"],
                set={**changes, "version": version + 1},
                condition="attribute_not_exists(version)" if version == 0 else "version = :v",
                values={} if version == 0 else {":v": version},
            )
            announced = Announcement(
                item["merchant"],
                "charge.updated",
                Charge.from_item(after),
                operation=f"charge.updated:{version + 1}",
                previous=Charge.from_item(item),
            )
            if self.writer.commit(Transition([change], caller, [announced])) is None:
                return Charge.from_item(after)
        raise ConflictError(f"Charge {charge_id} is changing; retry shortly.")

    @staticmethod
    def _described(item: dict[str, Any], params: ChargeUpdateParams) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        sent = params.model_fields_set
        for name in ("description", "receipt_email", "transfer_group"):
            if name in sent:
                changes[name] = getattr(params, name)
        if "shipping" in sent:
            changes["shipping"] = params.shipping.model_dump() if params.shipping else None
        if params.fraud_details is not None:
            changes["fraud_details"] = {"user_report": params.fraud_details.user_report}
        if params.metadata is not None:
            changes["metadata"] = merged_metadata(item.get("metadata") or {}, params.metadata)
        return changes

    # ---- read -----------------------------------------------------------------------------

    def retrieve(self, merchant: Merchant, charge_id: str) -> Charge:
        return Charge.from_item(self.owned(merchant.id, charge_id))

    def retrieve_many(self, merchant: Merchant, charge_ids: list[str]) -> dict[str, Charge]:
        """The merchant's charges among `charge_ids`, by id, read at once."""
        found = listing.get_owned_many(self.store, merchant.id, charge_ids, "ch")
        return {charge_id: Charge.from_item(item) for charge_id, item in found.items()}

    def receipt(self, charge_id: str, token: str) -> tuple[Charge, Merchant]:
        """The charge a public receipt link names, with its merchant: only with the link's
        unguessable token, so that no charge id alone shows anyone a receipt."""
        item = self._get(charge_id) if charge_id.startswith("ch_") else None
        expected = (item or {}).get("receipt_token") or ""
        matches = secrets.compare_digest(expected.encode(), token.encode("utf-8", "replace"))
        if item is None or not expected or not matches:
            raise ResourceMissingError("receipt", charge_id)
        return Charge.from_item(item), self.merchant_of(item["merchant"])

    def owned(self, merchant_id: str, charge_id: str, param: str = "id") -> dict[str, Any]:
        return listing.get_owned(self.store, merchant_id, charge_id, "ch", param=param)

    def list(
        self,
        merchant: Merchant,
        *,
        limit: int,
        starting_after: str | None,
        ending_before: str | None,
        created: listing.Created | None = None,
        facets: dict[str, list[str]] | None = None,
    ) -> Page[Charge]:
        items = listing.page(
            self.store,
            merchant.id,
            "ch",
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
            created=created,
            facets=facets,
        )
        return items.of(Charge.from_item)
