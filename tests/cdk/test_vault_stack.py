"""Synthesizes the card vault's stack beside Clearline's and checks its boundary: its own
table and keys, a role that reaches nothing of Clearline but the API key items, IAM on the
internal routes, and Clearline's functions reaching the vault only through its URL parameter
and its internal routes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, cast

import pytest
from aws_cdk import App, Stack, Validations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk.assertions import Annotations, Match, Template
from cdk_nag import AwsSolutionsChecks

from clearline.topology import (
    API_KEY_PREFIX,
    MAIN_TABLE,
    PROCESSOR_URL_ENV,
    TOPOLOGY,
    VAULT_FINGERPRINT_KEY_ENV,
    VAULT_FUNCTION,
    VAULT_KEY_ENV,
    VAULT_PUBLIC_URL_ENV,
    VAULT_TABLE,
    VAULT_TOPOLOGY,
    VAULT_URL_PARAMETER,
    VAULT_URL_PARAMETER_ENV,
    ApiSpec,
    FunctionSpec,
    QueueSpec,
    table_env_var,
)
from infra_cdk.app import VAULT_STACK_ID
from infra_cdk.clearline_stack import ClearlineStack
from infra_cdk.vault_stack import VaultStack
from presentation.links import PUBLIC_URL_ENV

from .conftest import NO_BUNDLING, logical_id

pytestmark = pytest.mark.cdk

VAULT_INTERNAL_ROUTES = ":*/*/*/internal/*"


@pytest.fixture(scope="module")
def clearline(stack: ClearlineStack) -> ClearlineStack:
    return stack  # the other stack, named as this module's tests name it


@pytest.fixture(scope="module")
def vault(stacks: tuple[ClearlineStack, VaultStack]) -> VaultStack:
    return stacks[1]


@pytest.fixture(scope="module")
def template(vault: VaultStack) -> Template:
    return Template.from_stack(vault)


@pytest.fixture(scope="module")
def clearline_template(clearline: ClearlineStack) -> Template:
    return Template.from_stack(clearline)


def resource(template: Template, resource_type: str, wanted_id: str) -> dict[str, Any]:
    resources = template.find_resources(resource_type)
    assert wanted_id in resources, f"{resource_type} {wanted_id} not in the template"
    return cast(dict[str, Any], resources[wanted_id])


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def arn_of(resource_id: str, attribute: str = "Arn") -> dict[str, Any]:
    return {"Fn::GetAtt": [resource_id, attribute]}


def statements_for_role(template: Template, role_id: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for policy in template.find_resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return statements


def role_id_of(stack: ClearlineStack | VaultStack, key: str) -> str:
    role = stack.functions[key].role
    assert role is not None
    return logical_id(stack, role)


def function_env(stack: ClearlineStack | VaultStack, template: Template, key: str) -> Any:
    function = resource(template, "AWS::Lambda::Function", logical_id(stack, stack.functions[key]))
    return function["Properties"]["Environment"]["Variables"]


def imports_of(value: Any) -> list[str]:
    """The export names a template value imports from other stacks."""
    if isinstance(value, dict):
        found = [value["Fn::ImportValue"]] if "Fn::ImportValue" in value else []
        return found + [name for v in value.values() for name in imports_of(v)]
    if isinstance(value, list):
        return [name for v in value for name in imports_of(v)]
    return []


def account_arn(service: str, tail: str) -> dict[str, Any]:
    """An ARN in the stack's partition, region and account, as format_arn builds it."""
    return {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                f":{service}:",
                {"Ref": "AWS::Region"},
                ":",
                {"Ref": "AWS::AccountId"},
                tail,
            ],
        ]
    }


# --- the app -----------------------------------------------------------------------------


def test_the_vault_deploys_after_clearline(
    clearline: ClearlineStack, vault: VaultStack, synth_dir: Path
) -> None:
    assert vault.node.id == VAULT_STACK_ID == "ClearlineVaultStack"
    assert clearline in vault.dependencies
    assert vault not in clearline.dependencies
    manifest = json.loads((synth_dir / "manifest.json").read_text())
    assert clearline.artifact_id in manifest["artifacts"][vault.artifact_id]["dependencies"]


def test_the_vault_is_built_from_its_topology(vault: VaultStack) -> None:
    assert vault.topology is VAULT_TOPOLOGY
    assert set(vault.tables) == {VAULT_TABLE.key}
    assert set(vault.functions) == {VAULT_FUNCTION.key}


# --- table and keys ----------------------------------------------------------------------


