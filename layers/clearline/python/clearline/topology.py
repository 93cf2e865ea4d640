"""One description of the deployed system, read by both the CDK app and the local stack.

Tables, functions and their wiring are declared here once, so the cloud and the laptop
cannot drift: the CDK app turns each spec into constructs, the local stack into moto
resources and in-process invokers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Access = Literal["read", "readwrite"]


@dataclass(frozen=True)
class IndexSpec:
    name: str
    partition_key: str
    sort_key: str


@dataclass(frozen=True)
class TableSpec:
    key: str  # stable logical name, used for env vars and construct ids
    name: str  # physical name on the local stack (the CDK app lets CloudFormation name it)
    partition_key: str
    sort_key: str | None = None
    indexes: tuple[IndexSpec, ...] = ()
    ttl_attribute: str | None = None
    stream: bool = False


@dataclass(frozen=True)
class QueueSpec:
    key: str
    name: str
    visibility_timeout_seconds: int = 60
    # After this many receives a message moves to the queue's dead-letter queue.
    max_receive_count: int | None = None
    retention_seconds: int = 4 * 24 * 60 * 60  # longer than the 3 days of webhook retries

    @property
    def dlq_name(self) -> str:
        return f"{self.name}-dlq"


@dataclass(frozen=True)
class BucketSpec:
    key: str
    name: str  # local name (the CDK app lets CloudFormation name it)
    # Objects created under this prefix are announced to this queue (S3 -> SQS).
    notify_prefix: str | None = None
    notify_queue: str | None = None


@dataclass(frozen=True)
class BusSpec:
    key: str
    name: str


@dataclass(frozen=True)
class RuleSpec:
    """An EventBridge rule on a bus that sends matching events to a queue.

    EventBridge retries a delivery it cannot make (the queue throttled or unavailable) with
    backoff, up to these attempts and this age; then the event goes to the rule's
    dead-letter queue instead of being dropped.
    """

    key: str
    bus: str
    event_pattern: dict[str, Any]
    queue: str
    retry_attempts: int = 185  # EventBridge's maximum
    max_event_age_seconds: int = 24 * 60 * 60  # EventBridge's maximum

    @property
    def dlq_name(self) -> str:
        return f"clearline-{self.key.replace('_', '-')}-dlq"


@dataclass(frozen=True)
class StreamFailureSpec:
    """What a stream trigger does with records its function fails, as Lambda's event source
    mapping does: halve a failing batch until the failing record is alone (bisect), retry
    it a bounded number of times, then send where it lies in the stream to the on-failure
    queue and go on with the records behind it. The shard is blocked only meanwhile."""

    on_failure_queue: str  # queue key
    bisect_batch_on_error: bool = True
    maximum_retry_attempts: int = 10


@dataclass(frozen=True)
class FunctionSpec:
    key: str
    code_dir: str  # relative to the repository root
    handler: str  # "module.function", importable from code_dir
    description: str
    timeout_seconds: int = 10
    memory_mb: int = 512
    # table key -> access; each becomes an env var naming the table and an IAM grant
    tables: dict[str, Access] = field(default_factory=dict)
    # needs the sandbox processor's URL (CLEARLINE_PROCESSOR_URL)
    calls_processor: bool = False
    environment: dict[str, str] = field(default_factory=dict)
    # Triggers, at most one of each.
    stream_from: str | None = None  # table key: its DynamoDB stream, batches of records
    stream_failures: StreamFailureSpec | None = None  # required with stream_from
    queue_trigger: str | None = None  # queue key: SQS batches, partial failures reported
    # At most this many instances consume the queue at once (SQS maximum concurrency, 2 to
    # 1000); None: as many as Lambda scales to.
    queue_max_concurrency: int | None = None
    schedule_minutes: int | None = None  # an EventBridge schedule: every N minutes
    batch_size: int = 10
    # Resources it writes to beyond its tables: each an env var and an IAM grant.
    publishes_to: str | None = None  # bus key
    sends_to: tuple[str, ...] = ()  # queue keys
    # Operations' view of every queue: reads each one's depth and its dead-letter queue's,
    # and moves dead letters back (redrive).
    operates_queues: bool = False
    # bucket key -> access; each becomes an env var naming the bucket and an IAM grant
    buckets: dict[str, Access] = field(default_factory=dict)
    # Calls merchants' webhook endpoints on the internet.
    calls_internet: bool = False
    # Calls the card vault's internal API (CLEARLINE_VAULT_URL), signed with its role.
    calls_vault: bool = False
    # Reads the API key items of the main table (and nothing else of it): the vault, which
    # learns a publishable key's merchant this way.
    reads_api_keys: bool = False
    # Reads the secret the processor signs its notifications with (Secrets Manager).
    reads_processor_secret: bool = False
    # Calls the bank's transfer API (CLEARLINE_BANK_URL), to pay merchants out.
    calls_bank: bool = False
    # What it may do with the KMS key that seals merchants' bank account numbers.
    bank_account_key: tuple[Literal["seal", "open"], ...] = ()
    # Calls the FX rate provider (CLEARLINE_RATE_PROVIDER_URL): only the rates function.
    calls_rate_provider: bool = False


@dataclass(frozen=True)
class ApiSpec:
    function: str  # key of the function behind the REST API's proxy resource
    # key of the Lambda authorizer of the routes that take an API key (None: the function
    # behind the API authenticates every request itself)
    authorizer: str | None = None
    stage: str = "prod"  # the SDK base URL is https://{api}.execute-api.{region}.amazonaws.com/prod


@dataclass(frozen=True)
class Topology:
    tables: tuple[TableSpec, ...]
    functions: tuple[FunctionSpec, ...]
    api: ApiSpec
    queues: tuple[QueueSpec, ...] = ()
    buses: tuple[BusSpec, ...] = ()
    rules: tuple[RuleSpec, ...] = ()
    buckets: tuple[BucketSpec, ...] = ()
    # An API of its own for the processor's notifications (never the merchant API).
    notifications: ApiSpec | None = None

    def table(self, key: str) -> TableSpec:
        return next(t for t in self.tables if t.key == key)

    def function(self, key: str) -> FunctionSpec:
        return next(f for f in self.functions if f.key == key)

    def queue(self, key: str) -> QueueSpec:
        return next(q for q in self.queues if q.key == key)

    def bus(self, key: str) -> BusSpec:
        return next(b for b in self.buses if b.key == key)

    def bucket(self, key: str) -> BucketSpec:
        return next(b for b in self.buckets if b.key == key)


def table_env_var(table_key: str) -> str:
    """The environment variable through which a function learns a table's name."""
    return f"CLEARLINE_{table_key.upper()}_TABLE"


