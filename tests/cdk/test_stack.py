"""Synthesizes the CDK app and checks it against the topology and cdk-nag."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from aws_cdk import App, Validations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk.assertions import Annotations, Match, Template
from cdk_nag import AwsSolutionsChecks

import infra_cdk.bundling as bundling
import infra_cdk.clearline_stack as clearline_stack
import infra_cdk.shared as shared
import infra_cdk.vault_stack as vault_stack
from clearline.config import (
    WEBHOOK_ALLOW_LOOPBACK_ENV,
    WEBHOOK_SECRET_USERS,
    WEBHOOK_SECRETS_KEY_ENV,
)
from clearline.dashboard_identity import CLIENT_ID_ENV, DOMAIN_ENV, ISSUER_ENV, OPERATIONS_GROUP
from clearline.topology import (
    API_FUNCTION,
    BANK_ACCOUNTS_KEY_ENV,
    BANK_URL_ENV,
    DAILY_PAYOUTS_FUNCTION,
    DISPUTE_INTAKE_FUNCTION,
    FX_RATES_FUNCTION,
    METRICS_NAMESPACE,
    PAYOUT_FUNCTION,
    PAYOUT_QUEUE,
    PROCESSOR_NOTIFICATION_PATH,
    PROCESSOR_NOTIFICATION_SECRET_ENV,
    PROCESSOR_SYNC_FUNCTION,
    PROCESSOR_URL_ENV,
    RATE_PROVIDER_URL_ENV,
    RELAY_FUNCTION,
    SERVICE_NAME,
    TOPOLOGY,
    UNRESOLVED_PENDING_OPERATIONS_METRIC,
    BucketSpec,
    FunctionSpec,
    QueueSpec,
    RuleSpec,
    TableSpec,
    bucket_env_var,
    bus_env_var,
    dlq_env_var,
    queue_env_var,
    table_env_var,
)
from infra_cdk.app import create_app
from infra_cdk.bundling import compile_bytecode, pip_install_args
from infra_cdk.clearline_stack import ClearlineStack

from .conftest import NO_BUNDLING, logical_id

pytestmark = pytest.mark.cdk

REPO_ROOT = Path(__file__).resolve().parents[2]
# Skips the pip build of the dependencies layer (CDK then uses the source folder as is).
DYNAMODB_WRITE_ACTIONS = {
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:PartiQLInsert",
    "dynamodb:PartiQLUpdate",
    "dynamodb:PartiQLDelete",
}
DYNAMODB_STREAM_ACTIONS = {
    "dynamodb:DescribeStream",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
}
# What bucket grants may give: reads (objects, the bucket's settings, listings) and, for
# readwrite, writes and deletes. Never the ACL, policy or configuration of the bucket.
S3_READ_ACTIONS = {"s3:GetObject*", "s3:GetBucket*", "s3:List*"}
S3_WRITE_ACTIONS = {
    "s3:DeleteObject*",
    "s3:PutObject",
    "s3:PutObjectLegalHold",
    "s3:PutObjectRetention",
    "s3:PutObjectTagging",
    "s3:PutObjectVersionTagging",
    "s3:Abort*",
}
SQS_SEND_ACTIONS = {"sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"}
# What a queue trigger needs: the function extends visibility itself for backoff.
SQS_CONSUME_ACTIONS = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
}


def resource(template: Template, resource_type: str, wanted_id: str) -> dict[str, Any]:
    resources = template.find_resources(resource_type)
    assert wanted_id in resources, f"{resource_type} {wanted_id} not in the template"
    return cast(dict[str, Any], resources[wanted_id])


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def arn_of(resource_id: str, attribute: str = "Arn") -> dict[str, Any]:
    return {"Fn::GetAtt": [resource_id, attribute]}


def rate(minutes: int) -> str:
    """The expression events.Schedule.rate renders: in the largest unit that divides it."""
    for unit, size in (("day", 24 * 60), ("hour", 60), ("minute", 1)):
        if minutes % size == 0:
            count = minutes // size
            return f"rate({count} {unit}{'' if count == 1 else 's'})"
    raise AssertionError("unreachable")


def test_rate_expressions_read_as_eventbridge_writes_them() -> None:
    assert rate(1) == "rate(1 minute)"
    assert rate(90) == "rate(90 minutes)"
    assert rate(120) == "rate(2 hours)"
    assert rate(24 * 60) == "rate(1 day)"


# --- tables ------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", TOPOLOGY.tables, ids=lambda spec: spec.key)
def test_every_table_is_durable_encrypted_and_keyed_as_specified(
    stack: ClearlineStack, template: Template, spec: TableSpec
) -> None:
    table = resource(template, "AWS::DynamoDB::Table", logical_id(stack, stack.tables[spec.key]))
    props = table["Properties"]

    assert table["DeletionPolicy"] == "Retain"
    assert table["UpdateReplacePolicy"] == "Retain"
    assert "TableName" not in props, "CloudFormation names the tables"
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True

    expected_keys = [{"AttributeName": spec.partition_key, "KeyType": "HASH"}]
    if spec.sort_key:
        expected_keys.append({"AttributeName": spec.sort_key, "KeyType": "RANGE"})
    assert props["KeySchema"] == expected_keys
    assert {a["AttributeType"] for a in props["AttributeDefinitions"]} == {"S"}

    indexes = {index["IndexName"]: index for index in props.get("GlobalSecondaryIndexes", [])}
    assert set(indexes) == {index.name for index in spec.indexes}
    for index_spec in spec.indexes:
        index = indexes[index_spec.name]
        assert index["KeySchema"] == [
            {"AttributeName": index_spec.partition_key, "KeyType": "HASH"},
            {"AttributeName": index_spec.sort_key, "KeyType": "RANGE"},
        ]
        assert index["Projection"] == {"ProjectionType": "ALL"}

    if spec.ttl_attribute:
        assert props["TimeToLiveSpecification"] == {
            "AttributeName": spec.ttl_attribute,
            "Enabled": True,
        }
    else:
        assert "TimeToLiveSpecification" not in props

    if spec.stream:
        assert props["StreamSpecification"] == {"StreamViewType": "NEW_IMAGE"}
    else:
        assert "StreamSpecification" not in props


def test_one_table_per_spec(template: Template) -> None:
    template.resource_count_is("AWS::DynamoDB::Table", len(TOPOLOGY.tables))


# --- layers and functions ----------------------------------------------------------------


def test_two_layers_for_python313_on_arm64(template: Template) -> None:
    layers = template.find_resources("AWS::Lambda::LayerVersion")
    assert len(layers) == 2
    for layer in layers.values():
        assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]
        assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]


def test_one_function_per_spec(template: Template) -> None:
    functions = template.find_resources("AWS::Lambda::Function")
    # Besides ours: the CDK's handler that sets bucket notifications during deployments.
    handlers = {k for k in functions if k.startswith("BucketNotificationsHandler")}
    assert len(handlers) == (1 if any(b.notify_queue for b in TOPOLOGY.buckets) else 0)
    assert len(functions) - len(handlers) == len(TOPOLOGY.functions)


@pytest.mark.parametrize("spec", TOPOLOGY.functions, ids=lambda spec: spec.key)
def test_every_function_runs_as_specified(
    stack: ClearlineStack, template: Template, spec: FunctionSpec
) -> None:
    function = resource(
        template, "AWS::Lambda::Function", logical_id(stack, stack.functions[spec.key])
    )
    props = function["Properties"]

    assert props["Runtime"] == "python3.13"
    assert props["Architectures"] == ["arm64"]
    assert props["Handler"] == spec.handler
    assert props["Timeout"] == spec.timeout_seconds
    assert props["MemorySize"] == spec.memory_mb
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert len(props["Layers"]) == 2

    log_group_id = props["LoggingConfig"]["LogGroup"]["Ref"]
    log_group = resource(template, "AWS::Logs::LogGroup", log_group_id)
    assert log_group["Properties"]["RetentionInDays"] > 0

    env = props["Environment"]["Variables"]
    for table_key in spec.tables:
        table_id = logical_id(stack, stack.tables[table_key])
        assert env[table_env_var(table_key)] == {"Ref": table_id}
    assert env["POWERTOOLS_SERVICE_NAME"] == SERVICE_NAME
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "Clearline"
    if spec.calls_processor:
        assert env[PROCESSOR_URL_ENV] == {"Ref": "ProcessorUrl"}
    else:
        assert PROCESSOR_URL_ENV not in env
    for name, value in spec.environment.items():
        assert env[name] == value

    queue_keys = {*spec.sends_to, *([spec.queue_trigger] if spec.queue_trigger else [])}
    if spec.operates_queues:  # the operations page: every queue, and each dead-letter queue
        queue_keys = set(stack.queues)
        for queue_key, dlq in stack.dead_letter_queues.items():
            assert env[dlq_env_var(queue_key)] == {"Ref": logical_id(stack, dlq)}
    for queue_key in queue_keys:
        assert env[queue_env_var(queue_key)] == {"Ref": logical_id(stack, stack.queues[queue_key])}
    for bus_key in [spec.publishes_to] if spec.publishes_to else []:
        assert env[bus_env_var(bus_key)] == {"Ref": logical_id(stack, stack.buses[bus_key])}
    for bucket_key in spec.buckets:
        bucket_id = logical_id(stack, stack.buckets[bucket_key])
        assert env[bucket_env_var(bucket_key)] == {"Ref": bucket_id}
    # Nothing it was not given: no other table, queue, bus or bucket names.
    expected = (
        {table_env_var(k) for k in spec.tables}
        | {queue_env_var(k) for k in queue_keys}
        | {bucket_env_var(k) for k in spec.buckets}
    )
    if spec.publishes_to:
        expected.add(bus_env_var(spec.publishes_to))
    managed = {
        name
        for name in env
        if name.endswith(("_TABLE", "_QUEUE_URL", "_BUS", "_BUCKET"))
        and name not in spec.environment
    }
    assert managed == expected


def test_processor_url_is_a_parameter_with_an_https_default(template: Template) -> None:
    parameter = template.find_parameters("ProcessorUrl")["ProcessorUrl"]
    assert parameter["Default"].startswith("https://")


def _statements_for_role(template: Template, role_id: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for policy in template.find_resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return statements


@pytest.mark.parametrize("spec", TOPOLOGY.functions, ids=lambda spec: spec.key)
def test_every_function_may_touch_only_its_own_tables(
    stack: ClearlineStack, template: Template, spec: FunctionSpec
) -> None:
    function = stack.functions[spec.key]
    assert function.role is not None
    role_id = logical_id(stack, function.role)
    role = resource(template, "AWS::IAM::Role", role_id)
    assert "ManagedPolicyArns" not in role["Properties"], "no broad AWS managed policies"

    table_ids = {key: logical_id(stack, table) for key, table in stack.tables.items()}
    allowed = {table_ids[key]: access for key, access in spec.tables.items()}
    # The stream that triggers it, read by its event source mapping; no other stream.
    allowed_stream = arn_of(table_ids[spec.stream_from], "StreamArn") if spec.stream_from else None
    granted: set[str] = set()
    streams_read: list[Any] = []

    for statement in _statements_for_role(template, role_id):
        actions = as_list(statement["Action"])
        dynamodb_actions = [a for a in actions if a.startswith("dynamodb:")]
        if not dynamodb_actions:
            continue
        assert "dynamodb:*" not in dynamodb_actions
        if dynamodb_actions == ["dynamodb:ListStreams"]:
            # Only lists stream ARNs, and has no resource-level permissions.
            assert spec.stream_from is not None, f"{spec.key} lists streams: {statement}"
            assert statement["Resource"] == "*"
            continue
        for resource_ref in as_list(statement["Resource"]):
            assert resource_ref != "*", f"dynamodb actions on every resource: {statement}"
            if "StreamArn" in json.dumps(resource_ref):
                assert resource_ref == allowed_stream, f"{spec.key} may not read {resource_ref}"
                assert set(dynamodb_actions) <= DYNAMODB_STREAM_ACTIONS, statement
                streams_read.append(resource_ref)
                continue
            referenced = [tid for tid in table_ids.values() if tid in json.dumps(resource_ref)]
            assert len(referenced) == 1, f"unexpected dynamodb resource {resource_ref}"
            table_id = referenced[0]
            assert table_id in allowed, f"{spec.key} may not touch table {table_id}"
            if allowed[table_id] == "read":
                assert not DYNAMODB_WRITE_ACTIONS & set(dynamodb_actions), statement
            granted.add(table_id)

    assert granted == set(allowed), "every table in the spec is granted"
    assert bool(streams_read) == (allowed_stream is not None), "its stream, if any, is readable"


def _sqs_statements(template: Template, role_id: str) -> list[tuple[set[str], list[Any]]]:
    return [
        ({a for a in as_list(s["Action"]) if a.startswith("sqs:")}, as_list(s["Resource"]))
        for s in _statements_for_role(template, role_id)
        if any(a.startswith("sqs:") for a in as_list(s["Action"]))
    ]


@pytest.mark.parametrize("spec", TOPOLOGY.functions, ids=lambda spec: spec.key)
def test_every_function_may_send_to_and_consume_only_its_own_queues(
    stack: ClearlineStack, template: Template, spec: FunctionSpec
) -> None:
    role = stack.functions[spec.key].role
    assert role is not None
    may_send = {logical_id(stack, stack.queues[key]) for key in spec.sends_to}
    if spec.stream_from:
        # Lambda sends a failed batch's position to the on-failure queue with this role.
        may_send.add(logical_id(stack, stack.stream_failure_queues[spec.key]))
    may_consume = (
        {logical_id(stack, stack.queues[spec.queue_trigger])} if spec.queue_trigger else set()
    )
    every_queue = {
        logical_id(stack, q) for q in [*stack.queues.values(), *stack.dead_letter_queues.values()]
    }
    if spec.operates_queues:  # redrive: from each dead-letter queue back to its queue
        may_send |= {logical_id(stack, stack.queues[key]) for key in stack.dead_letter_queues}
        may_consume |= {logical_id(stack, dlq) for dlq in stack.dead_letter_queues.values()}
    sent: set[str] = set()
    consumed: set[str] = set()

    for actions, resources in _sqs_statements(template, logical_id(stack, role)):
        assert actions <= SQS_SEND_ACTIONS | SQS_CONSUME_ACTIONS, actions
        if spec.operates_queues and actions == {"sqs:GetQueueAttributes"}:
            # Depths, for the operations page: of the stack's queues only.
            assert {r["Fn::GetAtt"][0] for r in resources} <= every_queue
            continue
        queue_ids = set()
        for resource_ref in resources:
            assert resource_ref != "*", f"sqs actions on every queue: {actions}"
            assert resource_ref == arn_of(resource_ref["Fn::GetAtt"][0]), resource_ref
            queue_ids.add(resource_ref["Fn::GetAtt"][0])
        if "sqs:SendMessage" in actions:
            assert queue_ids <= may_send, f"{spec.key} may not send to {queue_ids - may_send}"
            sent |= queue_ids
        if actions & (SQS_CONSUME_ACTIONS - SQS_SEND_ACTIONS):
            assert queue_ids <= may_consume, f"{spec.key} may not consume {queue_ids}"
            assert actions >= SQS_CONSUME_ACTIONS, "a queue trigger needs all consume actions"
            consumed |= queue_ids

    assert sent == may_send
    assert consumed == may_consume


@pytest.mark.parametrize("spec", TOPOLOGY.functions, ids=lambda spec: spec.key)
def test_every_function_may_publish_only_to_its_bus(
    stack: ClearlineStack, template: Template, spec: FunctionSpec
) -> None:
    role = stack.functions[spec.key].role
    assert role is not None
    statements = [
        s
        for s in _statements_for_role(template, logical_id(stack, role))
        if any(a.startswith("events:") for a in as_list(s["Action"]))
    ]
    if spec.publishes_to is None:
        assert statements == []
        return
    bus_id = logical_id(stack, stack.buses[spec.publishes_to])
    assert [(as_list(s["Action"]), s["Resource"]) for s in statements] == [
        (["events:PutEvents"], arn_of(bus_id))
    ]


@pytest.mark.parametrize("spec", TOPOLOGY.functions, ids=lambda spec: spec.key)
def test_every_function_may_touch_only_its_own_buckets(
    stack: ClearlineStack, template: Template, spec: FunctionSpec
) -> None:
    role = stack.functions[spec.key].role
    assert role is not None
    bucket_ids = {key: logical_id(stack, bucket) for key, bucket in stack.buckets.items()}
    granted: dict[str, set[str]] = {}

    for statement in _statements_for_role(template, logical_id(stack, role)):
        actions = {a for a in as_list(statement["Action"]) if a.startswith("s3:")}
        if not actions:
            continue
        assert statement["Effect"] == "Allow"
        assert actions <= S3_READ_ACTIONS | S3_WRITE_ACTIONS, f"{spec.key}: {actions}"
        resources = as_list(statement["Resource"])
        referenced = {
            key
            for key, bucket_id in bucket_ids.items()
            for r in resources
            if bucket_id in json.dumps(r)
        }
        assert len(referenced) == 1, f"{spec.key}: unexpected s3 resources {resources}"
        (key,) = referenced
        # The bucket itself (for listing) and its objects, nothing else.
        assert resources == [
            arn_of(bucket_ids[key]),
            {"Fn::Join": ["", [arn_of(bucket_ids[key]), "/*"]]},
        ], resources
        granted.setdefault(key, set()).update(actions)

    assert set(granted) == set(spec.buckets), f"{spec.key} may touch {set(granted)}"
    for key, access in spec.buckets.items():
        expected = S3_READ_ACTIONS | (S3_WRITE_ACTIONS if access == "readwrite" else set())
        assert granted[key] == expected, f"{spec.key} on bucket {key}"


def test_least_privilege_tests_see_each_kind_of_grant() -> None:
    # The generic tests above prove nothing about a kind of grant the topology lacks.
    functions = TOPOLOGY.functions
    assert any(f.publishes_to for f in functions), "a publisher (relay: PutEvents)"
    assert any(f.sends_to for f in functions), "a sender (webhooks: SendMessage)"
    assert any("read" in f.tables.values() for f in functions), "a reader (scheduler)"
    assert any(f.stream_from for f in functions)
    assert any(f.queue_trigger for f in functions)
    assert any(f.schedule_minutes for f in functions)
    assert any("readwrite" in f.buckets.values() for f in functions), "a bucket writer"
    assert any(f.reads_processor_secret for f in functions), "a secret reader (dispute intake)"
    assert any("seal" in f.bank_account_key for f in functions), "a sealer (api)"
    assert any("open" in f.bank_account_key for f in functions), "an opener (payout worker)"
    assert any(f.calls_bank for f in functions), "a bank caller (payout worker)"


# --- triggers ----------------------------------------------------------------------------


def _mappings_of(template: Template, function_id: str) -> dict[str, dict[str, Any]]:
    """The function's event source mappings' properties, by their EventSourceArn."""
    mappings = template.find_resources("AWS::Lambda::EventSourceMapping")
    return {
        json.dumps(props["EventSourceArn"], sort_keys=True): props
        for props in (m["Properties"] for m in mappings.values())
        if props["FunctionName"] == {"Ref": function_id}
    }


@pytest.mark.parametrize("spec", TOPOLOGY.functions, ids=lambda spec: spec.key)
def test_every_function_has_exactly_its_event_sources(
    stack: ClearlineStack, template: Template, spec: FunctionSpec
) -> None:
    mappings = _mappings_of(template, logical_id(stack, stack.functions[spec.key]))
    expected: set[str] = set()

    if spec.stream_from:
        stream = arn_of(logical_id(stack, stack.tables[spec.stream_from]), "StreamArn")
        expected.add(json.dumps(stream, sort_keys=True))
        props = mappings[json.dumps(stream, sort_keys=True)]
        assert props["StartingPosition"] == "TRIM_HORIZON"
        assert props["BatchSize"] == spec.batch_size
        assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        # As the local stream trigger does it, from the same declaration.
        failures = spec.stream_failures
        assert failures is not None
        assert props["BisectBatchOnFunctionError"] is failures.bisect_batch_on_error is True
        assert props["MaximumRetryAttempts"] == failures.maximum_retry_attempts
        assert 0 < props["MaximumRetryAttempts"] < 10_000, "bounded: a poison batch moves on"
        on_failure = stack.queues[failures.on_failure_queue]
        assert stack.stream_failure_queues[spec.key] is on_failure
        destination = arn_of(logical_id(stack, on_failure))
        assert props["DestinationConfig"] == {"OnFailure": {"Destination": destination}}
    else:
        assert spec.key not in stack.stream_failure_queues

    if spec.queue_trigger:
        queue = arn_of(logical_id(stack, stack.queues[spec.queue_trigger]))
        expected.add(json.dumps(queue, sort_keys=True))
        props = mappings[json.dumps(queue, sort_keys=True)]
        assert props["BatchSize"] == spec.batch_size
        assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert "StartingPosition" not in props

    assert set(mappings) == expected


def test_every_stream_trigger_gives_up_into_a_queue_that_people_read() -> None:
    consumed = {f.queue_trigger for f in TOPOLOGY.functions}
    streaming = [f for f in TOPOLOGY.functions if f.stream_from]
    assert streaming, "the topology has a stream trigger (the relay)"
    for spec in streaming:
        assert spec.stream_failures is not None, spec.key
        assert spec.stream_failures.on_failure_queue not in consumed, spec.key
    relay_failures = RELAY_FUNCTION.stream_failures
    assert relay_failures is not None
    assert TOPOLOGY.queue(relay_failures.on_failure_queue).name == "clearline-relay-failures"


def test_a_stream_trigger_without_failure_handling_is_refused() -> None:
    functions = tuple(
        dataclasses.replace(f, stream_failures=None) if f.stream_from else f
        for f in TOPOLOGY.functions
    )
    with pytest.raises(ValueError, match="stream_failures"):
        ClearlineStack(
            App(context=NO_BUNDLING),
            "NoStreamFailures",
            topology=dataclasses.replace(TOPOLOGY, functions=functions),
        )


def test_one_event_source_mapping_per_trigger(template: Template) -> None:
    triggers = [f.stream_from for f in TOPOLOGY.functions] + [
        f.queue_trigger for f in TOPOLOGY.functions
    ]
    count = sum(1 for trigger in triggers if trigger)
    template.resource_count_is("AWS::Lambda::EventSourceMapping", count)


@pytest.mark.parametrize("spec", TOPOLOGY.functions, ids=lambda spec: spec.key)
def test_every_scheduled_function_runs_on_its_schedule(
    stack: ClearlineStack, template: Template, spec: FunctionSpec
) -> None:
    function_arn = arn_of(logical_id(stack, stack.functions[spec.key]))
    schedules = {
        rule_id: rule["Properties"]
        for rule_id, rule in template.find_resources("AWS::Events::Rule").items()
        if "ScheduleExpression" in rule["Properties"]
        and function_arn in [t["Arn"] for t in rule["Properties"]["Targets"]]
    }
    if not spec.schedule_minutes:
        assert schedules == {}
        assert spec.key not in stack.schedules
        return

    rule_id = logical_id(stack, stack.schedules[spec.key])
    assert set(schedules) == {rule_id}
    props = schedules[rule_id]
    assert props["ScheduleExpression"] == rate(spec.schedule_minutes)
    assert props["State"] == "ENABLED"
    assert "EventBusName" not in props, "schedules run on the default bus"
    assert [t["Arn"] for t in props["Targets"]] == [function_arn]
    # EventBridge may invoke the function, for this rule only.
    template.has_resource_properties(
        "AWS::Lambda::Permission",
        {
            "Action": "lambda:InvokeFunction",
            "FunctionName": function_arn,
            "Principal": "events.amazonaws.com",
            "SourceArn": arn_of(rule_id),
        },
    )


def test_one_schedule_per_scheduled_function(template: Template) -> None:
    scheduled = [f for f in TOPOLOGY.functions if f.schedule_minutes]
    schedules = [
        r
        for r in template.find_resources("AWS::Events::Rule").values()
        if "ScheduleExpression" in r["Properties"]
    ]
    assert len(schedules) == len(scheduled)


def test_the_payouts_queue_triggers_the_payout_worker_alone(
    stack: ClearlineStack, template: Template
) -> None:
    assert PAYOUT_FUNCTION.queue_trigger == PAYOUT_QUEUE.key
    queue = arn_of(logical_id(stack, stack.queues[PAYOUT_QUEUE.key]))
    consumers = [
        m["Properties"]["FunctionName"]
        for m in template.find_resources("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["EventSourceArn"] == queue
    ]
    assert consumers == [{"Ref": logical_id(stack, stack.functions[PAYOUT_FUNCTION.key])}]
    # A payout its worker keeps failing goes to a dead-letter queue, which is alarmed.
    assert PAYOUT_QUEUE.key in stack.dead_letter_queues
    props = resource(template, "AWS::SQS::Queue", logical_id(stack, stack.queues[PAYOUT_QUEUE.key]))
    assert props["Properties"]["RedrivePolicy"]["maxReceiveCount"] == PAYOUT_QUEUE.max_receive_count


def test_daily_payouts_run_once_a_day(stack: ClearlineStack, template: Template) -> None:
    assert DAILY_PAYOUTS_FUNCTION.schedule_minutes == 24 * 60
    rule = resource(
        template,
        "AWS::Events::Rule",
        logical_id(stack, stack.schedules[DAILY_PAYOUTS_FUNCTION.key]),
    )["Properties"]
    assert rule["ScheduleExpression"] == "rate(1 day)"
    function_arn = arn_of(logical_id(stack, stack.functions[DAILY_PAYOUTS_FUNCTION.key]))
    assert [t["Arn"] for t in rule["Targets"]] == [function_arn]


# --- queues ------------------------------------------------------------------------------


def _queue_policy_statements(template: Template, queue_id: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for policy in template.find_resources("AWS::SQS::QueuePolicy").values():
        if {"Ref": queue_id} in policy["Properties"]["Queues"]:
            statements.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return statements


@pytest.mark.parametrize("spec", TOPOLOGY.queues, ids=lambda spec: spec.key)
def test_every_queue_is_configured_as_specified_with_its_dead_letter_queue(
    stack: ClearlineStack, template: Template, spec: QueueSpec
) -> None:
    props = resource(template, "AWS::SQS::Queue", logical_id(stack, stack.queues[spec.key]))[
        "Properties"
    ]
    assert "QueueName" not in props, "CloudFormation names the queues"
    assert props["VisibilityTimeout"] == spec.visibility_timeout_seconds
    assert props["MessageRetentionPeriod"] == spec.retention_seconds

    if spec.max_receive_count is None:
        assert "RedrivePolicy" not in props
        assert spec.key not in stack.dead_letter_queues
        return
    dlq_id = logical_id(stack, stack.dead_letter_queues[spec.key])
    assert props["RedrivePolicy"] == {
        "deadLetterTargetArn": arn_of(dlq_id),
        "maxReceiveCount": spec.max_receive_count,
    }
    dlq = resource(template, "AWS::SQS::Queue", dlq_id)["Properties"]
    assert "QueueName" not in dlq
    # A moved message keeps its first enqueue time, so the DLQ must keep it longer.
    assert dlq["MessageRetentionPeriod"] > spec.retention_seconds


def test_every_queue_is_encrypted_and_refuses_plain_http(template: Template) -> None:
    queues = template.find_resources("AWS::SQS::Queue")
    expected = (
        len(TOPOLOGY.queues)
        + sum(1 for q in TOPOLOGY.queues if q.max_receive_count is not None)
        + len(TOPOLOGY.rules)
    )
    assert len(queues) == expected, "each queue, its DLQ, and each rule's DLQ"
    for queue_id, queue in queues.items():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True, queue_id
        assert {
            "Action": "sqs:*",
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Resource": arn_of(queue_id),
        } in _queue_policy_statements(template, queue_id), f"{queue_id} allows plain HTTP"


def _unconsumed_queues() -> list[QueueSpec]:
    consumed = {f.queue_trigger for f in TOPOLOGY.functions}
    return [q for q in TOPOLOGY.queues if q.key not in consumed]


def _alarms(template: Template) -> list[dict[str, Any]]:
    return [a["Properties"] for a in template.find_resources("AWS::CloudWatch::Alarm").values()]


def test_every_queue_that_nothing_consumes_has_an_alarm(
    stack: ClearlineStack, template: Template
) -> None:
    # Dead-letter queues (of queues and of rule targets), stream failure queues, and topology
    # queues that no function consumes (mismatches): a message there waits for a person.
    unconsumed = _unconsumed_queues()
    assert unconsumed, "the topology has a queue for people (mismatches)"
    assert set(stack.unconsumed_queue_alarms) == {q.key for q in unconsumed}
    assert set(stack.stream_failure_queues.values()) <= {stack.queues[q.key] for q in unconsumed}
    parked = [
        *stack.dead_letter_queues.values(),
        *stack.rule_dead_letter_queues.values(),
        *(stack.queues[q.key] for q in unconsumed),
    ]
    assert len(parked) == sum(1 for q in TOPOLOGY.queues if q.max_receive_count is not None) + len(
        TOPOLOGY.rules
    ) + len(unconsumed)
    alarms = _alarms(template)
    for queue in parked:
        queue_id = logical_id(stack, queue)
        matching = [
            a
            for a in alarms
            if a["Dimensions"] == [{"Name": "QueueName", "Value": arn_of(queue_id, "QueueName")}]
        ]
        assert len(matching) == 1, f"{queue_id} has no alarm"
        alarm = matching[0]
        assert alarm["Namespace"] == "AWS/SQS"
        assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
        assert alarm["Threshold"] == 0
        assert alarm["EvaluationPeriods"] == 1
        assert alarm["TreatMissingData"] == "notBreaching"


def test_only_queues_that_nothing_consumes_go_without_a_dead_letter_queue() -> None:
    consumed = {f.queue_trigger for f in TOPOLOGY.functions}
    for queue in TOPOLOGY.queues:
        if queue.key in consumed:
            assert queue.max_receive_count is not None, queue.key
    assert any(q.max_receive_count is None for q in _unconsumed_queues())


def test_a_consumed_queue_without_a_dead_letter_queue_is_refused() -> None:
    consumer = next(f for f in TOPOLOGY.functions if f.queue_trigger)
    queues = tuple(
        dataclasses.replace(q, max_receive_count=None) if q.key == consumer.queue_trigger else q
        for q in TOPOLOGY.queues
    )
    with pytest.raises(ValueError, match="dead-letter queue"):
        ClearlineStack(
            App(context=NO_BUNDLING), "NoDlq", topology=dataclasses.replace(TOPOLOGY, queues=queues)
        )


def test_queue_triggers_outlast_their_functions() -> None:
    # Lambda refuses an SQS trigger whose visibility timeout is below the function timeout.
    for spec in TOPOLOGY.functions:
        if spec.queue_trigger:
            queue = TOPOLOGY.queue(spec.queue_trigger)
            assert queue.visibility_timeout_seconds >= spec.timeout_seconds, spec.key


def test_a_queue_shorter_than_its_function_is_refused() -> None:
    consumer = next(f for f in TOPOLOGY.functions if f.queue_trigger)
    queues = tuple(
        dataclasses.replace(q, visibility_timeout_seconds=consumer.timeout_seconds - 1)
        if q.key == consumer.queue_trigger
        else q
        for q in TOPOLOGY.queues
    )
    with pytest.raises(ValueError, match="visibility timeout"):
        ClearlineStack(
            App(context=NO_BUNDLING), "Short", topology=dataclasses.replace(TOPOLOGY, queues=queues)
        )


# --- buckets -----------------------------------------------------------------------------


def _bucket_policy_statements(template: Template, bucket_id: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for policy in template.find_resources("AWS::S3::BucketPolicy").values():
        if policy["Properties"]["Bucket"] == {"Ref": bucket_id}:
            statements.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return statements


def _assert_private_encrypted_ssl_only_and_retained(
    template: Template, bucket_id: str
) -> dict[str, Any]:
    bucket = resource(template, "AWS::S3::Bucket", bucket_id)
    props = bucket["Properties"]
    assert bucket["DeletionPolicy"] == "Retain"
    assert bucket["UpdateReplacePolicy"] == "Retain"
    assert "BucketName" not in props, "CloudFormation names the buckets"
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["BucketEncryption"] == {
        "ServerSideEncryptionConfiguration": [
            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
        ]
    }
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert {
        "Action": "s3:*",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        "Effect": "Deny",
        "Principal": {"AWS": "*"},
        "Resource": [arn_of(bucket_id), {"Fn::Join": ["", [arn_of(bucket_id), "/*"]]}],
    } in _bucket_policy_statements(template, bucket_id), f"{bucket_id} allows plain HTTP"
    return cast(dict[str, Any], props)


def test_one_bucket_per_spec_and_one_for_their_access_logs(
    stack: ClearlineStack, template: Template
) -> None:
    buckets = template.find_resources("AWS::S3::Bucket")
    assert len(buckets) == len(TOPOLOGY.buckets) + (1 if TOPOLOGY.buckets else 0)
    assert (stack.access_log_bucket is not None) == bool(TOPOLOGY.buckets)


@pytest.mark.parametrize("spec", TOPOLOGY.buckets, ids=lambda spec: spec.key)
def test_every_bucket_is_private_versioned_encrypted_logged_and_tiered(
    stack: ClearlineStack, template: Template, spec: BucketSpec
) -> None:
    bucket_id = logical_id(stack, stack.buckets[spec.key])
    props = _assert_private_encrypted_ssl_only_and_retained(template, bucket_id)
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}

    rules = props["LifecycleConfiguration"]["Rules"]
    assert all(rule["Status"] == "Enabled" for rule in rules)
    assert {"StorageClass": "STANDARD_IA", "TransitionInDays": 30} in [
        t for rule in rules for t in rule.get("Transitions", [])
    ]
    assert {"NoncurrentDays": 90} in [r.get("NoncurrentVersionExpiration") for r in rules]
    assert {"DaysAfterInitiation": 7} in [r.get("AbortIncompleteMultipartUpload") for r in rules]
    assert not any("ExpirationInDays" in r for r in rules), "current versions are records"

    # Server access logs go to the shared log bucket, which lets S3 logging write them
    # for this bucket only.
    assert stack.access_log_bucket is not None
    log_bucket_id = logical_id(stack, stack.access_log_bucket)
    assert props["LoggingConfiguration"] == {
        "DestinationBucketName": {"Ref": log_bucket_id},
        "LogFilePrefix": f"{spec.key}/",
    }
    delivery = [
        s
        for s in _bucket_policy_statements(template, log_bucket_id)
        if s["Principal"] == {"Service": "logging.s3.amazonaws.com"}
    ]
    assert [
        (s["Effect"], s["Action"], s["Condition"]["ArnLike"]["aws:SourceArn"])
        for s in delivery
        if s["Condition"]["ArnLike"]["aws:SourceArn"] == arn_of(bucket_id)
    ] == [("Allow", "s3:PutObject", arn_of(bucket_id))]


def test_the_access_log_bucket_is_private_and_expires_logs(
    stack: ClearlineStack, template: Template
) -> None:
    if stack.access_log_bucket is None:
        pytest.skip("the topology has no buckets")
    props = _assert_private_encrypted_ssl_only_and_retained(
        template, logical_id(stack, stack.access_log_bucket)
    )
    assert "LoggingConfiguration" not in props, "it does not log into itself"
    assert "AccessControl" not in props, "log delivery is granted by policy, not by ACL"
    rules = props["LifecycleConfiguration"]["Rules"]
    assert [r["ExpirationInDays"] for r in rules if "ExpirationInDays" in r] == [365]


def _notifications_of(template: Template, bucket_id: str) -> list[dict[str, Any]]:
    return [
        n["Properties"]["NotificationConfiguration"]
        for n in template.find_resources("Custom::S3BucketNotifications").values()
        if n["Properties"]["BucketName"] == {"Ref": bucket_id}
    ]


@pytest.mark.parametrize("spec", TOPOLOGY.buckets, ids=lambda spec: spec.key)
def test_every_bucket_announces_new_objects_under_its_prefix_to_its_queue(
    stack: ClearlineStack, template: Template, spec: BucketSpec
) -> None:
    bucket_id = logical_id(stack, stack.buckets[spec.key])
    notifications = _notifications_of(template, bucket_id)
    if spec.notify_queue is None:
        assert notifications == []
        return
    queue_id = logical_id(stack, stack.queues[spec.notify_queue])
    assert notifications == [
        {
            "QueueConfigurations": [
                {
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {
                        "Key": {"FilterRules": [{"Name": "prefix", "Value": spec.notify_prefix}]}
                    },
                    "QueueArn": arn_of(queue_id),
                }
            ]
        }
    ]
    # The queue lets S3 send on behalf of this bucket only.
    allows = [
        s
        for s in _queue_policy_statements(template, queue_id)
        if s["Effect"] == "Allow" and s["Principal"] == {"Service": "s3.amazonaws.com"}
    ]
    assert len(allows) == 1
    assert "sqs:SendMessage" in as_list(allows[0]["Action"])
    assert allows[0]["Condition"] == {"ArnLike": {"aws:SourceArn": arn_of(bucket_id)}}


def test_bucket_notifications_feed_a_consumed_queue() -> None:
    consumed = {f.queue_trigger for f in TOPOLOGY.functions}
    notifying = [b for b in TOPOLOGY.buckets if b.notify_queue]
    assert notifying, "the topology has an S3 -> SQS notification (settlement files)"
    for bucket in notifying:
        assert bucket.notify_prefix, bucket.key
        assert bucket.notify_queue in consumed, bucket.key


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"notify_queue": None}, "both notify_prefix and notify_queue"),
        ({"notify_prefix": None}, "both notify_prefix and notify_queue"),
        ({"notify_queue": "nowhere"}, "unknown queue"),
    ],
)
def test_a_half_or_dangling_bucket_notification_is_refused(
    change: dict[str, Any], message: str
) -> None:
    spec = next(b for b in TOPOLOGY.buckets if b.notify_queue)
    buckets = tuple(
        dataclasses.replace(b, **change) if b.key == spec.key else b for b in TOPOLOGY.buckets
    )
    with pytest.raises(ValueError, match=message):
        ClearlineStack(
            App(context=NO_BUNDLING), "Bad", topology=dataclasses.replace(TOPOLOGY, buckets=buckets)
        )


# --- event buses and rules ---------------------------------------------------------------


def test_one_bus_per_spec_named_by_cloudformation(template: Template) -> None:
    buses = template.find_resources("AWS::Events::EventBus")
    assert len(buses) == len(TOPOLOGY.buses)
    for bus in buses.values():
        assert "Policy" not in bus["Properties"], "no resource policy: same-account only"
        assert bus["Properties"]["Name"] not in {b.name for b in TOPOLOGY.buses}


@pytest.mark.parametrize("spec", TOPOLOGY.rules, ids=lambda spec: spec.key)
def test_every_rule_sends_its_events_to_its_queue(
    stack: ClearlineStack, template: Template, spec: RuleSpec
) -> None:
    rule_id = logical_id(stack, stack.rules[spec.key])
    props = resource(template, "AWS::Events::Rule", rule_id)["Properties"]
    queue_id = logical_id(stack, stack.queues[spec.queue])

    assert props["EventBusName"] == {"Ref": logical_id(stack, stack.buses[spec.bus])}
    assert props["EventPattern"] == spec.event_pattern
    assert props["State"] == "ENABLED"
    assert [t["Arn"] for t in props["Targets"]] == [arn_of(queue_id)]
    # The queue lets EventBridge send on behalf of this rule only.
    allows = [
        s
        for s in _queue_policy_statements(template, queue_id)
        if s["Effect"] == "Allow" and s["Principal"] == {"Service": "events.amazonaws.com"}
    ]
    assert len(allows) == 1
    assert "sqs:SendMessage" in as_list(allows[0]["Action"])
    assert allows[0]["Condition"] == {"ArnEquals": {"aws:SourceArn": arn_of(rule_id)}}


@pytest.mark.parametrize("spec", TOPOLOGY.rules, ids=lambda spec: spec.key)
def test_every_rule_target_retries_then_keeps_what_it_cannot_deliver(
    stack: ClearlineStack, template: Template, spec: RuleSpec
) -> None:
    props = resource(template, "AWS::Events::Rule", logical_id(stack, stack.rules[spec.key]))[
        "Properties"
    ]
    dlq_id = logical_id(stack, stack.rule_dead_letter_queues[spec.key])
    (target,) = props["Targets"]
    assert target["RetryPolicy"] == {
        "MaximumRetryAttempts": spec.retry_attempts,
        "MaximumEventAgeInSeconds": spec.max_event_age_seconds,
    }
    assert target["DeadLetterConfig"] == {"Arn": arn_of(dlq_id)}
    dlq = resource(template, "AWS::SQS::Queue", dlq_id)["Properties"]
    assert dlq["MessageRetentionPeriod"] == 14 * 86400
    # EventBridge may put this rule's undeliverable events there, and nothing else.
    allows = [
        s
        for s in _queue_policy_statements(template, dlq_id)
        if s["Effect"] == "Allow" and s["Principal"] == {"Service": "events.amazonaws.com"}
    ]
    assert len(allows) == 1
    assert "sqs:SendMessage" in as_list(allows[0]["Action"])
    assert allows[0]["Condition"] == {
        "ArnEquals": {"aws:SourceArn": arn_of(logical_id(stack, stack.rules[spec.key]))}
    }


def test_an_unknown_event_pattern_key_is_refused() -> None:
    with pytest.raises(ValueError, match="event pattern"):
        clearline_stack.event_pattern({"source": ["clearline"], "detailType": ["x"]})


def test_event_patterns_use_eventbridge_keys() -> None:
    pattern = clearline_stack.event_pattern(
        {"source": ["clearline"], "detail-type": ["charge.succeeded"], "detail": {"a": [1]}}
    )
    assert pattern.source == ["clearline"]
    assert pattern.detail_type == ["charge.succeeded"]
    assert pattern.detail == {"a": [1]}


# --- alarms ------------------------------------------------------------------------------


def test_the_alarm_topic_is_encrypted_ssl_only_and_open_to_cloudwatch(
    stack: ClearlineStack, template: Template
) -> None:
    template.resource_count_is("AWS::SNS::Topic", 1)
    topic_id = logical_id(stack, stack.alarm_topic)
    topic = resource(template, "AWS::SNS::Topic", topic_id)["Properties"]
    key_id = topic["KmsMasterKeyId"]["Fn::GetAtt"][0]
    key = resource(template, "AWS::KMS::Key", key_id)["Properties"]
    assert key["EnableKeyRotation"] is True
    # CloudWatch encrypts what it publishes with this key, so its policy must let it.
    assert {
        "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
        "Effect": "Allow",
        "Principal": {"Service": "cloudwatch.amazonaws.com"},
        "Resource": "*",
    } in key["KeyPolicy"]["Statement"]

    (policy,) = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in template.find_resources("AWS::SNS::TopicPolicy").values()
        if {"Ref": topic_id} in p["Properties"]["Topics"]
    ]
    assert {
        "Action": "sns:Publish",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        "Effect": "Deny",
        "Principal": "*",
        "Resource": {"Ref": topic_id},
        "Sid": "AllowPublishThroughSSLOnly",
    } in policy
    (allow,) = [s for s in policy if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert allow["Action"] == "sns:Publish"
    assert allow["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


def test_every_alarm_notifies_the_alarm_topic(stack: ClearlineStack, template: Template) -> None:
    alarms = _alarms(template)
    expected = (
        len(stack.dead_letter_queues)
        + len(stack.rule_dead_letter_queues)
        + len(stack.unconsumed_queue_alarms)
        + len(TOPOLOGY.functions)
        + 1  # unresolved pending operations
    )
    assert len(alarms) == expected
    topic = {"Ref": logical_id(stack, stack.alarm_topic)}
    for alarm in alarms:
        assert alarm["AlarmActions"] == [topic], alarm["AlarmDescription"]


@pytest.mark.parametrize("spec", TOPOLOGY.functions, ids=lambda spec: spec.key)
def test_every_function_alarms_on_its_errors(
    stack: ClearlineStack, template: Template, spec: FunctionSpec
) -> None:
    function = {"Ref": logical_id(stack, stack.functions[spec.key])}
    alarm = resource(
        template, "AWS::CloudWatch::Alarm", logical_id(stack, stack.function_error_alarms[spec.key])
    )["Properties"]
    assert alarm["Namespace"] == "AWS/Lambda"
    assert alarm["MetricName"] == "Errors"
    assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": function}]
    assert alarm["Statistic"] == "Sum"
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["Threshold"] == 0
    assert alarm["EvaluationPeriods"] == 1
    assert alarm["TreatMissingData"] == "notBreaching"


def test_a_pending_money_operation_unresolved_past_its_bound_is_alarmed(
    stack: ClearlineStack, template: Template
) -> None:
    assert stack.unresolved_pending_alarm is not None
    alarm = resource(
        template, "AWS::CloudWatch::Alarm", logical_id(stack, stack.unresolved_pending_alarm)
    )["Properties"]
    # What the processor sync publishes with Powertools Metrics (service dimension included).
    assert alarm["Namespace"] == METRICS_NAMESPACE == "Clearline"
    assert alarm["MetricName"] == UNRESOLVED_PENDING_OPERATIONS_METRIC
    assert alarm["MetricName"] == "UnresolvedPendingOperations"
    assert alarm["Dimensions"] == [{"Name": "service", "Value": SERVICE_NAME}]
    assert alarm["Statistic"] == "Maximum"
    assert alarm["Period"] == 15 * 60
    assert alarm["EvaluationPeriods"] == 1
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["Threshold"] == 0
    # The figure comes on every run; none at all means the resolver is not running.
    assert alarm["TreatMissingData"] == "breaching"
    # The function that publishes it is told the same namespace and service.
    sync = resource(
        template,
        "AWS::Lambda::Function",
        logical_id(stack, stack.functions[PROCESSOR_SYNC_FUNCTION.key]),
    )["Properties"]["Environment"]["Variables"]
    assert sync["POWERTOOLS_METRICS_NAMESPACE"] == METRICS_NAMESPACE
    assert sync["POWERTOOLS_SERVICE_NAME"] == SERVICE_NAME


# --- REST API ----------------------------------------------------------------------------


def _api_methods(template: Template, api_id: str) -> dict[str, dict[str, Any]]:
    """The properties of the REST API's methods, by logical id."""
    return {
        method_id: method["Properties"]
        for method_id, method in template.find_resources("AWS::ApiGateway::Method").items()
        if method["Properties"]["RestApiId"] == {"Ref": api_id}
    }


