"""The API's OpenAPI 3.1 document, served at /openapi.json, and a Swagger UI page for it.

Powertools describes the routes, their path and query parameters, from the handlers'
signatures. The routes read their bodies themselves (form-encoded or JSON, see
clearline.forms), authenticate themselves and answer Stripe-shaped errors, so Powertools
knows none of that: this module completes its document with the request bodies (from the
same pydantic models the routes validate with), the Idempotency-Key header, the two ways
to present a secret key, Stripe's error responses and the objects the API returns (as the
render functions in the library shape them). Built once per execution environment.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from pydantic import BaseModel

from clearline import disputes, fx, payouts, reviews, value_lists
from clearline.idempotency import KEY_MAX_LENGTH
from clearline.money import CURRENCIES, MAX_AMOUNT
from clearline.params import (
    EVIDENCE_MAX_CHARACTERS,
    METADATA_KEY_MAX_LENGTH,
    METADATA_MAX_KEYS,
    METADATA_VALUE_MAX_LENGTH,
    ChargeCaptureParams,
    ChargeCreateParams,
    ChargeUpdateParams,
    CustomerCreateParams,
    CustomerUpdateParams,
    DisputeCloseParams,
    DisputeUpdateParams,
    FxQuoteCreateParams,
    PaymentIntentCancelParams,
    PaymentIntentCaptureParams,
    PaymentIntentConfirmParams,
    PaymentIntentCreateParams,
    PaymentIntentUpdateParams,
    PaymentMethodAttachParams,
    PaymentMethodDetachParams,
    PaymentMethodUpdateParams,
    PayoutCancelParams,
    PayoutCreateParams,
    PayoutUpdateParams,
    RefundCancelParams,
    RefundCreateParams,
    RefundUpdateParams,
    ReviewApproveParams,
    ValueListCreateParams,
    ValueListItemCreateParams,
    ValueListUpdateParams,
)
from clearline.versions import CURRENT_VERSION, VERSION_PATTERN
from clearline.webhooks import WebhookEndpointCreateParams, WebhookEndpointUpdateParams
from presentation.disputes import FILE_EVIDENCE, TEXT_EVIDENCE
from presentation.payouts import DEFAULT_DESCRIPTION as PAYOUT_DESCRIPTION

TITLE = "Clearline API"
MAX_BODY_KIB = 64  # the api function refuses larger bodies (api_routes.MAX_BODY_BYTES)
ERROR_TYPES = ["api_error", "card_error", "idempotency_error", "invalid_request_error"]
SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"basicAuth": []}]
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

Schema = dict[str, Any]


@dataclass(frozen=True)
class Operation:
    operation_id: str
    tag: str
    summary: str
    returns: str  # the component schema of the 200 response
    body: type[BaseModel] | None = None  # what a POST takes
    description: str | None = None


# Every route the app serves, by (method, path). Building the document fails when a route is
# missing here, or a POST has no body model, so a new route cannot ship undocumented.
OPERATIONS: dict[tuple[str, str], Operation] = {
    ("post", "/v1/charges"): Operation(
        "create_charge",
        "Charges",
        "Create a charge",
        "charge",
        ChargeCreateParams,
        "Authorizes `amount` on the tokenized card (`source` or `payment_method`) and, "
        "unless `capture` is false, captures it. A declined card is a 402 naming the "
        "failed charge. With `capture=false`, `capture_at` (a Clearline extension) "
        "schedules the capture inside the 7-day authorization window.",
    ),
    ("get", "/v1/charges/search"): Operation(
        "search_charges",
        "Charges",
        "Search charges",
        "charge_search_result",
        description="Stripe's search query language: `field:'value'`, `-` to negate, "
        "`AND` or `OR` (not both), `>`/`<`/`>=`/`<=` on `amount` and `created`, "
        "`metadata['key']:'value'`, `~` for a substring (3 characters or more), `null` for "
        "no value. A malformed query is a 400 that names the position. Search is eventually "
        "consistent: a charge is found about a second after it is written. One request "
        "examines at most 1,000 charges, newest first (a `created` range narrows them); when "
        "that bound is reached first, `next_page` resumes the search.",
    ),
    ("get", "/v1/charges/{charge_id}"): Operation(
        "retrieve_charge", "Charges", "Retrieve a charge", "charge"
    ),
    ("post", "/v1/charges/{charge_id}"): Operation(
        "update_charge",
        "Charges",
        "Update a charge",
        "charge",
        ChargeUpdateParams,
        "Changes what describes a charge (never its amount): `description`, `metadata` "
        '(a key set to "" is deleted), `receipt_email`, `shipping`, `fraud_details`, '
        "`transfer_group`. Announced as `charge.updated` with `previous_attributes`.",
    ),
    ("get", "/v1/charges"): Operation(
        "list_charges", "Charges", "List charges, newest first", "charge_list"
    ),
    ("post", "/v1/charges/{charge_id}/capture"): Operation(
        "capture_charge",
        "Charges",
        "Capture an authorized charge",
        "charge",
        ChargeCaptureParams,
        "Captures `amount` (by default all of it) of an uncaptured charge; the rest of the "
        "hold is released and counted in `amount_refunded`.",
    ),
    ("post", "/v1/refunds"): Operation(
        "create_refund",
        "Refunds",
        "Refund a charge",
        "refund",
        RefundCreateParams,
        "Refunds `amount` (by default all that is left) of a captured charge. On an "
        "uncaptured charge, voids the authorization instead (in full only).",
    ),
    ("get", "/v1/refunds/{refund_id}"): Operation(
        "retrieve_refund", "Refunds", "Retrieve a refund", "refund"
    ),
    ("post", "/v1/refunds/{refund_id}"): Operation(
        "update_refund",
        "Refunds",
        "Update a refund",
        "refund",
        RefundUpdateParams,
        'Changes a refund\'s `metadata` (a key set to "" is deleted). Announced as '
        "`refund.updated` with `previous_attributes`.",
    ),
    ("post", "/v1/refunds/{refund_id}/cancel"): Operation(
        "cancel_refund",
        "Refunds",
        "Cancel a pending refund",
        "refund",
        RefundCancelParams,
        "Cancels a refund the processor has not made yet (status `pending`): the processor "
        "is asked to revoke it first, and the amount is released back to the charge. A "
        "refund the processor made meanwhile settles as made, and the cancel is a 400.",
    ),
    ("get", "/v1/refunds"): Operation(
        "list_refunds", "Refunds", "List refunds, or one charge's refunds", "refund_list"
    ),
    ("get", "/v1/charges/{charge_id}/refunds"): Operation(
        "list_charge_refunds", "Refunds", "List a charge's refunds", "refund_list"
    ),
    ("get", "/v1/balance"): Operation(
        "retrieve_balance",
        "Balance",
        "Retrieve the balance",
        "balance",
        description="What Clearline owes the merchant, per currency: `pending` until the "
        "processor settles the funds, then `available`.",
    ),
    ("get", "/v1/balance_transactions/{txn_id}"): Operation(
        "retrieve_balance_transaction",
        "Balance",
        "Retrieve a balance transaction",
        "balance_transaction",
    ),
    ("get", "/v1/balance_transactions"): Operation(
        "list_balance_transactions",
        "Balance",
        "List balance transactions, newest first",
        "balance_transaction_list",
    ),
    ("get", "/v1/events/{event_id}"): Operation(
        "retrieve_event", "Events", "Retrieve an event", "event"
    ),
    ("get", "/v1/events"): Operation(
        "list_events", "Events", "List events, newest first", "event_list"
    ),
    ("post", "/v1/customers"): Operation(
        "create_customer",
        "Customers",
        "Create a customer",
        "customer",
        CustomerCreateParams,
        "Who pays: charges take `customer` to name them, and list by it.",
    ),
    ("get", "/v1/customers/search"): Operation(
        "search_customers",
        "Customers",
        "Search customers",
        "customer_search_result",
        description="The query language of charge search, over `created`, `email`, "
        "`metadata`, `name` and `phone`; eventually consistent, and bounded the same way.",
    ),
    ("get", "/v1/customers/{customer_id}"): Operation(
        "retrieve_customer",
        "Customers",
        "Retrieve a customer",
        "customer",
        description="A deleted customer is still found, as `deleted: true`.",
    ),
    ("post", "/v1/customers/{customer_id}"): Operation(
        "update_customer",
        "Customers",
        "Update a customer",
        "customer",
        CustomerUpdateParams,
        'Announced as `customer.updated` with `previous_attributes`; a metadata key set to "" '
        "is deleted.",
    ),
    ("delete", "/v1/customers/{customer_id}"): Operation(
        "delete_customer",
        "Customers",
        "Delete a customer",
        "customer",
        description="The customer leaves the lists and cannot be charged; its charges stay.",
    ),
    ("get", "/v1/customers"): Operation(
        "list_customers", "Customers", "List customers, newest first", "customer_list"
    ),
    ("post", "/v1/payment_intents"): Operation(
        "create_payment_intent",
        "PaymentIntents",
        "Create a PaymentIntent",
        "payment_intent",
        PaymentIntentCreateParams,
        "A payment to collect: `amount`, `currency`, and a `payment_method` now or at "
        "confirmation. With `confirm=true` it is confirmed at once. `capture_method=manual` "
        "stops at `requires_capture`.",
    ),
    ("get", "/v1/payment_intents/{intent_id}"): Operation(
        "retrieve_payment_intent",
        "PaymentIntents",
        "Retrieve a PaymentIntent",
        "payment_intent",
        description="With the secret key; or with the publishable key and the intent's "
        "`client_secret` (a browser's checkout), without `expand`.",
    ),
    ("post", "/v1/payment_intents/{intent_id}"): Operation(
        "update_payment_intent",
        "PaymentIntents",
        "Update a PaymentIntent",
        "payment_intent",
        PaymentIntentUpdateParams,
        "Before it is confirmed: `description`, `metadata`, `receipt_email`, `payment_method`.",
    ),
    ("post", "/v1/payment_intents/{intent_id}/confirm"): Operation(
        "confirm_payment_intent",
        "PaymentIntents",
        "Confirm a PaymentIntent",
        "payment_intent",
        PaymentIntentConfirmParams,
        "Charges the payment method through a charge of its own (`latest_charge`). A decline "
        "is a 402 whose error carries the intent, left `requires_payment_method` with "
        "`last_payment_error`; a processor that does not answer leaves `processing` until the "
        "charge settles. A browser may confirm with the publishable key and `client_secret`.",
    ),
    ("post", "/v1/payment_intents/{intent_id}/capture"): Operation(
        "capture_payment_intent",
        "PaymentIntents",
        "Capture a PaymentIntent",
        "payment_intent",
        PaymentIntentCaptureParams,
        "Captures `amount_to_capture` (by default all) of a `requires_capture` intent; the "
        "rest of the hold is released.",
    ),
    ("post", "/v1/payment_intents/{intent_id}/cancel"): Operation(
        "cancel_payment_intent",
        "PaymentIntents",
        "Cancel a PaymentIntent",
        "payment_intent",
        PaymentIntentCancelParams,
        "Before it succeeds; a held authorization is voided.",
    ),
    ("get", "/v1/payment_intents"): Operation(
        "list_payment_intents",
        "PaymentIntents",
        "List PaymentIntents, newest first",
        "payment_intent_list",
    ),
    ("get", "/v1/payment_methods/{payment_method_id}"): Operation(
        "retrieve_payment_method",
        "PaymentMethods",
        "Retrieve a PaymentMethod",
        "payment_method",
        description="A card the vault holds (made in a browser by clearline.js with the "
        "publishable key): brand, last four, expiry and fingerprint, never the number.",
    ),
    ("post", "/v1/payment_methods/{payment_method_id}"): Operation(
        "update_payment_method",
        "PaymentMethods",
        "Update a PaymentMethod",
        "payment_method",
        PaymentMethodUpdateParams,
        "`metadata` and `billing_details`; announced as `payment_method.updated`.",
    ),
    ("post", "/v1/payment_methods/{payment_method_id}/attach"): Operation(
        "attach_payment_method",
        "PaymentMethods",
        "Attach a PaymentMethod to a customer",
        "payment_method",
        PaymentMethodAttachParams,
        "The card can then be charged again for that `customer` (and only with it). A test "
        "alias (`pm_card_visa`) attaches a new card of its own.",
    ),
    ("post", "/v1/payment_methods/{payment_method_id}/detach"): Operation(
        "detach_payment_method",
        "PaymentMethods",
        "Detach a PaymentMethod from its customer",
        "payment_method",
        PaymentMethodDetachParams,
        "A customer's default card that is detached stops being its default.",
    ),
    ("get", "/v1/payment_methods"): Operation(
        "list_payment_methods",
        "PaymentMethods",
        "List PaymentMethods, newest first",
        "payment_method_list",
        description="All the account's, or a `customer`'s.",
    ),
    ("get", "/v1/customers/{customer_id}/payment_methods"): Operation(
        "list_customer_payment_methods",
        "PaymentMethods",
        "List a customer's PaymentMethods",
        "payment_method_list",
    ),
    ("get", "/v1/disputes"): Operation(
        "list_disputes",
        "Disputes",
        "List disputes, newest first",
        "dispute_list",
        description="All the account's, or a `charge`'s or a `payment_intent`'s.",
    ),
    ("get", "/v1/disputes/{dispute_id}"): Operation(
        "retrieve_dispute",
        "Disputes",
        "Retrieve a dispute",
        "dispute",
        description="A cardholder's bank contests a charge. A chargeback (`needs_response`) "
        "withdraws the amount and a dispute fee from the balance at once, and the charge "
        "cannot be refunded while it stands; an inquiry (`warning_needs_response`) moves no "
        "money unless it escalates. `evidence` starts prefilled from the charge (description, "
        "receipt email, shipping, metadata); answer before `evidence_details.due_by`.",
    ),
    ("post", "/v1/disputes/{dispute_id}"): Operation(
        "update_dispute",
        "Disputes",
        "Update or submit a dispute's evidence",
        "dispute",
        DisputeUpdateParams,
        "Sets text `evidence` and `metadata`. `submit` defaults to true: the evidence is sent "
        "to the card network at once, and the dispute is `under_review` until the network "
        "decides; submitting again is a 400 (`dispute_already_submitted`). With "
        "`submit=false` the evidence is only staged. When `due_by` passes, staged evidence is "
        "submitted as it is, and a dispute with none is lost. In test mode, `winning_evidence` "
        "or `losing_evidence` in `evidence[uncategorized_text]` makes the network decide a "
        "chargeback `won` (the amount is reinstated, not the fee) or `lost`, and close an "
        "inquiry.",
    ),
    ("post", "/v1/disputes/{dispute_id}/close"): Operation(
        "close_dispute",
        "Disputes",
        "Close (accept) a dispute",
        "dispute",
        DisputeCloseParams,
        "Accepts the dispute, irreversibly: a chargeback is `lost` and its amount and fee are "
        "not returned; an inquiry is `warning_closed`. A closed dispute is a 400.",
    ),
    ("post", "/v1/payouts"): Operation(
        "create_payout",
        "Payouts",
        "Create a payout",
        "payout",
        PayoutCreateParams,
        "Sends `amount` of the available balance in `currency` to the merchant's bank account "
        "for it (standard payouts only). The amount leaves `available` at once; the payout is "
        "`pending` until the bank takes it (`in_transit`), then `paid` on its `arrival_date`, "
        "or `failed` with the money returned. More than the available balance is a 400, "
        "`balance_insufficient`; no bank account in the currency is a 400, "
        "`payouts_not_allowed`. The bank account is set by a Clearline operator (`clearline "
        "merchants bank-account`), not through this API.",
    ),
    ("get", "/v1/payouts/{payout_id}"): Operation(
        "retrieve_payout", "Payouts", "Retrieve a payout", "payout"
    ),
    ("post", "/v1/payouts/{payout_id}"): Operation(
        "update_payout",
        "Payouts",
        "Update a payout",
        "payout",
        PayoutUpdateParams,
        'Changes a payout\'s `metadata` (a key set to "" is deleted). Announced as '
        "`payout.updated` with `previous_attributes`.",
    ),
    ("post", "/v1/payouts/{payout_id}/cancel"): Operation(
        "cancel_payout",
        "Payouts",
        "Cancel a pending payout",
        "payout",
        PayoutCancelParams,
        "Only a `pending` payout the merchant created, and not yet sent to the bank, can be "
        "canceled: its amount is available again. Any other (sent, settled, or automatic) is a "
        "400, `payout_not_cancelable`.",
    ),
    ("get", "/v1/payouts"): Operation(
        "list_payouts",
        "Payouts",
        "List payouts, newest first",
        "payout_list",
        description="The merchant's payouts and the daily automatic ones (`automatic: true`); "
        "filter by `status`, `created` or `arrival_date`.",
    ),
    ("post", "/v1/fx_quotes"): Operation(
        "create_fx_quote",
        "FX quotes",
        "Quote and lock exchange rates",
        "fx_quote",
        FxQuoteCreateParams,
        "Rates from each of `from_currencies` to `to_currency` (one of the merchant's "
        "settlement currencies): the mid-market `base_rate`, less the merchant's FX fee and a "
        "premium for the lock. With `lock_duration` `five_minutes`, `hour` or `day`, a charge "
        "or PaymentIntent created with `fx_quote` before `lock_expires_at` converts at exactly "
        "`exchange_rate`; a quote without a lock only informs. Stale rates are a 503, "
        "`fx_rates_unavailable`: retry shortly.",
    ),
    ("get", "/v1/fx_quotes/{quote_id}"): Operation(
        "retrieve_fx_quote", "FX quotes", "Retrieve an FX quote", "fx_quote"
    ),
    ("get", "/v1/fx_quotes"): Operation(
        "list_fx_quotes",
        "FX quotes",
        "List FX quotes, newest first",
        "fx_quote_list",
        description="The merchant's quotes; `lock_status` says which may still be used.",
    ),
    ("get", "/v1/reviews"): Operation(
        "list_reviews",
        "Radar",
        "List open reviews, newest first",
        "review_list",
        description="The payments in the review queue: those a rule sent to review (the "
        "charge's `outcome.type` is `manual_review`), and those the second look after the "
        "authorization found risky. Closed reviews are retrieved by id.",
    ),
    ("get", "/v1/reviews/{review_id}"): Operation(
        "retrieve_review", "Radar", "Retrieve a review", "review"
    ),
    ("post", "/v1/reviews/{review_id}/approve"): Operation(
        "approve_review",
        "Radar",
        "Approve a review",
        "review",
        ReviewApproveParams,
        "Closes an open review as `approved` (`review.closed`); a closed review is a 400.",
    ),
    ("get", "/v1/radar/early_fraud_warnings"): Operation(
        "list_early_fraud_warnings",
        "Radar",
        "List early fraud warnings, newest first",
        "early_fraud_warning_list",
        description="Issuers' reports of fraud on the merchant's charges, as the processor "
        "forwards them; filter by `charge`, `payment_intent` or `created`. A warning is "
        "`actionable` while its charge is neither disputed nor fully refunded: refunding it "
        "then heads off a dispute.",
    ),
    ("get", "/v1/radar/early_fraud_warnings/{warning_id}"): Operation(
        "retrieve_early_fraud_warning",
        "Radar",
        "Retrieve an early fraud warning",
        "early_fraud_warning",
    ),
    ("post", "/v1/radar/value_lists"): Operation(
        "create_value_list",
        "Radar",
        "Create a value list",
        "value_list",
        ValueListCreateParams,
        "A set of values (card BINs, fingerprints, countries, emails, IP addresses, customer "
        "ids or text, by `item_type`) that fraud rules name by `alias`: `Block if :card_bin: "
        "in @blocked_bins`. An alias is unique per account (400 `resource_already_exists`).",
    ),
    ("get", "/v1/radar/value_lists/{list_id}"): Operation(
        "retrieve_value_list", "Radar", "Retrieve a value list", "value_list"
    ),
    ("post", "/v1/radar/value_lists/{list_id}"): Operation(
        "update_value_list",
        "Radar",
        "Update a value list",
        "value_list",
        ValueListUpdateParams,
        "Changes `name`, `metadata` or `alias` (rules naming the old alias then find nothing).",
    ),
    ("delete", "/v1/radar/value_lists/{list_id}"): Operation(
        "delete_value_list", "Radar", "Delete a value list", "deleted_value_list"
    ),
    ("get", "/v1/radar/value_lists"): Operation(
        "list_value_lists",
        "Radar",
        "List value lists, newest first",
        "value_list_list",
        description="Filter by `alias` or `created`.",
    ),
    ("post", "/v1/radar/value_list_items"): Operation(
        "create_value_list_item",
        "Radar",
        "Add a value to a value list",
        "value_list_item",
        ValueListItemCreateParams,
        "The value must be of the list's `item_type`, and not in the list already "
        "(400 `resource_already_exists`); lists hold up to 10,000 values.",
    ),
    ("get", "/v1/radar/value_list_items/{item_id}"): Operation(
        "retrieve_value_list_item", "Radar", "Retrieve a value list item", "value_list_item"
    ),
    ("delete", "/v1/radar/value_list_items/{item_id}"): Operation(
        "delete_value_list_item",
        "Radar",
        "Remove a value from its list",
        "deleted_value_list_item",
    ),
    ("get", "/v1/radar/value_list_items"): Operation(
        "list_value_list_items",
        "Radar",
        "List a value list's items, newest first",
        "value_list_item_list",
        description="`value_list` is required; `value` keeps the items containing it.",
    ),
    ("post", "/v1/webhook_endpoints"): Operation(
        "create_webhook_endpoint",
        "Webhook endpoints",
        "Create a webhook endpoint",
        "webhook_endpoint",
        WebhookEndpointCreateParams,
        "The response is the only one that shows the signing `secret` (`whsec_...`).",
    ),
    ("get", "/v1/webhook_endpoints/{endpoint_id}"): Operation(
        "retrieve_webhook_endpoint",
        "Webhook endpoints",
        "Retrieve a webhook endpoint",
        "webhook_endpoint",
    ),
    ("post", "/v1/webhook_endpoints/{endpoint_id}"): Operation(
        "update_webhook_endpoint",
        "Webhook endpoints",
        "Update a webhook endpoint",
        "webhook_endpoint",
        WebhookEndpointUpdateParams,
    ),
    ("delete", "/v1/webhook_endpoints/{endpoint_id}"): Operation(
        "delete_webhook_endpoint",
        "Webhook endpoints",
        "Delete a webhook endpoint",
        "deleted_webhook_endpoint",
    ),
    ("get", "/v1/webhook_endpoints"): Operation(
        "list_webhook_endpoints",
        "Webhook endpoints",
        "List webhook endpoints",
        "webhook_endpoint_list",
    ),
}


# Where the ids a response carries lead: OpenAPI links, so clients and fuzzers can follow
# a created or listed object to the operations that take it.
_ID, _FIRST_ID = "$response.body#/id", "$response.body#/data/0/id"


def _link(target: str, body: Schema | None = None, **parameters: str) -> Schema:
    link: Schema = {"operationId": target}
    if parameters:
        link["parameters"] = parameters
    if body is not None:
        link["requestBody"] = body
    return link


LINKS: dict[tuple[str, str], dict[str, Schema]] = {
    ("post", "/v1/charges"): {
        "RetrieveCharge": _link("retrieve_charge", charge_id=_ID),
        "CaptureCharge": _link("capture_charge", charge_id=_ID),
        "RefundCharge": _link("create_refund", {"charge": _ID}),
        "ListChargeRefunds": _link("list_charge_refunds", charge_id=_ID),
        "RetrieveBalanceTransaction": _link(
            "retrieve_balance_transaction", txn_id="$response.body#/balance_transaction"
        ),
    },
    ("post", "/v1/charges/{charge_id}/capture"): {
        "RetrieveCharge": _link("retrieve_charge", charge_id=_ID),
        "RefundCharge": _link("create_refund", {"charge": _ID}),
    },
    ("post", "/v1/refunds"): {
        "RetrieveRefund": _link("retrieve_refund", refund_id=_ID),
        "RetrieveCharge": _link("retrieve_charge", charge_id="$response.body#/charge"),
    },
    ("get", "/v1/charges"): {"RetrieveCharge": _link("retrieve_charge", charge_id=_FIRST_ID)},
    ("get", "/v1/refunds"): {"RetrieveRefund": _link("retrieve_refund", refund_id=_FIRST_ID)},
    ("get", "/v1/balance_transactions"): {
        "RetrieveBalanceTransaction": _link("retrieve_balance_transaction", txn_id=_FIRST_ID),
    },
    ("get", "/v1/events"): {"RetrieveEvent": _link("retrieve_event", event_id=_FIRST_ID)},
    ("post", "/v1/webhook_endpoints"): {
        "RetrieveWebhookEndpoint": _link("retrieve_webhook_endpoint", endpoint_id=_ID),
        "UpdateWebhookEndpoint": _link("update_webhook_endpoint", endpoint_id=_ID),
        "DeleteWebhookEndpoint": _link("delete_webhook_endpoint", endpoint_id=_ID),
    },
    ("get", "/v1/webhook_endpoints"): {
        "RetrieveWebhookEndpoint": _link("retrieve_webhook_endpoint", endpoint_id=_FIRST_ID),
    },
    ("get", "/v1/disputes"): {"RetrieveDispute": _link("retrieve_dispute", dispute_id=_FIRST_ID)},
    ("get", "/v1/disputes/{dispute_id}"): {
        "RetrieveCharge": _link("retrieve_charge", charge_id="$response.body#/charge"),
    },
    ("post", "/v1/payouts"): {
        "RetrievePayout": _link("retrieve_payout", payout_id=_ID),
        "CancelPayout": _link("cancel_payout", payout_id=_ID),
        "RetrieveBalanceTransaction": _link(
            "retrieve_balance_transaction", txn_id="$response.body#/balance_transaction"
        ),
    },
    ("get", "/v1/payouts"): {"RetrievePayout": _link("retrieve_payout", payout_id=_FIRST_ID)},
}


# ---- request bodies ------------------------------------------------------------------------

_METADATA: Schema = {
    "type": "object",
    "description": "Your own key-value pairs. Stripe's limits: at most "
    f"{METADATA_MAX_KEYS} keys, keys up to {METADATA_KEY_MAX_LENGTH} characters, values up "
    f"to {METADATA_VALUE_MAX_LENGTH}.",
    "maxProperties": METADATA_MAX_KEYS,
    "propertyNames": {"minLength": 1, "maxLength": METADATA_KEY_MAX_LENGTH, "pattern": r"\S"},
    "additionalProperties": {"type": "string", "maxLength": METADATA_VALUE_MAX_LENGTH},
}
_METADATA_UPDATE: Schema = {
    "anyOf": [
        {**_METADATA, "description": 'Merged into the metadata; a key set to "" is deleted.'},
        {"type": "string", "enum": [""], "description": '"" deletes every key.'},
    ]
}
_AMOUNT: Schema = {
    "type": "integer",
    "minimum": 1,
    "maximum": MAX_AMOUNT,
    "description": "In the currency's minor unit (cents for usd, yen for jpy).",
}
_DESCRIPTOR_RULES = "5 to 22 characters, at least one letter, none of < > \\ ' \" *."
_DESCRIPTOR: Schema = {
    "minLength": 5,
    "maxLength": 22,
    # Stripe asks for a Latin letter; the API takes any letter, the schema the former.
    "pattern": "^[^<>\\\\'\"*]*[A-Za-z][^<>\\\\'\"*]*$",
}
_TOKEN = "A processor token for the card (`tok_...` or `pm_...`); card numbers are refused."
_WEBHOOK_URL = "Where events are posted: https, on a public address (test mode is more lenient)."
_EXPAND: Schema = {
    "type": "array",
    "items": {"type": "string"},
    "description": "Fields of the response to expand from an id to the object it names "
    "(`balance_transaction`, `charge.balance_transaction`), up to 4 levels deep.",
}

# What the models' own schemas cannot say: limits enforced by validators and services.
_REFINEMENTS: dict[type[BaseModel], dict[str, Schema]] = {
    ChargeCreateParams: {
        "amount": {
            **_AMOUNT,
            "description": _AMOUNT["description"] + " Each currency has a minimum (50 for usd).",
            "examples": [2000],
        },
        "currency": {
            "enum": sorted(CURRENCIES),
            "description": "Three-letter ISO code (case-insensitive).",
            "examples": ["usd"],
        },
        "source": {
            "minLength": 1,
            "description": _TOKEN,
            "examples": ["tok_visa", "tok_chargeDeclined"],
        },
        "payment_method": {
            "minLength": 1,
            "description": _TOKEN + " Used when `source` is absent.",
            "examples": ["pm_card_visa"],
        },
        "capture": {"description": "False places a hold to capture later."},
        "metadata": _METADATA,
        "statement_descriptor": {
            **_DESCRIPTOR,
            "description": "What the cardholder's statement shows: " + _DESCRIPTOR_RULES,
        },
        "expand": _EXPAND,
        "capture_at": {
            "description": "With `capture=false`: the Unix time at which to capture the "
            "authorization, in the future and within the 7-day authorization window."
        },
    },
    ChargeCaptureParams: {
        "amount": {
            **_AMOUNT,
            "description": "How much to capture, at most the authorized amount; by default all.",
        },
        "expand": _EXPAND,
    },
    ChargeUpdateParams: {
        "metadata": _METADATA_UPDATE,
        "expand": _EXPAND,
    },
    RefundUpdateParams: {"metadata": _METADATA_UPDATE, "expand": _EXPAND},
    RefundCancelParams: {"expand": _EXPAND},
    CustomerCreateParams: {"metadata": _METADATA, "expand": _EXPAND},
    CustomerUpdateParams: {"metadata": _METADATA_UPDATE, "expand": _EXPAND},
    PaymentIntentCreateParams: {"metadata": _METADATA, "expand": _EXPAND},
    PaymentIntentUpdateParams: {"metadata": _METADATA_UPDATE, "expand": _EXPAND},
    PaymentIntentConfirmParams: {"expand": _EXPAND},
    PaymentIntentCaptureParams: {"expand": _EXPAND},
    PaymentIntentCancelParams: {"expand": _EXPAND},
    RefundCreateParams: {
        "charge": {"description": "The charge to refund (`ch_...`)."},
        "amount": {**_AMOUNT, "description": "By default all that is left to refund."},
        "metadata": _METADATA,
        "expand": _EXPAND,
    },
    DisputeUpdateParams: {
        "evidence": {
            "type": "object",  # sent in bracket notation: evidence[uncategorized_text]=...
            "description": 'Text evidence, merged into what is staged (a field set to "" '
            f"clears it); at most {EVIDENCE_MAX_CHARACTERS:,} characters in all. File evidence "
            "is not supported.",
        },
        "metadata": _METADATA_UPDATE,
        "submit": {
            "description": "True (the default) sends the evidence to the card network now; "
            "false only stages it."
        },
        "expand": _EXPAND,
    },
    DisputeCloseParams: {"expand": _EXPAND},
    PayoutCreateParams: {
        "amount": {
            **_AMOUNT,
            "description": _AMOUNT["description"] + " At most the available balance.",
            "examples": [10000],
        },
        "currency": {
            "enum": sorted(CURRENCIES),
            "description": "Three-letter ISO code (case-insensitive); the merchant needs a bank "
            "account in it.",
            "examples": ["usd"],
        },
        "destination": {
            "description": "The bank account's id (`ba_...`). A merchant has one per "
            "currency, used by default; any other id is refused (`resource_missing`)."
        },
        "metadata": _METADATA,
        "method": {"description": "Only `standard` (instant payouts are not offered)."},
        "statement_descriptor": {
            **_DESCRIPTOR,
            "description": "What the merchant's bank statement shows: " + _DESCRIPTOR_RULES,
        },
        "expand": _EXPAND,
    },
    PayoutUpdateParams: {"metadata": _METADATA_UPDATE, "expand": _EXPAND},
    PayoutCancelParams: {"expand": _EXPAND},
    WebhookEndpointCreateParams: {
        "url": {
            "format": "uri",
            "description": _WEBHOOK_URL,
            "examples": ["https://example.com/clearline/webhooks"],
        },
        "enabled_events": {
            "minItems": 1,
            "description": "Event types to send, or `*` for all.",
            "examples": [["charge.succeeded", "charge.refunded"], ["*"]],
        },
        "metadata": _METADATA,
    },
    WebhookEndpointUpdateParams: {
        "url": {"format": "uri", "description": _WEBHOOK_URL},
        "enabled_events": {"description": "Event types to send, or `*` for all."},
        "metadata": {**_METADATA, "description": "Merged into the endpoint's metadata."},
        "disabled": {"description": "True stops deliveries; false resumes them."},
    },
}


# Rules across parameters, which the services check after the model has validated.
_RULES: dict[type[BaseModel], Schema] = {
    ChargeCreateParams: {
        "description": "One of `source` and `payment_method` is required.",
        "dependentSchemas": {
            "capture_at": {"required": ["capture"], "properties": {"capture": {"const": False}}}
        },
    },
}


def _without_titles(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _without_titles(v) for k, v in schema.items() if k != "title"}
    if isinstance(schema, list):
        return [_without_titles(item) for item in schema]
    return schema


def _not_null(schema: Schema) -> Schema:
    """An optional parameter is sent by leaving it out (a form body cannot carry a null)."""
    options = schema.get("anyOf")
    if options is None:
        return schema
    present = [option for option in options if option != {"type": "null"}]
    if len(present) != 1:
        return schema
    rest = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
    return {**present[0], **rest}


_COMPONENT_REF = "#/components/schemas/{model}"


def body_definitions(model: type[BaseModel]) -> dict[str, Schema]:
    """The nested models a body refers to (shipping's address...), as components."""
    schema = model.model_json_schema(ref_template=_COMPONENT_REF)
    return {name: _without_titles(d) for name, d in schema.get("$defs", {}).items()}


def body_schema(model: type[BaseModel]) -> Schema:
    """The model's JSON schema, refined with the limits its validators enforce."""
    schema = _without_titles(model.model_json_schema(ref_template=_COMPONENT_REF))
    schema.pop("$defs", None)
    refinements = _REFINEMENTS.get(model, {})
    properties = {}
    for name, prop in schema["properties"].items():
        refined = {**_not_null(prop), **refinements.get(name, {})}
        if "default" in refined and refined["default"] is None:  # never sent as null
            del refined["default"]
        properties[name] = refined
    unknown = refinements.keys() - properties.keys()
    if unknown:
        raise ValueError(f"{model.__name__} has no parameters {sorted(unknown)}")
    return {**schema, "properties": properties, **_RULES.get(model, {})}


def _body_component_name(model: type[BaseModel]) -> str:
    return model.__name__


def request_body(model: type[BaseModel]) -> Schema:
    ref = {"$ref": f"#/components/schemas/{_body_component_name(model)}"}
    schema = body_schema(model)
    # Stripe clients send nested values in bracket notation: metadata[order]=6735,
    # expand[0]=balance_transaction.
    nested = [
        name
        for name, prop in schema["properties"].items()
        if prop.get("type") in ("object", "array")
    ]
    return {
        "required": bool(schema.get("required")),
        "description": "Form-encoded (nested values in bracket notation, as the Stripe SDKs "
        "send them: `metadata[order]=6735`, `expand[0]=...`) or JSON.",
        "content": {
            FORM: {
                "schema": ref,
                "encoding": {name: {"style": "deepObject", "explode": True} for name in nested},
            },
            JSON: {"schema": ref},
        },
    }


# ---- the objects the API returns -----------------------------------------------------------


def _nullable(kind: str, **extra: Any) -> Schema:
    return {"type": [kind, "null"], **extra}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: dict[str, Schema], *, description: str | None = None) -> Schema:
    """An object that always carries every listed property (the renderers write them all)."""
    schema: Schema = {"type": "object", "required": sorted(properties), "properties": properties}
    if description:
        schema["description"] = description
    return schema


