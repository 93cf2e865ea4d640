"""Request parameters, validated with pydantic and reported the way Stripe reports them.

Form bodies carry every value as a string, JSON bodies carry typed values: the
validators below accept both spellings and nothing looser (no floats for amounts, no
booleans for integers).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from clearline.errors import InvalidRequestError

_INTEGER = re.compile(r"^-?\d{1,18}$")


def _to_int(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"Invalid integer: {value}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER.match(value):
        return int(value)
    raise ValueError(f"Invalid integer: {str(value)[:50]}")


def _to_bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"Invalid boolean: {str(value)[:50]}")


def storable(text: str) -> str:
    """Refuse what storage cannot hold, before anything moves: a NUL byte, or a lone
    surrogate (JSON can spell `\\ud800`, but no UTF-8 string can carry it)."""
    if "\x00" in text:
        raise ValueError("Strings must not contain NUL characters.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("Strings must be valid Unicode (no unpaired surrogates).") from None
    return text


def _to_str(value: Any) -> Any:
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return storable(str(value))
    raise ValueError(f"Invalid string: {str(value)[:50]!r}")


# Stripe's limits on metadata.
METADATA_MAX_KEYS, METADATA_KEY_MAX_LENGTH, METADATA_VALUE_MAX_LENGTH = 50, 40, 500


def _check_metadata(value: dict[str, str]) -> dict[str, str]:
    if len(value) > METADATA_MAX_KEYS:
        raise ValueError(f"Metadata can have at most {METADATA_MAX_KEYS} keys.")
    for key, item in value.items():
        storable(key)
        if not key.strip():
            raise ValueError("Metadata keys must not be empty.")
        if len(key) > METADATA_KEY_MAX_LENGTH:
            raise ValueError(
                f"Metadata keys are at most {METADATA_KEY_MAX_LENGTH} characters long."
            )
        if len(item) > METADATA_VALUE_MAX_LENGTH:
            raise ValueError(
                f"Metadata values are at most {METADATA_VALUE_MAX_LENGTH} characters long."
            )
    return value


_DESCRIPTOR_FORBIDDEN = set("<>\\'\"*")


def _check_descriptor(value: str) -> str:
    if not 5 <= len(value) <= 22:
        raise ValueError("The statement descriptor must be between 5 and 22 characters long.")
    if _DESCRIPTOR_FORBIDDEN & set(value) or not any(c.isalpha() for c in value):
        raise ValueError(
            "The statement descriptor must contain at least one letter and none of < > \\ ' \" *."
        )
    return value


Integer = Annotated[int, BeforeValidator(_to_int)]
Boolean = Annotated[bool, BeforeValidator(_to_bool)]
String = Annotated[str, BeforeValidator(_to_str)]
Metadata = Annotated[dict[str, String], AfterValidator(_check_metadata)]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def _check_email(value: str) -> str:
    if len(value) > 800 or value.count("@") != 1 or not all(value.split("@")):
        raise ValueError(f"Invalid email address: {value[:100]}")
    return value


Email = Annotated[String, AfterValidator(_check_email)]
ShortText = Annotated[String, Field(max_length=5000)]
# An update's metadata: "" for a key deletes it, and "" for the whole hash deletes all.
MetadataUpdate = Metadata | Literal[""]


class AddressParams(Params):
    city: ShortText | None = None
    country: ShortText | None = None
    line1: ShortText | None = None
    line2: ShortText | None = None
    postal_code: ShortText | None = None
    state: ShortText | None = None


class ShippingParams(Params):
    name: ShortText
    address: AddressParams
    carrier: ShortText | None = None
    phone: ShortText | None = None
    tracking_number: ShortText | None = None


def _check_suffix(value: str) -> str:
    if not 1 <= len(value) <= 22 or _DESCRIPTOR_FORBIDDEN & set(value):
        raise ValueError(
            "The statement descriptor suffix must be 1 to 22 characters, none of < > \\ ' \" *."
        )
    return value


class FraudDetailsParams(Params):
    user_report: Literal["fraudulent", "safe"]


class ChargeCreateParams(Params):
    amount: Integer
    currency: String  # checked against the currency table by the charge service
    source: String | None = None
    payment_method: String | None = None
    capture: Boolean = True
    description: Annotated[String, Field(max_length=1000)] | None = None
    metadata: Metadata = Field(default_factory=dict)
    statement_descriptor: Annotated[String, AfterValidator(_check_descriptor)] | None = None
    statement_descriptor_suffix: Annotated[String, AfterValidator(_check_suffix)] | None = None
    receipt_email: Email | None = None
    shipping: ShippingParams | None = None
    transfer_group: ShortText | None = None
    customer: String | None = None
    expand: list[String] = Field(default_factory=list)
    # A Clearline extension: capture this authorization automatically at this Unix time.
    capture_at: Integer | None = None
    # A Clearline extension, as PaymentIntent's: convert at this quote's locked rate.
    fx_quote: String | None = None


class ChargeCaptureParams(Params):
    amount: Integer | None = None
    expand: list[String] = Field(default_factory=list)


class ChargeUpdateParams(Params):
    description: Annotated[String, Field(max_length=1000)] | None = None
    metadata: MetadataUpdate | None = None
    receipt_email: Email | None = None
    shipping: ShippingParams | None = None
    fraud_details: FraudDetailsParams | None = None
    transfer_group: ShortText | None = None
    expand: list[String] = Field(default_factory=list)


class InvoiceSettingsParams(Params):
    default_payment_method: String | None = None  # what a charge naming only the customer uses


class CustomerCreateParams(Params):
    # A token (or a payment method) that becomes the customer's default card.
    source: String | None = None
    payment_method: String | None = None
    email: Email | None = None
    name: ShortText | None = None
    description: ShortText | None = None
    phone: Annotated[String, Field(max_length=20)] | None = None
    metadata: Metadata = Field(default_factory=dict)
    address: AddressParams | None = None
    shipping: ShippingParams | None = None
    invoice_settings: InvoiceSettingsParams | None = None
    expand: list[String] = Field(default_factory=list)


class CustomerUpdateParams(Params):
    email: Email | None = None
    name: ShortText | None = None
    description: ShortText | None = None
    phone: Annotated[String, Field(max_length=20)] | None = None
    metadata: MetadataUpdate | None = None
    address: AddressParams | None = None
    shipping: ShippingParams | None = None
    invoice_settings: InvoiceSettingsParams | None = None
    expand: list[String] = Field(default_factory=list)


class BillingDetailsParams(Params):
    address: AddressParams | None = None
    email: Email | None = None
    name: ShortText | None = None
    phone: Annotated[String, Field(max_length=20)] | None = None


class PaymentMethodAttachParams(Params):
    customer: String
    expand: list[String] = Field(default_factory=list)


class PaymentMethodDetachParams(Params):
    expand: list[String] = Field(default_factory=list)


class PaymentMethodUpdateParams(Params):
    billing_details: BillingDetailsParams | None = None
    metadata: MetadataUpdate | None = None
    expand: list[String] = Field(default_factory=list)


class PaymentIntentCreateParams(Params):
    amount: Integer
    currency: String
    capture_method: Literal["automatic", "automatic_async", "manual"] = "automatic"
    confirm: Boolean = False
    customer: String | None = None
    description: Annotated[String, Field(max_length=1000)] | None = None
    metadata: Metadata = Field(default_factory=dict)
    payment_method: String | None = None
    payment_method_types: list[Literal["card"]] | None = None  # cards are all there is
    receipt_email: Email | None = None
    # on_session / off_session: the card is attached to the customer once a payment works.
    setup_future_usage: Literal["on_session", "off_session"] | None = None
    # The customer is not there to authenticate: a card that asks for it declines instead.
    off_session: Boolean | None = None
    # Where a customer who authenticated (3-D Secure) is sent back to.
    return_url: Annotated[String, Field(max_length=2048)] | None = None
    # Converts the payment at this quote's locked rate.
    fx_quote: String | None = None
    expand: list[String] = Field(default_factory=list)


class PaymentIntentUpdateParams(Params):
    description: Annotated[String, Field(max_length=1000)] | None = None
    metadata: MetadataUpdate | None = None
    payment_method: String | None = None
    receipt_email: Email | None = None
    expand: list[String] = Field(default_factory=list)


class PaymentIntentConfirmParams(Params):
    # What a browser, holding only the publishable key, proves it may confirm with.
    client_secret: String | None = None
    payment_method: String | None = None
    receipt_email: Email | None = None
    return_url: Annotated[String, Field(max_length=2048)] | None = None
    off_session: Boolean | None = None
    expand: list[String] = Field(default_factory=list)


class PaymentIntentCaptureParams(Params):
    amount_to_capture: Integer | None = None
    expand: list[String] = Field(default_factory=list)


class PaymentIntentCancelParams(Params):
    cancellation_reason: (
        Literal["abandoned", "duplicate", "fraudulent", "requested_by_customer"] | None
    ) = None
    expand: list[String] = Field(default_factory=list)


class RefundCancelParams(Params):
    expand: list[String] = Field(default_factory=list)


class RefundUpdateParams(Params):
    metadata: MetadataUpdate | None = None
    expand: list[String] = Field(default_factory=list)


def merged_metadata(current: dict[str, str], update: dict[str, str] | str) -> dict[str, str]:
    """Stripe's metadata update: keys are set, a key set to "" is deleted, and "" for the
    whole hash deletes every key."""
    if update == "":
        return {}
    assert isinstance(update, dict)
    merged = {**current, **update}
    merged = {key: value for key, value in merged.items() if value != ""}
    if len(merged) > METADATA_MAX_KEYS:
        raise InvalidRequestError(
            f"Metadata can have at most {METADATA_MAX_KEYS} keys.", param="metadata"
        )
    return merged


class RefundCreateParams(Params):
    charge: String | None = None
    payment_intent: String | None = None  # refunds the intent's successful charge
    amount: Integer | None = None
    reason: Literal["duplicate", "fraudulent", "requested_by_customer"] | None = None
    metadata: Metadata = Field(default_factory=dict)
    expand: list[String] = Field(default_factory=list)


class ReviewApproveParams(Params):
    expand: list[String] = Field(default_factory=list)


EvidenceText = Annotated[String, Field(max_length=20_000)]
EVIDENCE_MAX_CHARACTERS = 150_000  # all the text fields of one submission together


class DisputeEvidenceParams(Params):
    """The text evidence Stripe takes (file evidence needs file uploads, which Clearline
    does not have)."""

    access_activity_log: EvidenceText | None = None
    billing_address: EvidenceText | None = None
    cancellation_policy_disclosure: EvidenceText | None = None
    cancellation_rebuttal: EvidenceText | None = None
    customer_email_address: EvidenceText | None = None
    customer_name: EvidenceText | None = None
    customer_purchase_ip: EvidenceText | None = None
    duplicate_charge_explanation: EvidenceText | None = None
    duplicate_charge_id: EvidenceText | None = None
    product_description: EvidenceText | None = None
    refund_policy_disclosure: EvidenceText | None = None
    refund_refusal_explanation: EvidenceText | None = None
    service_date: EvidenceText | None = None
    shipping_address: EvidenceText | None = None
    shipping_carrier: EvidenceText | None = None
    shipping_date: EvidenceText | None = None
    shipping_tracking_number: EvidenceText | None = None
    uncategorized_text: EvidenceText | None = None

    def as_text(self) -> dict[str, str]:
        """The fields sent ("" clears one), checked against the whole-hash limit."""
        sent = self.model_dump(exclude_unset=True)
        sent = {key: value or "" for key, value in sent.items()}
        if sum(len(value) for value in sent.values()) > EVIDENCE_MAX_CHARACTERS:
            raise InvalidRequestError(
                f"The evidence may hold at most {EVIDENCE_MAX_CHARACTERS} characters in all.",
                param="evidence",
            )
        return sent


class DisputeUpdateParams(Params):
    evidence: DisputeEvidenceParams | None = None
    metadata: MetadataUpdate | None = None
    submit: Boolean = True
    expand: list[String] = Field(default_factory=list)


class DisputeCloseParams(Params):
    expand: list[String] = Field(default_factory=list)


StatementDescriptor = Annotated[String, Field(max_length=22), AfterValidator(_check_descriptor)]


class PayoutCreateParams(Params):
    amount: Integer
    currency: Annotated[String, Field(min_length=3, max_length=3)]
    description: ShortText | None = None
    destination: String | None = None  # the bank account (its id): the currency's by default
    metadata: Metadata = Field(default_factory=dict)
    method: Literal["standard"] = "standard"  # instant payouts need a debit card destination
    source_type: Literal["card"] = "card"
    statement_descriptor: StatementDescriptor | None = None
    expand: list[String] = Field(default_factory=list)


class FxQuotePaymentUsageParams(Params):
    destination: String | None = None
    on_behalf_of: String | None = None


class FxQuoteUsageParams(Params):
    type: Literal["payment"] = "payment"  # quotes lock rates for payments (no transfers yet)
    payment: FxQuotePaymentUsageParams | None = None


class FxQuoteCreateParams(Params):
    from_currencies: Annotated[list[String], Field(min_length=1, max_length=5)]
    to_currency: Annotated[String, Field(min_length=3, max_length=3)]
    lock_duration: Literal["none", "five_minutes", "hour", "day"] = "none"
    usage: FxQuoteUsageParams = Field(default_factory=FxQuoteUsageParams)
    expand: list[String] = Field(default_factory=list)


RadarItemType = Literal[
    "card_bin",
    "card_fingerprint",
    "case_sensitive_string",
    "country",
    "customer_id",
    "email",
    "ip_address",
    "string",
]
Alias = Annotated[String, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_]+$")]


class ValueListCreateParams(Params):
    alias: Alias
    name: Annotated[String, Field(min_length=1, max_length=100)]
    item_type: RadarItemType = "string"
    metadata: Metadata = Field(default_factory=dict)
    expand: list[String] = Field(default_factory=list)


class ValueListUpdateParams(Params):
    alias: Alias | None = None
    name: Annotated[String, Field(min_length=1, max_length=100)] | None = None
    metadata: MetadataUpdate | None = None
    expand: list[String] = Field(default_factory=list)


class ValueListItemCreateParams(Params):
    value: Annotated[String, Field(min_length=1, max_length=800)]
    value_list: Annotated[String, Field(max_length=100)]
    expand: list[String] = Field(default_factory=list)


class RadarRuleParams(Params):
    rule: Annotated[String, Field(min_length=1, max_length=2000)]  # "Block if ..."


class PayoutUpdateParams(Params):
    metadata: MetadataUpdate | None = None
    expand: list[String] = Field(default_factory=list)


class BankAccountParams(Params):
    currency: Annotated[String, Field(min_length=3, max_length=3)]
    routing_number: Annotated[String, Field(max_length=9)]
    account_number: Annotated[String, Field(max_length=17)]
    account_holder_name: ShortText | None = None


class PayoutCancelParams(Params):
    expand: list[String] = Field(default_factory=list)


P = TypeVar("P", bound=Params)

# Parameters that only mean something on a Connect platform. Silently dropping them would
# move the money to the platform instead of the connected account, so each is refused.
CONNECT_PARAMETERS = frozenset(
    {
        "application_fee",
        "application_fee_amount",
        "destination",
        "on_behalf_of",
        "transfer_data",
        "refund_application_fee",
        "reverse_transfer",
    }
)


def connect_not_supported(param: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"Connect is not supported by Clearline, so {param} cannot be used: each merchant "
        "has its own account and API keys.",
        param=param,
        code="connect_not_supported",
    )


def _param_name(loc: tuple[int | str, ...]) -> str:
    head, *rest = [str(part) for part in loc]
    return head + "".join(f"[{part}]" for part in rest)


def _message(error: Any, param: str) -> str:
    kind = error["type"]
    if kind == "missing":
        return f"Missing required param: {param}."
    if kind == "extra_forbidden":
        return f"Received unknown parameter: {param}"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind == "literal_error":
        return f"Invalid {param}: must be one of {error['ctx']['expected']}"
    if kind in ("dict_type", "list_type", "model_type"):
        return (
            f"Invalid {param}: must be a hash" if kind != "list_type" else f"Invalid array: {param}"
        )
    return f"Invalid {param}: {error['msg']}"


def parse_params(model: type[P], params: dict[str, Any]) -> P:
    """Validate params into `model`, or raise a 400 naming the first offending parameter."""
    for name in params:
        if name in CONNECT_PARAMETERS:
            raise connect_not_supported(name)
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        error = exc.errors()[0]
        # Optional and validated fields add a step naming their validator to the location
        # (`function-before[...]`, `str`): the parameter is what the caller needs.
        loc = tuple(
            p for p in error["loc"] if not (isinstance(p, str) and ("[" in p or p == "str"))
        )
        param = _param_name(loc) if loc else "body"
        code = (
            "parameter_missing"
            if error["type"] == "missing"
            else (
                "parameter_unknown" if error["type"] == "extra_forbidden" else "parameter_invalid"
            )
        )
        raise InvalidRequestError(_message(error, param), param=param, code=code) from exc