def _api_resources(template: Template, api_id: str) -> dict[str, dict[str, Any]]:
    """The properties of the REST API's resources (paths below its root), by logical id."""
    return {
        resource_id: r["Properties"]
        for resource_id, r in template.find_resources("AWS::ApiGateway::Resource").items()
        if r["Properties"]["RestApiId"] == {"Ref": api_id}
    }


def test_two_rest_apis_the_merchants_and_the_processors(template: Template) -> None:
    template.resource_count_is(
        "AWS::ApiGateway::RestApi", 1 + (1 if TOPOLOGY.notifications is not None else 0)
    )
    assert TOPOLOGY.notifications is not None
    assert TOPOLOGY.notifications.function == DISPUTE_INTAKE_FUNCTION.key
    assert TOPOLOGY.notifications.function != TOPOLOGY.api.function


def test_rest_api_proxies_everything_to_the_api_function(
    stack: ClearlineStack, template: Template
) -> None:
    api_id = logical_id(stack, stack.api)
    root = arn_of(api_id, "RootResourceId")
    resources = _api_resources(template, api_id)
    (proxy_id,) = [
        r_id
        for r_id, r in resources.items()
        if r["ParentId"] == root and r["PathPart"] == "{proxy+}"
    ]

    function_id = logical_id(stack, stack.functions[TOPOLOGY.api.function])
    methods = _api_methods(template, api_id)
    for props in methods.values():
        assert props["Integration"]["Type"] == "AWS_PROXY"
        assert function_id in json.dumps(props["Integration"]["Uri"])
        assert "RequestValidatorId" in props
    # The merchant routes (/v1/... through /{proxy+}) meet the key authorizer and need the
    # usage key it names; the keyless ones (pages, a browser's publishable-key calls) go
    # straight through; operators' /admin ones need an IAM signature. Nothing else.
    by_type: dict[str, set[str]] = {}
    for m_id, props in methods.items():
        by_type.setdefault(props["AuthorizationType"], set()).add(m_id)
    assert set(by_type) == {"CUSTOM", "NONE", "AWS_IAM"}
    assert by_type["CUSTOM"] == {logical_id(stack, m) for m in stack.keyed_methods}
    assert by_type["NONE"] == {logical_id(stack, m) for m in stack.keyless_methods}
    authorizer_id = logical_id(stack, stack.key_authorizer)
    for m_id in by_type["CUSTOM"]:
        assert methods[m_id]["AuthorizerId"] == {"Ref": authorizer_id}
        assert methods[m_id]["ApiKeyRequired"] is True
    where = [json.dumps(p["ResourceId"], sort_keys=True) for p in methods.values()]
    assert json.dumps({"Ref": proxy_id}) in where and json.dumps(root, sort_keys=True) in where

    template.has_resource_properties(
        "AWS::ApiGateway::RequestValidator",
        {"ValidateRequestBody": True, "ValidateRequestParameters": True},
    )


