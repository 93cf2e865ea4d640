"""What the Clearline stack and the card vault's stack build alike: tables, layers, functions
with their own roles and error alarms, an encrypted alarm topic, and REST API stages with
Stripe-shaped gateway errors.

Each helper creates its constructs directly in the scope it is given, under the ids the
Clearline stack has always used, so that moving code here changes no logical id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

from aws_cdk import (
    Acknowledgment,
    CfnParameter,
    Duration,
    Fn,
    RemovalPolicy,
    Stack,
    Validations,
)
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from constructs import Construct, IConstruct

from clearline.topology import FunctionSpec, TableSpec
from infra_cdk.bundling import dependencies_layer_code, source_code

REPO_ROOT = Path(__file__).resolve().parent.parent
RUNTIME = lambda_.Runtime.PYTHON_3_13
ARCHITECTURE = lambda_.Architecture.ARM_64
DEFAULT_PROCESSOR_URL = "https://sandbox-processor.invalid"
PROCESSOR_URL_PARAMETER_ID = "ProcessorUrl"
# A year of logs covers a full audit cycle; payment disputes can surface months later.
LOG_RETENTION = logs.RetentionDays.ONE_YEAR
# Stage-wide limits sized to the design's peak of 10,000 payments per second.
THROTTLE_RATE_LIMIT = 10_000
THROTTLE_BURST_LIMIT = 5_000
# API Gateway's own answers, as (response, Stripe error type, code, should the caller retry).
GATEWAY_ERRORS = (
    (apigw.ResponseType.THROTTLED, "invalid_request_error", "rate_limit", True),
    (apigw.ResponseType.REQUEST_TOO_LARGE, "invalid_request_error", "request_too_large", False),
    (apigw.ResponseType.INTEGRATION_TIMEOUT, "api_error", "gateway_timeout", True),
    (apigw.ResponseType.DEFAULT_4_XX, "invalid_request_error", "gateway_refused", False),
    (apigw.ResponseType.DEFAULT_5_XX, "api_error", "gateway_error", True),
)
# Function errors are judged minute by minute.
FUNCTION_ERRORS_PERIOD = Duration.minutes(1)
# One JSON line per request: enough to follow a request into the function's logs and
# traces (requestId, xrayTraceId) and to tell API Gateway errors from function errors.
# No headers or query strings: they can carry secret API keys.
ACCESS_LOG_FIELDS = {
    "requestId": apigw.AccessLogField.context_request_id(),
    "xrayTraceId": apigw.AccessLogField.context_xray_trace_id(),
    "ip": apigw.AccessLogField.context_identity_source_ip(),
    "requestTime": apigw.AccessLogField.context_request_time(),
    "httpMethod": apigw.AccessLogField.context_http_method(),
    "path": apigw.AccessLogField.context_path(),
    "status": apigw.AccessLogField.context_status(),
    "responseLength": apigw.AccessLogField.context_response_length(),
    "responseLatency": apigw.AccessLogField.context_response_latency(),
    "integrationLatency": apigw.AccessLogField.context_integration_latency(),
    "integrationStatus": apigw.AccessLogField.context_integration_status(),
    "errorMessage": apigw.AccessLogField.context_error_message(),
}


def construct_name(key: str) -> str:
    """`capture_worker` -> `CaptureWorker`, for construct ids derived from topology keys."""
    return "".join(part.capitalize() for part in key.split("_"))


def acknowledge(scope: IConstruct, rule_id: str, reason: str) -> None:
    """Record a reviewed cdk-nag finding on `scope` (it covers every child construct)."""
    Validations.of(scope).acknowledge(Acknowledgment(id=rule_id, reason=reason))


# --- alarms ------------------------------------------------------------------------------


def alarm_topic(scope: Construct, *, owner: str) -> sns.Topic:
    """The topic every alarm of `owner`'s stack notifies; subscribe the on-call rotation."""
    # A key of our own, not the AWS managed one for SNS: only a customer managed key's
    # policy can let CloudWatch encrypt the notifications it publishes.
    key = kms.Key(
        scope,
        "AlarmTopicKey",
        description=f"Encrypts {owner}'s alarm notifications",
        enable_key_rotation=True,
    )
    cloudwatch_service = iam.ServicePrincipal("cloudwatch.amazonaws.com")
    key.grant(cloudwatch_service, "kms:Decrypt", "kms:GenerateDataKey*")
    topic = sns.Topic(
        scope,
        "AlarmTopic",
        display_name=f"{owner} alarms",
        master_key=key,
        enforce_ssl=True,
    )
    # The SSL-only policy replaces SNS's default one, so CloudWatch is let in by name,
    # for this account's alarms only.
    topic.add_to_resource_policy(
        iam.PolicyStatement(
            principals=[cloudwatch_service],
            actions=["sns:Publish"],
            resources=[topic.topic_arn],
            conditions={"StringEquals": {"aws:SourceAccount": Stack.of(scope).account}},
        )
    )
    return topic