def _const(value: str) -> Schema:
    return {"type": "string", "enum": [value]}


_STR, _INT, _BOOL = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
_STR_OR_NULL, _INT_OR_NULL = _nullable("string"), _nullable("integer")
_METADATA_OUT: Schema = {"type": "object", "additionalProperties": {"type": "string"}}


def _list_of(item: str, description: str) -> Schema:
    return _obj(
        {
            "object": _const("list"),
            "data": {"type": "array", "items": _ref(item)},
            "has_more": _BOOL,
            "url": _STR,
        },
        description=description,
    )


def _expandable(*kinds: str, nullable: bool = False) -> Schema:
    """An id, or with `expand[]` the object it names."""
    options: list[Schema] = [_STR, *(_ref(kind) for kind in kinds)]
    if nullable:
        options.append({"type": "null"})
    return {"anyOf": options, "description": "An id; the object itself when expanded."}


def _search_result_of(item: str, description: str) -> Schema:
    return _obj(
        {
            "object": _const("search_result"),
            "data": {"type": "array", "items": _ref(item)},
            "has_more": _BOOL,
            "next_page": {
                **_STR_OR_NULL,
                "description": "Pass as `page` to continue; null on the last page.",
            },
            "url": _STR,
        },
        description=description,
    )


def _payment_intent_schema() -> Schema:
    statuses = [
        "requires_payment_method",
        "requires_confirmation",
        "requires_action",
        "processing",
        "requires_capture",
        "succeeded",
        "canceled",
    ]
    return _obj(
        {
            "id": {"type": "string", "pattern": "^pi_"},
            "object": _const("payment_intent"),
            "amount": _INT,
            "amount_capturable": _INT,
            "amount_received": _INT,
            "canceled_at": _INT_OR_NULL,
            "cancellation_reason": _STR_OR_NULL,
            "capture_method": _STR,
            "client_secret": _STR,
            "created": _INT,
            "currency": _STR,
            "customer": _expandable("customer", nullable=True),
            "description": _STR_OR_NULL,
            "fx_quote": {
                **_STR_OR_NULL,
                "description": "The FX quote (`fxq_...`) its charge converts at, if any.",
            },
            "last_payment_error": _nullable("object"),
            "latest_charge": _expandable("charge", nullable=True),
            "livemode": _BOOL,
            "metadata": _METADATA_OUT,
            "next_action": _nullable("object"),
            "payment_method": _STR_OR_NULL,
            "payment_method_types": {"type": "array", "items": _STR},
            "receipt_email": _STR_OR_NULL,
            "status": {"type": "string", "enum": statuses},
        },
        description="One payment to collect, through as many charges as it takes.",
    )