def test_admin_routes_need_an_iam_signature(stack: ClearlineStack, template: Template) -> None:
    api_id = logical_id(stack, stack.api)
    resources = _api_resources(template, api_id)
    (admin_id,) = [
        r_id
        for r_id, r in resources.items()
        if r["ParentId"] == arn_of(api_id, "RootResourceId") and r["PathPart"] == "admin"
    ]
    (admin_proxy_id,) = [
        r_id
        for r_id, r in resources.items()
        if r["ParentId"] == {"Ref": admin_id} and r["PathPart"] == "{proxy+}"
    ]
    methods = _api_methods(template, api_id)
    # /admin itself has no method (the gateway refuses it); everything under it is signed.
    assert [p for p in methods.values() if p["ResourceId"] == {"Ref": admin_id}] == []
    (admin,) = [p for p in methods.values() if p["ResourceId"] == {"Ref": admin_proxy_id}]
    assert admin["HttpMethod"] == "ANY"
    assert admin["AuthorizationType"] == "AWS_IAM"
    assert [logical_id(stack, m) for m in stack.admin_methods] == [
        m_id for m_id, p in methods.items() if p["AuthorizationType"] == "AWS_IAM"
    ]
    # Nothing else of the API asks for IAM: merchants sign nothing.
    assert sum(1 for p in methods.values() if p["AuthorizationType"] == "AWS_IAM") == 1