def test_the_vault_table_is_durable_and_encrypted_with_its_own_key(
    vault: VaultStack, template: Template
) -> None:
    template.resource_count_is("AWS::DynamoDB::Table", 1)
    table = resource(template, "AWS::DynamoDB::Table", logical_id(vault, vault.tables["vault"]))
    props = table["Properties"]

    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"
    assert props["DeletionProtectionEnabled"] is True
    assert "TableName" not in props
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["KeySchema"] == [
        {"AttributeName": VAULT_TABLE.partition_key, "KeyType": "HASH"},
        {"AttributeName": VAULT_TABLE.sort_key, "KeyType": "RANGE"},
    ]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert "StreamSpecification" not in props

    table_key_id = logical_id(vault, vault.table_key)
    assert props["SSESpecification"] == {
        "SSEEnabled": True,
        "SSEType": "KMS",
        "KMSMasterKeyId": arn_of(table_key_id),
    }
    key = resource(template, "AWS::KMS::Key", table_key_id)
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key["DeletionPolicy"] == "Retain"


def test_the_card_key_is_symmetric_rotating_and_retained(
    vault: VaultStack, template: Template
) -> None:
    key = resource(template, "AWS::KMS::Key", logical_id(vault, vault.card_key))
    props = key["Properties"]
    assert props["EnableKeyRotation"] is True
    assert props.get("KeySpec", "SYMMETRIC_DEFAULT") == "SYMMETRIC_DEFAULT"
    assert props.get("KeyUsage", "ENCRYPT_DECRYPT") == "ENCRYPT_DECRYPT"
    assert key["DeletionPolicy"] == "Retain"


def test_fingerprints_come_from_one_hmac_key(vault: VaultStack, template: Template) -> None:
    keys = template.find_resources("AWS::KMS::Key")
    # The alarm topic's, the table's, the card key and the fingerprint key.
    assert len(keys) == 4
    hmac_keys = {k for k, v in keys.items() if v["Properties"].get("KeySpec") == "HMAC_256"}
    assert hmac_keys == {logical_id(vault, vault.fingerprint_key)}
    (hmac_key,) = [keys[k] for k in hmac_keys]
    assert hmac_key["Properties"]["KeyUsage"] == "GENERATE_VERIFY_MAC"
    assert hmac_key["DeletionPolicy"] == "Retain"
    # HMAC keys cannot rotate; a new one would change every fingerprint.
    assert not hmac_key["Properties"].get("EnableKeyRotation")


# --- the function ------------------------------------------------------------------------


def test_the_vault_function_runs_like_clearlines(vault: VaultStack, template: Template) -> None:
    props = resource(
        template, "AWS::Lambda::Function", logical_id(vault, vault.functions["vault"])
    )["Properties"]
    assert props["Runtime"] == "python3.13"
    assert props["Architectures"] == ["arm64"]
    assert props["Handler"] == VAULT_FUNCTION.handler
    assert props["Timeout"] == VAULT_FUNCTION.timeout_seconds
    assert props["MemorySize"] == VAULT_FUNCTION.memory_mb
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert len(props["Layers"]) == 2
    log_group = resource(template, "AWS::Logs::LogGroup", props["LoggingConfig"]["LogGroup"]["Ref"])
    assert log_group["Properties"]["RetentionInDays"] == 365
    role = resource(template, "AWS::IAM::Role", role_id_of(vault, "vault"))
    assert "ManagedPolicyArns" not in role["Properties"]


def test_the_vault_function_is_told_its_tables_keys_and_urls(
    clearline: ClearlineStack, vault: VaultStack, template: Template
) -> None:
    env = function_env(vault, template, "vault")

    assert env[table_env_var("vault")] == {"Ref": logical_id(vault, vault.tables["vault"])}
    (main_import,) = imports_of(env[table_env_var(MAIN_TABLE.key)])
    assert logical_id(clearline, clearline.main_table) in main_import
    assert env[VAULT_KEY_ENV] == arn_of(logical_id(vault, vault.card_key))
    assert env[VAULT_FINGERPRINT_KEY_ENV] == arn_of(logical_id(vault, vault.fingerprint_key))
    assert env[PROCESSOR_URL_ENV] == {"Ref": "ProcessorUrl"}
    # Its own URL, from its own API's id (no wait on its deployment).
    vault_api = {"Ref": logical_id(vault, vault.api)}
    assert vault_api in env[VAULT_PUBLIC_URL_ENV]["Fn::Join"][1]
    assert env[VAULT_PUBLIC_URL_ENV]["Fn::Join"][1][-1].endswith(f"/{VAULT_TOPOLOGY.api.stage}")
    # Clearline's public URL, imported from Clearline's stack.
    (api_import,) = imports_of(env[PUBLIC_URL_ENV])
    assert logical_id(clearline, clearline.api) in api_import
    assert VAULT_URL_PARAMETER_ENV not in env


