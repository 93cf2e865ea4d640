"""Synthesizes the CDK app and checks it against the topology and cdk-nag."""

from __future__ import annotations

import os

# Before the first aws_cdk import, which starts the jsii runtime: node 20 works, but jsii
# prints a banner about its support window on every start.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

import json
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any, cast

import pytest
from aws_cdk import Stack, Validations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk.assertions import Annotations, Match, Template
from cdk_nag import AwsSolutionsChecks

import infra_cdk.clearline_stack as clearline_stack
from clearline.topology import (
    PROCESSOR_URL_ENV,
    SERVICE_NAME,
    TOPOLOGY,
    FunctionSpec,
    TableSpec,
    table_env_var,
)
from infra_cdk.app import create_app
from infra_cdk.bundling import pip_install_args
from infra_cdk.clearline_stack import ClearlineStack

pytestmark = pytest.mark.cdk

REPO_ROOT = Path(__file__).resolve().parents[2]
# Skips the pip build of the dependencies layer (CDK then uses the source folder as is).
NO_BUNDLING: dict[str, Any] = {"aws:cdk:bundling-stacks": []}
DYNAMODB_WRITE_ACTIONS = {
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
}


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cdk.out")


@pytest.fixture(scope="module")
def stack(synth_dir: Path) -> ClearlineStack:
    app, stack = create_app(NO_BUNDLING, outdir=str(synth_dir))
    # With the cdk-nag plugin registered, this raises if any finding is unacknowledged.
    app.synth()
    return stack


@pytest.fixture(scope="module")
def template(stack: ClearlineStack) -> Template:
    return Template.from_stack(stack)


def logical_id(stack: Stack, construct: Any) -> str:
    return cast(str, stack.resolve(construct.node.default_child.logical_id))


def resource(template: Template, resource_type: str, wanted_id: str) -> dict[str, Any]:
    resources = template.find_resources(resource_type)
    assert wanted_id in resources, f"{resource_type} {wanted_id} not in the template"
    return cast(dict[str, Any], resources[wanted_id])


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


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
    template.resource_count_is("AWS::Lambda::Function", len(TOPOLOGY.functions))


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
    granted: set[str] = set()

    for statement in _statements_for_role(template, role_id):
        actions = as_list(statement["Action"])
        dynamodb_actions = [a for a in actions if a.startswith("dynamodb:")]
        if not dynamodb_actions:
            continue
        assert "dynamodb:*" not in dynamodb_actions
        for resource_ref in as_list(statement["Resource"]):
            assert resource_ref != "*", f"dynamodb actions on every resource: {statement}"
            referenced = [tid for tid in table_ids.values() if tid in json.dumps(resource_ref)]
            assert len(referenced) == 1, f"unexpected dynamodb resource {resource_ref}"
            table_id = referenced[0]
            assert table_id in allowed, f"{spec.key} may not touch table {table_id}"
            if allowed[table_id] == "read":
                assert not DYNAMODB_WRITE_ACTIONS & set(dynamodb_actions)
            granted.add(table_id)

    assert granted == set(allowed), "every table in the spec is granted"


# --- REST API ----------------------------------------------------------------------------


def test_rest_api_proxies_everything_to_the_api_function(
    stack: ClearlineStack, template: Template
) -> None:
    template.resource_count_is("AWS::ApiGateway::RestApi", 1)
    template.has_resource_properties("AWS::ApiGateway::Resource", {"PathPart": "{proxy+}"})

    function_id = logical_id(stack, stack.functions[TOPOLOGY.api.function])
    methods = template.find_resources("AWS::ApiGateway::Method")
    assert len(methods) == 2, "ANY on / and on /{proxy+}"
    for method in methods.values():
        props = method["Properties"]
        assert props["HttpMethod"] == "ANY"
        assert props["Integration"]["Type"] == "AWS_PROXY"
        assert function_id in json.dumps(props["Integration"]["Uri"])
        assert "RequestValidatorId" in props

    template.has_resource_properties(
        "AWS::ApiGateway::RequestValidator",
        {"ValidateRequestBody": True, "ValidateRequestParameters": True},
    )


def test_api_stage_logs_traces_and_throttles(template: Template) -> None:
    template.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "StageName": TOPOLOGY.api.stage,
            "TracingEnabled": True,
            "AccessLogSetting": {"DestinationArn": Match.any_value(), "Format": Match.any_value()},
            "MethodSettings": [
                Match.object_like(
                    {
                        "HttpMethod": "*",
                        "ResourcePath": "/*",
                        "LoggingLevel": "ERROR",
                        "DataTraceEnabled": False,
                        "ThrottlingRateLimit": Match.any_value(),
                        "ThrottlingBurstLimit": Match.any_value(),
                    }
                )
            ],
        },
    )
    template.resource_count_is("AWS::ApiGateway::Account", 1)


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
    app, stack = create_app(NO_BUNDLING, outdir=str(tmp_path))
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
    monkeypatch.setattr(
        clearline_stack,
        "acknowledge",
        lambda scope, rule_id, reason: recorded.append((scope.node.path, rule_id)),
    )
    app, _ = create_app(NO_BUNDLING)
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
