"""Per-API-key rate limits, and refusing whoever keeps guessing keys.

Stripe's numbers: 25 requests a second for a test-mode key, 100 for a live one, unless the
merchant was given a limit of its own. API Gateway enforces them in AWS (a Lambda
authorizer names each request's usage plan; the plan throttles), and the local front
door enforces the same with `TokenBuckets`. Either way a request over the limit is
refused before the api function runs, so it changes nothing.

A source address whose requests keep failing authentication (`FAILED_AUTH_LIMIT` in a
minute) has its further failures refused with a 429 for `LOCKOUT_SECONDS`; a valid key is
never refused for it, from that address or any other. The authorizer keeps the count,
because it is what sees the failures: in DynamoDB (fixed one-minute windows, deleted by
the table's TTL), since its environments are many and short-lived. A WAF rate-based rule
cannot do it: it counts requests, not the 401s among them.

Nothing here knows an AWS event: the authorizer handler and the front door translate.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from clearline.errors import AuthenticationError, RateLimitedError
from clearline.merchants import KeyCache, KeyKind, Merchant, merchant_of_record
from clearline.store import Store

TEST_MODE_RATE_PER_SECOND = 25
LIVE_MODE_RATE_PER_SECOND = 100
# The local stack only (never set by the CDK app): the rate of every key without a limit
# of its own, so that a shared test stack can take more than Stripe's test-mode 25.
DEFAULT_RATE_ENV = "CLEARLINE_DEFAULT_RATE_LIMIT"
# How long API Gateway (and the front door) keep an authorizer's answer for one
# Authorization header: a revoked key or a changed limit takes effect within it.
AUTHORIZER_CACHE_TTL_SECONDS = 60
# The API whose usage plans throttle merchant keys (set in AWS only; the local front door
# keeps its own buckets), and how long a merchant's registration there is trusted.
USAGE_API_ENV = "CLEARLINE_USAGE_PLAN_API_ID"
USAGE_STAGE_ENV = "CLEARLINE_USAGE_PLAN_STAGE"
REGISTRATION_SECONDS = 7 * 86_400
FAILED_AUTH_LIMIT = 10  # failed authentications from one address in a window ...
FAILED_AUTH_WINDOW_SECONDS = 60
LOCKOUT_SECONDS = 300  # ... after which its failures are refused this long
# A stack whose tests send many bad keys from one address raises the limit.
FAILED_AUTH_LIMIT_ENV = "CLEARLINE_FAILED_AUTH_LIMIT"

RATE_LIMITED_REASON_HEADER = "Stripe-Rate-Limited-Reason"
GLOBAL_RATE = "global-rate"  # Stripe's reason for a key over its per-second limit
AUTH_FAILURES = "auth-failures"  # ours: an address that failed authentication too often
# Stripe's own wording for its rate limit.
RATE_LIMIT_MESSAGE = (
    "Too many requests hit the API too quickly. We recommend an exponential backoff of "
    "your requests."
)
AUTH_FAILURES_MESSAGE = (
    "Too many requests with an invalid API key came from this address, so requests from it "
    "that fail authentication are refused for a while. Check the key you send: a secret "
    "key begins with sk_test_ or sk_live_."
)
MISSING_KEY_MESSAGE = (
    "You did not provide an API key. Provide it in the Authorization header, using Bearer "
    "auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY')."
)

# What the authorizer puts in its answer's context (API Gateway passes it on as
# requestContext.authorizer, which no client can set).
CONTEXT_MERCHANT = "merchant"  # the merchant's record, as JSON
CONTEXT_KEY_KIND = "key_kind"
CONTEXT_RATE = "rate_limit_per_second"
CONTEXT_PLAN = "rate_plan"
CONTEXT_REFUSAL = "refusal"
CONTEXT_CODE = "code"
CONTEXT_MESSAGE = "message"
# The message again, as a JSON string: API Gateway's error templates insert it as is.
CONTEXT_MESSAGE_JSON = "message_json"

# The requests that take no API key: public pages, the 3-D Secure return, and the two
# calls a browser makes with a publishable key in the query or the body (where an
# authorizer cannot look). API Gateway serves them without the authorizer, the front door
# likewise; the api authenticates the browser calls itself. ("*": any method.)
KEYLESS_ROUTES: tuple[tuple[str, str], ...] = (
    ("GET", "/v1/payment_intents/{intent}"),
    ("POST", "/v1/payment_intents/{intent}/confirm"),
    ("*", "/v1/payment_intents/{intent}/authentication_return/{proxy+}"),
    ("*", "/receipts/{proxy+}"),
    ("*", "/errors"),
    ("*", "/errors/{proxy+}"),
    ("*", "/openapi.json"),
    ("*", "/docs"),
    # The dashboard signs people in with one-time links and session cookies, never keys.
    ("*", "/dashboard"),
    ("*", "/dashboard/{proxy+}"),
)


def _route_pattern(template: str) -> re.Pattern[str]:
    parts = []
    for part in template.strip("/").split("/"):
        if part == "{proxy+}":
            parts.append(".+")
        elif part.startswith("{"):
            parts.append("[^/]+")
        else:
            parts.append(re.escape(part))
    return re.compile("^/" + "/".join(parts) + "/?$")  # a trailing slash names the same


_KEYLESS = tuple((method, _route_pattern(path)) for method, path in KEYLESS_ROUTES)


def is_keyless(method: str, path: str) -> bool:
    return any(m in ("*", method.upper()) and p.match(path) for m, p in _KEYLESS)


# ---- plans ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RatePlan:
    """A usage plan: requests a second, with a burst of as many (one second's worth, as
    Stripe's limits are stated per second)."""

    name: str
    rate_per_second: int

    @property
    def burst(self) -> int:
        return self.rate_per_second


TEST_PLAN = RatePlan("test", TEST_MODE_RATE_PER_SECOND)
LIVE_PLAN = RatePlan("live", LIVE_MODE_RATE_PER_SECOND)
LOCKOUT_PLAN_NAME = "lockout"


def custom_plan(rate_per_second: int) -> RatePlan:
    return RatePlan(f"custom-{rate_per_second}", rate_per_second)


def plan_for(merchant: Merchant, default_rate: int | None = None) -> RatePlan:
    """The merchant's own limit, else its mode's (or `default_rate`, on the local stack)."""
    if merchant.rate_limit_per_second is not None:
        return custom_plan(merchant.rate_limit_per_second)
    plan = LIVE_PLAN if merchant.livemode else TEST_PLAN
    return plan if default_rate is None else RatePlan(plan.name, default_rate)


def usage_key(merchant_id: str) -> str:
    """The value of the merchant's API Gateway API key, which identifies it to its usage
    plan. Not a secret: with the key source AUTHORIZER, API Gateway takes it only from the
    authorizer's answer, never from a client. Derived from the id, so that it needs no
    lookup and can be created again without harm."""
    return f"clearline-usage-{merchant_id}"


LOCKOUT_USAGE_KEY = "clearline-usage-lockout-failed-authentication"


# ---- token buckets (the front door) -------------------------------------------------------


class TokenBuckets:
    """One bucket per usage identifier, refilled at its plan's rate, holding at most its
    burst; a request takes one token or is refused. As API Gateway throttles a usage plan's
    key, on the local front door."""

    MAX_BUCKETS = 10_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # id -> (tokens, as of)
        self._lock = threading.Lock()

    def take(self, identifier: str, rate_per_second: float, burst: float) -> bool:
        now = self.clock()
        with self._lock:
            tokens, as_of = self._buckets.get(identifier, (burst, now))
            tokens = min(burst, tokens + (now - as_of) * rate_per_second)
            allowed = tokens >= 1
            if allowed:
                tokens -= 1
            if len(self._buckets) >= self.MAX_BUCKETS and identifier not in self._buckets:
                self._buckets.clear()  # bounded: full buckets are what new ones start as
            self._buckets[identifier] = (tokens, now)
            return allowed


# ---- failed authentications (the authorizer) ------------------------------------------------


class WindowCounters(Protocol):
    def add(self, name: str, expires_at: int) -> int:
        """Adds one to the counter `name`, atomically; returns its new value."""
        ...

    def get(self, name: str) -> int: ...

    def set(self, name: str, value: int, expires_at: int) -> None: ...


class MemoryCounters:
    """Counters in one process (tests; anything without DynamoDB)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._values: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def _live(self, name: str) -> int:
        value, expires_at = self._values.get(name, (0, 0))
        return value if expires_at > self.clock() else 0

    def add(self, name: str, expires_at: int) -> int:
        with self._lock:
            value = self._live(name) + 1
            self._values[name] = (value, expires_at)
            return value

    def get(self, name: str) -> int:
        with self._lock:
            return self._live(name)

    def set(self, name: str, value: int, expires_at: int) -> None:
        with self._lock:
            self._values[name] = (value, expires_at)


class DynamoCounters:
    """Counters as items of the counters table (keyed by pk and sk, expiring by TTL on
    `expires_at`): UpdateItem ADD, so concurrent environments count together. TTL deletes
    lag, so reads check the expiry too."""

    def __init__(self, client: Any, table_name: str, clock: Callable[[], float] = time.time):
        self.client = client
        self.table_name = table_name
        self.clock = clock

    @staticmethod
    def _key(name: str) -> dict[str, Any]:
        return {"pk": {"S": f"AUTH#{name}"}, "sk": {"S": "WINDOW"}}

    def add(self, name: str, expires_at: int) -> int:
        answer = self.client.update_item(
            TableName=self.table_name,
            Key=self._key(name),
            UpdateExpression="ADD hits :one SET expires_at = if_not_exists(expires_at, :e)",
            ExpressionAttributeValues={":one": {"N": "1"}, ":e": {"N": str(expires_at)}},
            ReturnValues="UPDATED_NEW",
        )
        return int(answer["Attributes"]["hits"]["N"])

    def get(self, name: str) -> int:
        item = self.client.get_item(
            TableName=self.table_name, Key=self._key(name), ConsistentRead=True
        ).get("Item")
        if item is None or int(item.get("expires_at", {}).get("N", "0")) <= self.clock():
            return 0
        return int(item.get("hits", {}).get("N", "0"))

    def set(self, name: str, value: int, expires_at: int) -> None:
        self.client.put_item(
            TableName=self.table_name,
            Item={
                **self._key(name),
                "hits": {"N": str(value)},
                "expires_at": {"N": str(expires_at)},
            },
        )


class FailedAuthentications:
    """Failed authentications per source address, in fixed windows; past the limit the
    address is locked out for `lockout_seconds` (its failures refused, not counted)."""

    def __init__(
        self,
        counters: WindowCounters,
        *,
        limit: int = FAILED_AUTH_LIMIT,
        window_seconds: int = FAILED_AUTH_WINDOW_SECONDS,
        lockout_seconds: int = LOCKOUT_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.counters = counters
        self.limit = limit
        self.window_seconds = window_seconds
        self.lockout_seconds = lockout_seconds
        self.clock = clock

    @staticmethod
    def _who(source_ip: str) -> str:
        # Hashed: the table need not hold client addresses.
        return hashlib.sha256(source_ip.encode()).hexdigest()[:32]

    def locked_out(self, source_ip: str) -> bool:
        return self.counters.get(f"auth-lockout#{self._who(source_ip)}") > 0

    def record(self, source_ip: str) -> bool:
        """Counts one failure; True when the address is (now) locked out."""
        who = self._who(source_ip)
        if self.counters.get(f"auth-lockout#{who}") > 0:
            return True
        now = self.clock()
        window = int(now // self.window_seconds)
        window_end = (window + 1) * self.window_seconds
        failures = self.counters.add(f"auth-failures#{who}#{window}", window_end)
        if failures <= self.limit:
            return False
        self.counters.set(f"auth-lockout#{who}", 1, math.ceil(now + self.lockout_seconds))
        return True


# ---- the authorizer's decision ----------------------------------------------------------------


def key_from_authorization(header: str | None) -> str | None:
    """The API key of an Authorization header, Bearer or Basic (the key as user name, as
    Stripe takes it), or None."""
    scheme, _, credentials = (header or "").strip().partition(" ")
    credentials = credentials.strip()
    if not credentials:
        return None
    if scheme.lower() == "bearer":
        return credentials
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(credentials, validate=True).decode().split(":", 1)[0] or None
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None


@dataclass(frozen=True)
class Decision:
    outcome: Literal["allow", "invalid", "locked_out"]
    merchant: Merchant | None = None
    kind: KeyKind | None = None
    plan: RatePlan | None = None
    code: str | None = None
    message: str | None = None

    @property
    def usage_key(self) -> str | None:
        if self.outcome == "locked_out":
            return LOCKOUT_USAGE_KEY
        return usage_key(self.merchant.id) if self.merchant is not None else None

    def context(self) -> dict[str, str | int]:
        """What API Gateway hands the api (requestContext.authorizer): strings and numbers."""
        if self.outcome == "allow":
            assert self.merchant is not None and self.kind is not None and self.plan
            return {
                CONTEXT_MERCHANT: json.dumps(asdict(self.merchant)),
                CONTEXT_KEY_KIND: self.kind,
                CONTEXT_RATE: self.plan.rate_per_second,
                CONTEXT_PLAN: self.plan.name,
            }
        if self.outcome == "locked_out":
            return {CONTEXT_REFUSAL: AUTH_FAILURES, CONTEXT_MESSAGE: AUTH_FAILURES_MESSAGE}
        message = self.message or ""
        return {
            CONTEXT_CODE: self.code or "api_key_invalid",
            CONTEXT_MESSAGE: message,
            CONTEXT_MESSAGE_JSON: json.dumps(message),
        }


class KeyAuthorizer:
    """Decides for API Gateway. With `usage_keys` (in AWS), it also gives a merchant its API
    Gateway key the first time it sees the merchant at its rate, so that whatever creates
    merchants need not know about usage plans; `registrations` remembers that across
    execution environments (for `REGISTRATION_SECONDS`, after which registering again is
    harmless)."""

    def __init__(
        self,
        store: Store,
        failures: FailedAuthentications,
        *,
        keys: KeyCache | None = None,
        default_rate: int | None = None,
        usage_keys: UsageKeys | None = None,
        registrations: WindowCounters | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.failures = failures
        self.keys = keys or KeyCache()
        self.default_rate = default_rate
        self.usage_keys = usage_keys
        self.registrations = registrations or MemoryCounters(clock)
        self.clock = clock
        self._registered: set[str] = set()

    def _ensure_usage_key(self, merchant: Merchant, plan: RatePlan) -> None:
        if self.usage_keys is None:
            return
        marker = f"usage-key#{merchant.id}#{plan.name}"
        if marker in self._registered:
            return
        if self.registrations.get(marker) == 0:
            self.usage_keys.register(merchant)
            expires = int(self.clock()) + REGISTRATION_SECONDS
            self.registrations.set(marker, 1, expires)
        if len(self._registered) > 10_000:  # bounded: merchants come and go
            self._registered.clear()
        self._registered.add(marker)

    def decide(self, authorization: str | None, source_ip: str) -> Decision:
        key = key_from_authorization(authorization)
        try:
            if key is None:
                raise AuthenticationError(MISSING_KEY_MESSAGE, code="api_key_missing")
            merchant, kind = self.keys.authenticate(self.store, key)
        except AuthenticationError as refused:
            if self.failures.record(source_ip):
                return Decision("locked_out")
            return Decision("invalid", code=refused.code, message=refused.message)
        plan = plan_for(merchant, self.default_rate)
        self._ensure_usage_key(merchant, plan)
        return Decision("allow", merchant, kind, plan)


def merchant_of_context(context: dict[str, Any]) -> tuple[Merchant, KeyKind] | None:
    """The merchant and key kind an authorizer vouched for, or None if it did not."""
    record, kind = context.get(CONTEXT_MERCHANT), context.get(CONTEXT_KEY_KIND)
    if not isinstance(record, str) or kind not in ("secret", "publishable"):
        return None
    return merchant_of_record(json.loads(record)), kind


def default_rate_from(value: str | None) -> int | None:
    """The local stack's default rate setting, if any (a positive whole number)."""
    if value is None or not value.strip():
        return None
    rate = int(value)
    if rate < 1:
        raise ValueError(f"{DEFAULT_RATE_ENV} must be a positive number of requests a second")
    return rate


# ---- the routes API Gateway serves without the authorizer -----------------------------------


class KeylessRouteLimits:
    """The per-key limit and the failed-authentication lockout on the routes served without
    the authorizer (`KEYLESS_ROUTES`), for requests that bring a key in their Authorization
    header anyway (a server retrieving or confirming a PaymentIntent with its secret key):
    the api checks those keys itself, so it keeps the limits too. One DynamoDB update per
    such request, in one-second windows shared by every execution environment."""

    def __init__(
        self,
        counters: WindowCounters,
        failures: FailedAuthentications,
        *,
        default_rate: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.counters = counters
        self.failures = failures
        self.default_rate = default_rate
        self.clock = clock

    def admit(self, merchant: Merchant) -> None:
        """Raises RateLimitedError past the merchant's requests for this second."""
        second = int(self.clock())
        seen = self.counters.add(f"keyless-rate#{merchant.id}#{second}", second + 2)
        if seen > plan_for(merchant, self.default_rate).rate_per_second:
            raise RateLimitedError(RATE_LIMIT_MESSAGE, reason=GLOBAL_RATE)

    def failed(self, source_ip: str) -> None:
        """Counts a failed authentication; raises RateLimitedError once the address is
        locked out."""
        if self.failures.record(source_ip):
            raise RateLimitedError(AUTH_FAILURES_MESSAGE, reason=AUTH_FAILURES)


# ---- API Gateway keys (AWS) -----------------------------------------------------------------

# Usage plans the CDK app creates, by name; a merchant's own limit gets a plan of its own
# on first use (`UsageKeys`), named after its rate.
PLAN_NAME_PREFIX = "clearline-"


def plan_name(plan: RatePlan | str) -> str:
    return PLAN_NAME_PREFIX + (plan if isinstance(plan, str) else plan.name)


class UsageKeys:
    """Gives each merchant its API Gateway key, in the usage plan of its rate, when it is
    created (or its limit changes): one key per merchant, so that each has a bucket of its
    own (a usage plan throttles each of its keys separately; a key shared by a tier would
    make its merchants share one bucket). Every step can be repeated without harm."""

    def __init__(self, apigateway: Any, rest_api_id: str, stage: str) -> None:
        self.apigateway = apigateway
        self.rest_api_id = rest_api_id
        self.stage = stage

    def _plans(self) -> dict[str, str]:
        """Plan name -> id, for the plans on this API's stage."""
        found: dict[str, str] = {}
        for page in self.apigateway.get_paginator("get_usage_plans").paginate():
            for plan in page.get("items", []):
                stages = plan.get("apiStages", [])
                if any(
                    s.get("apiId") == self.rest_api_id and s.get("stage") == self.stage
                    for s in stages
                ):
                    found[plan["name"]] = plan["id"]
        return found

    def _plan_id(self, plan: RatePlan) -> str:
        name = plan_name(plan)
        existing = self._plans().get(name)
        if existing is not None:
            return existing
        created = self.apigateway.create_usage_plan(
            name=name,
            description=f"{plan.rate_per_second} requests a second per merchant key",
            apiStages=[{"apiId": self.rest_api_id, "stage": self.stage}],
            throttle={"rateLimit": float(plan.rate_per_second), "burstLimit": plan.burst},
        )
        return str(created["id"])

    def register(self, merchant: Merchant) -> str:
        """The merchant's key, in its plan (and in no other); returns the key's id."""
        value = usage_key(merchant.id)
        keys = self.apigateway.get_api_keys(nameQuery=merchant.id, includeValues=True)
        key_id = next((k["id"] for k in keys.get("items", []) if k.get("value") == value), None)
        if key_id is None:
            key_id = self.apigateway.create_api_key(
                name=merchant.id,
                description="Identifies the merchant to its usage plan (not a credential)",
                enabled=True,
                value=value,
            )["id"]
        wanted = self._plan_id(plan_for(merchant))
        for name, plan_id in self._plans().items():
            if plan_id == wanted or not name.startswith(PLAN_NAME_PREFIX):
                continue
            members = self.apigateway.get_usage_plan_keys(
                usagePlanId=plan_id, nameQuery=merchant.id
            )
            if any(k["id"] == key_id for k in members.get("items", [])):
                # A key is in one plan of the stage: its earlier one goes.
                self.apigateway.delete_usage_plan_key(usagePlanId=plan_id, keyId=key_id)
        with contextlib.suppress(self.apigateway.exceptions.ConflictException):  # there already
            self.apigateway.create_usage_plan_key(
                usagePlanId=wanted, keyId=key_id, keyType="API_KEY"
            )
        return str(key_id)