def _payment_method_schema() -> Schema:
    card = _obj(
        {
            "brand": _STR,
            "checks": {"type": "object"},
            "country": _STR_OR_NULL,
            "exp_month": _INT,
            "exp_year": _INT,
            "fingerprint": _STR_OR_NULL,
            "funding": _STR,
            "last4": _STR,
            "three_d_secure_usage": {"type": "object"},
        },
        description="The card, as the vault describes it: never its number.",
    )
    return _obj(
        {
            "id": {"type": "string", "pattern": "^pm_"},
            "object": _const("payment_method"),
            "billing_details": {"type": "object"},
            "card": card,
            "created": _INT,
            "customer": _STR_OR_NULL,
            "livemode": _BOOL,
            "metadata": _METADATA_OUT,
            "type": _const("card"),
        },
        description="A card a merchant may charge; the vault keeps its number.",
    )


def _dispute_schema() -> Schema:
    evidence = _obj(
        {
            **{name: _STR_OR_NULL for name in TEXT_EVIDENCE},
            **{name: {"type": "null"} for name in FILE_EVIDENCE},  # no file uploads
            "enhanced_evidence": {"type": "object"},
        },
        description="What the merchant answers with; text only (file evidence is always null).",
    )
    evidence_details = _obj(
        {
            "due_by": {
                **_INT_OR_NULL,
                "description": "When the evidence is due; past it, staged evidence is "
                "submitted, and a dispute with none is lost.",
            },
            "enhanced_eligibility": {"type": "object"},
            "has_evidence": _BOOL,
            "past_due": _BOOL,
            "submission_count": _INT,
        }
    )
    card = _obj(
        {
            "brand": _STR_OR_NULL,
            "case_type": {"type": "string", "enum": ["chargeback", "inquiry"]},
            "network_reason_code": _STR_OR_NULL,
        }
    )
    return _obj(
        {
            "id": {"type": "string", "pattern": "^du_"},
            "object": _const("dispute"),
            "amount": _INT,
            "balance_transactions": {
                "type": "array",
                "items": _ref("balance_transaction"),
                "description": "The chargeback's withdrawal (with the dispute fee), then the "
                "reinstatement of a won dispute; none for an inquiry.",
            },
            "charge": _expandable("charge"),
            "created": _INT,
            "currency": _STR,
            "enhanced_eligibility_types": {"type": "array", "items": _STR},
            "evidence": evidence,
            "evidence_details": evidence_details,
            "is_charge_refundable": _BOOL,
            "livemode": _BOOL,
            "metadata": _METADATA_OUT,
            "network_reason_code": _STR_OR_NULL,
            "payment_intent": _expandable("payment_intent", nullable=True),
            "payment_method_details": _obj({"card": card, "type": _const("card")}),
            "reason": {**_STR, "examples": ["fraudulent", "product_not_received"]},
            "status": {"type": "string", "enum": sorted(disputes.STATUSES)},
        },
        description="A charge the cardholder's bank contests.",
    )