def test_the_processor_url_is_a_parameter_as_in_clearlines_stack(template: Template) -> None:
    parameter = template.find_parameters("ProcessorUrl")["ProcessorUrl"]
    assert parameter["Default"].startswith("https://")
    assert parameter["AllowedPattern"] == r"^https://\S+$"


def test_the_vault_role_is_granted_exactly_its_table_keys_and_the_api_keys(
    clearline: ClearlineStack, vault: VaultStack, template: Template
) -> None:
    table_id = logical_id(vault, vault.tables["vault"])
    table_key_id = logical_id(vault, vault.table_key)
    card_key_id = logical_id(vault, vault.card_key)
    fingerprint_key_id = logical_id(vault, vault.fingerprint_key)
    main_table_id = logical_id(clearline, clearline.main_table)
    granted: dict[str, set[str]] = {}

    for statement in statements_for_role(template, role_id_of(vault, "vault")):
        assert statement["Effect"] == "Allow"
        actions = set(as_list(statement["Action"]))
        resources = as_list(statement["Resource"])
        text = json.dumps(resources)
        if actions <= {"logs:CreateLogStream", "logs:PutLogEvents"}:
            target = "logs"
        elif actions <= {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}:
            assert resources == ["*"]
            target = "xray"
        elif resources == [arn_of(table_id)]:
            assert all(a.startswith("dynamodb:") for a in actions), actions
            target = "table"
        elif resources == [arn_of(table_key_id)]:
            target = "table key"
        elif resources == [arn_of(card_key_id)]:
            target = "card key"
        elif resources == [arn_of(fingerprint_key_id)]:
            target = "fingerprint key"
        elif main_table_id in text:
            assert statement["Condition"] == {
                "ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"{API_KEY_PREFIX}*"]}
            }
            target = "api keys"
        else:
            raise AssertionError(f"an unexpected grant: {statement}")
        assert "*" not in resources or target == "xray", statement
        granted.setdefault(target, set()).update(actions)

    assert set(granted) == {
        "logs",
        "xray",
        "table",
        "table key",
        "card key",
        "fingerprint key",
        "api keys",
    }
    assert {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"} <= granted["table"]
    assert granted["card key"] == {"kms:GenerateDataKey", "kms:Decrypt"}
    assert granted["fingerprint key"] == {"kms:GenerateMac"}
    assert granted["api keys"] == {"dynamodb:GetItem"}


def test_nothing_else_of_clearline_is_reachable_from_the_vault(
    clearline: ClearlineStack, vault: VaultStack, template: Template
) -> None:
    main_table_id = logical_id(clearline, clearline.main_table)
    main_table_statements = [
        statement
        for policy in template.find_resources("AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if main_table_id in json.dumps(statement)
    ]
    # One statement, on the table itself (no index, no stream), for GetItem of API keys only.
    (statement,) = main_table_statements
    assert statement["Action"] == "dynamodb:GetItem"
    assert statement["Condition"] == {
        "ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"{API_KEY_PREFIX}*"]}
    }
    assert list(statement["Resource"]) == ["Fn::ImportValue"], "the table's ARN, nothing more"
    assert "Arn" in statement["Resource"]["Fn::ImportValue"]
    # What the vault imports from Clearline: the main table's name and ARN and its API's id.
    imported = set(imports_of(template.to_json()["Resources"]))
    assert len(imported) == 3, imported
    assert all(name.startswith(f"{clearline.stack_name}:") for name in imported)
    assert sum(main_table_id in name for name in imported) == 2
    assert sum(logical_id(clearline, clearline.api) in name for name in imported) == 1


def test_the_vault_function_alarms_on_its_errors(vault: VaultStack, template: Template) -> None:
    alarm = resource(
        template,
        "AWS::CloudWatch::Alarm",
        logical_id(vault, vault.function_error_alarms["vault"]),
    )["Properties"]
    function = {"Ref": logical_id(vault, vault.functions["vault"])}
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/Lambda", "Errors")
    assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": function}]
    assert alarm["Threshold"] == 0
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["AlarmActions"] == [{"Ref": logical_id(vault, vault.alarm_topic)}]
    topic = resource(template, "AWS::SNS::Topic", logical_id(vault, vault.alarm_topic))
    assert "KmsMasterKeyId" in topic["Properties"]
    template.resource_count_is("AWS::CloudWatch::Alarm", 1)


# --- the REST API ------------------------------------------------------------------------


def _method_paths(template: Template) -> dict[str, dict[str, Any]]:
    """Each method's properties by its resource's path ("/", "/{proxy+}", ...)."""
    resources = template.find_resources("AWS::ApiGateway::Resource")

    def path_of(resource_ref: Any) -> str:
        if "Fn::GetAtt" in resource_ref:  # the root resource
            return ""
        props = resources[resource_ref["Ref"]]["Properties"]
        return f"{path_of(props['ParentId'])}/{props['PathPart']}"

    methods = template.find_resources("AWS::ApiGateway::Method")
    return {
        path_of(m["Properties"]["ResourceId"]) or "/": m["Properties"] for m in methods.values()
    }


def test_internal_routes_need_iam_and_the_rest_is_public(
    vault: VaultStack, template: Template
) -> None:
    template.resource_count_is("AWS::ApiGateway::RestApi", 1)
    methods = _method_paths(template)
    assert set(methods) == {"/", "/{proxy+}", "/internal/{proxy+}"}, "no method on /internal"
    function_id = logical_id(vault, vault.functions["vault"])
    for path, props in methods.items():
        assert props["HttpMethod"] == "ANY"
        assert props["Integration"]["Type"] == "AWS_PROXY"
        assert function_id in json.dumps(props["Integration"]["Uri"])
        assert "RequestValidatorId" in props
        expected = "AWS_IAM" if path.startswith("/internal/") else "NONE"
        assert props["AuthorizationType"] == expected, path
    assert len(vault.internal_methods) == 1 and len(vault.public_methods) == 2


def test_the_vault_stage_logs_traces_and_throttles(template: Template) -> None:
    template.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "StageName": VAULT_TOPOLOGY.api.stage,
            "TracingEnabled": True,
            "AccessLogSetting": {"DestinationArn": Match.any_value(), "Format": Match.any_value()},
            "MethodSettings": [
                Match.object_like(
                    {
                        "LoggingLevel": "ERROR",
                        "DataTraceEnabled": False,
                        "ThrottlingRateLimit": Match.any_value(),
                        "ThrottlingBurstLimit": Match.any_value(),
                    }
                )
            ],
        },
    )
    # API Gateway's logging role is per account and region, and Clearline's stack sets it.
    template.resource_count_is("AWS::ApiGateway::Account", 0)