def queue_env_var(queue_key: str) -> str:
    """The environment variable through which a function learns a queue's URL."""
    return f"CLEARLINE_{queue_key.upper()}_QUEUE_URL"


def dlq_env_var(queue_key: str) -> str:
    """The environment variable through which a function learns a dead-letter queue's URL."""
    return f"CLEARLINE_{queue_key.upper()}_DLQ_URL"


def bucket_env_var(bucket_key: str) -> str:
    """The environment variable through which a function learns a bucket's name."""
    return f"CLEARLINE_{bucket_key.upper()}_BUCKET"


def bus_env_var(bus_key: str) -> str:
    """The environment variable through which a function learns a bus's name."""
    return f"CLEARLINE_{bus_key.upper()}_BUS"


PROCESSOR_URL_ENV = "CLEARLINE_PROCESSOR_URL"
BANK_URL_ENV = "CLEARLINE_BANK_URL"
RATE_PROVIDER_URL_ENV = "CLEARLINE_RATE_PROVIDER_URL"
BANK_ACCOUNTS_KEY_ENV = "CLEARLINE_BANK_ACCOUNTS_KEY"  # KMS key sealing bank account numbers
VAULT_URL_ENV = "CLEARLINE_VAULT_URL"  # the vault's origin, for Clearline's internal calls
# In AWS the vault's stack is deployed after Clearline's (it reads Clearline's API keys), so
# Clearline's functions learn its URL at run time from this SSM parameter, which it writes.
VAULT_URL_PARAMETER_ENV = "CLEARLINE_VAULT_URL_PARAMETER"
VAULT_URL_PARAMETER = "/clearline/vault/url"
VAULT_RATE_PER_KEY_ENV = "CLEARLINE_VAULT_LIMIT_PER_KEY"  # publishable-key calls a minute
VAULT_RATE_PER_IP_ENV = "CLEARLINE_VAULT_LIMIT_PER_IP"  # publishable-key calls a minute
VAULT_PUBLIC_URL_ENV = "CLEARLINE_VAULT_PUBLIC_URL"  # the vault's origin, as browsers reach it
VAULT_KEY_ENV = "CLEARLINE_VAULT_KEY_ID"  # KMS key sealing card numbers
VAULT_FINGERPRINT_KEY_ENV = "CLEARLINE_VAULT_FINGERPRINT_KEY_ID"  # KMS HMAC key: fingerprints
API_KEY_PREFIX = "APIKEY#"  # the partition keys of API key items, all the vault may read
# The secret the processor signs dispute notifications with: its name in Secrets Manager.
PROCESSOR_NOTIFICATION_SECRET_ENV = "CLEARLINE_PROCESSOR_NOTIFICATION_SECRET"
PROCESSOR_NOTIFICATION_SECRET_NAME = "clearline/processor-notifications"
PROCESSOR_NOTIFICATION_PATH = "/processor/notifications"
SERVICE_NAME = "clearline"
METRICS_NAMESPACE = "Clearline"
# Published by the processor sync on every run (zero included): pending money operations
# it could not resolve within their bound. Alarmed as soon as it is above zero.
UNRESOLVED_PENDING_OPERATIONS_METRIC = "UnresolvedPendingOperations"

