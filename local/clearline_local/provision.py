"""Creates the topology's resources on a moto server, as the CDK app creates them on AWS."""

from __future__ import annotations

from typing import Any

from clearline.topology import TableSpec, Topology


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


def provision(topology: Topology, dynamodb: Any) -> None:
    for spec in topology.tables:
        dynamodb.create_table(**_table_request(spec))
        if spec.ttl_attribute:
            dynamodb.update_time_to_live(
                TableName=spec.name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute},
            )