def _value_list_schemas() -> dict[str, Schema]:
    item = _obj(
        {
            "id": {"type": "string", "pattern": "^rsli_"},
            "object": _const("radar.value_list_item"),
            "created": _INT,
            "created_by": _STR,
            "livemode": _BOOL,
            "value": _STR,
            "value_list": {"type": "string", "pattern": "^rsl_"},
        },
        description="One value of a value list.",
    )
    value_list = _obj(
        {
            "id": {"type": "string", "pattern": "^rsl_"},
            "object": _const("radar.value_list"),
            "alias": {**_STR, "description": "What rules call it: `@alias`."},
            "created": _INT,
            "created_by": _STR,
            "item_type": {"type": "string", "enum": sorted(value_lists.SHAPES)},
            "list_items": {**_list_of("value_list_item", "Its newest items.")},
            "livemode": _BOOL,
            "metadata": _METADATA_OUT,
            "name": _STR,
        },
        description="A set of values fraud rules name by alias.",
    )

    def deleted(kind: str, prefix: str) -> Schema:
        return _obj(
            {
                "id": {"type": "string", "pattern": f"^{prefix}_"},
                "object": _const(kind),
                "deleted": {"type": "boolean", "enum": [True]},
            }
        )

    return {
        "value_list": value_list,
        "value_list_list": _list_of("value_list", "A page of value lists."),
        "deleted_value_list": deleted("radar.value_list", "rsl"),
        "value_list_item": item,
        "value_list_item_list": _list_of("value_list_item", "A page of a list's items."),
        "deleted_value_list_item": deleted("radar.value_list_item", "rsli"),
        "review": _obj(
            {
                "id": {"type": "string", "pattern": "^prv_"},
                "object": _const("review"),
                "billing_zip": _STR_OR_NULL,
                "charge": {"type": "string", "pattern": "^ch_"},
                "closed_reason": {
                    "type": ["string", "null"],
                    "enum": [*sorted(reviews.CLOSED_REASONS), None],
                },
                "created": _INT,
                "ip_address": _STR_OR_NULL,
                "ip_address_location": {"type": ["object", "null"]},
                "livemode": _BOOL,
                "open": _BOOL,
                "opened_reason": {"type": "string", "enum": ["manual", "rule"]},
                "payment_intent": _STR_OR_NULL,
                "reason": _STR,
                "session": {"type": ["object", "null"]},
            },
            description="A payment in the merchant's review queue.",
        ),
        "review_list": _list_of("review", "A page of open reviews."),
        "early_fraud_warning": _obj(
            {
                "id": {"type": "string", "pattern": "^issfr_"},
                "object": _const("radar.early_fraud_warning"),
                "actionable": _BOOL,
                "charge": {"type": "string", "pattern": "^ch_"},
                "created": _INT,
                "fraud_type": {
                    "type": "string",
                    "enum": [
                        "card_never_received",
                        "fraudulent_card_application",
                        "made_with_counterfeit_card",
                        "made_with_lost_card",
                        "made_with_stolen_card",
                        "misc",
                        "unauthorized_use_of_card",
                    ],
                },
                "livemode": _BOOL,
                "payment_intent": _STR_OR_NULL,
            },
            description="An issuer's report of fraud on a charge.",
        ),
        "early_fraud_warning_list": _list_of(
            "early_fraud_warning", "A page of early fraud warnings."
        ),
    }


