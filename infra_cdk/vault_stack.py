"""The card vault's stack: the only place a card number enters. Its table, KMS keys, function,
REST API and IAM boundary are its own, so Clearline's stack stays out of PCI scope.

It is deployed after the Clearline stack: the vault reads Clearline's API key items (to learn
a publishable key's merchant), links to Clearline's public API, and writes its own URL to an
SSM parameter that Clearline's functions read at run time.
"""

from __future__ import annotations

from typing import cast

from aws_cdk import CfnParameter, CrossStackReferences, ReferenceStrength, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from clearline.topology import (
    API_KEY_PREFIX,
    MAIN_TABLE,
    METRICS_NAMESPACE,
    PROCESSOR_URL_ENV,
    SERVICE_NAME,
    VAULT_FINGERPRINT_KEY_ENV,
    VAULT_KEY_ENV,
    VAULT_PUBLIC_URL_ENV,
    VAULT_TOPOLOGY,
    VAULT_URL_PARAMETER,
    ApiSpec,
    FunctionSpec,
    Topology,
    table_env_var,
)
from infra_cdk.shared import (
    acknowledge,
    add_stripe_shaped_gateway_errors,
    alarm_topic,
    durable_table,
    function_errors_alarm,
    function_layers,
    lambda_function,
    processor_url_parameter,
    stage_options,
    stage_url,
)
from presentation.links import PUBLIC_URL_ENV

# The path under which the vault's routes are for Clearline only, signed with its roles.
INTERNAL_PATH = "internal"
# What sealing a card needs of the card key: a data key to encrypt it with (returned in the
# clear and encrypted), and Decrypt to open it again. Nothing else, such as ReEncrypt.
CARD_KEY_ACTIONS = ("kms:GenerateDataKey", "kms:Decrypt")
FINGERPRINT_KEY_ACTIONS = ("kms:GenerateMac",)
# The only action, and the only items, the vault may use of Clearline's main table.
API_KEY_READ_ACTIONS = ("dynamodb:GetItem",)
# What the CDK's grant on a table encrypted with a customer managed key adds, for the
# acknowledgments of their wildcards.
TABLE_KEY_WILDCARDS = {
    "kms:GenerateDataKey*": "creates the data keys DynamoDB encrypts the table's items with",
    "kms:ReEncrypt*": "lets DynamoDB re-encrypt the table's data keys, as on key rotation",
}


