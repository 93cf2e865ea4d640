"""Webhook endpoints, and the signed delivery of events to them.

Deliveries use Stripe's signature scheme (`Stripe-Signature: t=...,v1=HMAC-SHA256(secret,
"t.payload")`), so `stripe.Webhook.construct_event` verifies them. A merchant sees each
event once as accepted: a delivery claims (event, endpoint) before posting and records
the success, so relay retries and queue redeliveries skip endpoints already served.
Every attempt is recorded, with its time, status, latency and error.

Deliveries go to the public internet only (`clearline.egress`): the URL is judged when an
endpoint is created or changed, and again, resolved afresh, before every attempt; the
POST goes to the address that was judged. Each endpoint's signing secret is sealed at
rest under KMS (`clearline.secrets`), bound to its merchant and endpoint, and opened only
to sign a delivery, or shown once, in the response to the create or to a roll. After a
roll, deliveries carry a signature by the old secret too, for a day, so the merchant's
receiver keeps verifying them while it changes over.

Support can have an event delivered again (`Redeliveries`): the request is recorded
before it is queued, once per key, so sending the same form twice queues it once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from secrets import token_hex
from typing import Any
from urllib.parse import urlsplit

from clearline import listing
from clearline.audit import Caller
from clearline.egress import EgressPolicy, Refused, Unresolvable, post
from clearline.errors import (
    ConflictError,
    InvalidRequestError,
    ResourceMissingError,
    ServiceUnavailableError,
)
from clearline.events import event_facets
from clearline.ids import new_id
from clearline.merchants import Merchant
from clearline.models import Page, WebhookEndpoint
from clearline.params import Metadata, Params, String
from clearline.secrets import SecretBox, SecretUnavailable
from clearline.store import Store, Write, commit
from clearline.transitions import Change, Transition, TransitionWriter

ALL_EVENTS = "*"
EVENT_TYPE = re.compile(r"[a-z_]+(\.[a-z_]+){1,3}")
ENABLED, DISABLED = "enabled", "disabled"
ROLL_OVERLAP_SECONDS = 24 * 3600  # the old secret still signs, beside the new, this long
REQUESTED, QUEUED = "requested", "queued"  # a redelivery's states
CLAIM_SECONDS = 120  # a claim older than this belongs to a dispatcher that died mid-delivery


class WebhookEndpointCreateParams(Params):
    url: String
    enabled_events: list[String]
    description: String | None = None
    metadata: Metadata = {}


class WebhookEndpointUpdateParams(Params):
    url: String | None = None
    enabled_events: list[String] | None = None
    description: String | None = None
    metadata: Metadata | None = None
    disabled: bool | None = None


def check_url(policy: EgressPolicy, url: str, *, livemode: bool) -> None:
    """Refuses (400, param `url`) a URL the policy would not deliver to."""
    try:
        policy.check(url, livemode=livemode)
    except Unresolvable as exc:
        # A test-mode https endpoint may be registered before its DNS exists: every
        # delivery resolves and judges it again. A live one must resolve now.
        if livemode or urlsplit(url).scheme != "https":
            raise InvalidRequestError(exc.message, param="url") from exc
    except Refused as exc:
        raise InvalidRequestError(exc.message, param="url") from exc


def secret_context(merchant_id: str, endpoint_id: str) -> dict[str, str]:
    """What a signing secret's envelope is bound to: it opens for this endpoint only."""
    return {"merchant": merchant_id, "webhook_endpoint": endpoint_id}


def endpoint_secret(box: SecretBox, merchant_id: str, item: dict[str, Any]) -> str:
    """The endpoint's signing secret, opened from its envelope, or SecretUnavailable."""
    sealed = item.get("sealed_secret")
    if not isinstance(sealed, dict):
        raise SecretUnavailable("the endpoint has no sealed signing secret")
    return box.open(sealed, secret_context(merchant_id, item["id"]))


