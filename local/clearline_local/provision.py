"""Creates the topology's resources on a moto server, as the CDK app creates them on AWS."""

from __future__ import annotations

import json
import secrets
from typing import Any

from clearline.topology import PROCESSOR_NOTIFICATION_SECRET_NAME, TableSpec, Topology


def _table_request(spec: TableSpec) -> dict[str, Any]:
    attributes = {spec.partition_key}
    key_schema = [{"AttributeName": spec.partition_key, "KeyType": "HASH"}]
    if spec.sort_key:
        attributes.add(spec.sort_key)
        key_schema.append({"AttributeName": spec.sort_key, "KeyType": "RANGE"})
    request: dict[str, Any] = {
        "TableName": spec.name,
        "KeySchema": key_schema,
        "BillingMode": "PAY_PER_REQUEST",
    }
    if spec.indexes:
        request["GlobalSecondaryIndexes"] = []
        for index in spec.indexes:
            attributes |= {index.partition_key, index.sort_key}
            request["GlobalSecondaryIndexes"].append(
                {
                    "IndexName": index.name,
                    "KeySchema": [
                        {"AttributeName": index.partition_key, "KeyType": "HASH"},
                        {"AttributeName": index.sort_key, "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            )
    request["AttributeDefinitions"] = [
        {"AttributeName": a, "AttributeType": "S"} for a in sorted(attributes)
    ]
    if spec.stream:
        request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    return request


def provision_tables(topology: Topology, dynamodb: Any) -> None:
    for spec in topology.tables:
        dynamodb.create_table(**_table_request(spec))
        if spec.ttl_attribute:
            dynamodb.update_time_to_live(
                TableName=spec.name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute},
            )


def _create_queue(sqs: Any, name: str, attributes: dict[str, str] | None = None) -> str:
    """Creates a queue; returns its ARN."""
    url = sqs.create_queue(QueueName=name, Attributes=attributes or {})["QueueUrl"]
    return str(
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
    )


def provision_messaging(topology: Topology, sqs: Any, events: Any) -> dict[str, str]:
    """Queues (with their dead-letter queues), buses and rules (with their targets'
    dead-letter queues and retry policies); returns queue key -> ARN."""
    arns: dict[str, str] = {}
    for spec in topology.queues:
        attributes = {
            "VisibilityTimeout": str(spec.visibility_timeout_seconds),
            "MessageRetentionPeriod": str(spec.retention_seconds),
        }
        if spec.max_receive_count:
            attributes["RedrivePolicy"] = json.dumps(
                {
                    "deadLetterTargetArn": _create_queue(sqs, spec.dlq_name),
                    "maxReceiveCount": str(spec.max_receive_count),
                }
            )
        arns[spec.key] = _create_queue(sqs, spec.name, attributes)
    for bus in topology.buses:
        events.create_event_bus(Name=bus.name)
    for rule in topology.rules:
        bus_name = topology.bus(rule.bus).name
        events.put_rule(
            Name=rule.key,
            EventBusName=bus_name,
            EventPattern=json.dumps(rule.event_pattern),
            State="ENABLED",
        )
        events.put_targets(
            Rule=rule.key,
            EventBusName=bus_name,
            Targets=[
                {
                    "Id": rule.queue,
                    "Arn": arns[rule.queue],
                    "DeadLetterConfig": {"Arn": _create_queue(sqs, rule.dlq_name)},
                    "RetryPolicy": {
                        "MaximumRetryAttempts": rule.retry_attempts,
                        "MaximumEventAgeInSeconds": rule.max_event_age_seconds,
                    },
                }
            ],
        )
    return arns


def provision_buckets(topology: Topology, s3: Any, queue_arns: dict[str, str]) -> None:
    for bucket in topology.buckets:
        s3.create_bucket(Bucket=bucket.name)
        s3.put_bucket_versioning(Bucket=bucket.name, VersioningConfiguration={"Status": "Enabled"})
        if bucket.notify_queue:
            s3.put_bucket_notification_configuration(
                Bucket=bucket.name,
                NotificationConfiguration={
                    "QueueConfigurations": [
                        {
                            "QueueArn": queue_arns[bucket.notify_queue],
                            "Events": ["s3:ObjectCreated:*"],
                            "Filter": {
                                "Key": {
                                    "FilterRules": [
                                        {"Name": "prefix", "Value": bucket.notify_prefix or ""}
                                    ]
                                }
                            },
                        }
                    ]
                },
            )


def provision_webhook_secrets_key(kms: Any) -> str:
    """The KMS key that seals webhook signing secrets (the CDK app declares its twin, with
    rotation on); returns its ARN."""
    key = kms.create_key(
        Description="Seals Clearline's webhook signing secrets",
        KeyUsage="ENCRYPT_DECRYPT",
        KeySpec="SYMMETRIC_DEFAULT",
    )["KeyMetadata"]
    kms.enable_key_rotation(KeyId=key["KeyId"])
    return str(key["Arn"])


def provision_bank_accounts_key(kms: Any) -> str:
    """The KMS key that seals merchants' bank account numbers (the CDK app declares its
    twin); returns its ARN."""
    key = kms.create_key(
        Description="Seals merchants' bank account numbers",
        KeyUsage="ENCRYPT_DECRYPT",
        KeySpec="SYMMETRIC_DEFAULT",
    )["KeyMetadata"]
    kms.enable_key_rotation(KeyId=key["KeyId"])
    return str(key["Arn"])


def provision_vault_keys(kms: Any) -> tuple[str, str]:
    """The vault's KMS keys (the CDK app's vault stack declares their twins): one that seals
    card numbers, and an HMAC key whose MAC of a number is its fingerprint. Returns ARNs."""
    sealing = kms.create_key(
        Description="Seals the card vault's card numbers",
        KeyUsage="ENCRYPT_DECRYPT",
        KeySpec="SYMMETRIC_DEFAULT",
    )["KeyMetadata"]
    kms.enable_key_rotation(KeyId=sealing["KeyId"])
    fingerprints = kms.create_key(
        Description="Fingerprints the card vault's cards",
        KeyUsage="GENERATE_VERIFY_MAC",
        KeySpec="HMAC_256",
    )["KeyMetadata"]
    return str(sealing["Arn"]), str(fingerprints["Arn"])


def provision_processor_notification_secret(secretsmanager: Any) -> str:
    """The secret the processor signs its notifications with (the CDK app declares its
    twin); returns its value, which the sandbox processor is given."""
    value = secrets.token_hex(32)
    secretsmanager.create_secret(
        Name=PROCESSOR_NOTIFICATION_SECRET_NAME,
        Description="Signs the card processor's notifications to Clearline",
        SecretString=value,
    )
    return value