def test_the_gateways_own_errors_are_stripe_shaped(template: Template) -> None:
    """A throttled request (429) or the gateway's own 413 or 5xx reads like the API's errors."""
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in template.find_resources("AWS::ApiGateway::GatewayResponse").values()
    }
    assert set(responses) == {
        "THROTTLED",
        "QUOTA_EXCEEDED",
        "UNAUTHORIZED",
        "ACCESS_DENIED",
        "REQUEST_TOO_LARGE",
        "INTEGRATION_TIMEOUT",
        "DEFAULT_4XX",
        "DEFAULT_5XX",
    }
    throttled = responses["THROTTLED"]
    # A plain 429, as Stripe's: the SDK raises RateLimitError rather than retrying at once.
    assert throttled["ResponseParameters"]["gatewayresponse.header.Stripe-Should-Retry"] == (
        "'false'"
    )
    error = json.loads(throttled["ResponseTemplates"]["application/json"])
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["code"] == "rate_limit"
    assert "'$context.requestId'" in throttled["ResponseParameters"].values()


def _assert_stage_logs_traces_and_throttles(
    stack: ClearlineStack, template: Template, stage: Any, name: str, rate: int, burst: int
) -> dict[str, Any]:
    props = resource(template, "AWS::ApiGateway::Stage", logical_id(stack, stage))
    Template.from_json({"Resources": {"Stage": props}}).has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "StageName": name,
            "TracingEnabled": True,
            "AccessLogSetting": {"DestinationArn": Match.any_value(), "Format": Match.any_value()},
            "MethodSettings": [
                Match.object_like(
                    {
                        "HttpMethod": "*",
                        "ResourcePath": "/*",
                        "LoggingLevel": "ERROR",
                        "DataTraceEnabled": False,
                        "ThrottlingRateLimit": rate,
                        "ThrottlingBurstLimit": burst,
                    }
                )
            ],
        },
    )
    return cast(dict[str, Any], props)