class VaultStack(Stack):
    """The vault's table (with a key of its own), its card and fingerprint keys, one Lambda per
    FunctionSpec of the vault's topology, its REST API, and the SSM parameter naming its URL."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        main_table: dynamodb.ITable,
        clearline_public_url: str,
        topology: Topology = VAULT_TOPOLOGY,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            description="Clearline's card vault: the only component that receives card "
            "numbers (API Gateway, Lambda, DynamoDB, KMS)",
        )
        self._refuse_what_the_vault_does_not_build(topology)
        # Strong references (exports): Clearline's stack cannot drop the main table or its
        # API while the vault uses them. Both are permanent, so the exports never change.
        CrossStackReferences.of(self).consume(ReferenceStrength.STRONG)
        self.topology = topology
        self.main_table = main_table
        self.clearline_public_url = clearline_public_url
        self.alarm_topic = alarm_topic(self, owner="Clearline vault")
        self.table_key = self._retained_key(
            "TableKey", "Encrypts the card vault's table (sealed cards, tokens, CVCs)"
        )
        self.tables = {
            spec.key: durable_table(self, spec, encryption_key=self.table_key)
            for spec in topology.tables
        }
        self.card_key = self._retained_key(
            "CardKey", "Seals card numbers in the vault (envelope encryption)"
        )
        # HMAC keys cannot rotate automatically, and a new key would change every card's
        # fingerprint, breaking the match between old and new payments of one card.
        self.fingerprint_key = kms.Key(
            self,
            "FingerprintKey",
            description="Derives card fingerprints (HMAC-SHA-256 of the card number)",
            key_spec=kms.KeySpec.HMAC_256,
            key_usage=kms.KeyUsage.GENERATE_VERIFY_MAC,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.layers = function_layers(self)
        self.processor_url: CfnParameter | None = (
            processor_url_parameter(self)
            if any(spec.calls_processor for spec in topology.functions)
            else None
        )
        self.function_error_alarms: dict[str, cloudwatch.Alarm] = {}
        self.functions = {spec.key: self._function(spec) for spec in topology.functions}
        self.internal_methods: list[apigw.Method] = []
        self.public_methods: list[apigw.Method] = []
        self.api = self._rest_api(topology.api)
        self.url = self._tell_functions_their_public_url(topology.api)
        self.url_parameter = ssm.StringParameter(
            self,
            "UrlParameter",
            parameter_name=VAULT_URL_PARAMETER,
            string_value=self.url,
            description="The card vault's base URL, which Clearline's functions read at run "
            "time (the vault's stack deploys after theirs)",
        )

    @staticmethod
    def _refuse_what_the_vault_does_not_build(topology: Topology) -> None:
        extras = {
            "queues": topology.queues,
            "buses": topology.buses,
            "rules": topology.rules,
            "buckets": topology.buckets,
        }
        unsupported = sorted(name for name, specs in extras.items() if specs)
        if topology.notifications is not None:
            unsupported.append("a notifications API")
        for spec in topology.functions:
            if (
                spec.stream_from
                or spec.queue_trigger
                or spec.schedule_minutes
                or spec.publishes_to
                or spec.sends_to
                or spec.buckets
                or spec.calls_vault
                or spec.calls_bank
                or spec.calls_rate_provider
                or spec.bank_account_key
                or spec.reads_processor_secret
            ):
                unsupported.append(f"function {spec.key}'s triggers or resources")
        if unsupported:
            raise ValueError(f"the vault's stack does not build: {', '.join(unsupported)}")

    def _retained_key(self, construct_id: str, description: str) -> kms.Key:
        # Losing either key would lose every card sealed under it: no stack change deletes it.
        return kms.Key(
            self,
            construct_id,
            description=description,
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )

    def _function(self, spec: FunctionSpec) -> lambda_.Function:
        function = lambda_function(
            self, spec, layers=self.layers, environment=self._environment(spec)
        )
        role = cast(iam.Role, function.role)
        for table_key, access in spec.tables.items():
            table = self.tables[table_key]
            if access == "readwrite":
                table.grant_read_write_data(role)
            else:
                table.grant_read_data(role)
            for action, what in TABLE_KEY_WILDCARDS.items():
                acknowledge(
                    role,
                    f"AwsSolutions-IAM5[Action::{action}]",
                    f"{action} {what}; the CDK's grant on the {table_key} table adds it, and "
                    "it applies to that table's own key only.",
                )
        self.card_key.grant(role, *CARD_KEY_ACTIONS)
        self.fingerprint_key.grant(role, *FINGERPRINT_KEY_ACTIONS)
        if spec.reads_api_keys:
            # The API key items only: every other item of Clearline's table, charges and
            # ledger included, stays out of the vault's reach.
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=list(API_KEY_READ_ACTIONS),
                    resources=[self.main_table.table_arn],
                    conditions={
                        "ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"{API_KEY_PREFIX}*"]}
                    },
                )
            )
        self.function_error_alarms[spec.key] = function_errors_alarm(
            self, self.alarm_topic, spec, function
        )
        return function

    def _environment(self, spec: FunctionSpec) -> dict[str, str]:
        unknown = set(spec.tables) - set(self.tables)
        if unknown:
            raise ValueError(f"function {spec.key} names unknown tables: {sorted(unknown)}")
        env = {table_env_var(key): self.tables[key].table_name for key in spec.tables}
        if spec.reads_api_keys:
            env[table_env_var(MAIN_TABLE.key)] = self.main_table.table_name
        env["POWERTOOLS_SERVICE_NAME"] = SERVICE_NAME
        env["POWERTOOLS_METRICS_NAMESPACE"] = METRICS_NAMESPACE
        if spec.calls_processor and self.processor_url is not None:
            env[PROCESSOR_URL_ENV] = self.processor_url.value_as_string
        env[VAULT_KEY_ENV] = self.card_key.key_arn
        env[VAULT_FINGERPRINT_KEY_ENV] = self.fingerprint_key.key_arn
        # Links in the vault's answers (error codes, say) point at Clearline's API.
        env[PUBLIC_URL_ENV] = self.clearline_public_url
        clashes = env.keys() & spec.environment.keys()
        if clashes:
            raise ValueError(f"function {spec.key} overrides managed variables: {sorted(clashes)}")
        return env | spec.environment

    def _tell_functions_their_public_url(self, spec: ApiSpec) -> str:
        """The vault's own URL, as browsers reach it. Built from the API's id, not its
        deployment, so that no function waits on a deployment that waits on it."""
        url = stage_url(self.api, spec.stage)
        for function in self.functions.values():
            function.add_environment(VAULT_PUBLIC_URL_ENV, url)
        return url

    def _rest_api(self, spec: ApiSpec) -> apigw.LambdaRestApi:
        api = apigw.LambdaRestApi(
            self,
            "Api",
            handler=self.functions[spec.function],
            description="The card vault: public routes for browsers, IAM-signed internal "
            "routes for Clearline",
            # Methods are added below, with their authorization.
            proxy=False,
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # API Gateway's logging role is one per account and region: the Clearline stack,
            # deployed first, sets it; a second one here would replace it.
            cloud_watch_role=False,
            deploy_options=stage_options(self, spec.stage),
        )
        validator = api.add_request_validator(
            "RequestValidator", validate_request_body=True, validate_request_parameters=True
        )
        # /internal/... is matched before the greedy /{proxy+}, so no internal path is ever
        # served without a signature; /internal itself has no method and is refused.
        internal = api.root.add_resource(INTERNAL_PATH).add_proxy(any_method=False)
        self.internal_methods.append(
            internal.add_method(
                "ANY",
                authorization_type=apigw.AuthorizationType.IAM,
                request_validator=validator,
            )
        )
        self.public_methods.append(api.root.add_method("ANY", request_validator=validator))
        self.public_methods.append(
            api.root.add_proxy(any_method=False).add_method("ANY", request_validator=validator)
        )
        add_stripe_shaped_gateway_errors(api)

        # Acknowledged on the exact constructs, so a new method or stage gets checked anew.
        for method in self.public_methods:
            acknowledge(
                method,
                "AwsSolutions-APIG4",
                "Browsers call the public routes with a merchant's publishable key, which the "
                "vault function checks against Clearline's API keys and rate-limits itself.",
            )
            acknowledge(
                method,
                "AwsSolutions-COG4",
                "Callers are merchants' customers' browsers holding publishable keys, not "
                "Cognito users; the vault function authenticates every request itself.",
            )
        for method in self.internal_methods:
            acknowledge(
                method,
                "AwsSolutions-COG4",
                "The internal routes are IAM-authorized: only Clearline's function roles, "
                "granted execute-api:Invoke on them, may call them; they have no Cognito users.",
            )
        acknowledge(
            api.deployment_stage,
            "AwsSolutions-APIG3",
            "No WAF web ACL yet: public routes need a valid publishable key and are rate "
            "limited per key and per address, internal ones a signature, and the stage is "
            "throttled; web ACL rules are to be tuned on real traffic before launch.",
        )
        return api
