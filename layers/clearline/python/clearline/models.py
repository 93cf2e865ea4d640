"""What the domain hands to its edges: typed, immutable views of stored objects.

The services store items (DynamoDB attributes, index keys, processor keys) and return
these models; the edges (the API, the relay that publishes events) render them in
Stripe's shapes with the `presentation` package. A model carries Clearline's facts, in
Clearline's terms (a charge's internal `state`, not Stripe's `status`/`captured`/`paid`),
and nothing about storage.

Models are also what an event snapshots, so an event can be rendered again later, the way
the object looked when it happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    def snapshot(self) -> dict[str, Any]:
        """The model as an event stores it (JSON-compatible, DynamoDB-storable)."""
        return self.model_dump(mode="json")


class CardChecks(Model):
    cvc_check: str | None = None
    address_line1_check: str | None = None
    address_postal_code_check: str | None = None


class CardDetails(Model):
    """The card as the processor described it: never more than brand and last four."""

    brand: str
    last4: str
    exp_month: int
    exp_year: int
    funding: str
    country: str | None = None
    fingerprint: str | None = None  # the same for every charge of one card number
    network: str | None = None
    checks: CardChecks | None = None


class Outcome(Model):
    network_status: str
    type: str
    reason: str | None = None
    risk_level: str = "not_assessed"  # what Stripe says when nothing assessed the risk
    risk_score: int | None = None  # 0-99, when scored
    seller_message: str | None = None
    rule: dict[str, str] | None = None  # the rule that blocked or reviewed it


class Address(Model):
    city: str | None = None
    country: str | None = None
    line1: str | None = None
    line2: str | None = None
    postal_code: str | None = None
    state: str | None = None


class Shipping(Model):
    name: str
    address: Address
    carrier: str | None = None
    phone: str | None = None
    tracking_number: str | None = None


class Refund(Model):
    kind: Literal["refund"] = "refund"
    id: str
    merchant: str
    charge: str
    payment_intent: str | None = None
    amount: int
    currency: str
    status: str  # pending, succeeded, failed, canceled
    created: int
    created_ms: int = 0
    reason: str | None = None
    description: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    balance_transaction: str | None = None
    failure_reason: str | None = None
    failure_balance_transaction: str | None = None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Refund:
        return cls.model_validate(item)


class Charge(Model):
    kind: Literal["charge"] = "charge"
    id: str
    merchant: str
    state: str  # pending, authorized, captured, failed, canceled, expired
    amount: int
    currency: str
    created: int
    amount_captured: int = 0
    amount_refunded: int = 0
    # The uncaptured part of a partial capture, or a voided or expired authorization.
    amount_released: int = 0
    description: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    statement_descriptor: str | None = None
    statement_descriptor_suffix: str | None = None
    receipt_email: str | None = None
    shipping: Shipping | None = None
    transfer_group: str | None = None
    customer: str | None = None
    payment_intent: str | None = None
    fraud_details: dict[str, str] = Field(default_factory=dict)
    payment_method_id: str | None = None
    card: CardDetails | None = None
    outcome: Outcome | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    balance_transaction: str | None = None
    capture_at: int | None = None
    receipt_token: str | None = None
    refunds: tuple[Refund, ...] = ()
    disputed: bool = False  # true once disputed, whatever the outcome
    review: str | None = None  # the Radar review opened on it (prv_), if any
    # Where the charge settles, when that is not its own currency: what it converts at.
    settlement_currency: str | None = None
    exchange_rate: str | None = None

    @property
    def status(self) -> str:
        """succeeded once the processor approved it (captured or not), else pending/failed."""
        return {"pending": "pending", "failed": "failed"}.get(self.state, "succeeded")

    @property
    def total_refunded(self) -> int:
        """Refunds, plus the uncaptured part of a partial capture or a released hold."""
        return self.amount_refunded + self.amount_released

    @property
    def fully_refunded(self) -> bool:
        return self.status == "succeeded" and self.total_refunded == self.amount

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Charge:
        refunds = sorted(
            (Refund.from_item(r) for r in (item.get("refunds") or {}).values()),
            key=lambda r: (r.created, r.created_ms, r.id),
            reverse=True,
        )
        return cls.model_validate(
            {
                **item,
                "metadata": item.get("metadata") or {},
                "fraud_details": item.get("fraud_details") or {},
                "refunds": refunds,
            }
        )


class BalanceTransaction(Model):
    kind: Literal["balance_transaction"] = "balance_transaction"
    id: str
    merchant: str
    type: str  # charge, refund, adjustment, payout, payout_cancel, payout_failure
    source: str
    amount: int
    fee: int
    net: int
    currency: str
    created: int
    available_on: int
    description: str | None = None
    settlement: str = "unsettled"
    # Stripe's finer category where the type is broad (an adjustment: dispute, dispute_reversal).
    reporting_category: str | None = None
    fee_description: str | None = None
    exchange_rate: str | None = None  # decimal text, when the money was converted

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> BalanceTransaction:
        return cls.model_validate(item)


class FxQuoteRate(Model):
    exchange_rate: str  # decimal text: the base rate less the fee and lock premium
    base_rate: str
    fx_fee_rate: str
    duration_premium: str


class FxQuote(Model):
    kind: Literal["fx_quote"] = "fx_quote"
    id: str
    merchant: str
    created: int
    to_currency: str
    lock_duration: str
    lock_expires_at: int | None = None  # none: the quote locks nothing
    lock_status: str  # active, expired, none
    rates: dict[str, FxQuoteRate]
    rates_as_of: int
    usage: dict[str, Any]


class Review(Model):
    """A payment a rule or the risk scorer put in the merchant's review queue."""

    kind: Literal["review"] = "review"
    id: str
    merchant: str
    charge: str
    payment_intent: str | None = None
    created: int
    created_ms: int = 0
    open: bool = True
    opened_reason: str = "rule"  # rule, manual
    reason: str = "rule"  # why it is open, or how it closed (approved, refunded, ...)
    closed_reason: str | None = None
    # Where the payment came from: the browser that gave the card, when one did.
    ip_address: str | None = None
    ip_country: str | None = None