MAIN_TABLE = TableSpec(
    key="main",
    name="clearline-main",
    partition_key="pk",
    sort_key="sk",
    indexes=(
        # Lists of a merchant's objects, newest first.
        IndexSpec(name="by_merchant", partition_key="gsi1pk", sort_key="gsi1sk"),
        # The same lists narrowed to one value of a filter (events of one type, the
        # balance transactions of one source), from small facet items beside each object.
        IndexSpec(name="by_facet", partition_key="gsi2pk", sort_key="gsi2sk"),
        # Sparse: only charges waiting for something (a capture time, an expiry, a
        # processor answer), by when. Schedulers query it instead of scanning.
        IndexSpec(name="by_due", partition_key="due_pk", sort_key="due_sk"),
    ),
    stream=True,  # the outbox: event items are relayed from the stream
)

IDEMPOTENCY_TABLE = TableSpec(
    key="idempotency",
    name="clearline-idempotency",
    partition_key="id",
    ttl_attribute="expiration",
)

# Short-lived counters, each a time window that expires: the velocity attributes of fraud
# rules and the processor's rate-limit seconds. Apart from the main table so that they never
# reach its stream and can expire.
COUNTERS_TABLE = TableSpec(
    key="counters",
    name="clearline-counters",
    partition_key="pk",
    sort_key="sk",
    ttl_attribute="expires_at",
)

API_FUNCTION = FunctionSpec(
    key="api",
    code_dir="functions/api",
    handler="api_handler.lambda_handler",
    description="The Stripe-compatible /v1 REST API",
    timeout_seconds=29,  # API Gateway's integration limit
    memory_mb=1024,
    tables={"main": "readwrite", "idempotency": "readwrite", "counters": "readwrite"},
    calls_processor=True,
    calls_vault=True,
    # A new payout goes to the bank at once; a refund waiting for processor capacity goes
    # to the capture queue's workers; an event support redelivers, to the webhook queue.
    sends_to=("payouts", "captures", "webhooks"),
    operates_queues=True,  # the dashboard's operations page
    bank_account_key=("seal",),  # the admin route that sets a merchant's bank account
)

# The main API's Lambda authorizer: maps an API key to its merchant and rate plan, and
# counts failed authentications per address in the counters table.
AUTHORIZER_FUNCTION = FunctionSpec(
    key="authorizer",
    code_dir="functions/authorizer",
    handler="authorizer_handler.lambda_handler",
    description="Maps an API key to its merchant and rate plan for API Gateway",
    timeout_seconds=5,
    memory_mb=512,
    tables={"main": "read", "counters": "readwrite"},
)

EVENT_BUS = BusSpec(key="events", name="clearline-events")
EVENT_SOURCE = "clearline"

WEBHOOK_QUEUE = QueueSpec(
    key="webhooks",
    name="clearline-webhook-deliveries",
    # Six times the dispatcher's timeout, as AWS advises for queues that trigger a function,
    # so a slow batch is not received twice while it runs.
    visibility_timeout_seconds=360,
    # Each receive is one delivery attempt; backoff between attempts is set per message.
    max_receive_count=16,  # 60 s doubling to 12 h: the last try about 3 days after the first
)
CAPTURE_QUEUE = QueueSpec(
    key="captures", name="clearline-captures", visibility_timeout_seconds=180, max_receive_count=5
)

# Succeeded charges, for the second look after their authorization (post_authorization).
RISK_REVIEW_QUEUE = QueueSpec(
    key="risk_reviews",
    name="clearline-risk-reviews",
    visibility_timeout_seconds=180,  # six times the function's timeout
    max_receive_count=5,
)