def test_the_vault_answers_gateway_errors_as_clearline_does(
    template: Template, clearline_template: Template
) -> None:
    def responses(of: Template) -> dict[str, Any]:
        return {
            r["Properties"]["ResponseType"]: (
                r["Properties"]["ResponseParameters"],
                r["Properties"]["ResponseTemplates"],
            )
            for r in of.find_resources("AWS::ApiGateway::GatewayResponse").values()
        }

    vault, clearline = responses(template), responses(clearline_template)
    assert len(vault) == 5
    # The main API answers a throttled key in words of its own (its per-key limits);
    # every other error of the gateway reads the same from both.
    assert {kind: answer for kind, answer in vault.items() if kind != "THROTTLED"} == {
        kind: clearline[kind] for kind in vault if kind != "THROTTLED"
    }


def test_the_vault_url_is_published_in_its_parameter(vault: VaultStack, template: Template) -> None:
    parameter = resource(template, "AWS::SSM::Parameter", logical_id(vault, vault.url_parameter))[
        "Properties"
    ]
    assert parameter["Name"] == VAULT_URL_PARAMETER
    assert parameter["Type"] == "String"
    # The stage's base URL, to which the vault client appends /internal/...
    parts = parameter["Value"]["Fn::Join"][1]
    assert parts[0] == "https://"
    assert {"Ref": logical_id(vault, vault.api)} in parts
    assert parts[-1] == f".amazonaws.com/{VAULT_TOPOLOGY.api.stage}"
    assert vault.resolve(vault.url) == parameter["Value"]
    template.resource_count_is("AWS::SSM::Parameter", 1)


# --- Clearline's side --------------------------------------------------------------------


