"""The Clearline stack: every table, queue, bucket, bus, layer, function and the REST APIs come
from the topology."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, cast

from aws_cdk import (
    ArnFormat,
    CfnOutput,
    CfnParameter,
    Duration,
    Fn,
    RemovalPolicy,
    Stack,
)
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from clearline.config import (
    PROCESSOR_TPS_ENV,
    WEBHOOK_ALLOW_LOOPBACK_ENV,
    WEBHOOK_SECRET_USERS,
    WEBHOOK_SECRETS_KEY_ENV,
)
from clearline.dashboard_identity import CLIENT_ID_ENV, DOMAIN_ENV, ISSUER_ENV, OPERATIONS_GROUP
from clearline.ip_geolocation import IP_COUNTRIES_ENV, IpCountries
from clearline.rate_limits import (
    AUTH_FAILURES,
    AUTH_FAILURES_MESSAGE,
    AUTHORIZER_CACHE_TTL_SECONDS,
    CONTEXT_CODE,
    CONTEXT_MESSAGE_JSON,
    GLOBAL_RATE,
    KEYLESS_ROUTES,
    LIVE_PLAN,
    LOCKOUT_PLAN_NAME,
    LOCKOUT_USAGE_KEY,
    MISSING_KEY_MESSAGE,
    RATE_LIMIT_MESSAGE,
    RATE_LIMITED_REASON_HEADER,
    TEST_PLAN,
    USAGE_API_ENV,
    USAGE_STAGE_ENV,
    plan_name,
)
from clearline.topology import (
    BANK_ACCOUNTS_KEY_ENV,
    BANK_URL_ENV,
    MAIN_TABLE,
    METRICS_NAMESPACE,
    PROCESSOR_NOTIFICATION_PATH,
    PROCESSOR_NOTIFICATION_SECRET_ENV,
    PROCESSOR_SYNC_FUNCTION,
    PROCESSOR_URL_ENV,
    RATE_PROVIDER_URL_ENV,
    SERVICE_NAME,
    TOPOLOGY,
    UNRESOLVED_PENDING_OPERATIONS_METRIC,
    VAULT_URL_PARAMETER,
    VAULT_URL_PARAMETER_ENV,
    ApiSpec,
    BucketSpec,
    BusSpec,
    FunctionSpec,
    QueueSpec,
    RuleSpec,
    Topology,
    bucket_env_var,
    bus_env_var,
    dlq_env_var,
    queue_env_var,
    table_env_var,
)
from infra_cdk.shared import (
    ARCHITECTURE,
    RUNTIME,
    acknowledge,
    add_stripe_shaped_gateway_errors,
    alarm,
    alarm_topic,
    construct_name,
    durable_table,
    function_errors_alarm,
    function_layers,
    lambda_function,
    processor_url_parameter,
    stage_options,
    stage_url,
)
from presentation.links import PUBLIC_URL_ENV

# Messages keep their first enqueue time when moved to a dead-letter queue, so dead-letter
# queues keep them for SQS's maximum, longer than any source queue.
DEAD_LETTER_RETENTION = Duration.days(14)
# Pending operations are judged over a quarter of an hour: an operation left pending that
# long is past what the resolver should need.
UNRESOLVED_PENDING_PERIOD = Duration.minutes(15)
# Bucket lifecycle. Files are read in the first weeks after they land, later only for audits
# and disputes; an overwritten or deleted version stays recoverable for a quarter.
INFREQUENT_ACCESS_AFTER = Duration.days(30)
NONCURRENT_VERSION_RETENTION = Duration.days(90)
ABORT_INCOMPLETE_UPLOADS_AFTER = Duration.days(7)
# Server access logs are kept as long as the functions' logs.
ACCESS_LOG_RETENTION = Duration.days(365)
# Without it, log delivery is granted through the LogDeliveryWrite ACL, which needs ACLs
# enabled on the log bucket; a bucket policy works with ACLs disabled (bucket owner enforced).
S3_ACCESS_LOGS_USE_BUCKET_POLICY = "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy"
# What the wildcard actions of the CDK's bucket grants cover, for their acknowledgments.
S3_GRANT_WILDCARDS = {
    "s3:GetObject*": "reads objects, their versions, tags, retention and attributes",
    "s3:GetBucket*": "reads the bucket's own settings, such as its location and versioning",
    "s3:List*": "lists the bucket's objects, object versions and multipart uploads",
    "s3:DeleteObject*": "deletes objects and object versions, and their tags",
    "s3:Abort*": "aborts its own multipart uploads (AbortMultipartUpload is the only match)",
}
S3_READ_WILDCARDS = ("s3:GetObject*", "s3:GetBucket*", "s3:List*")
S3_WRITE_WILDCARDS = ("s3:DeleteObject*", "s3:Abort*")
# What each use of a key that seals secrets (webhook signing secrets, bank account numbers)
# needs, exactly: sealing asks KMS for a data key (GenerateDataKey returns it in the clear
# and encrypted) and encrypts with that; opening decrypts one.
KMS_ACTIONS_FOR = {"seal": ("kms:GenerateDataKey",), "open": ("kms:Decrypt",)}
# The bank's transfer API, set per deployment like the processor's URL.
DEFAULT_BANK_URL = "https://sandbox-bank.invalid"
BANK_URL_PARAMETER_ID = "BankUrl"
DEFAULT_RATE_PROVIDER_URL = "https://sandbox-rates.invalid"
RATE_PROVIDER_URL_PARAMETER_ID = "RateProviderUrl"
# Operators' routes on the main API (/admin/...), which API Gateway serves only to callers
# that sign their requests with IAM credentials (SigV4).
ADMIN_PATH = "admin"
# The processor's notifications are few (disputes), and it retries one it is refused (429
# included): a low limit keeps a flood of forged notifications from taking the account's
# Lambda concurrency from the payments API.
PROCESSOR_TPS_PARAMETER_ID = "ProcessorTps"
# A CSV of `network,country` rows that places client addresses for fraud rules
# (`:ip_country:`), given at synth: `cdk deploy -c clearline:ipCountries=countries.csv`.
# It ships as a layer of its own beside the functions that screen charges; without it they
# use the sandbox's table.
IP_COUNTRIES_CONTEXT = "clearline:ipCountries"
IP_COUNTRIES_LAYER_DIR = "/opt/ip_countries"
NOTIFICATIONS_THROTTLE_RATE_LIMIT = 100
NOTIFICATIONS_THROTTLE_BURST_LIMIT = 200
# Generated long, and without punctuation, so it pastes into the processor's settings as is.
NOTIFICATION_SECRET_LENGTH = 64
# Keys of a topology event pattern -> fields of events.EventPattern.
EVENT_PATTERN_FIELDS = {
    "account": "account",
    "detail": "detail",
    "detail-type": "detail_type",
    "id": "id",
    "region": "region",
    "resources": "resources",
    "source": "source",
    "time": "time",
    "version": "version",
}
# The vault's internal routes, on any of its APIs and stages: its stack deploys after this
# one, so its API's id cannot be known here.
VAULT_INTERNAL_ROUTES = "*/*/*/internal/*"


def _header_parameters(headers: dict[str, str]) -> dict[str, str]:
    return {f"gatewayresponse.header.{name}": value for name, value in headers.items()}


def event_pattern(pattern: dict[str, Any]) -> events.EventPattern:
    """A topology event pattern (EventBridge's JSON keys) as an events.EventPattern."""
    unknown = set(pattern) - set(EVENT_PATTERN_FIELDS)
    if unknown:
        raise ValueError(f"unsupported event pattern keys: {sorted(unknown)}")
    return events.EventPattern(**{EVENT_PATTERN_FIELDS[k]: v for k, v in pattern.items()})


class ClearlineStack(Stack):
    """DynamoDB tables, SQS queues, event buses and rules, the two layers, one Lambda per
    FunctionSpec with its triggers, the REST API, and the processor's notifications API."""

    def __init__(
        self, scope: Construct, construct_id: str, *, topology: Topology = TOPOLOGY
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            description="Clearline: a Stripe-compatible payments API (API Gateway, Lambda, "
            "DynamoDB, SQS, EventBridge, S3)",
        )
        # Set on the stack, before any child exists, so that it holds in every app.
        self.node.set_context(S3_ACCESS_LOGS_USE_BUCKET_POLICY, True)
        self.topology = topology
        # Every alarm notifies this topic; subscribe the on-call rotation to it.
        self.alarm_topic = alarm_topic(self, owner="Clearline")
        self.tables = {spec.key: durable_table(self, spec) for spec in topology.tables}
        self.dead_letter_queues: dict[str, sqs.Queue] = {}
        # Per queue key, the alarms of the queues that no function consumes.
        self.unconsumed_queue_alarms: dict[str, cloudwatch.Alarm] = {}
        self.queues = {spec.key: self._queue(spec) for spec in topology.queues}
        self.access_log_bucket = self._access_log_bucket() if topology.buckets else None
        self.buckets = {spec.key: self._bucket(spec) for spec in topology.buckets}
        self._acknowledge_bucket_notifications_handler()
        self.buses = {spec.key: self._bus(spec) for spec in topology.buses}
        # Per rule key, where EventBridge puts the events it could not deliver.
        self.rule_dead_letter_queues: dict[str, sqs.Queue] = {}
        self.rules = {spec.key: self._rule(spec) for spec in topology.rules}
        # Per function key, for the functions that have each trigger.
        self.stream_failure_queues: dict[str, sqs.Queue] = {}
        self.function_error_alarms: dict[str, cloudwatch.Alarm] = {}
        self.schedules: dict[str, events.Rule] = {}
        self.layers = function_layers(self)
        self.ip_countries = self._ip_countries_layer()
        self.processor_url: CfnParameter | None = (
            processor_url_parameter(self)
            if any(spec.calls_processor for spec in topology.functions)
            else None
        )
        # The processor's rate limit, shared by every function that calls it (0: none).
        self.processor_tps: CfnParameter | None = (
            CfnParameter(
                self,
                PROCESSOR_TPS_PARAMETER_ID,
                type="Number",
                default=0,
                min_value=0,
                description="Calls a second the card processor takes (authorize, capture, "
                "void, refund), shared by every function; 0 sets no limit.",
            )
            if any(spec.calls_processor for spec in topology.functions)
            else None
        )
        self.webhook_secrets_key = (
            self._webhook_secrets_key()
            if any(spec.key in WEBHOOK_SECRET_USERS for spec in topology.functions)
            else None
        )
        self.processor_notification_secret = (
            self._processor_notification_secret()
            if any(spec.reads_processor_secret for spec in topology.functions)
            else None
        )
        self.bank_url: CfnParameter | None = (
            self._bank_url_parameter()
            if any(spec.calls_bank for spec in topology.functions)
            else None
        )
        self.rate_provider_url: CfnParameter | None = (
            CfnParameter(
                self,
                RATE_PROVIDER_URL_PARAMETER_ID,
                type="String",
                default=DEFAULT_RATE_PROVIDER_URL,
                allowed_pattern=r"^https://\S+$",
                description="Base URL of the FX rate provider's API (HTTPS only); only the "
                "rates function calls it.",
            )
            if any(spec.calls_rate_provider for spec in topology.functions)
            else None
        )
        self.bank_accounts_key = (
            self._bank_accounts_key()
            if any(spec.bank_account_key for spec in topology.functions)
            else None
        )
        self.functions = {spec.key: self._function(spec) for spec in topology.functions}
        self.unresolved_pending_alarm = (
            self._unresolved_pending_alarm()
            if any(spec.key == PROCESSOR_SYNC_FUNCTION.key for spec in topology.functions)
            else None
        )
        # The main API's methods: those merchants call with API keys (through the key
        # authorizer), those that take no key (public pages, a browser's publishable-key
        # calls), and operators' /admin ones, which only IAM-signed requests reach.
        self.keyed_methods: list[apigw.Method] = []
        self.keyless_methods: list[apigw.Method] = []
        self.admin_methods: list[apigw.Method] = []
        # Attached to the API as its authorizer, beside the topology's functions.
        # The main API's key authorizer: a function of the topology, attached to the API
        # rather than triggered.
        assert topology.api.authorizer is not None, "the main API authorizes keys"
        self.authorizer_function = self.functions[topology.api.authorizer]
        self.key_authorizer = self._key_authorizer()
        self.usage_plans: dict[str, apigw.UsagePlan] = {}
        self.api = self._rest_api(topology.api)
        self.public_url = self._tell_functions_the_public_url(topology.api)
        self.dashboard_users = self._dashboard_sign_in(topology.api)
        self._let_the_authorizer_register_usage_keys(topology.api)
        self.notifications_api = (
            self._notifications_api(topology.notifications)
            if topology.notifications is not None
            else None
        )

    @property
    def public_methods(self) -> list[apigw.Method]:
        """Every method merchants and browsers call: with the key authorizer or without."""
        return [*self.keyed_methods, *self.keyless_methods]

    @property
    def main_table(self) -> dynamodb.ITable:
        """The table that holds the API keys, which the vault's stack may read (those only)."""
        return self.tables[MAIN_TABLE.key]

    def _webhook_secrets_key(self) -> kms.Key:
        # Each endpoint's signing secret is sealed under its own data key, which this key
        # encrypts; losing the key would lose every secret, so no stack change deletes it.
        return kms.Key(
            self,
            "WebhookSecretsKey",
            description="Seals merchants' webhook signing secrets (envelope encryption)",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )

    def _processor_notification_secret(self) -> secretsmanager.Secret:
        # Encrypted with the AWS managed key for Secrets Manager; only the functions that read
        # it are granted it. Named by CloudFormation, as the tables are (the topology's name
        # is the local stack's): the output below tells operators which secret to share.
        secret = secretsmanager.Secret(
            self,
            "ProcessorNotificationSecret",
            description="Shared with the card processor, which signs its notifications "
            "(disputes) with it; the dispute intake verifies them",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=NOTIFICATION_SECRET_LENGTH, exclude_punctuation=True
            ),
        )
        acknowledge(
            secret,
            "AwsSolutions-SMG4",
            "The card processor holds this same secret and signs its notifications with it, "
            "so it cannot rotate on its own: operators rotate it together with the processor.",
        )
        CfnOutput(
            self,
            "ProcessorNotificationSecretArn",
            value=secret.secret_arn,
            description="The secret to configure at the card processor for signing its "
            "notifications",
        )
        return secret

    def _bank_url_parameter(self) -> CfnParameter:
        return CfnParameter(
            self,
            BANK_URL_PARAMETER_ID,
            type="String",
            default=DEFAULT_BANK_URL,
            allowed_pattern=r"^https://\S+$",
            description="Base URL of the bank's transfer API, for payouts (HTTPS only).",
        )

    def _bank_accounts_key(self) -> kms.Key:
        # Each bank account number is sealed under its own data key, which this key encrypts;
        # losing the key would lose every account number, so no stack change deletes it.
        return kms.Key(
            self,
            "BankAccountsKey",
            description="Seals merchants' bank account numbers (envelope encryption)",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )

    def _alarm(
        self,
        construct_id: str,
        description: str,
        metric: cloudwatch.IMetric,
        *,
        treat_missing_data: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
    ) -> cloudwatch.Alarm:
        """An alarm, notifying the alarm topic, as soon as `metric` is above zero."""
        return alarm(
            self,
            self.alarm_topic,
            construct_id,
            description,
            metric,
            treat_missing_data=treat_missing_data,
        )

    def _unresolved_pending_alarm(self) -> cloudwatch.Alarm:
        metric = cloudwatch.Metric(
            namespace=METRICS_NAMESPACE,
            metric_name=UNRESOLVED_PENDING_OPERATIONS_METRIC,
            dimensions_map={"service": SERVICE_NAME},
            statistic=cloudwatch.Stats.MAXIMUM,
            period=UNRESOLVED_PENDING_PERIOD,
        )
        return self._alarm(
            "UnresolvedPendingOperationsAlarm",
            "A money operation is still pending past its bound: the processor sync could not "
            "resolve it against the processor. Check the processor, then the operation.",
            metric,
            # The processor sync publishes the figure on every run, zero included: no figure
            # means it did not run, and pending operations stay unresolved just the same.
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
        )

    def _encrypted_queue(
        self,
        construct_id: str,
        *,
        retention: Duration,
        visibility_timeout: Duration | None = None,
        dead_letter_queue: sqs.DeadLetterQueue | None = None,
    ) -> sqs.Queue:
        # No queue_name: CloudFormation names it, as it does the tables. SQS-managed keys,
        # not a KMS key: EventBridge can deliver to SSE-SQS queues without a key policy.
        return sqs.Queue(
            self,
            construct_id,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=retention,
            visibility_timeout=visibility_timeout,
            dead_letter_queue=dead_letter_queue,
        )

    def _depth_alarm(
        self, queue: sqs.Queue, construct_id: str, description: str
    ) -> cloudwatch.Alarm:
        """An alarm as soon as a message waits in `queue`."""
        # SQS stops sending metrics for an empty, idle queue: missing data is not breaching.
        return self._alarm(
            construct_id,
            description,
            queue.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(1), statistic=cloudwatch.Stats.MAXIMUM
            ),
        )

    def _dead_letter_queue(self, construct_id: str, description: str) -> sqs.Queue:
        """A queue that nothing reads, with an alarm as soon as a message lands in it."""
        queue = self._encrypted_queue(construct_id, retention=DEAD_LETTER_RETENTION)
        self._depth_alarm(
            queue,
            f"{construct_id}Alarm",
            f"{description} Inspect the messages and redrive or resolve them.",
        )
        return queue

    def _queue(self, spec: QueueSpec) -> sqs.Queue:
        name = construct_name(spec.key)
        consumed = any(f.queue_trigger == spec.key for f in self.topology.functions)
        if consumed and spec.max_receive_count is None:
            # Without a receive limit, a message its consumer keeps failing is retried
            # until it expires, silently.
            raise ValueError(
                f"queue {spec.key} triggers a function but has no dead-letter queue "
                "(max_receive_count)"
            )
        dead_letter_queue = None
        if spec.max_receive_count is not None:
            dlq = self._dead_letter_queue(
                f"{name}DeadLetterQueue",
                f"Messages of the {spec.key} queue failed {spec.max_receive_count} receives.",
            )
            self.dead_letter_queues[spec.key] = dlq
            dead_letter_queue = sqs.DeadLetterQueue(
                max_receive_count=spec.max_receive_count, queue=dlq
            )
        queue = self._encrypted_queue(
            f"{name}Queue",
            retention=Duration.seconds(spec.retention_seconds),
            visibility_timeout=Duration.seconds(spec.visibility_timeout_seconds),
            dead_letter_queue=dead_letter_queue,
        )
        if not consumed:
            # Like a dead-letter queue, a queue that no function consumes holds work that
            # waits for a person (reconciliation mismatches, say), so a message is news.
            self.unconsumed_queue_alarms[spec.key] = self._depth_alarm(
                queue,
                f"{name}QueueAlarm",
                f"Messages wait on the {spec.key} queue, which no function consumes. "
                "Inspect and resolve them.",
            )
        if dead_letter_queue is None:
            acknowledge(
                cast(sqs.CfnQueue, queue.node.default_child),
                "AwsSolutions-SQS3",
                f"Nothing consumes the {spec.key} queue automatically: people read it, so "
                "no receive count can mark a poison message; it is alarmed as soon as a "
                f"message arrives and keeps messages for {spec.retention_seconds // 86400} days.",
            )
        return queue

    def _access_log_bucket(self) -> s3.Bucket:
        """The bucket that receives every other bucket's server access logs."""
        bucket = s3.Bucket(
            self,
            "AccessLogBucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            # Server access logging delivers to SSE-S3 buckets only, not to SSE-KMS ones.
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="ExpireAccessLogs",
                    expiration=ACCESS_LOG_RETENTION,
                    abort_incomplete_multipart_upload_after=ABORT_INCOMPLETE_UPLOADS_AFTER,
                )
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
        # Not logged itself: logging it into itself would log its own log deliveries without
        # end. AwsSolutions-S1 accepts a bucket that other buckets' access logs go to.
        return bucket

    def _bucket(self, spec: BucketSpec) -> s3.Bucket:
        if (spec.notify_prefix is None) != (spec.notify_queue is None):
            raise ValueError(f"bucket {spec.key} needs both notify_prefix and notify_queue")
        if spec.notify_queue is not None and spec.notify_queue not in self.queues:
            raise ValueError(f"bucket {spec.key} notifies an unknown queue: {spec.notify_queue}")
        name = construct_name(spec.key)
        # No bucket_name: CloudFormation names it, as it does the tables and queues.
        bucket = s3.Bucket(
            self,
            f"{name}Bucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_log_bucket,
            server_access_logs_prefix=f"{spec.key}/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="TierAndCleanUp",
                    transitions=[
                        s3.Transition(
                            storage_class=s3.StorageClass.INFREQUENT_ACCESS,
                            transition_after=INFREQUENT_ACCESS_AFTER,
                        )
                    ],
                    noncurrent_version_expiration=NONCURRENT_VERSION_RETENTION,
                    abort_incomplete_multipart_upload_after=ABORT_INCOMPLETE_UPLOADS_AFTER,
                )
            ],
            # The buckets hold financial records (settlement files): no stack change may
            # delete them.
            removal_policy=RemovalPolicy.RETAIN,
        )
        if spec.notify_queue is not None:
            bucket.add_event_notification(
                s3.EventType.OBJECT_CREATED,
                s3n.SqsDestination(self.queues[spec.notify_queue]),
                s3.NotificationKeyFilter(prefix=spec.notify_prefix),
            )
        return bucket

    def _acknowledge_bucket_notifications_handler(self) -> None:
        # The CDK adds one singleton function per stack that writes the buckets' notification
        # configurations, and attaches the managed policy to its role even to a role passed
        # in (notifications_handler_role), so there is nothing to fix on our side.
        for child in self.node.children:
            if child.node.id.startswith("BucketNotificationsHandler"):
                acknowledge(
                    child.node.find_child("Role"),
                    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                    "service-role/AWSLambdaBasicExecutionRole]",
                    "The CDK's bucket notifications handler runs only during deployments to "
                    "set notification configurations; the CDK always attaches this policy "
                    "(CloudWatch Logs writes only) to its role, even to a role passed in.",
                )

    def _bus(self, spec: BusSpec) -> events.EventBus:
        # No event_bus_name: the CDK derives a unique one from the stack, so stacks never
        # collide; spec.name is only the local stack's name.
        return events.EventBus(
            self, f"{construct_name(spec.key)}Bus", description=f"Clearline's {spec.key} bus"
        )

    def _rule(self, spec: RuleSpec) -> events.Rule:
        if spec.bus not in self.buses or spec.queue not in self.queues:
            raise ValueError(f"rule {spec.key} names an unknown bus or queue")
        name = construct_name(spec.key)
        dead_letters = self._dead_letter_queue(
            f"{name}RuleDeadLetterQueue",
            f"EventBridge could not deliver events of the {spec.key} rule to the {spec.queue} "
            f"queue in {spec.retry_attempts} attempts over "
            f"{spec.max_event_age_seconds // 3600} hours.",
        )
        acknowledge(
            cast(sqs.CfnQueue, dead_letters.node.default_child),
            "AwsSolutions-SQS3",
            f"This queue is itself the dead-letter queue of the {spec.key} rule's target, "
            "which the check does not recognize as one; it is alarmed, and nothing consumes it.",
        )
        self.rule_dead_letter_queues[spec.key] = dead_letters
        return events.Rule(
            self,
            f"{name}Rule",
            description=f"Sends matching events on the {spec.bus} bus to the {spec.queue} queue",
            event_bus=self.buses[spec.bus],
            event_pattern=event_pattern(spec.event_pattern),
            targets=[
                targets.SqsQueue(
                    self.queues[spec.queue],
                    dead_letter_queue=dead_letters,
                    retry_attempts=spec.retry_attempts,
                    max_event_age=Duration.seconds(spec.max_event_age_seconds),
                )
            ],
        )

    def _ip_countries_layer(self) -> tuple[lambda_.LayerVersion, str] | None:
        """The deployment's table of where addresses are, as a layer, and its path in a
        function; None when the app was given none."""
        given = self.node.try_get_context(IP_COUNTRIES_CONTEXT)
        if not given:
            return None
        table = Path(str(given)).resolve()
        if not table.is_file():
            raise ValueError(f"{IP_COUNTRIES_CONTEXT}: no such file {table}")
        IpCountries.from_csv(table)  # a table that cannot be loaded fails the synth, not a charge
        staged = Path(tempfile.mkdtemp(prefix="ip-countries-")) / "ip_countries"
        staged.mkdir()
        shutil.copyfile(table, staged / table.name)
        layer = lambda_.LayerVersion(
            self,
            "IpCountriesLayer",
            code=lambda_.Code.from_asset(str(staged.parent)),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
            description="Where client addresses are, for fraud rules on :ip_country:",
        )
        return layer, f"{IP_COUNTRIES_LAYER_DIR}/{table.name}"

    def _function(self, spec: FunctionSpec) -> lambda_.Function:
        layers = list(self.layers)
        if spec.calls_processor and self.ip_countries is not None:
            layers.append(self.ip_countries[0])
        function = lambda_function(self, spec, layers=layers, environment=self._environment(spec))
        role = cast(iam.Role, function.role)

        for queue_key in spec.sends_to:
            self.queues[queue_key].grant_send_messages(function)
        if spec.operates_queues:  # every queue's depth; dead letters moved back to it
            for queue_key, queue in self.queues.items():
                queue.grant(function, "sqs:GetQueueAttributes")
                dlq = self.dead_letter_queues.get(queue_key)
                if dlq is not None:
                    queue.grant_send_messages(function)
                    dlq.grant_consume_messages(function)
                    dlq.grant(function, "sqs:GetQueueAttributes")
        if spec.publishes_to is not None:
            self.buses[spec.publishes_to].grant_put_events_to(function)
        self._triggers(spec, function)

        for table_key, access in spec.tables.items():
            table = self.tables[table_key]
            if access == "readwrite":
                table.grant_read_write_data(function)
            else:
                table.grant_read_data(function)
            if self.topology.table(table_key).indexes:
                cfn_table = cast(dynamodb.CfnTable, table.node.default_child)
                logical_id = self.resolve(cfn_table.logical_id)
                acknowledge(
                    role,
                    f"AwsSolutions-IAM5[Resource::<{logical_id}.Arn>/index/*]",
                    f"The {spec.key} function queries the {table_key} table's global "
                    "secondary indexes; the grant covers that one table's indexes only "
                    "(<table arn>/index/*), never another table.",
                )
        for bucket_key, access in spec.buckets.items():
            self._grant_bucket(spec, role, bucket_key, access)
        if spec.key in WEBHOOK_SECRET_USERS and self.webhook_secrets_key is not None:
            actions = [a for use in WEBHOOK_SECRET_USERS[spec.key] for a in KMS_ACTIONS_FOR[use]]
            self.webhook_secrets_key.grant(role, *actions)
        if spec.bank_account_key and self.bank_accounts_key is not None:
            actions = [a for use in spec.bank_account_key for a in KMS_ACTIONS_FOR[use]]
            self.bank_accounts_key.grant(role, *actions)
        if spec.reads_processor_secret and self.processor_notification_secret is not None:
            # GetSecretValue and DescribeSecret, on this one secret.
            self.processor_notification_secret.grant_read(role)
        if spec.calls_vault:
            self._grant_vault_calls(spec, role)
        self.function_error_alarms[spec.key] = function_errors_alarm(
            self, self.alarm_topic, spec, function
        )
        return function

    def _grant_vault_calls(self, spec: FunctionSpec, role: iam.Role) -> None:
        """Reading the vault's URL from its parameter, and calling its internal routes, signed:
        nothing of the vault's table or keys, which only the vault's own role may use."""
        # Built from the name: the parameter belongs to the vault's stack, deployed later.
        parameter_arn = self.format_arn(
            service="ssm",
            resource="parameter",
            resource_name=VAULT_URL_PARAMETER.lstrip("/"),
            arn_format=ArnFormat.SLASH_RESOURCE_NAME,
        )
        role.add_to_policy(
            iam.PolicyStatement(actions=["ssm:GetParameter"], resources=[parameter_arn])
        )
        internal_routes = self.format_arn(
            service="execute-api",
            resource=VAULT_INTERNAL_ROUTES,
            arn_format=ArnFormat.NO_RESOURCE_NAME,
        )
        role.add_to_policy(
            iam.PolicyStatement(actions=["execute-api:Invoke"], resources=[internal_routes])
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:execute-api:<AWS::Region>:"
            f"<AWS::AccountId>:{VAULT_INTERNAL_ROUTES}]",
            f"The {spec.key} function calls the card vault's internal routes, whose API is "
            "in a later stack, so its id is unknown here: the grant covers only paths under "
            "/internal/ of this account's and region's APIs, and only the vault serves them.",
        )

    def _grant_bucket(
        self, spec: FunctionSpec, role: iam.Role, bucket_key: str, access: str
    ) -> None:
        bucket = self.buckets[bucket_key]
        wildcards: tuple[str, ...] = S3_READ_WILDCARDS
        if access == "readwrite":
            bucket.grant_read_write(role)
            wildcards += S3_WRITE_WILDCARDS
        else:
            bucket.grant_read(role)
        logical_id = self.resolve(cast(s3.CfnBucket, bucket.node.default_child).logical_id)
        acknowledge(
            role,
            f"AwsSolutions-IAM5[Resource::<{logical_id}.Arn>/*]",
            f"The {spec.key} function works on any object of the {bucket_key} bucket, whose "
            "keys it learns at run time; the grant covers that one bucket's objects only.",
        )
        for action in wildcards:
            acknowledge(
                role,
                f"AwsSolutions-IAM5[Action::{action}]",
                f"{action} {S3_GRANT_WILDCARDS[action]}, as the {spec.key} function's "
                f"{access} access needs; it applies to the {bucket_key} bucket only.",
            )

    def _triggers(self, spec: FunctionSpec, function: lambda_.Function) -> None:
        name = construct_name(spec.key)
        if spec.stream_from is not None:
            if not self.topology.table(spec.stream_from).stream:
                raise ValueError(f"function {spec.key} streams from a table without a stream")
            failures = spec.stream_failures
            if failures is None or failures.on_failure_queue not in self.queues:
                # Without a bound on retries, one bad record would hold up its shard for a day.
                raise ValueError(
                    f"function {spec.key} streams without stream_failures naming a known queue"
                )
            on_failure = self.queues[failures.on_failure_queue]
            self.stream_failure_queues[spec.key] = on_failure
            function.add_event_source(
                event_sources.DynamoEventSource(
                    self.tables[spec.stream_from],
                    starting_position=lambda_.StartingPosition.TRIM_HORIZON,
                    batch_size=spec.batch_size,
                    report_batch_item_failures=True,
                    bisect_batch_on_error=failures.bisect_batch_on_error,
                    retry_attempts=failures.maximum_retry_attempts,
                    on_failure=event_sources.SqsDlq(on_failure),
                )
            )
        if spec.queue_trigger is not None:
            queue_spec = self.topology.queue(spec.queue_trigger)
            # Lambda refuses an SQS trigger whose visibility timeout is below the timeout.
            if queue_spec.visibility_timeout_seconds < spec.timeout_seconds:
                raise ValueError(
                    f"queue {queue_spec.key}'s visibility timeout is shorter than function "
                    f"{spec.key}'s timeout"
                )
            # Grants receive, delete, ChangeMessageVisibility and GetQueueAttributes.
            function.add_event_source(
                event_sources.SqsEventSource(
                    self.queues[spec.queue_trigger],
                    batch_size=spec.batch_size,
                    report_batch_item_failures=True,
                    max_concurrency=spec.queue_max_concurrency,
                )
            )
        if spec.schedule_minutes is not None:
            self.schedules[spec.key] = events.Rule(
                self,
                f"{name}Schedule",
                description=f"Runs the {spec.key} function every {spec.schedule_minutes} min",
                schedule=events.Schedule.rate(Duration.minutes(spec.schedule_minutes)),
                targets=[targets.LambdaFunction(function)],
            )

    def _environment(self, spec: FunctionSpec) -> dict[str, str]:
        unknown = set(spec.tables) - set(self.tables)
        if unknown:
            raise ValueError(f"function {spec.key} names unknown tables: {sorted(unknown)}")
        queue_keys = [*spec.sends_to, *([spec.queue_trigger] if spec.queue_trigger else [])]
        unknown = {key for key in queue_keys if key not in self.queues}
        if spec.publishes_to is not None and spec.publishes_to not in self.buses:
            unknown.add(spec.publishes_to)
        if spec.stream_from is not None and spec.stream_from not in self.tables:
            unknown.add(spec.stream_from)
        unknown |= set(spec.buckets) - set(self.buckets)
        if unknown:
            raise ValueError(f"function {spec.key} names unknown resources: {sorted(unknown)}")
        env = {table_env_var(key): self.tables[key].table_name for key in spec.tables}
        env |= {queue_env_var(key): self.queues[key].queue_url for key in queue_keys}
        if spec.operates_queues:
            env |= {queue_env_var(key): queue.queue_url for key, queue in self.queues.items()}
            env |= {dlq_env_var(key): dlq.queue_url for key, dlq in self.dead_letter_queues.items()}
        env |= {bucket_env_var(key): self.buckets[key].bucket_name for key in spec.buckets}
        if spec.publishes_to is not None:
            env[bus_env_var(spec.publishes_to)] = self.buses[spec.publishes_to].event_bus_name
        env["POWERTOOLS_SERVICE_NAME"] = SERVICE_NAME
        env["POWERTOOLS_METRICS_NAMESPACE"] = METRICS_NAMESPACE
        if spec.calls_processor and self.processor_url is not None:
            env[PROCESSOR_URL_ENV] = self.processor_url.value_as_string
        if spec.calls_processor and self.processor_tps is not None:
            env[PROCESSOR_TPS_ENV] = self.processor_tps.value_as_string
        if spec.calls_processor and self.ip_countries is not None:
            env[IP_COUNTRIES_ENV] = self.ip_countries[1]
        if spec.key in WEBHOOK_SECRET_USERS and self.webhook_secrets_key is not None:
            env[WEBHOOK_SECRETS_KEY_ENV] = self.webhook_secrets_key.key_arn
        if spec.calls_bank and self.bank_url is not None:
            env[BANK_URL_ENV] = self.bank_url.value_as_string
        if spec.calls_rate_provider and self.rate_provider_url is not None:
            env[RATE_PROVIDER_URL_ENV] = self.rate_provider_url.value_as_string
        if spec.bank_account_key and self.bank_accounts_key is not None:
            env[BANK_ACCOUNTS_KEY_ENV] = self.bank_accounts_key.key_arn
        if spec.reads_processor_secret and self.processor_notification_secret is not None:
            # Read with Powertools' parameters.get_secret, which takes a name or an ARN.
            env[PROCESSOR_NOTIFICATION_SECRET_ENV] = self.processor_notification_secret.secret_arn
        if spec.calls_vault:
            # A name, not a reference: the vault's stack writes the parameter later.
            env[VAULT_URL_PARAMETER_ENV] = VAULT_URL_PARAMETER
        if WEBHOOK_ALLOW_LOOPBACK_ENV in spec.environment:
            # Webhooks to loopback are the local stack's allowance, never a deployment's.
            raise ValueError(f"function {spec.key} sets {WEBHOOK_ALLOW_LOOPBACK_ENV}")
        clashes = env.keys() & spec.environment.keys()
        if clashes:
            raise ValueError(f"function {spec.key} overrides managed variables: {sorted(clashes)}")
        return env | spec.environment

    def _tell_functions_the_public_url(self, spec: ApiSpec) -> str:
        """Receipt and error-code links point at the API's stage URL. Built from the API's
        id, not its deployment, so that no function waits on a deployment that waits on it."""
        url = stage_url(self.api, spec.stage)
        for function in self.functions.values():
            function.add_environment(PUBLIC_URL_ENV, url)
        return url

    def _dashboard_sign_in(self, spec: ApiSpec) -> cognito.UserPool:
        """The dashboard's people: a Cognito user pool, signed in to on its hosted page
        (authorization code with PKCE, back to /dashboard/callback). An administrator makes
        each user, naming their merchant in custom:merchant; the operations group also sees
        the operations views. No self sign-up; a password and a one-time code, always."""
        pool = cognito.UserPool(
            self,
            "DashboardUsers",
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(email=True),
            custom_attributes={"merchant": cognito.StringAttribute(min_len=5, max_len=64)},
            password_policy=cognito.PasswordPolicy(
                min_length=12,
                require_digits=True,
                require_lowercase=True,
                require_uppercase=True,
                require_symbols=True,
            ),
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(sms=False, otp=True),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            feature_plan=cognito.FeaturePlan.PLUS,
            advanced_security_mode=cognito.AdvancedSecurityMode.ENFORCED,
            removal_policy=RemovalPolicy.RETAIN,
        )
        cognito.CfnUserPoolGroup(
            self,
            "DashboardOperators",
            user_pool_id=pool.user_pool_id,
            group_name=OPERATIONS_GROUP,
            description="Operators: the dashboard's operations views, across every merchant.",
        )
        domain = pool.add_domain(
            "DashboardSignInDomain",
            cognito_domain=cognito.CognitoDomainOptions(
                domain_prefix=f"clearline-{self.node.addr[:12]}"
            ),
        )
        client = pool.add_client(
            "Dashboard",
            generate_secret=False,  # a browser's flow, with PKCE: no secret to keep
            auth_flows=cognito.AuthFlow(user_srp=True),
            o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(authorization_code_grant=True),
                scopes=[cognito.OAuthScope.OPENID, cognito.OAuthScope.EMAIL],
                callback_urls=[f"{self.public_url}/dashboard/callback"],
                logout_urls=[f"{self.public_url}/dashboard"],
            ),
            prevent_user_existence_errors=True,
            id_token_validity=Duration.hours(1),
        )
        function = self.functions[spec.function]
        function.add_environment(DOMAIN_ENV, domain.base_url())
        function.add_environment(CLIENT_ID_ENV, client.user_pool_client_id)
        function.add_environment(ISSUER_ENV, pool.user_pool_provider_url)
        CfnOutput(
            self,
            "DashboardUserPool",
            value=pool.user_pool_id,
            description="Make dashboard users here: custom:merchant names their merchant.",
        )
        return pool

    def _let_the_authorizer_register_usage_keys(self, spec: ApiSpec) -> None:
        """The authorizer gives each merchant its API Gateway key in the usage plan of its
        rate the first time it sees it (clearline.rate_limits.KeyAuthorizer), so it is told
        the API and may list and create keys and plans and move keys between plans: never
        delete a key or a plan, nor read or change an API."""
        function = self.authorizer_function
        assert function.role is not None
        role = function.role
        function.add_environment(USAGE_API_ENV, self.api.rest_api_id)
        function.add_environment(USAGE_STAGE_ENV, spec.stage)
        apigateway = f"arn:{self.partition}:apigateway:{self.region}::"
        for actions, resources in (
            # list and create API keys and usage plans
            (["apigateway:GET", "apigateway:POST"], ["/apikeys", "/usageplans"]),
            # a plan's keys: list them, add one
            (["apigateway:GET", "apigateway:POST"], ["/usageplans/*/keys"]),
            # take a key out of the plan it leaves
            (["apigateway:DELETE"], ["/usageplans/*/keys/*"]),
        ):
            function.add_to_role_policy(
                iam.PolicyStatement(
                    actions=actions, resources=[apigateway + path for path in resources]
                )
            )
        for path, reason in (
            (
                "/usageplans/*/keys",
                "A merchant with a limit of its own gets a usage plan at run time, so the "
                "plans whose keys the authorizer lists and adds are not known at deploy time.",
            ),
            (
                "/usageplans/*/keys/*",
                "A merchant's key leaves its old plan when its limit changes; keys and plans "
                "are made at run time. Only plan membership is removed, never a key or plan.",
            ),
        ):
            acknowledge(
                role,
                "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:apigateway:<AWS::Region>::"
                f"{path}]",
                reason,
            )

    def _rest_api(self, spec: ApiSpec) -> apigw.LambdaRestApi:
        api = apigw.LambdaRestApi(
            self,
            "Api",
            handler=self.functions[spec.function],
            description="Clearline's Stripe-compatible REST API",
            # Methods are added below, so that they can share one request validator.
            proxy=False,
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # The account-level role that lets API Gateway write execution logs.
            cloud_watch_role=True,
            deploy_options=stage_options(self, spec.stage),
            # Usage plans find a request's key in the authorizer's answer, never in a header
            # a client sends.
            api_key_source_type=apigw.ApiKeySourceType.AUTHORIZER,
        )
        validator = api.add_request_validator(
            "RequestValidator", validate_request_body=True, validate_request_parameters=True
        )
        self.keyed_methods.append(api.root.add_method("ANY", **self._keyed(validator)))
        self.keyed_methods.append(
            api.root.add_proxy(any_method=False).add_method("ANY", **self._keyed(validator))
        )
        self._keyless_routes(api.root, validator)
        # /admin/... is matched before the greedy /{proxy+}, so no admin path is ever served
        # without a signature; /admin itself has no method and is refused.
        admin = api.root.add_resource(ADMIN_PATH).add_proxy(any_method=False)
        self.admin_methods.append(
            admin.add_method(
                "ANY",
                authorization_type=apigw.AuthorizationType.IAM,
                request_validator=validator,
            )
        )
        add_stripe_shaped_gateway_errors(api)
        self._rate_limit_responses(api)
        self.usage_plans = self._usage_plans(api)

        # Acknowledged on the exact constructs, so a new method or stage gets checked anew.
        for method in self.keyed_methods:
            acknowledge(
                method,
                "AwsSolutions-COG4",
                "Merchants are servers holding Stripe-style API keys, not Cognito users: the "
                "key authorizer (a Lambda REQUEST authorizer) checks each key instead.",
            )
        for method in self.keyless_methods:
            acknowledge(
                method,
                "AwsSolutions-APIG4",
                "Public by design: receipts, error-code pages and the API's description need "
                "no key, a browser's two PaymentIntent calls carry a publishable key in "
                "the query or body, which the api function checks itself, and the "
                "dashboard's pages check their own session cookie.",
            )
            acknowledge(
                method,
                "AwsSolutions-COG4",
                "Public pages and browser calls with publishable keys have no Cognito users "
                "behind them; the api function authenticates what needs a key, and the "
                "dashboard's sessions, opened by one-time sign-in links.",
            )
        for method in self.admin_methods:
            acknowledge(
                method,
                "AwsSolutions-COG4",
                "The admin routes are IAM-authorized: only operators' IAM principals allowed "
                "execute-api:Invoke on them may call them, with signed requests; operators "
                "are not Cognito users.",
            )
        acknowledge(
            api.deployment_stage,
            "AwsSolutions-APIG3",
            "No WAF web ACL yet: every request needs a valid API key, each key is throttled "
            "by its usage plan, addresses that keep failing authentication are locked out "
            "by the authorizer, and the stage is throttled; web ACL rules are to be tuned on "
            "real traffic before launch.",
        )
        acknowledge(
            api.node.find_child("CloudWatchRole"),
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonAPIGatewayPushToCloudWatchLogs]",
            "API Gateway's account-level logging role uses the AWS managed push-to-CloudWatch "
            "policy, which API Gateway documents for exactly this purpose.",
        )
        return api

    # ---- API keys and rate limits ---------------------------------------------------------

    def _key_authorizer(self) -> apigw.RequestAuthorizer:
        """API key -> merchant and usage plan, cached per Authorization header (a request
        without one is refused before it runs: UNAUTHORIZED)."""
        return apigw.RequestAuthorizer(
            self,
            "KeyAuthorizer",
            handler=self.authorizer_function,
            identity_sources=[apigw.IdentitySource.header("Authorization")],
            results_cache_ttl=Duration.seconds(AUTHORIZER_CACHE_TTL_SECONDS),
        )

    def _keyed(self, validator: apigw.IRequestValidator) -> dict[str, Any]:
        """A method merchants call with an API key: authorized, and throttled by the usage
        plan of the key the authorizer names."""
        return {
            "authorizer": self.key_authorizer,
            "authorization_type": apigw.AuthorizationType.CUSTOM,
            "api_key_required": True,
            "request_validator": validator,
        }

    def _keyless_routes(self, root: apigw.IResource, validator: apigw.IRequestValidator) -> None:
        """Resources of their own for the requests that take no key (KEYLESS_ROUTES). Each
        resource made for them also answers every other method, and every path below it,
        with the authorizer, as the greedy /{proxy+} would have."""
        made: dict[str, apigw.IResource] = {}
        methods: dict[str, set[str]] = {}
        for method, path in KEYLESS_ROUTES:
            node = root
            for part in path.strip("/").split("/"):
                node = node.get_resource(part) or node.add_resource(part)
                made[node.path] = node
            http_method = "ANY" if method == "*" else method
            self.keyless_methods.append(
                node.add_method(
                    http_method,
                    authorization_type=apigw.AuthorizationType.NONE,
                    request_validator=validator,
                )
            )
            methods.setdefault(node.path, set()).add(http_method)
        for path, node in made.items():
            if "ANY" not in methods.get(path, set()):
                self.keyed_methods.append(node.add_method("ANY", **self._keyed(validator)))
            if node.path.endswith("{proxy+}"):
                continue
            children = {p.rsplit("/", 1)[1] for p in made if p.rsplit("/", 1)[0] == path}
            if not any(child.startswith("{") for child in children):
                below = node.add_resource("{proxy+}")
                self.keyed_methods.append(below.add_method("ANY", **self._keyed(validator)))

    def _usage_plans(self, api: apigw.RestApi) -> dict[str, apigw.UsagePlan]:
        """Stripe's tiers (25 a second for test-mode keys, 100 for live ones, burst as
        many), and the lockout plan. Each merchant has an API key of its own in its tier's
        plan, or in a plan of its own rate (clearline.rate_limits.UsageKeys, when the
        merchant is created): a plan throttles each of its keys separately, so a key per
        merchant is what gives each merchant its own limit."""
        stages = [apigw.UsagePlanPerApiStage(api=api, stage=api.deployment_stage)]
        plans = {
            plan.name: api.add_usage_plan(
                f"{construct_name(plan.name)}UsagePlan",
                name=plan_name(plan),
                description=f"{plan.rate_per_second} requests a second per {plan.name}-mode "
                "merchant key",
                throttle=apigw.ThrottleSettings(
                    rate_limit=plan.rate_per_second, burst_limit=plan.burst
                ),
                api_stages=stages,
            )
            for plan in (TEST_PLAN, LIVE_PLAN)
        }
        # Failed authentications from a locked-out address are sent here by the authorizer:
        # a quota spent at once, so API Gateway answers QUOTA_EXCEEDED (a 429) itself.
        lockout = api.add_usage_plan(
            "LockoutUsagePlan",
            name=plan_name(LOCKOUT_PLAN_NAME),
            description="Refuses failed authentications from addresses that failed too often",
            quota=apigw.QuotaSettings(limit=1, period=apigw.Period.DAY),
            api_stages=stages,
        )
        lockout.add_api_key(
            apigw.ApiKey(
                self,
                "LockoutApiKey",
                description="Names the lockout plan in the authorizer's answers (not a "
                "credential: the key source is the authorizer)",
                value=LOCKOUT_USAGE_KEY,
            )
        )
        plans[LOCKOUT_PLAN_NAME] = lockout
        return plans

    def _rate_limit_responses(self, api: apigw.RestApi) -> None:
        """The gateway's answers about keys and limits, in Stripe's shape: no key (401), an
        invalid key (the authorizer's Deny: 401, with its code and message), a key over
        its plan's rate (429 global-rate), a locked-out address (429 auth-failures)."""
        common = {"Content-Type": "'application/json'", "Request-Id": "'$context.requestId'"}
        # Stripe-Should-Retry: false on a 429, as Stripe's SDKs then raise at once (they do
        # not retry a plain 429 either): retrying into an empty bucket only adds load; the
        # caller backs off on its own schedule.
        no_retry = {**common, "Stripe-Should-Retry": "'false'"}

        def error(code: str, message: str) -> str:
            body = {"type": "invalid_request_error", "code": code, "message": message}
            return json.dumps({"error": body})

        # Replaces the shared THROTTLED answer of this API with Stripe's rate-limit one.
        throttled = cast(
            apigw.CfnGatewayResponse, api.node.find_child("GatewayRateLimit").node.default_child
        )
        throttled.response_parameters = _header_parameters(
            {**no_retry, RATE_LIMITED_REASON_HEADER: f"'{GLOBAL_RATE}'"}
        )
        throttled.response_templates = {"application/json": error("rate_limit", RATE_LIMIT_MESSAGE)}
        api.add_gateway_response(
            "GatewayAuthFailures",
            type=apigw.ResponseType.QUOTA_EXCEEDED,
            status_code="429",
            response_headers={**no_retry, RATE_LIMITED_REASON_HEADER: f"'{AUTH_FAILURES}'"},
            templates={"application/json": error("rate_limit", AUTH_FAILURES_MESSAGE)},
        )
        api.add_gateway_response(
            "GatewayApiKeyMissing",
            type=apigw.ResponseType.UNAUTHORIZED,
            status_code="401",
            response_headers=no_retry,
            templates={"application/json": error("api_key_missing", MISSING_KEY_MESSAGE)},
        )
        # The authorizer's Deny carries Stripe's code and message. Otherwise (an operator's
        # signed /admin call that IAM refuses) the gateway's own message, with no code.
        denied = (
            f'#if("$context.authorizer.{CONTEXT_CODE}" != "")\n'
            '{"error": {"type": "invalid_request_error", '
            f'"code": "$context.authorizer.{CONTEXT_CODE}", '
            f'"message": $context.authorizer.{CONTEXT_MESSAGE_JSON}}}}}\n'
            "#else\n"
            '{"error": {"type": "invalid_request_error", "message": '
            "$context.error.messageString}}\n"
            "#end"
        )
        api.add_gateway_response(
            "GatewayApiKeyInvalid",
            type=apigw.ResponseType.ACCESS_DENIED,
            status_code="401",
            response_headers=no_retry,
            templates={"application/json": denied},
        )

    def _notifications_api(self, spec: ApiSpec) -> apigw.LambdaRestApi:
        """An API of its own for the card processor's signed notifications, proxied to their
        function, which verifies each signature: never routes of the merchant API."""
        if spec.function not in self.functions:
            raise ValueError(f"the notifications API names an unknown function: {spec.function}")
        api = apigw.LambdaRestApi(
            self,
            "NotificationsApi",
            handler=self.functions[spec.function],
            description="Receives the card processor's signed notifications (disputes)",
            # Methods are added below, so that they can share one request validator.
            proxy=False,
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # API Gateway's logging role is one per account and region: the main API sets it.
            cloud_watch_role=False,
            deploy_options=stage_options(
                self,
                spec.stage,
                access_logs_id="NotificationsApiAccessLogs",
                throttling_rate_limit=NOTIFICATIONS_THROTTLE_RATE_LIMIT,
                throttling_burst_limit=NOTIFICATIONS_THROTTLE_BURST_LIMIT,
            ),
        )
        # Its stage logs errors, which needs the account's logging role set first.
        account = self.api.node.try_find_child("Account")
        if account is not None:
            api.deployment_stage.node.add_dependency(account)
        validator = api.add_request_validator(
            "RequestValidator", validate_request_body=True, validate_request_parameters=True
        )
        api.root.add_method("ANY", request_validator=validator)
        api.root.add_proxy(any_method=False).add_method("ANY", request_validator=validator)

        for method in api.methods:
            acknowledge(
                method,
                "AwsSolutions-APIG4",
                "Only the card processor calls this API, signing each notification with the "
                "secret both sides hold; the function verifies the signature and its age on "
                "every request before it acts, and refuses anything else.",
            )
            acknowledge(
                method,
                "AwsSolutions-COG4",
                "The caller is the card processor, a server holding a shared signing secret, "
                "not a Cognito user; the function authenticates every notification itself.",
            )
        acknowledge(
            api.deployment_stage,
            "AwsSolutions-APIG3",
            "No WAF web ACL yet: every notification needs a valid signature with the "
            "processor's secret, and the stage is throttled to the processor's low rate; "
            "web ACL rules (the processor's source addresses) come with its published ranges.",
        )
        CfnOutput(
            self,
            "ProcessorNotificationsUrl",
            value=Fn.join("", [stage_url(api, spec.stage), PROCESSOR_NOTIFICATION_PATH]),
            description="Where the card processor sends its signed notifications",
        )
        return api