def test_api_stage_logs_traces_and_throttles(stack: ClearlineStack, template: Template) -> None:
    _assert_stage_logs_traces_and_throttles(
        stack,
        template,
        stack.api.deployment_stage,
        TOPOLOGY.api.stage,
        shared.THROTTLE_RATE_LIMIT,
        shared.THROTTLE_BURST_LIMIT,
    )
    template.resource_count_is("AWS::ApiGateway::Account", 1)


# --- the processor's notifications --------------------------------------------------------


def test_the_notifications_api_proxies_everything_to_the_dispute_intake(
    stack: ClearlineStack, template: Template
) -> None:
    assert stack.notifications_api is not None
    api_id = logical_id(stack, stack.notifications_api)
    assert api_id != logical_id(stack, stack.api), "an API of its own, not the merchant API"
    resource(template, "AWS::ApiGateway::RestApi", api_id)

    intake_id = logical_id(stack, stack.functions[DISPUTE_INTAKE_FUNCTION.key])
    methods = _api_methods(template, api_id)
    assert len(methods) == 2, "ANY on / and on /{proxy+}"
    for props in methods.values():
        assert props["HttpMethod"] == "ANY"
        assert props["Integration"]["Type"] == "AWS_PROXY"
        assert intake_id in json.dumps(props["Integration"]["Uri"])
        # The function verifies the processor's signature; the gateway asks none.
        assert props["AuthorizationType"] == "NONE"
        assert "RequestValidatorId" in props
    (proxy,) = _api_resources(template, api_id).values()
    assert proxy == {
        "ParentId": arn_of(api_id, "RootResourceId"),
        "PathPart": "{proxy+}",
        "RestApiId": {"Ref": api_id},
    }
    # API Gateway may invoke the intake for this API only, and nothing invokes it otherwise.
    permissions = [
        p["Properties"]
        for p in template.find_resources("AWS::Lambda::Permission").values()
        if p["Properties"]["FunctionName"] == arn_of(intake_id)
    ]
    assert permissions
    for permission in permissions:
        assert permission["Principal"] == "apigateway.amazonaws.com"
        assert {"Ref": api_id} in permission["SourceArn"]["Fn::Join"][1], permission
    # And the merchant API never reaches the intake.
    for props in _api_methods(template, logical_id(stack, stack.api)).values():
        assert intake_id not in json.dumps(props["Integration"]["Uri"])