@pytest.mark.parametrize("spec", TOPOLOGY.functions, ids=lambda spec: spec.key)
def test_clearlines_vault_callers_may_read_the_url_and_call_internal_routes_only(
    clearline: ClearlineStack, clearline_template: Template, spec: FunctionSpec
) -> None:
    env = function_env(clearline, clearline_template, spec.key)
    statements = statements_for_role(clearline_template, role_id_of(clearline, spec.key))
    vault_statements = [
        (as_list(s["Action"]), s["Resource"])
        for s in statements
        if any(a.startswith(("ssm:", "execute-api:")) for a in as_list(s["Action"]))
    ]
    if not spec.calls_vault:
        assert VAULT_URL_PARAMETER_ENV not in env
        assert vault_statements == []
        return
    assert env[VAULT_URL_PARAMETER_ENV] == VAULT_URL_PARAMETER
    assert vault_statements == [
        (["ssm:GetParameter"], account_arn("ssm", f":parameter{VAULT_URL_PARAMETER}")),
        (["execute-api:Invoke"], account_arn("execute-api", VAULT_INTERNAL_ROUTES)),
    ]


def test_the_topology_has_vault_callers() -> None:
    assert {f.key for f in TOPOLOGY.functions if f.calls_vault} >= {"api"}


def test_clearline_knows_nothing_of_the_vaults_table_or_keys(
    vault: VaultStack, clearline_template: Template, template: Template
) -> None:
    text = json.dumps(clearline_template.to_json())
    # No import from the vault's stack, which deploys later; no KMS grant beyond its own.
    assert vault.stack_name not in text
    assert imports_of(clearline_template.to_json()) == []
    for construct in (vault.table_key, vault.card_key, vault.fingerprint_key):
        assert logical_id(vault, construct) not in text
    assert logical_id(vault, vault.tables["vault"]) not in text
    # And the vault exports nothing for another stack to import.
    outputs = template.to_json().get("Outputs", {})
    assert not any("Export" in output for output in outputs.values())


# --- what the vault's stack refuses to build ----------------------------------------------


def _standalone_vault(topology: Any) -> VaultStack:
    app = App(context=NO_BUNDLING)
    holder = Stack(app, "Holder")
    table = dynamodb.Table(
        holder,
        "Main",
        partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
    )
    return VaultStack(
        app,
        "Vault",
        main_table=table,
        clearline_public_url="https://clearline.invalid/prod",
        topology=topology,
    )


def test_a_vault_topology_with_resources_it_does_not_build_is_refused() -> None:
    queue = QueueSpec(key="extra", name="extra")
    with pytest.raises(ValueError, match="queues"):
        _standalone_vault(dataclasses.replace(VAULT_TOPOLOGY, queues=(queue,)))
    with pytest.raises(ValueError, match="notifications API"):
        _standalone_vault(
            dataclasses.replace(VAULT_TOPOLOGY, notifications=ApiSpec(function="vault"))
        )
    for extra in (
        {"schedule_minutes": 1},
        {"calls_bank": True},
        {"bank_account_key": ("open",)},
        {"reads_processor_secret": True},
    ):
        triggered = dataclasses.replace(VAULT_FUNCTION, **extra)
        with pytest.raises(ValueError, match="function vault"):
            _standalone_vault(dataclasses.replace(VAULT_TOPOLOGY, functions=(triggered,)))


def test_a_vault_function_overriding_a_managed_variable_is_refused() -> None:
    overriding = dataclasses.replace(VAULT_FUNCTION, environment={VAULT_KEY_ENV: "alias/other"})
    with pytest.raises(ValueError, match=VAULT_KEY_ENV):
        _standalone_vault(dataclasses.replace(VAULT_TOPOLOGY, functions=(overriding,)))


# --- cdk-nag -----------------------------------------------------------------------------


def test_the_vault_has_no_unacknowledged_findings(vault: VaultStack, synth_dir: Path) -> None:
    report = json.loads((synth_dir / "validation-report.json").read_text())
    assert all(r["conclusion"] == "success" for r in report["pluginReports"]), report
    direct = AwsSolutionsChecks().validate_scope(vault)
    assert direct.violations == [], [v.rule_name for v in direct.violations]
    Annotations.from_stack(vault).has_no_error("*", Match.any_value())
    Annotations.from_stack(vault).has_no_warning("*", Match.any_value())


def test_every_vault_acknowledgment_gives_a_reason(vault: VaultStack) -> None:
    reasons: dict[str, str] = {}
    for construct in vault.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                for rule_id, reason in entry.data.items():
                    reasons[f"{construct.node.path} {rule_id}"] = reason
    assert reasons
    for where, reason in reasons.items():
        assert len(reason.split()) >= 10, f"{where}: reason too short: {reason!r}"