def _fx_quote_schema() -> Schema:
    number = {"type": "number"}
    rate = _obj(
        {
            "exchange_rate": {
                **number,
                "description": "What one unit of the source currency converts to, FX fee and "
                "lock premium taken.",
            },
            "rate_details": _obj(
                {
                    "base_rate": {**number, "description": "The mid-market rate."},
                    "duration_premium": {**number, "description": "The cost of the lock."},
                    "fx_fee_rate": {**number, "description": "The merchant's FX fee."},
                    "reference_rate": _nullable("number"),
                    "reference_rate_provider": _STR_OR_NULL,
                }
            ),
        }
    )
    return _obj(
        {
            "id": {"type": "string", "pattern": "^fxq_"},
            "object": _const("fx_quote"),
            "created": _INT,
            "livemode": _BOOL,
            "lock_duration": {"type": "string", "enum": list(fx.LOCK_SECONDS)},
            "lock_expires_at": _INT_OR_NULL,
            "lock_status": {"type": "string", "enum": ["active", "expired", "none"]},
            "rates": {"type": "object", "additionalProperties": rate},
            "to_currency": _STR,
            "usage": _obj(
                {
                    "type": {"type": "string", "enum": ["payment"]},
                    "payment": _nullable("object"),
                    "transfer": _nullable("object"),
                }
            ),
        },
        description="Rates from one or more currencies to a settlement currency, locked for "
        "a while for payments that name the quote.",
    )