def test_the_notifications_stage_logs_traces_and_throttles(
    stack: ClearlineStack, template: Template
) -> None:
    assert stack.notifications_api is not None and TOPOLOGY.notifications is not None
    stage = _assert_stage_logs_traces_and_throttles(
        stack,
        template,
        stack.notifications_api.deployment_stage,
        TOPOLOGY.notifications.stage,
        clearline_stack.NOTIFICATIONS_THROTTLE_RATE_LIMIT,
        clearline_stack.NOTIFICATIONS_THROTTLE_BURST_LIMIT,
    )
    assert 0 < clearline_stack.NOTIFICATIONS_THROTTLE_RATE_LIMIT <= shared.THROTTLE_RATE_LIMIT
    # Access logs of its own, kept like the main API's.
    main = resource(
        template, "AWS::ApiGateway::Stage", logical_id(stack, stack.api.deployment_stage)
    )
    log_group_id = stage["Properties"]["AccessLogSetting"]["DestinationArn"]["Fn::GetAtt"][0]
    assert log_group_id != main["Properties"]["AccessLogSetting"]["DestinationArn"]["Fn::GetAtt"][0]
    log_group = resource(template, "AWS::Logs::LogGroup", log_group_id)
    assert log_group["Properties"]["RetentionInDays"] == 365
    # It logs errors through the account's logging role, which the main API sets: after it.
    (account_id,) = template.find_resources("AWS::ApiGateway::Account")
    assert account_id in stage.get("DependsOn", [])


def test_the_notifications_url_is_an_output(stack: ClearlineStack, template: Template) -> None:
    assert stack.notifications_api is not None and TOPOLOGY.notifications is not None
    output = template.find_outputs("ProcessorNotificationsUrl")["ProcessorNotificationsUrl"]
    parts = output["Value"]["Fn::Join"][1]
    assert parts[0] == "https://"
    assert {"Ref": logical_id(stack, stack.notifications_api)} in parts
    assert parts[-1].endswith(f"/{TOPOLOGY.notifications.stage}{PROCESSOR_NOTIFICATION_PATH}")
    assert PROCESSOR_NOTIFICATION_PATH == "/processor/notifications"


def test_a_notifications_api_for_an_unknown_function_is_refused() -> None:
    with pytest.raises(ValueError, match="notifications API"):
        ClearlineStack(
            App(context=NO_BUNDLING),
            "NoIntake",
            topology=dataclasses.replace(
                TOPOLOGY, notifications=dataclasses.replace(TOPOLOGY.api, function="nowhere")
            ),
        )


def test_the_notification_secret_is_generated(stack: ClearlineStack, template: Template) -> None:
    template.resource_count_is("AWS::SecretsManager::Secret", 1)
    assert stack.processor_notification_secret is not None
    secret_id = logical_id(stack, stack.processor_notification_secret)
    props = resource(template, "AWS::SecretsManager::Secret", secret_id)["Properties"]
    assert "SecretString" not in props, "generated, never written in the template"
    assert props["GenerateSecretString"]["PasswordLength"] >= 32
    # No rotation schedule: the processor holds the same secret, rotated with it by hand.
    template.resource_count_is("AWS::SecretsManager::RotationSchedule", 0)
    output = template.find_outputs("ProcessorNotificationSecretArn")
    assert output["ProcessorNotificationSecretArn"]["Value"] == {"Ref": secret_id}


def _secrets_statements(template: Template, role_id: str) -> list[dict[str, Any]]:
    return [
        s
        for s in _statements_for_role(template, role_id)
        if any(a.startswith("secretsmanager:") for a in as_list(s["Action"]))
    ]