def alarm(
    scope: Construct,
    topic: sns.ITopic,
    construct_id: str,
    description: str,
    metric: cloudwatch.IMetric,
    *,
    treat_missing_data: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
) -> cloudwatch.Alarm:
    """An alarm, notifying `topic`, as soon as `metric` is above zero."""
    created = cloudwatch.Alarm(
        scope,
        construct_id,
        alarm_description=description,
        metric=metric,
        threshold=0,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluation_periods=1,
        treat_missing_data=treat_missing_data,
    )
    created.add_alarm_action(cloudwatch_actions.SnsAction(topic))
    return created


def function_errors_alarm(
    scope: Construct, topic: sns.ITopic, spec: FunctionSpec, function: lambda_.Function
) -> cloudwatch.Alarm:
    return alarm(
        scope,
        topic,
        f"{construct_name(spec.key)}FunctionErrorsAlarm",
        f"The {spec.key} function failed an invocation (an unhandled error, a crash or a "
        "timeout). Read its log group for the error.",
        function.metric_errors(period=FUNCTION_ERRORS_PERIOD, statistic=cloudwatch.Stats.SUM),
    )


# --- tables ------------------------------------------------------------------------------


def durable_table(
    scope: Construct, spec: TableSpec, *, encryption_key: kms.IKey | None = None
) -> dynamodb.Table:
    """A table as `spec` describes it, with point-in-time recovery, that neither a stack
    update nor a delete may drop. Encrypted with `encryption_key` if given, else with the
    AWS managed key."""

    def string_key(name: str) -> dynamodb.Attribute:
        return dynamodb.Attribute(name=name, type=dynamodb.AttributeType.STRING)

    # No table_name: CloudFormation names the table, so stacks never collide;
    # spec.name is only the local stack's physical name.
    table = dynamodb.Table(
        scope,
        f"{construct_name(spec.key)}Table",
        partition_key=string_key(spec.partition_key),
        sort_key=string_key(spec.sort_key) if spec.sort_key else None,
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        encryption=(
            dynamodb.TableEncryption.CUSTOMER_MANAGED
            if encryption_key is not None
            else dynamodb.TableEncryption.AWS_MANAGED
        ),
        encryption_key=encryption_key,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        time_to_live_attribute=spec.ttl_attribute,
        stream=dynamodb.StreamViewType.NEW_IMAGE if spec.stream else None,
        # The ledger is the source of truth, and the vault's table holds the sealed cards:
        # neither a stack update nor a delete may drop them.
        removal_policy=RemovalPolicy.RETAIN,
        deletion_protection=True,
    )
    for index in spec.indexes:
        table.add_global_secondary_index(
            index_name=index.name,
            partition_key=string_key(index.partition_key),
            sort_key=string_key(index.sort_key),
            projection_type=dynamodb.ProjectionType.ALL,
        )
    return table


# --- functions ---------------------------------------------------------------------------


def function_layers(scope: Construct) -> list[lambda_.ILayerVersion]:
    """The clearline library and the pinned dependencies, shared by every function."""
    library = lambda_.LayerVersion(
        scope,
        "ClearlineLayer",
        code=source_code(REPO_ROOT / "layers" / "clearline"),
        compatible_runtimes=[RUNTIME],
        compatible_architectures=[ARCHITECTURE],
        description="The clearline library shared by every function",
    )
    dependencies = lambda_.LayerVersion(
        scope,
        "DependenciesLayer",
        code=dependencies_layer_code(REPO_ROOT / "layers" / "dependencies"),
        compatible_runtimes=[RUNTIME],
        compatible_architectures=[ARCHITECTURE],
        description="Pinned third-party packages (Powertools, pydantic, cryptography)",
    )
    return [library, dependencies]


def processor_url_parameter(scope: Construct) -> CfnParameter:
    return CfnParameter(
        scope,
        PROCESSOR_URL_PARAMETER_ID,
        type="String",
        default=DEFAULT_PROCESSOR_URL,
        allowed_pattern=r"^https://\S+$",
        description="Base URL of the card processor (HTTPS only).",
    )