def _payout_schema() -> Schema:
    statuses = [payouts.PENDING, payouts.IN_TRANSIT, payouts.PAID, payouts.FAILED, payouts.CANCELED]
    return _obj(
        {
            "id": {"type": "string", "pattern": "^po_"},
            "object": _const("payout"),
            "amount": _INT,
            "application_fee": _STR_OR_NULL,
            "application_fee_amount": _INT_OR_NULL,
            "arrival_date": {
                **_INT,
                "description": "When the money is expected at the bank: an estimate until "
                "the bank has taken the payout.",
            },
            "automatic": {**_BOOL, "description": "Made by the daily automatic payout."},
            "balance_transaction": _expandable("balance_transaction", nullable=True),
            "created": _INT,
            "currency": _STR,
            "description": {**_STR, "examples": [PAYOUT_DESCRIPTION]},
            "destination": {**_STR_OR_NULL, "description": "The bank account's id (`ba_...`)."},
            "failure_balance_transaction": _expandable("balance_transaction", nullable=True),
            "failure_code": _STR_OR_NULL,
            "failure_message": _STR_OR_NULL,
            "livemode": _BOOL,
            "metadata": _METADATA_OUT,
            "method": {"type": "string", "enum": ["standard"]},
            "original_payout": _STR_OR_NULL,
            "reconciliation_status": {
                "type": "string",
                "enum": ["completed", "in_progress", "not_applicable"],
            },
            "reversed_by": _STR_OR_NULL,
            "source_type": _const("card"),
            "statement_descriptor": _STR_OR_NULL,
            "status": {"type": "string", "enum": sorted(statuses)},
            "type": _const("bank_account"),
        },
        description="Money sent from the available balance to the merchant's bank account.",
    )


def _customer_schema() -> Schema:
    deleted = {
        "type": "object",
        "required": ["id", "object", "deleted"],
        "properties": {"id": _STR, "object": _const("customer"), "deleted": {"const": True}},
    }
    live = _obj(
        {
            "id": {"type": "string", "pattern": "^cus_"},
            "object": _const("customer"),
            "address": _nullable("object"),
            "balance": _INT,
            "created": _INT,
            "currency": _STR_OR_NULL,
            "default_source": _STR_OR_NULL,
            "delinquent": _BOOL,
            "description": _STR_OR_NULL,
            "discount": _nullable("object"),
            "email": _STR_OR_NULL,
            "invoice_prefix": _STR,
            "invoice_settings": {"type": "object"},
            "livemode": _BOOL,
            "metadata": _METADATA_OUT,
            "name": _STR_OR_NULL,
            "next_invoice_sequence": _INT,
            "phone": _STR_OR_NULL,
            "preferred_locales": {"type": "array", "items": _STR},
            "shipping": _nullable("object"),
            "tax_exempt": _STR,
            "test_clock": _STR_OR_NULL,
        }
    )
    return {
        "oneOf": [live, deleted],
        "description": "Who pays; once deleted, only its id and `deleted: true`.",
    }