@pytest.mark.parametrize("spec", TOPOLOGY.functions, ids=lambda spec: spec.key)
def test_only_the_dispute_intake_may_read_the_notification_secret(
    stack: ClearlineStack, template: Template, spec: FunctionSpec
) -> None:
    assert stack.processor_notification_secret is not None
    secret_id = logical_id(stack, stack.processor_notification_secret)
    role = stack.functions[spec.key].role
    assert role is not None
    statements = _secrets_statements(template, logical_id(stack, role))
    env = _function_env(stack, template, spec.key)
    assert spec.reads_processor_secret == (spec.key == DISPUTE_INTAKE_FUNCTION.key)
    if not spec.reads_processor_secret:
        assert statements == []
        assert PROCESSOR_NOTIFICATION_SECRET_ENV not in env
        return
    (statement,) = statements
    assert statement["Effect"] == "Allow"
    assert as_list(statement["Resource"]) == [{"Ref": secret_id}], "that one secret"
    assert set(as_list(statement["Action"])) == {
        "secretsmanager:GetSecretValue",
        "secretsmanager:DescribeSecret",
    }
    # Powertools' get_secret takes the ARN as well as a name.
    assert env[PROCESSOR_NOTIFICATION_SECRET_ENV] == {"Ref": secret_id}


# --- payouts: the bank and its account numbers --------------------------------------------


def test_the_bank_url_is_a_parameter_with_an_https_default(template: Template) -> None:
    parameter = template.find_parameters("BankUrl")["BankUrl"]
    assert parameter["Default"].startswith("https://")
    assert parameter["AllowedPattern"] == r"^https://\S+$"


@pytest.mark.parametrize("spec", TOPOLOGY.functions, ids=lambda spec: spec.key)
def test_only_the_functions_that_call_the_bank_are_told_its_url(
    stack: ClearlineStack, template: Template, spec: FunctionSpec
) -> None:
    env = _function_env(stack, template, spec.key)
    if spec.calls_bank:
        assert env[BANK_URL_ENV] == {"Ref": "BankUrl"}
    else:
        assert BANK_URL_ENV not in env
    assert spec.calls_bank == (spec.key in {PAYOUT_FUNCTION.key, PROCESSOR_SYNC_FUNCTION.key})


def test_the_rate_provider_url_is_a_parameter_only_the_rates_function_is_told(
    stack: ClearlineStack, template: Template
) -> None:
    parameter = template.find_parameters("RateProviderUrl")["RateProviderUrl"]
    assert parameter["Default"].startswith("https://")
    assert parameter["AllowedPattern"] == r"^https://\S+$"
    told = {
        spec.key
        for spec in TOPOLOGY.functions
        if RATE_PROVIDER_URL_ENV in _function_env(stack, template, spec.key)
    }
    assert told == {FX_RATES_FUNCTION.key}
    env = _function_env(stack, template, FX_RATES_FUNCTION.key)
    assert env[RATE_PROVIDER_URL_ENV] == {"Ref": "RateProviderUrl"}


def test_the_bank_accounts_key_rotates_and_outlives_the_stack(
    stack: ClearlineStack, template: Template
) -> None:
    assert stack.bank_accounts_key is not None
    key = resource(template, "AWS::KMS::Key", logical_id(stack, stack.bank_accounts_key))
    assert key["Properties"]["EnableKeyRotation"] is True
    # Losing the key would lose every merchant's bank account number.
    assert key["DeletionPolicy"] == "Retain"
    assert key["UpdateReplacePolicy"] == "Retain"
    assert stack.bank_accounts_key is not stack.webhook_secrets_key


def _kms_grants(template: Template, role_id: str) -> dict[str, set[str]]:
    """The KMS actions the role is allowed, by the logical id of their key (one key each)."""
    grants: dict[str, set[str]] = {}
    for statement in _statements_for_role(template, role_id):
        actions = {a for a in as_list(statement["Action"]) if a.startswith("kms:")}
        if not actions:
            continue
        assert statement["Effect"] == "Allow"
        (key_arn,) = as_list(statement["Resource"])
        assert key_arn == arn_of(key_arn["Fn::GetAtt"][0]), statement
        grants.setdefault(key_arn["Fn::GetAtt"][0], set()).update(actions)
    return grants


@pytest.mark.parametrize("spec", TOPOLOGY.functions, ids=lambda spec: spec.key)
def test_only_payout_functions_may_use_the_bank_accounts_key_and_the_api_only_seals(
    stack: ClearlineStack, template: Template, spec: FunctionSpec
) -> None:
    assert stack.bank_accounts_key is not None
    key_id = logical_id(stack, stack.bank_accounts_key)
    role = stack.functions[spec.key].role
    assert role is not None
    granted = _kms_grants(template, logical_id(stack, role)).get(key_id, set())
    expected = {
        API_FUNCTION.key: {"kms:GenerateDataKey"},  # seals a number an operator sets, never opens
        PAYOUT_FUNCTION.key: {"kms:Decrypt"},  # opens it to send a transfer
        PROCESSOR_SYNC_FUNCTION.key: {"kms:Decrypt"},  # opens it to resolve a pending payout
    }.get(spec.key, set())
    assert granted == expected, spec.key
    assert ("kms:Decrypt" in granted) == ("open" in spec.bank_account_key)
    assert ("kms:GenerateDataKey" in granted) == ("seal" in spec.bank_account_key)

    env = _function_env(stack, template, spec.key)
    if expected:
        assert env[BANK_ACCOUNTS_KEY_ENV] == arn_of(key_id)
    else:
        assert BANK_ACCOUNTS_KEY_ENV not in env


@pytest.mark.parametrize("spec", TOPOLOGY.functions, ids=lambda spec: spec.key)
def test_no_function_may_use_a_key_it_was_not_given(
    stack: ClearlineStack, template: Template, spec: FunctionSpec
) -> None:
    role = stack.functions[spec.key].role
    assert role is not None
    keys = {
        logical_id(stack, key)
        for key, used in (
            (stack.webhook_secrets_key, spec.key in WEBHOOK_SECRET_USERS),
            (stack.bank_accounts_key, bool(spec.bank_account_key)),
        )
        if used and key is not None
    }
    assert set(_kms_grants(template, logical_id(stack, role))) == keys


# --- webhook signing secrets and where webhooks go ---------------------------------------


def _function_env(stack: ClearlineStack, template: Template, key: str) -> dict[str, Any]:
    function = resource(template, "AWS::Lambda::Function", logical_id(stack, stack.functions[key]))
    return cast(dict[str, Any], function["Properties"]["Environment"]["Variables"])


def test_the_webhook_secrets_key_rotates_and_outlives_the_stack(
    stack: ClearlineStack, template: Template
) -> None:
    assert stack.webhook_secrets_key is not None
    key = resource(template, "AWS::KMS::Key", logical_id(stack, stack.webhook_secrets_key))
    assert key["Properties"]["EnableKeyRotation"] is True
    # Losing the key would lose every endpoint's secret.
    assert key["DeletionPolicy"] == "Retain"
    assert key["UpdateReplacePolicy"] == "Retain"


@pytest.mark.parametrize("spec", TOPOLOGY.functions, ids=lambda spec: spec.key)
def test_only_the_api_and_the_dispatcher_may_use_the_webhook_secrets_key(
    stack: ClearlineStack, template: Template, spec: FunctionSpec
) -> None:
    assert stack.webhook_secrets_key is not None
    key_id = logical_id(stack, stack.webhook_secrets_key)
    role = stack.functions[spec.key].role
    assert role is not None
    granted = _kms_grants(template, logical_id(stack, role)).get(key_id, set())
    expected = {
        "api": {"kms:GenerateDataKey", "kms:Decrypt"},  # seals new secrets, opens a replay
        "webhooks": {"kms:Decrypt"},  # opens them to sign deliveries, never seals
    }.get(spec.key, set())
    assert granted == expected, spec.key
    uses = WEBHOOK_SECRET_USERS.get(spec.key, ())
    assert ("kms:Decrypt" in granted) == ("open" in uses)
    assert ("kms:GenerateDataKey" in granted) == ("seal" in uses)


@pytest.mark.parametrize("spec", TOPOLOGY.functions, ids=lambda spec: spec.key)
def test_only_the_functions_that_use_the_key_are_told_it(
    stack: ClearlineStack, template: Template, spec: FunctionSpec
) -> None:
    assert stack.webhook_secrets_key is not None
    env = _function_env(stack, template, spec.key)
    if spec.key in ("api", "webhooks"):
        assert env[WEBHOOK_SECRETS_KEY_ENV] == arn_of(logical_id(stack, stack.webhook_secrets_key))
    else:
        assert WEBHOOK_SECRETS_KEY_ENV not in env


@pytest.mark.parametrize("spec", TOPOLOGY.functions, ids=lambda spec: spec.key)
def test_no_deployed_function_may_send_webhooks_to_loopback(
    stack: ClearlineStack, template: Template, spec: FunctionSpec
) -> None:
    # The allowance is the local stack's alone: deployed, webhooks go to public addresses.
    assert WEBHOOK_ALLOW_LOOPBACK_ENV not in _function_env(stack, template, spec.key)
    assert WEBHOOK_ALLOW_LOOPBACK_ENV not in json.dumps(template.to_json())


def test_a_function_that_would_allow_loopback_is_refused() -> None:
    functions = tuple(
        dataclasses.replace(f, environment={WEBHOOK_ALLOW_LOOPBACK_ENV: "4242"})
        if f.key == "webhooks"
        else f
        for f in TOPOLOGY.functions
    )
    with pytest.raises(ValueError, match=WEBHOOK_ALLOW_LOOPBACK_ENV):
        ClearlineStack(
            App(context=NO_BUNDLING),
            "LoopbackWebhooks",
            topology=dataclasses.replace(TOPOLOGY, functions=functions),
        )


def test_the_layer_ships_what_sealing_secrets_needs() -> None:
    shipped = {line.split("==")[0].lower() for line in _requirements()}
    assert {"cryptography", "cffi", "pycparser"} <= shipped


# --- cdk-nag -----------------------------------------------------------------------------