def lambda_function(
    scope: Construct,
    spec: FunctionSpec,
    *,
    layers: list[lambda_.ILayerVersion],
    environment: dict[str, str],
) -> lambda_.Function:
    """The function of `spec`, traced, logging to a log group of its own, with a role of its
    own that may write only there (grant it the rest)."""
    name = construct_name(spec.key)
    log_group = logs.LogGroup(scope, f"{name}FunctionLogs", retention=LOG_RETENTION)
    # An own role instead of AWSLambdaBasicExecutionRole: the function may write to its
    # log group only, not to every log group in the account.
    role = iam.Role(
        scope,
        f"{name}FunctionRole",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=f"Runs the {spec.key} function",
    )
    log_group.grant_write(role)
    function = lambda_.Function(
        scope,
        f"{name}Function",
        description=spec.description,
        runtime=RUNTIME,
        architecture=ARCHITECTURE,
        code=source_code(REPO_ROOT / spec.code_dir),
        handler=spec.handler,
        timeout=Duration.seconds(spec.timeout_seconds),
        memory_size=spec.memory_mb,
        layers=layers,
        tracing=lambda_.Tracing.ACTIVE,
        log_group=log_group,
        role=role,
        environment=environment,
    )
    wildcard_reason = (
        "Active tracing needs xray:PutTraceSegments and xray:PutTelemetryRecords, and "
        "X-Ray does not support resource-level permissions, so the resource must be *."
    )
    if spec.stream_from is not None:
        wildcard_reason += (
            " The stream event source also needs dynamodb:ListStreams, which has no "
            "resource-level permissions either; stream reads are granted per stream."
        )
    acknowledge(role, "AwsSolutions-IAM5[Resource::*]", wildcard_reason)
    # On the CfnFunction itself, not on its event source mappings and permissions.
    acknowledge(
        cast(lambda_.CfnFunction, function.node.default_child),
        "AwsSolutions-L1",
        "Pinned to python3.13 on purpose: the dependencies layer is built for 3.13 "
        "wheels, and the runtime moves only together with the layer and the tests.",
    )
    return function


# --- REST APIs ---------------------------------------------------------------------------


def stage_options(
    scope: Construct,
    stage: str,
    *,
    access_logs_id: str = "ApiAccessLogs",
    throttling_rate_limit: int = THROTTLE_RATE_LIMIT,
    throttling_burst_limit: int = THROTTLE_BURST_LIMIT,
) -> apigw.StageOptions:
    """A stage that logs every request as one JSON line, logs errors, traces and throttles.
    Each REST API of a stack needs its own `access_logs_id`."""
    access_logs = logs.LogGroup(scope, access_logs_id, retention=LOG_RETENTION)
    return apigw.StageOptions(
        stage_name=stage,
        access_log_destination=apigw.LogGroupLogDestination(access_logs),
        access_log_format=apigw.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FIELDS)),
        tracing_enabled=True,
        metrics_enabled=True,
        logging_level=apigw.MethodLoggingLevel.ERROR,
        # Data tracing would log full requests: secret API keys, card numbers.
        data_trace_enabled=False,
        throttling_rate_limit=throttling_rate_limit,
        throttling_burst_limit=throttling_burst_limit,
    )


def add_stripe_shaped_gateway_errors(api: apigw.RestApiBase) -> None:
    """What API Gateway answers itself (throttled, too large, timed out) in the error
    shape the API documents, so that an SDK reads it like any other error."""
    for response_type, error_type, code, should_retry in GATEWAY_ERRORS:
        # $context.error.messageString is already a quoted JSON string.
        template = (
            f'{{"error": {{"type": "{error_type}", "code": "{code}", '
            '"message": $context.error.messageString}}'
        )
        headers = {
            "Content-Type": "'application/json'",
            "Request-Id": "'$context.requestId'",
            "Stripe-Should-Retry": f"'{str(should_retry).lower()}'",
        }
        api.add_gateway_response(
            f"Gateway{code.title().replace('_', '')}",
            type=response_type,
            response_headers=headers,
            templates={"application/json": template},
        )


def stage_url(api: apigw.IRestApi, stage: str) -> str:
    """The stage's base URL, built from the API's id rather than from its deployment, so that
    a function behind the API can be told it without waiting on a deployment that waits on
    the function."""
    region = Stack.of(api).region
    host = [api.rest_api_id, ".execute-api.", region, ".amazonaws.com"]
    return Fn.join("", ["https://", *host, "/", stage])