SETTLEMENT_QUEUE = QueueSpec(
    key="settlements",
    name="clearline-settlement-files",
    visibility_timeout_seconds=900,
    max_receive_count=5,
)
PAYOUT_QUEUE = QueueSpec(
    key="payouts", name="clearline-payouts", visibility_timeout_seconds=180, max_receive_count=5
)
# Mismatches wait here for operations; nothing consumes it automatically.
MISMATCH_QUEUE = QueueSpec(
    key="mismatches", name="clearline-reconciliation-mismatches", retention_seconds=14 * 86400
)
# Where the relay's stream trigger records the position of outbox records it gave up on
# (a malformed event item, or EventBridge refusing it past every retry). Nothing consumes
# it: it is alarmed, and the event item stays in the table, to be redelivered by support.
RELAY_FAILURE_QUEUE = QueueSpec(
    key="relay_failures", name="clearline-relay-failures", retention_seconds=14 * 86400
)
SETTLEMENT_BUCKET = BucketSpec(
    key="settlements",
    name="clearline-settlements",
    # The processor's settlement files, and the bank's payout reports under settlements/bank/.
    notify_prefix="settlements/",
    notify_queue="settlements",
)
BANK_REPORT_PREFIX = "settlements/bank/"

RELAY_FUNCTION = FunctionSpec(
    key="relay",
    code_dir="functions/relay",
    handler="relay_handler.lambda_handler",
    description="Publishes outbox events from the main table's stream to the event bus",
    timeout_seconds=30,
    memory_mb=512,
    stream_from="main",
    stream_failures=StreamFailureSpec(on_failure_queue=RELAY_FAILURE_QUEUE.key),
    batch_size=100,
    publishes_to="events",
)

WEBHOOK_FUNCTION = FunctionSpec(
    key="webhooks",
    code_dir="functions/webhooks",
    handler="webhook_handler.lambda_handler",
    description="Signs and delivers events to merchants' webhook endpoints, with retries",
    timeout_seconds=60,
    memory_mb=512,
    tables={"main": "readwrite"},
    queue_trigger="webhooks",
    batch_size=10,
    sends_to=("webhooks",),
    calls_internet=True,
)

SCHEDULER_FUNCTION = FunctionSpec(
    key="scheduler",
    code_dir="functions/scheduler",
    handler="scheduler_handler.lambda_handler",
    description="Queues what has come due: captures, expiries, dispute deadlines, payouts",
    timeout_seconds=60,
    memory_mb=512,
    tables={"main": "read"},
    schedule_minutes=1,
    sends_to=("captures", "payouts"),
)

RISK_REVIEW_FUNCTION = FunctionSpec(
    key="risk_review",
    code_dir="functions/risk_review",
    handler="risk_review_handler.lambda_handler",
    description="Looks again at each succeeded charge: opens reviews, reverses what rules block",
    timeout_seconds=30,
    memory_mb=512,
    tables={"main": "readwrite", "counters": "readwrite"},
    calls_processor=True,  # a reversal releases or refunds at the processor
    queue_trigger="risk_reviews",
    batch_size=10,
)

CAPTURE_FUNCTION = FunctionSpec(
    key="capture_worker",
    code_dir="functions/capture_worker",
    handler="capture_handler.lambda_handler",
    description="Captures or expires each queued authorization exactly once",
    timeout_seconds=30,
    memory_mb=512,
    # The processor's rate-limit windows are counted there (processor_capacity).
    tables={"main": "readwrite", "counters": "readwrite"},
    calls_processor=True,
    queue_trigger="captures",
    batch_size=10,
    # Captures share the processor's rate limit with charges: a few workers keep it busy
    # without crowding out the api's authorizations (records without a permit go back to
    # the queue).
    queue_max_concurrency=4,
)

PROCESSOR_SYNC_FUNCTION = FunctionSpec(
    key="processor_sync",
    code_dir="functions/processor_sync",
    handler="sync_handler.lambda_handler",
    description="Resolves charges left pending by a processor timeout",
    timeout_seconds=60,
    memory_mb=512,
    # The processor's rate-limit windows are counted there (processor_capacity).
    tables={"main": "readwrite", "counters": "readwrite"},
    calls_processor=True,
    calls_vault=True,
    calls_bank=True,  # a payout left pending with its transfer key
    bank_account_key=("open",),
    schedule_minutes=1,
)

RECONCILER_FUNCTION = FunctionSpec(
    key="reconciler",
    code_dir="functions/reconciler",
    handler="reconciler_handler.lambda_handler",
    description="Matches processor settlement files to the ledger and posts settlements",
    timeout_seconds=900,
    memory_mb=1024,
    tables={"main": "readwrite"},
    queue_trigger="settlements",
    batch_size=1,
    # A large file's chunks are settled this many at once: they post to the same shards.
    queue_max_concurrency=10,
    # A large file's chunks go back on its own queue.
    sends_to=("mismatches", "settlements"),
    buckets={"settlements": "readwrite"},
)