class WebhookEndpoints:
    def __init__(
        self,
        store: Store,
        clock: Callable[[], float] = time.time,
        *,
        secrets: SecretBox,
        egress: EgressPolicy | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.secrets = secrets
        self.egress = egress or EgressPolicy()
        self.writer = TransitionWriter(store, clock=lambda: self.clock())

    def _get(self, merchant: Merchant, endpoint_id: str) -> dict[str, Any]:
        item = self.store.get(f"MERCHANT#{merchant.id}", f"WE#{endpoint_id}")
        if item is None:
            raise ResourceMissingError("webhook endpoint", endpoint_id)
        return item

    def create(self, caller: Caller, params: WebhookEndpointCreateParams) -> WebhookEndpoint:
        merchant = caller.merchant
        check_url(self.egress, params.url, livemode=merchant.livemode)
        if not params.enabled_events:
            raise InvalidRequestError(
                "enabled_events must name at least one event type, or '*'.", param="enabled_events"
            )
        endpoint_id = new_id("we")
        secret, sealed = self._new_secret(merchant.id, endpoint_id)
        item: dict[str, Any] = {
            "pk": f"MERCHANT#{merchant.id}",
            "sk": f"WE#{endpoint_id}",
            "id": endpoint_id,
            "url": params.url,
            "enabled_events": list(params.enabled_events),
            "description": params.description,
            "metadata": dict(params.metadata),
            "status": "enabled",
            "livemode": merchant.livemode,
            "sealed_secret": sealed,  # never the secret itself
            "created": int(self.clock()),
            "version": 1,
        }
        self._commit(
            caller,
            Change(
                item["pk"],
                item["sk"],
                endpoint_id,
                "create",
                ENABLED,
                state_attribute="status",
                create=item,
            ),
        )
        return WebhookEndpoint.from_item(item, secret=secret)

    def _new_secret(self, merchant_id: str, endpoint_id: str) -> tuple[str, dict[str, str]]:
        """A new signing secret, and it sealed for storage (the secret is only ever shown)."""
        secret = "whsec_" + token_hex(24)
        try:
            return secret, self.secrets.seal(secret, secret_context(merchant_id, endpoint_id))
        except SecretUnavailable as exc:
            raise ServiceUnavailableError(
                "The webhook endpoint's signing secret could not be sealed; retry."
            ) from exc

    def _commit(self, caller: Caller, change: Change) -> None:
        """Every endpoint change is a transition: audited, and guarded by the version it
        was read at, so a concurrent update is refused rather than lost."""
        if self.writer.commit(Transition([change], caller)) is not None:
            raise ConflictError("The webhook endpoint was changed by another request; retry.")

    def _versioned(self, item: dict[str, Any], operation: str, to_state: str) -> Change:
        return Change(
            item["pk"],
            item["sk"],
            item["id"],
            operation,
            to_state,
            from_state=item["status"],
            state_attribute="status",
            condition="version = :version",
            values={":version": item["version"]},
        )

    def retrieve(self, merchant: Merchant, endpoint_id: str) -> WebhookEndpoint:
        return WebhookEndpoint.from_item(self._get(merchant, endpoint_id))

    def update(
        self, caller: Caller, endpoint_id: str, params: WebhookEndpointUpdateParams
    ) -> WebhookEndpoint:
        merchant = caller.merchant
        item = self._get(merchant, endpoint_id)
        if params.url is not None:
            check_url(self.egress, params.url, livemode=merchant.livemode)
            item["url"] = params.url
        if params.enabled_events is not None:
            item["enabled_events"] = list(params.enabled_events)
        if params.description is not None:
            item["description"] = params.description
        if params.metadata is not None:
            item["metadata"] = {**item.get("metadata", {}), **params.metadata}
        status = item["status"]
        if params.disabled is not None:
            status = DISABLED if params.disabled else ENABLED
        change = self._versioned(item, "update", status)
        change.replace = {**item, "version": item["version"] + 1}
        self._commit(caller, change)
        return WebhookEndpoint.from_item({**change.replace, "status": status})

    def roll_secret(self, caller: Caller, endpoint_id: str) -> WebhookEndpoint:
        """A new signing secret, shown once in the answer. The old one keeps signing beside
        it for ROLL_OVERLAP_SECONDS, so deliveries still verify while the receiver changes."""
        merchant = caller.merchant
        item = self._get(merchant, endpoint_id)
        secret, sealed = self._new_secret(merchant.id, endpoint_id)
        change = self._versioned(item, "roll_secret", item["status"])
        change.replace = {
            **item,
            "sealed_secret": sealed,
            "previous_sealed_secret": item["sealed_secret"],
            "previous_secret_expires": int(self.clock()) + ROLL_OVERLAP_SECONDS,
            "version": item["version"] + 1,
        }
        self._commit(caller, change)
        return WebhookEndpoint.from_item(change.replace, secret=secret)

    def delete(self, caller: Caller, endpoint_id: str) -> WebhookEndpoint:
        item = self._get(caller.merchant, endpoint_id)
        change = self._versioned(item, "delete", "deleted")
        change.delete = True
        self._commit(caller, change)
        return WebhookEndpoint.from_item({**item, "deleted": True})

    def list(
        self,
        merchant: Merchant,
        *,
        limit: int,
        starting_after: str | None,
        ending_before: str | None,
    ) -> Page[WebhookEndpoint]:
        items = self.store.query_partition(f"MERCHANT#{merchant.id}", "WE#")
        return listing.page_in_memory(
            [WebhookEndpoint.from_item(i) for i in items],
            kind="webhook endpoint",
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
        )


# ---- delivery -------------------------------------------------------------------------------


def signature_header(payload: str, secret: str, timestamp: int, *also: str) -> str:
    """Stripe's header: one v1 signature per secret (the current one, then any still in
    their overlap after a roll); a receiver accepts the delivery if one of them verifies."""
    signatures = [
        hmac.new(key.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()
        for key in (secret, *also)
    ]
    return ",".join([f"t={timestamp}", *(f"v1={signature}" for signature in signatures)])


@dataclass(frozen=True)
class Attempt:
    endpoint: str
    url: str
    status: int | None
    latency_ms: int
    error: str | None
    response_body: str = ""  # the start of the endpoint's answer, for support

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Dispatcher:
    def __init__(
        self,
        store: Store,
        *,
        secrets: SecretBox,
        egress: EgressPolicy | None = None,
        timeout_seconds: float = 10.0,
        clock: Callable[[], float] = time.time,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.store = store
        self.secrets = secrets
        self.egress = egress or EgressPolicy()
        self.timeout_seconds = timeout_seconds
        self.clock = clock
        self.tls_context = tls_context  # None: the system's trust store

    def deliver(
        self, merchant_id: str, event: dict[str, Any], *, force: bool = False
    ) -> list[Attempt]:
        """Deliver to every subscribed endpoint not yet served; returns this round's attempts."""
        attempts = []
        subscribed_ids = []
        for endpoint in self.store.query_partition(f"MERCHANT#{merchant_id}", "WE#"):
            subscribed = ALL_EVENTS in endpoint["enabled_events"] or (
                event["type"] in endpoint["enabled_events"]
            )
            if endpoint["status"] != "enabled" or not subscribed:
                continue
            subscribed_ids.append(endpoint["id"])
            if not self._claim(event["id"], endpoint["id"], force):
                continue  # delivered already, or being delivered by another dispatcher
            attempt = self._post(merchant_id, endpoint, event)
            self._record(event["id"], attempt)
            attempts.append(attempt)
        self._mark_delivery(merchant_id, event, subscribed_ids)
        return attempts

    def send_test(self, merchant: Merchant, endpoint_id: str, event_type: str) -> Attempt:
        """One signed POST of a made-up event of `event_type` to one endpoint, now, for the
        merchant to see their receiver answer (Stripe's "send test webhook"). It is no event
        of theirs: not listed, not retried, and its object is marked as a test."""
        endpoint = self.store.get(f"MERCHANT#{merchant.id}", f"WE#{endpoint_id}")
        if endpoint is None:
            raise ResourceMissingError("webhook endpoint", endpoint_id)
        if not EVENT_TYPE.fullmatch(event_type):
            raise InvalidRequestError(f"Not an event type: {event_type[:60]!r}.", param="type")
        kind = event_type.split(".")[0]
        now = int(self.clock())
        event = {
            "id": new_id("evt_test"),
            "object": "event",
            "type": event_type,
            "created": now,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "data": {"object": {"id": new_id(f"{kind}_test"), "object": kind, "test": True}},
        }
        return self._post(merchant.id, endpoint, event)

    def _mark_delivery(self, merchant_id: str, event: dict[str, Any], endpoints: list[str]) -> None:
        """Files the event under delivery_success=true once every subscribed endpoint has
        accepted it. Never back to false: a dispatcher that finished earlier and saw less
        must not undo a later one's true."""
        delivered = {
            item["sk"].removeprefix("DELIVERED#")
            for item in self.store.query_partition(f"EVENT#{event['id']}", "DELIVERED#")
        }
        if not set(endpoints) <= delivered:
            return
        item = self.store.get(f"EVENT#{event['id']}", "EVENT")
        if item is None:
            return
        created_ms = int(str(item["gsi1sk"]).split("#", 1)[0])
        facets = event_facets(item["type"], delivered=True)
        key = (item["pk"], item["sk"])
        writes = [
            Write("Put", item=facet)
            for facet in listing.facet_items(
                merchant_id, "evt", created_ms, key, item["id"], facets
            )
        ]
        commit(self.store, writes)

    def _claim(self, event_id: str, endpoint_id: str, force: bool) -> bool:
        now = self.clock()
        if not force and self.store.get(f"EVENT#{event_id}", f"DELIVERED#{endpoint_id}"):
            return False
        claim = Write(
            "Put",
            item={
                "pk": f"EVENT#{event_id}",
                "sk": f"CLAIM#{endpoint_id}",
                "until": int(now) + CLAIM_SECONDS,
            },
            condition="attribute_not_exists(pk) OR #until < :now",
            names={"#until": "until"},
            values={":now": int(now)},
        )
        writes = [claim]
        if not force:  # checked again in the claim's transaction: a delivery may finish between
            writes.append(
                Write(
                    "ConditionCheck",
                    key={"pk": f"EVENT#{event_id}", "sk": f"DELIVERED#{endpoint_id}"},
                    condition="attribute_not_exists(pk)",
                )
            )
        return commit(self.store, writes) is None

    def _post(self, merchant_id: str, endpoint: dict[str, Any], event: dict[str, Any]) -> Attempt:
        """One attempt. Whatever stops it (an address that is not public now, a secret
        that does not open, no answer) is a failed attempt with its reason, retried like
        any other; nothing is sent unless the address was judged and the secret opened."""
        started = time.monotonic()

        def failed(reason: str) -> Attempt:
            latency = int((time.monotonic() - started) * 1000)
            return Attempt(endpoint["id"], endpoint["url"], None, latency, reason[:300])

        try:
            # Resolved and judged afresh: DNS may have changed since the URL was accepted.
            # An item without its mode is judged as live: the strict rules.
            destination = self.egress.check(
                endpoint["url"], livemode=bool(endpoint.get("livemode", True))
            )
        except Refused as exc:
            return failed(f"refused: {exc.message}")
        try:
            secret = endpoint_secret(self.secrets, merchant_id, endpoint)
            previous = []
            if endpoint.get("previous_secret_expires", 0) > self.clock():
                sealed = endpoint["previous_sealed_secret"]
                context = secret_context(merchant_id, endpoint["id"])
                previous.append(self.secrets.open(sealed, context))
        except SecretUnavailable as exc:
            return failed(f"signing secret unavailable: {exc}")
        payload = json.dumps(event)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Clearline/1.0 (+webhooks)",
            "Stripe-Signature": signature_header(payload, secret, int(self.clock()), *previous),
        }
        reply = post(
            destination,
            payload.encode(),
            headers,
            timeout=self.timeout_seconds,
            context=self.tls_context,
        )
        latency = int((time.monotonic() - started) * 1000)
        return Attempt(
            endpoint["id"], endpoint["url"], reply.status, latency, reply.error, reply.body
        )

    def _record(self, event_id: str, attempt: Attempt) -> None:
        now = self.clock()
        writes = [
            Write.put_new(
                {
                    "pk": f"EVENT#{event_id}",
                    "sk": f"ATTEMPT#{int(now * 1000):013d}#{attempt.endpoint}",
                    "endpoint": attempt.endpoint,
                    "url": attempt.url,
                    "status": attempt.status,
                    "latency_ms": attempt.latency_ms,
                    "error": attempt.error,
                    "response_body": attempt.response_body,
                    "at": int(now),
                }
            )
        ]
        if attempt.ok:
            writes.append(
                Write(
                    "Put",
                    item={
                        "pk": f"EVENT#{event_id}",
                        "sk": f"DELIVERED#{attempt.endpoint}",
                        "at": int(now),
                    },
                )
            )
            writes.append(
                Write("Delete", key={"pk": f"EVENT#{event_id}", "sk": f"CLAIM#{attempt.endpoint}"})
            )
        else:  # free the claim so the retry can deliver
            writes.append(
                Write("Delete", key={"pk": f"EVENT#{event_id}", "sk": f"CLAIM#{attempt.endpoint}"})
            )
        commit(self.store, writes)


class Redeliveries:
    """Support's "deliver it again", to every subscribed endpoint, even those it reached.
    The request is recorded first (its key, by whom), then queued, then marked queued: the
    same key sent again after a crash between the two queues it then, and once queued, it
    queues nothing more."""

    def __init__(
        self,
        store: Store,
        queue: Callable[[dict[str, Any]], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.queue = queue  # puts the event item on the delivery queue, marked to force
        self.writer = TransitionWriter(store, clock=clock)

    def redeliver(self, caller: Caller, event_id: str, key: str) -> bool:
        """Whether this call queued it (False: the key had queued it before)."""
        event = self.store.get(f"EVENT#{event_id}", "EVENT")
        if event is None or event.get("merchant") != caller.merchant.id:
            raise ResourceMissingError("event", event_id)
        pk, sk = event["pk"], f"REDELIVERY#{hashlib.sha256(key.encode()).hexdigest()[:32]}"
        name = f"redelivery_{sk[11:27]}"
        requested = Change(
            pk, sk, name, "redelivery.request", REQUESTED, create={"pk": pk, "sk": sk}
        )
        self.writer.commit(Transition([requested], caller))  # refused: recorded before
        recorded = self.store.get(pk, sk)
        if recorded is None or recorded.get("state") == QUEUED:
            return False
        self.queue(event)
        queued = Change(pk, sk, name, "redelivery.queue", QUEUED, from_state=REQUESTED)
        return self.writer.commit(Transition([queued], caller)) is None


def attempts_for(store: Store, event_id: str) -> list[dict[str, Any]]:
    return store.query_partition(f"EVENT#{event_id}", "ATTEMPT#")


def retry_delay(attempt: int, base_seconds: float) -> int:
    """Seconds to wait after failed attempt number `attempt` (1-based): base, 2x, 4x, ...,
    at most 12 hours (SQS's longest visibility timeout). With a 60 s base and 16 attempts
    the last try comes about 3.2 days after the first."""
    return int(min(base_seconds * 2 ** (attempt - 1), 12 * 60 * 60))