def object_schemas() -> dict[str, Schema]:
    customer = _customer_schema()
    card = _obj(
        {
            "brand": _STR,
            "last4": _STR,
            "exp_month": _INT,
            "exp_year": _INT,
            "funding": _STR,
            "country": _STR_OR_NULL,
            "fingerprint": {
                **_STR_OR_NULL,
                "description": "The same for every charge of one card number.",
            },
            "network": _STR_OR_NULL,
            "checks": _nullable("object"),
            "installments": _nullable("object"),
            "mandate": _STR_OR_NULL,
            "network_token": _nullable("object"),
            "three_d_secure": _nullable("object"),
            "wallet": _nullable("object"),
        }
    )
    source_card = {
        "type": ["object", "null"],
        "required": ["id", "object", "brand", "last4", "exp_month", "exp_year", "fingerprint"],
        "properties": {
            "id": _STR,
            "object": _const("card"),
            "brand": _STR,
            "last4": _STR,
            "exp_month": _INT,
            "exp_year": _INT,
            "fingerprint": _STR_OR_NULL,
        },
        "description": "The card charged, as the legacy sources API shows it.",
    }
    outcome = {
        "type": ["object", "null"],
        "required": ["network_status", "reason", "risk_level", "seller_message", "type"],
        "properties": {
            "network_status": _STR_OR_NULL,
            "reason": _STR_OR_NULL,
            "risk_level": {
                "type": "string",
                "enum": ["normal", "elevated", "highest", "not_assessed"],
            },
            "risk_score": {
                "type": "integer",
                "minimum": 0,
                "maximum": 99,
                "description": "Present when the payment was scored before the processor call.",
            },
            "seller_message": _STR_OR_NULL,
            "type": _STR,
            "rule": {
                **_obj({"id": _STR, "action": _STR, "predicate": _STR}),
                "description": "Present when a rule blocked or reviewed it: the merchant's, "
                "or Radar's default block_if_high_risk or manual_review_if_elevated_risk.",
            },
        },
        "description": "The processor's verdict, or the merchant's rule's; null until known.",
    }
    charge_refunds = _list_of("refund", "The charge's refunds, newest first (up to 10).")
    charge_refunds["properties"]["total_count"] = _INT
    charge_refunds["required"] = sorted([*charge_refunds["required"], "total_count"])
    charge = _obj(
        {
            "id": {"type": "string", "pattern": "^ch_"},
            "object": _const("charge"),
            "amount": _INT,
            "amount_captured": _INT,
            "amount_refunded": {
                **_INT,
                "description": "Refunds, plus any part of the authorization released uncaptured.",
            },
            "balance_transaction": _expandable("balance_transaction", nullable=True),
            "billing_details": _obj(
                {
                    "address": _nullable("object"),
                    "email": _STR_OR_NULL,
                    "name": _STR_OR_NULL,
                    "phone": _STR_OR_NULL,
                }
            ),
            "calculated_statement_descriptor": _STR_OR_NULL,
            "captured": _BOOL,
            "capture_at": {
                **_INT_OR_NULL,
                "description": "When a scheduled capture runs (a Clearline extension).",
            },
            "created": _INT,
            "currency": _STR,
            "description": _STR_OR_NULL,
            "disputed": _BOOL,
            "failure_code": _STR_OR_NULL,
            "failure_message": _STR_OR_NULL,
            "fraud_details": {"type": "object"},
            "livemode": _BOOL,
            "metadata": _METADATA_OUT,
            "outcome": outcome,
            "paid": _BOOL,
            "payment_intent": _expandable("payment_intent", nullable=True),
            "payment_method": _STR_OR_NULL,
            "payment_method_details": {
                "type": ["object", "null"],
                "required": ["card", "type"],
                "properties": {"card": card, "type": _const("card")},
            },
            "presentment_details": {
                "type": ["object", "null"],
                "required": ["presentment_amount", "presentment_currency"],
                "properties": {"presentment_amount": _INT, "presentment_currency": _STR},
                "description": "What the customer paid, when the merchant is paid in another "
                "currency (the balance transaction says what they got, and at what rate).",
            },
            "receipt_url": {
                **_STR_OR_NULL,
                "description": "A public page with the customer's receipt.",
            },
            "receipt_email": _STR_OR_NULL,
            "receipt_number": _STR_OR_NULL,
            "refunded": _BOOL,
            "refunds": charge_refunds,
            "customer": _expandable("customer", nullable=True),
            "shipping": _nullable("object"),
            "source": source_card,
            "statement_descriptor_suffix": _STR_OR_NULL,
            "transfer_group": _STR_OR_NULL,
            "failure_balance_transaction": _STR_OR_NULL,
            "review": _STR_OR_NULL,
            "statement_descriptor": _STR_OR_NULL,
            "status": {"type": "string", "enum": ["failed", "pending", "succeeded"]},
        },
        description="A payment on a card.",
    )
    refund = _obj(
        {
            "id": {"type": "string", "pattern": "^re_"},
            "object": _const("refund"),
            "amount": _INT,
            "balance_transaction": _expandable("balance_transaction", nullable=True),
            "charge": _expandable("charge"),
            "created": _INT,
            "currency": _STR,
            "metadata": _METADATA_OUT,
            "payment_intent": _STR_OR_NULL,
            "reason": _nullable(
                "string", enum=["duplicate", "fraudulent", "requested_by_customer", None]
            ),
            "receipt_number": _STR_OR_NULL,
            "status": {"type": "string", "enum": ["canceled", "failed", "pending", "succeeded"]},
            "source_transfer_reversal": _STR_OR_NULL,
            "transfer_reversal": _STR_OR_NULL,
        },
        description="Money returned to the card, or a released authorization.",
    )
    # Present only on a failed refund, as in Stripe's schema.
    refund["properties"]["failure_reason"] = _STR
    refund["properties"]["description"] = _STR
    refund["properties"]["failure_balance_transaction"] = _STR
    balance_amount = _obj(
        {
            "amount": _INT,
            "currency": _STR,
            "source_types": {"type": "object", "additionalProperties": _INT},
        }
    )
    balance = _obj(
        {
            "object": _const("balance"),
            "available": {"type": "array", "items": balance_amount},
            "pending": {"type": "array", "items": balance_amount},
            "livemode": _BOOL,
        },
        description="What Clearline owes the merchant, per currency.",
    )
    fee = _obj(
        {
            "amount": _INT,
            "application": _STR_OR_NULL,
            "currency": _STR,
            "description": _STR_OR_NULL,
            "type": _STR,
        }
    )
    kinds = ["adjustment", "charge", "payout", "payout_cancel", "payout_failure", "refund"]
    categories = ["charge", "dispute", "dispute_reversal", "payout", "payout_reversal", "refund"]
    balance_transaction = _obj(
        {
            "id": {"type": "string", "pattern": "^txn_"},
            "object": _const("balance_transaction"),
            "amount": _INT,
            "available_on": _INT,
            "created": _INT,
            "currency": _STR,
            "description": _STR_OR_NULL,
            "exchange_rate": _nullable("number"),
            "fee": _INT,
            "fee_details": {"type": "array", "items": fee},
            "net": _INT,
            "reporting_category": {"type": "string", "enum": categories},
            "source": {
                **_expandable("charge", "refund", "dispute", "payout"),
                "description": "The charge, refund, dispute or payout that moved the money.",
            },
            "status": {"type": "string", "enum": ["available", "pending"]},
            "type": {"type": "string", "enum": kinds},
        },
        description="One movement of the merchant's money.",
    )
    event = _obj(
        {
            "id": {"type": "string", "pattern": "^evt_"},
            "object": _const("event"),
            "api_version": _STR_OR_NULL,
            "created": _INT,
            "data": {
                "type": "object",
                "required": ["object"],
                "properties": {
                    "object": {
                        "type": "object",
                        "description": "The object as the change left it (a charge, a "
                        "refund, a dispute, a payout...).",
                    }
                },
            },
            "livemode": _BOOL,
            "pending_webhooks": _INT,
            "request": {
                "type": ["object", "null"],
                "properties": {"id": _STR_OR_NULL, "idempotency_key": _STR_OR_NULL},
            },
            "type": {**_STR, "examples": ["charge.succeeded"]},
        },
        description="A change, as webhooks deliver it.",
    )
    webhook_endpoint = _obj(
        {
            "id": {"type": "string", "pattern": "^we_"},
            "object": _const("webhook_endpoint"),
            "api_version": _STR_OR_NULL,
            "application": _STR_OR_NULL,
            "created": _INT,
            "description": _STR_OR_NULL,
            "enabled_events": {"type": "array", "items": _STR},
            "livemode": _BOOL,
            "metadata": _METADATA_OUT,
            "status": {"type": "string", "enum": ["disabled", "enabled"]},
            "url": _STR,
        },
        description="Where events are delivered, signed with the endpoint's secret.",
    )
    webhook_endpoint["properties"]["secret"] = {
        **_STR,
        "description": "The signing secret (`whsec_...`); only in the response that creates "
        "the endpoint.",
    }
    deleted_webhook_endpoint = _obj(
        {
            "id": _STR,
            "object": _const("webhook_endpoint"),
            "deleted": {"type": "boolean", "enum": [True]},
        }
    )
    error = _obj(
        {
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {
                    "type": {"type": "string", "enum": ERROR_TYPES},
                    "message": _STR,
                    "code": {**_STR, "description": "A machine-readable reason."},
                    "param": {**_STR, "description": "The parameter at fault."},
                    "decline_code": {**_STR, "description": "The issuer's reason for a decline."},
                    "charge": {**_STR, "description": "The declined charge."},
                    "doc_url": _STR,
                },
            }
        },
        description="Every refusal, in Stripe's shape.",
    )
    return {
        "charge": charge,
        "refund": refund,
        "balance": balance,
        "balance_transaction": balance_transaction,
        "event": event,
        "webhook_endpoint": webhook_endpoint,
        "deleted_webhook_endpoint": deleted_webhook_endpoint,
        "charge_list": _list_of("charge", "A page of charges."),
        "refund_list": _list_of("refund", "A page of refunds."),
        "balance_transaction_list": _list_of("balance_transaction", "A page of movements."),
        "event_list": _list_of("event", "A page of events."),
        "charge_search_result": _search_result_of("charge", "A page of matching charges."),
        "customer": customer,
        "customer_list": _list_of("customer", "A page of customers."),
        "customer_search_result": _search_result_of("customer", "A page of matching customers."),
        "payment_intent": _payment_intent_schema(),
        "payment_intent_list": _list_of("payment_intent", "A page of PaymentIntents."),
        "payment_method": _payment_method_schema(),
        "payment_method_list": _list_of("payment_method", "A page of PaymentMethods."),
        "dispute": _dispute_schema(),
        "dispute_list": _list_of("dispute", "A page of disputes."),
        "payout": _payout_schema(),
        "payout_list": _list_of("payout", "A page of payouts."),
        "fx_quote": _fx_quote_schema(),
        **_value_list_schemas(),
        "fx_quote_list": _list_of("fx_quote", "A page of FX quotes."),
        "webhook_endpoint_list": _list_of("webhook_endpoint", "A page of webhook endpoints."),
        "error": error,
    }