class EarlyFraudWarning(Model):
    """An issuer's report of fraud on a charge, from the processor."""

    kind: Literal["radar.early_fraud_warning"] = "radar.early_fraud_warning"
    id: str
    merchant: str
    charge: str
    payment_intent: str | None = None
    fraud_type: str
    actionable: bool
    created: int
    created_ms: int = 0


class ValueListItem(Model):
    kind: Literal["radar.value_list_item"] = "radar.value_list_item"
    id: str
    merchant: str
    value: str
    value_list: str
    created: int
    created_ms: int = 0
    deleted: bool = False


class ValueList(Model):
    kind: Literal["radar.value_list"] = "radar.value_list"
    id: str
    merchant: str
    alias: str
    name: str
    item_type: str
    created: int
    metadata: dict[str, str] = Field(default_factory=dict)
    list_items: tuple[ValueListItem, ...] = ()  # the newest, as Stripe embeds them
    has_more_items: bool = False
    deleted: bool = False


class BalanceAmount(Model):
    currency: str
    amount: int


class Balance(Model):
    """What Clearline owes a merchant, per currency."""

    kind: Literal["balance"] = "balance"
    available: tuple[BalanceAmount, ...]
    pending: tuple[BalanceAmount, ...]
    livemode: bool = False


class WebhookEndpoint(Model):
    kind: Literal["webhook_endpoint"] = "webhook_endpoint"
    id: str
    url: str
    enabled_events: tuple[str, ...]
    status: str
    created: int
    description: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    livemode: bool = False
    api_version: str | None = None
    secret: str | None = None  # only in the answer to its creation
    deleted: bool = False

    @classmethod
    def from_item(cls, item: dict[str, Any], secret: str | None = None) -> WebhookEndpoint:
        return cls.model_validate({**item, "secret": secret})


class Event(Model):
    """A change announced: the object as it stood after it, and what it was before."""

    kind: Literal["event"] = "event"
    id: str
    merchant: str
    type: str
    created: int
    object_kind: str
    object: dict[str, Any]  # the model's snapshot
    previous: dict[str, Any] | None = None  # the snapshot before an update
    request_id: str | None = None
    idempotency_key: str | None = None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Event:
        data = item["data"]
        request = item.get("request") or {}
        return cls(
            id=item["id"],
            merchant=item["merchant"],
            type=item["type"],
            created=item["created"],
            object_kind=data["kind"],
            object=data["object"],
            previous=data.get("previous"),
            request_id=request.get("id"),
            idempotency_key=request.get("idempotency_key"),
        )


T = TypeVar("T")


class Customer(Model):
    kind: Literal["customer"] = "customer"
    id: str
    merchant: str
    created: int
    email: str | None = None
    name: str | None = None
    description: str | None = None
    phone: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    address: Address | None = None
    shipping: Shipping | None = None
    default_payment_method: str | None = None
    default_source: str | None = None  # the card a `source` token on create became
    livemode: bool = False
    deleted: bool = False

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Customer:
        return cls.model_validate({**item, "deleted": item.get("state") == "deleted"})