PAYOUT_FUNCTION = FunctionSpec(
    key="payout_worker",
    code_dir="functions/payout_worker",
    handler="payout_handler.lambda_handler",
    description="Sends each queued payout to the bank once, and settles it on arrival",
    timeout_seconds=30,
    memory_mb=512,
    tables={"main": "readwrite"},
    calls_bank=True,
    bank_account_key=("open",),
    queue_trigger="payouts",
    batch_size=10,
)

DAILY_PAYOUTS_FUNCTION = FunctionSpec(
    key="daily_payouts",
    code_dir="functions/daily_payouts",
    handler="daily_payouts_handler.lambda_handler",
    description="Pays out every merchant's available balance once a day",
    timeout_seconds=300,
    memory_mb=512,
    tables={"main": "readwrite"},
    schedule_minutes=24 * 60,
    sends_to=("payouts",),
)

DISPUTE_INTAKE_FUNCTION = FunctionSpec(
    key="dispute_intake",
    code_dir="functions/dispute_intake",
    handler="intake_handler.lambda_handler",
    description="Opens and follows disputes from the processor's signed notifications",
    timeout_seconds=29,
    memory_mb=512,
    # The processor's rate-limit windows are counted there (processor_capacity).
    tables={"main": "readwrite", "counters": "readwrite"},
    calls_processor=True,  # to follow up a dispute, if a notice leaves it unclear
    reads_processor_secret=True,
)

FX_RATES_FUNCTION = FunctionSpec(
    key="fx_rates",
    code_dir="functions/fx_rates",
    handler="rates_handler.lambda_handler",
    description="Pulls mid-market exchange rates from the provider and stores them for the api",
    timeout_seconds=30,
    memory_mb=256,
    tables={"main": "readwrite"},
    calls_rate_provider=True,
    schedule_minutes=15,
)

TOPOLOGY = Topology(
    tables=(MAIN_TABLE, IDEMPOTENCY_TABLE, COUNTERS_TABLE),
    functions=(
        API_FUNCTION,
        AUTHORIZER_FUNCTION,
        RELAY_FUNCTION,
        WEBHOOK_FUNCTION,
        SCHEDULER_FUNCTION,
        CAPTURE_FUNCTION,
        RISK_REVIEW_FUNCTION,
        PROCESSOR_SYNC_FUNCTION,
        RECONCILER_FUNCTION,
        DISPUTE_INTAKE_FUNCTION,
        PAYOUT_FUNCTION,
        DAILY_PAYOUTS_FUNCTION,
        FX_RATES_FUNCTION,
    ),
    api=ApiSpec(function="api", authorizer="authorizer"),
    notifications=ApiSpec(function="dispute_intake"),
    queues=(
        WEBHOOK_QUEUE,
        CAPTURE_QUEUE,
        RISK_REVIEW_QUEUE,
        PAYOUT_QUEUE,
        SETTLEMENT_QUEUE,
        MISMATCH_QUEUE,
        RELAY_FAILURE_QUEUE,
    ),
    buckets=(SETTLEMENT_BUCKET,),
    buses=(EVENT_BUS,),
    rules=(
        RuleSpec(
            key="all_events_to_webhooks",
            bus="events",
            event_pattern={"source": [EVENT_SOURCE]},
            queue="webhooks",
        ),
        RuleSpec(
            key="succeeded_charges_to_risk_review",
            bus="events",
            event_pattern={"source": [EVENT_SOURCE], "detail-type": ["charge.succeeded"]},
            queue="risk_reviews",
        ),
    ),
)


# The card vault: the only component that ever receives a card number. It is deployed as a
# stack of its own (its own API, function, table, KMS keys and IAM boundary), so that
# Clearline's API, tables, logs and events stay out of PCI scope. Locally it is served on
# an origin of its own. Clearline calls its internal routes signed with its roles.
VAULT_TABLE = TableSpec(
    key="vault",
    name="clearline-vault",
    partition_key="pk",
    sort_key="sk",
    ttl_attribute="expires_at",  # rate-limit windows, CVCs, unredeemed tokens
)

VAULT_FUNCTION = FunctionSpec(
    key="vault",
    code_dir="functions/vault",
    handler="vault_handler.lambda_handler",
    description="The card vault: tokenizes cards from browsers, forwards them to the processor",
    timeout_seconds=29,
    memory_mb=512,
    tables={"vault": "readwrite"},
    calls_processor=True,
    reads_api_keys=True,
)

VAULT_TOPOLOGY = Topology(
    tables=(VAULT_TABLE,),
    functions=(VAULT_FUNCTION,),
    api=ApiSpec(function="vault"),
)