def test_synth_has_no_unacknowledged_findings(stack: ClearlineStack, synth_dir: Path) -> None:
    # The fixture's synth did not raise; the report must agree, and so must a direct run.
    report = json.loads((synth_dir / "validation-report.json").read_text())
    assert all(r["conclusion"] == "success" for r in report["pluginReports"]), report
    direct = AwsSolutionsChecks().validate_scope(stack.node.root)
    assert direct.violations == [], [v.rule_name for v in direct.violations]
    Annotations.from_stack(stack).has_no_error("*", Match.any_value())
    Annotations.from_stack(stack).has_no_warning("*", Match.any_value())


def test_a_new_finding_fails_the_synth(tmp_path: Path) -> None:
    app, stack, _ = create_app(NO_BUNDLING, outdir=str(tmp_path))
    # A table without point-in-time recovery, which nobody has acknowledged.
    dynamodb.Table(
        stack,
        "Unreviewed",
        partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
    )
    with pytest.raises(Exception, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    rules = {v["ruleName"] for r in report["pluginReports"] for v in r["violations"]}
    assert rules == {"AwsSolutions-DDB3"}


def test_every_acknowledgment_matches_a_real_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    recorded: list[tuple[str, str]] = []
    # Every module that acknowledges findings, so that the vault's stack is checked too.
    for module in (clearline_stack, shared, vault_stack):
        monkeypatch.setattr(
            module,
            "acknowledge",
            lambda scope, rule_id, reason: recorded.append((scope.node.path, rule_id)),
        )
    app, _, _ = create_app(NO_BUNDLING)
    findings = {
        (resource.construct_path or "", violation.rule_name)
        for violation in AwsSolutionsChecks().validate_scope(app).violations
        for resource in violation.violating_resources
    }
    # Each finding sits on (or under) the construct that acknowledges it, and no
    # acknowledgment is left over for a finding that no longer exists.
    assert findings
    for path, rule in findings:
        assert any(
            rule == ack_rule and (path == ack_path or path.startswith(ack_path + "/"))
            for ack_path, ack_rule in recorded
        ), f"{rule} on {path} is not acknowledged"
    for ack_path, ack_rule in recorded:
        assert any(
            rule == ack_rule and (path == ack_path or path.startswith(ack_path + "/"))
            for path, rule in findings
        ), f"stale acknowledgment {ack_rule} on {ack_path}"


def test_every_acknowledgment_gives_a_reason(stack: ClearlineStack) -> None:
    reasons: dict[str, str] = {}
    for construct in stack.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                for rule_id, reason in entry.data.items():
                    reasons[f"{construct.node.path} {rule_id}"] = reason
    assert reasons
    for where, reason in reasons.items():
        assert len(reason.split()) >= 10, f"{where}: reason too short: {reason!r}"


# --- dependencies layer ------------------------------------------------------------------


def _requirements() -> list[str]:
    text = (REPO_ROOT / "layers" / "dependencies" / "requirements.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def test_layer_requirements_are_pinned_and_leave_the_sdk_to_the_runtime() -> None:
    requirements = _requirements()
    assert requirements
    for line in requirements:
        assert "==" in line, f"unpinned: {line}"
        name = line.split("==")[0].split("[")[0].lower()
        assert name not in {"boto3", "botocore", "s3transfer"}, f"{name} comes with Lambda"


def test_layer_requirements_match_the_project_pins() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    shipped = [dep for dep in project["dependencies"] if not dep.startswith("boto3")]
    assert set(shipped) <= set(_requirements())


def test_pip_builds_for_lambda_not_for_the_host() -> None:
    args = pip_install_args("requirements.txt", "out/python")
    joined = " ".join(args)
    for flag in (
        "--platform manylinux2014_aarch64",
        "--implementation cp",
        "--python-version 3.13",
        "--only-binary=:all:",
        "--target out/python",
    ):
        assert flag in joined


@pytest.fixture
def bundler_looks_again() -> Iterator[None]:
    """The bundler looks for the runtime's Python once a synth; these tests change what it
    finds, so it looks again before each and after."""
    bundling.runtime_python.cache_clear()
    bundling._say_source_only.cache_clear()
    yield
    bundling.runtime_python.cache_clear()
    bundling._say_source_only.cache_clear()


@pytest.mark.usefixtures("bundler_looks_again")
def test_the_layer_gets_bytecode_caches_made_by_the_runtime_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This interpreter stands in for the runtime's: its version is the one asked for.
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    monkeypatch.setattr(bundling, "PYTHON_VERSION", version)
    monkeypatch.setattr(bundling.shutil, "which", lambda name: sys.executable)
    (tmp_path / "module.py").write_text("VALUE = 1\n")
    assert compile_bytecode(str(tmp_path)) is True
    tag = version.replace(".", "")
    assert [p.name for p in tmp_path.rglob("*.pyc")] == [f"module.cpython-{tag}.pyc"]


@pytest.mark.usefixtures("bundler_looks_again")
def test_our_code_is_copied_without_host_caches_and_compiled_for_the_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"  # this one stands in
    monkeypatch.setattr(bundling, "PYTHON_VERSION", version)
    monkeypatch.setattr(bundling.shutil, "which", lambda name: sys.executable)
    source = tmp_path / "function"
    (source / "__pycache__").mkdir(parents=True)
    (source / "handler.py").write_text("def lambda_handler(event, context):\n    return 1\n")
    (source / "__pycache__" / "handler.cpython-39.pyc").write_bytes(b"another Python's")
    (source / "clearline.egg-info").mkdir()
    output = tmp_path / "asset"
    output.mkdir()
    assert bundling.LocalCopyBundling(source).try_bundle(str(output)) is True
    tag = version.replace(".", "")
    assert sorted(str(p.relative_to(output)) for p in output.rglob("*")) == [
        "__pycache__",
        f"__pycache__/handler.cpython-{tag}.pyc",
        "handler.py",
    ]


def test_every_function_and_the_library_layer_are_bundled_from_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bundled, so that their bytecode is made for the runtime (this synth skips the
    bundling itself, as the others here do)."""
    bundled: list[str] = []
    original = shared.source_code

    def recording(source_dir: Path) -> Any:
        bundled.append(str(source_dir.relative_to(REPO_ROOT)))
        return original(source_dir)

    monkeypatch.setattr(shared, "source_code", recording)
    create_app(NO_BUNDLING, outdir=str(tmp_path))
    expected = {"layers/clearline", *(spec.code_dir for spec in TOPOLOGY.functions)}
    assert expected <= set(bundled)


@pytest.mark.usefixtures("bundler_looks_again")
def test_an_interpreter_of_another_version_compiles_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bundling, "PYTHON_VERSION", "3.0")  # not this interpreter's
    monkeypatch.setattr(bundling.shutil, "which", lambda name: sys.executable)
    (tmp_path / "module.py").write_text("VALUE = 1\n")
    assert compile_bytecode(str(tmp_path)) is False
    assert not list(tmp_path.rglob("*.pyc"))


@pytest.mark.usefixtures("bundler_looks_again")
def test_without_the_runtime_python_the_layer_ships_source_only_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bundling.shutil, "which", lambda _: None)
    (tmp_path / "module.py").write_text("VALUE = 1\n")
    assert compile_bytecode(str(tmp_path)) is False
    assert not list(tmp_path.rglob("*.pyc"))
    assert "compiles their modules on every cold start" in capsys.readouterr().err


# --- the cdk command line ----------------------------------------------------------------


def test_cdk_cli_synth(tmp_path: Path) -> None:
    cdk = REPO_ROOT / "node_modules" / ".bin" / "cdk"
    if not cdk.exists() or shutil.which("node") is None:
        pytest.skip("the cdk command line is not installed: run `npm ci` in the repository root")
    env = {
        **os.environ,
        "CDK_DISABLE_VERSION_CHECK": "1",
        "CDK_DISABLE_CLI_TELEMETRY": "true",
    }
    result = subprocess.run(
        [
            str(cdk),
            "synth",
            "--quiet",
            "--no-notices",
            "-c",
            "clearline:skipBundling=true",
            "--output",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    template = json.loads((tmp_path / "ClearlineStack.template.json").read_text())
    types = {r["Type"] for r in template["Resources"].values()}
    assert {"AWS::DynamoDB::Table", "AWS::Lambda::Function", "AWS::ApiGateway::RestApi"} <= types
    vault = json.loads((tmp_path / "ClearlineVaultStack.template.json").read_text())
    vault_types = {r["Type"] for r in vault["Resources"].values()}
    assert {"AWS::DynamoDB::Table", "AWS::KMS::Key", "AWS::SSM::Parameter"} <= vault_types


# --- the dashboard's sign-in -----------------------------------------------------------------


def test_the_dashboard_signs_people_in_with_a_cognito_pool_that_nobody_joins_alone(
    stack: ClearlineStack, template: Template
) -> None:
    template.has_resource_properties(
        "AWS::Cognito::UserPool",
        {
            "AdminCreateUserConfig": {"AllowAdminCreateUserOnly": True},
            "MfaConfiguration": "ON",
            "UsernameAttributes": ["email"],
            "Schema": Match.array_with([Match.object_like({"Name": "merchant"})]),
            "UserPoolAddOns": {"AdvancedSecurityMode": "ENFORCED"},
        },
    )
    template.has_resource_properties("AWS::Cognito::UserPoolGroup", {"GroupName": OPERATIONS_GROUP})
    (client,) = template.find_resources("AWS::Cognito::UserPoolClient").values()
    props = client["Properties"]
    assert props["AllowedOAuthFlows"] == ["code"] and props["GenerateSecret"] is False
    assert set(props["AllowedOAuthScopes"]) == {"openid", "email"}
    (callback,) = props["CallbackURLs"]
    assert "/dashboard/callback" in json.dumps(callback)
    for spec in TOPOLOGY.functions:  # only the api signs people in
        function = resource(
            template, "AWS::Lambda::Function", logical_id(stack, stack.functions[spec.key])
        )
        env = set(function["Properties"].get("Environment", {}).get("Variables", {}))
        signs_in = {DOMAIN_ENV, CLIENT_ID_ENV, ISSUER_ENV} <= env
        assert signs_in == (spec.key == TOPOLOGY.api.function), spec.key