class PaymentIntent(Model):
    kind: Literal["payment_intent"] = "payment_intent"
    id: str
    merchant: str
    state: str  # Stripe's status: requires_payment_method ... succeeded, canceled
    amount: int
    currency: str
    created: int
    capture_method: str = "automatic"
    customer: str | None = None
    description: str | None = None
    fx_quote: str | None = None  # the quote its charge converts at
    metadata: dict[str, str] = Field(default_factory=dict)
    receipt_email: str | None = None
    setup_future_usage: str | None = None
    payment_method: str | None = None
    latest_charge: str | None = None
    last_payment_error: dict[str, Any] | None = None
    amount_received: int = 0
    amount_capturable: int = 0
    client_secret: str = ""
    canceled_at: int | None = None
    cancellation_reason: str | None = None
    # While requires_action: where the customer authenticates (3-D Secure), and returns to.
    next_action_url: str | None = None
    return_url: str | None = None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> PaymentIntent:
        return cls.model_validate({**item, "metadata": item.get("metadata") or {}})


class BillingDetails(Model):
    address: Address | None = None
    email: str | None = None
    name: str | None = None
    phone: str | None = None


class PaymentMethodCard(Model):
    """A stored card as the vault describes it: never the number."""

    brand: str
    last4: str
    exp_month: int
    exp_year: int
    funding: str = "credit"
    country: str | None = None
    fingerprint: str | None = None
    checks: CardChecks | None = None
    three_d_secure_supported: bool = True
    iin: str | None = None  # the BIN: read by fraud rules, never rendered


class PaymentMethod(Model):
    kind: Literal["payment_method"] = "payment_method"
    id: str
    merchant: str
    created: int
    card: PaymentMethodCard
    billing_details: BillingDetails = Field(default_factory=BillingDetails)
    customer: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    livemode: bool = False
    # The address of the browser that gave the card, when one did: read by fraud rules.
    client_ip: str | None = None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> PaymentMethod:
        return cls.model_validate({**item, "metadata": item.get("metadata") or {}})


class DisputeEvidenceDetails(Model):
    due_by: int | None = None
    has_evidence: bool = False
    past_due: bool = False
    submission_count: int = 0


class Dispute(Model):
    kind: Literal["dispute"] = "dispute"
    id: str
    merchant: str
    charge: str
    payment_intent: str | None = None
    amount: int
    currency: str
    reason: str
    status: str
    network_reason_code: str | None = None
    created: int
    evidence: dict[str, str] = Field(default_factory=dict)
    evidence_details: DisputeEvidenceDetails = Field(default_factory=DisputeEvidenceDetails)
    balance_transactions: tuple[BalanceTransaction, ...] = ()
    is_charge_refundable: bool = False
    metadata: dict[str, str] = Field(default_factory=dict)
    card_brand: str | None = None
    inquiry: bool = False  # raised as an inquiry (it may have escalated since)

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Dispute:
        return cls.model_validate(
            {
                **item,
                "evidence": item.get("evidence") or {},
                "metadata": item.get("metadata") or {},
                "balance_transactions": list((item.get("balance_transactions") or {}).values()),
            }
        )


class BankAccount(Model):
    """A merchant's bank account for payouts in one currency: never its whole number."""

    kind: Literal["bank_account"] = "bank_account"
    id: str
    merchant: str
    currency: str
    country: str = "US"
    bank_name: str | None = None
    routing_number: str
    last4: str
    account_holder_name: str | None = None
    created: int


class Payout(Model):
    kind: Literal["payout"] = "payout"
    id: str
    merchant: str
    amount: int
    currency: str
    status: str  # pending, in_transit, paid, failed, canceled
    automatic: bool = False
    method: str = "standard"
    arrival_date: int
    created: int
    description: str | None = None
    statement_descriptor: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    destination: str | None = None  # the bank account's id
    balance_transaction: str | None = None
    failure_balance_transaction: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    reconciliation_status: str = "not_applicable"

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Payout:
        return cls.model_validate({**item, "metadata": item.get("metadata") or {}})


class ReconciliationMismatch(Model):
    """A difference between the processor's settlement file and the ledger (for operators)."""

    kind: Literal["reconciliation_mismatch"] = "reconciliation_mismatch"
    id: str
    file: str
    etag: str | None = None  # the version of the file
    mismatch: str  # what kind of difference
    row: int | None = None
    processor_reference: str | None = None
    charge_id: str | None = None
    detail: str
    amount: int = 0
    currency: str | None = None
    # The row's other fields (a settlement file's), which resolving the mismatch reads.
    row_type: str | None = None
    fee: int = 0
    refund_id: str | None = None
    settlement_date: str | None = None


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list, newest first, and whether there is more beyond it."""

    items: tuple[T, ...]
    has_more: bool