# ---- headers and error responses -----------------------------------------------------------

HEADERS: dict[str, Schema] = {
    "Request-Id": {
        "description": "This request's id; every log line of the request carries it.",
        "required": True,
        "schema": {"type": "string", "pattern": "^req_"},
    },
    "Stripe-Version": {
        "description": "The API version the response is in: the one the request asked for, "
        "else the account's pinned version.",
        "required": True,
        "schema": {"type": "string", "pattern": VERSION_PATTERN},
    },
    "Stripe-Should-Retry": {
        "description": "Whether retrying the same request (with the same Idempotency-Key) "
        "may succeed.",
        "schema": {"type": "string", "enum": ["true", "false"]},
    },
    "Idempotent-Replayed": {
        "description": "Present on the replay of an earlier request with the same key.",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "Original-Request": {
        "description": "On a replay: the id of the request that produced this response.",
        "schema": {"type": "string"},
    },
}

# status -> (response component, description)
ERRORS: dict[int, tuple[str, str]] = {
    400: (
        "BadRequest",
        "Refused: a parameter is missing or invalid, the body is malformed or carries a card "
        "number, the Idempotency-Key is missing or was used with other parameters "
        "(`idempotency_error`), or the object's state does not allow the operation.",
    ),
    401: ("Unauthorized", "No valid secret API key."),
    402: (
        "CardDeclined",
        "The card was declined (`card_error`); `error.charge` names the failed charge.",
    ),
    404: ("NotFound", "No such object for this merchant, or no such route."),
    409: (
        "Conflict",
        "A request with the same Idempotency-Key is still in progress, or a concurrent change "
        "to the same object came first: retry.",
    ),
    413: ("PayloadTooLarge", f"The request body is larger than {MAX_BODY_KIB} KiB."),
    429: ("TooManyRequests", "Too many requests: retry later, with exponential backoff."),
    503: (
        "ServiceUnavailable",
        "The data store or the card processor could not be reached; nothing is guessed. Retry "
        "with the same Idempotency-Key.",
    ),
}
EVERY_OPERATION_ERRORS = (400, 401, 404, 429, 503)
WRITE_ERRORS = (402, 409, 413)  # POSTs (and 409 on DELETE): they change state


def _header_refs(*names: str) -> dict[str, Schema]:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


def _error_response(description: str) -> Schema:
    return {
        "description": description,
        "headers": _header_refs("Request-Id", "Stripe-Version", "Stripe-Should-Retry"),
        "content": {JSON: {"schema": _ref("error")}},
    }


def _errors_for(method: str) -> tuple[int, ...]:
    if method == "post":
        return (*EVERY_OPERATION_ERRORS, *WRITE_ERRORS)
    if method == "delete":
        return (*EVERY_OPERATION_ERRORS, 409)
    return EVERY_OPERATION_ERRORS


# ---- assembly ------------------------------------------------------------------------------


def _complete(base: Schema) -> Schema:
    doc = copy.deepcopy(base)
    doc["info"]["description"] = (
        "A Stripe-compatible payments API: the unmodified Stripe SDKs create, capture, "
        "refund and list charges against it. Authenticate with a secret API key; send an "
        "Idempotency-Key with every POST. Amounts are integers in the currency's minor unit."
    )
    served = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    missing = served - OPERATIONS.keys()
    stale = OPERATIONS.keys() - served
    if missing or stale:
        raise ValueError(
            f"OPERATIONS is out of date: undocumented {sorted(missing)}, gone {sorted(stale)}"
        )
    body_models: dict[str, type[BaseModel]] = {}
    for (method, path), spec in OPERATIONS.items():
        op = doc["paths"][path][method]
        op.update(operationId=spec.operation_id, summary=spec.summary, tags=[spec.tag])
        if spec.description:
            op["description"] = spec.description
        if path.startswith("/v1/"):
            op["security"] = SECURITY
        for parameter in op.get("parameters", []):  # a query string cannot carry a null either
            parameter["schema"] = _not_null(parameter["schema"])
        if method == "post":
            if spec.body is None:
                raise ValueError(f"POST {path} has no body model")
            body_models[_body_component_name(spec.body)] = spec.body
            op["requestBody"] = request_body(spec.body)
            op["parameters"] = [
                *op.get("parameters", []),
                {"$ref": "#/components/parameters/IdempotencyKey"},
            ]
        op["parameters"] = [
            *op.get("parameters", []),
            {"$ref": "#/components/parameters/StripeVersion"},
        ]
        success_headers = ["Request-Id", "Stripe-Version"]
        if method == "post":
            success_headers += ["Idempotent-Replayed", "Original-Request"]
        responses: dict[str, Schema] = {
            "200": {
                "description": "OK",
                "headers": _header_refs(*success_headers),
                "content": {JSON: {"schema": _ref(spec.returns)}},
            }
        }
        if (method, path) in LINKS:
            responses["200"]["links"] = LINKS[method, path]
        for status in sorted(_errors_for(method)):
            responses[str(status)] = {"$ref": f"#/components/responses/{ERRORS[status][0]}"}
        op["responses"] = responses  # replaces Powertools' 422, which this API never sends

    components = doc.setdefault("components", {})
    # Powertools' own validation-error schemas described only the 422s.
    components["schemas"] = {
        **object_schemas(),
        **{name: body_schema(model) for name, model in sorted(body_models.items())},
    }
    for model in body_models.values():
        components["schemas"].update(body_definitions(model))
    components["responses"] = {
        name: _error_response(description) for name, description in ERRORS.values()
    }
    components["headers"] = HEADERS
    components["parameters"] = {
        "IdempotencyKey": {
            "name": "Idempotency-Key",
            "in": "header",
            "required": True,
            "description": "A unique value per operation (a UUID, say). A retry with the same "
            "key never moves money twice: it gets the first response back.",
            "schema": {"type": "string", "minLength": 1, "maxLength": KEY_MAX_LENGTH},
        },
        "StripeVersion": {
            "name": "Stripe-Version",
            "in": "header",
            "required": False,
            "description": "The API version to answer in (`YYYY-MM-DD` or `YYYY-MM-DD.name`, "
            f"such as `{CURRENT_VERSION}`); without it, the account's pinned version. A "
            "malformed version is a 400.",
            "schema": {"type": "string", "pattern": VERSION_PATTERN},
        },
    }
    components["securitySchemes"] = {
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "description": "The secret API key (`sk_test_...`) as the bearer token.",
        },
        "basicAuth": {
            "type": "http",
            "scheme": "basic",
            "description": "The secret API key as the user name, with an empty password "
            "(`curl -u sk_test_...:`).",
        },
    }
    doc["tags"] = [
        {"name": name} for name in dict.fromkeys(spec.tag for spec in OPERATIONS.values())
    ]
    return doc


@cache
def _document_json(app: APIGatewayRestResolver) -> str:
    base = json.loads(app.get_openapi_json_schema(title=TITLE, version=CURRENT_VERSION))
    return json.dumps(_complete(base), indent=2)


def document(app: APIGatewayRestResolver) -> Schema:
    """The complete document, as a fresh dict the caller may change."""
    return dict(json.loads(_document_json(app)))


def document_json(app: APIGatewayRestResolver) -> str:
    return _document_json(app)


# ---- Swagger UI ----------------------------------------------------------------------------

# Powertools ships Swagger UI's assets; inlining them keeps the page free of third-party hosts.
_SWAGGER_UI = resources.files("aws_lambda_powertools.event_handler.openapi") / "swagger_ui"


@cache
def swagger_page() -> str:
    script = (_SWAGGER_UI / "swagger-ui-bundle.min.js").read_text(encoding="utf-8")
    style = (_SWAGGER_UI / "swagger-ui.min.css").read_text(encoding="utf-8")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{TITLE}</title>
<style>{style}</style>
</head>
<body>
<div id="swagger-ui"></div>
<script>{script}</script>
<script>
// The document sits next to this page, behind whatever stage prefix the page has.
SwaggerUIBundle({{
  url: window.location.pathname.replace(/\\/docs\\/?$/, "") + "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
}});
</script>
</body>
</html>
"""
