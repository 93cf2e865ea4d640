"""The processor's rate limit in the CDK app: the capture queue is consumed by a bounded
number of workers, and every function that calls the processor counts against the shared
limit in the counters table."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Template

from clearline.config import PROCESSOR_TPS_ENV
from clearline.topology import (
    CAPTURE_FUNCTION,
    CAPTURE_QUEUE,
    COUNTERS_TABLE,
    RECONCILER_FUNCTION,
    TOPOLOGY,
    table_env_var,
)
from infra_cdk.clearline_stack import PROCESSOR_TPS_PARAMETER_ID, ClearlineStack

from .conftest import logical_id

pytestmark = pytest.mark.cdk


def test_the_capture_queue_is_consumed_by_a_bounded_number_of_workers(
    stack: ClearlineStack, template: Template
) -> None:
    assert CAPTURE_FUNCTION.queue_trigger == CAPTURE_QUEUE.key
    bound = CAPTURE_FUNCTION.queue_max_concurrency
    assert bound is not None and 2 <= bound <= 10  # Lambda's floor; a few, not a fleet
    queue_arn = {"Fn::GetAtt": [logical_id(stack, stack.queues[CAPTURE_QUEUE.key]), "Arn"]}
    (mapping,) = [
        m["Properties"]
        for m in template.find_resources("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["EventSourceArn"] == queue_arn
    ]
    assert mapping["FunctionName"] == {
        "Ref": logical_id(stack, stack.functions[CAPTURE_FUNCTION.key])
    }
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": bound}
    # Records without capacity go back to the queue one by one, not the whole batch.
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_only_the_capture_and_settlement_queues_are_bounded(
    stack: ClearlineStack, template: Template
) -> None:
    """Captures by the processor's limit; a large settlement file's chunks by how many may
    post to the ledger's shared shards at once."""
    bounded = {
        m["Properties"]["FunctionName"]["Ref"]: m["Properties"]["ScalingConfig"]
        for m in template.find_resources("AWS::Lambda::EventSourceMapping").values()
        if "ScalingConfig" in m["Properties"]
    }
    assert bounded == {
        logical_id(stack, stack.functions[spec.key]): {
            "MaximumConcurrency": spec.queue_max_concurrency
        }
        for spec in (CAPTURE_FUNCTION, RECONCILER_FUNCTION)
    }


def test_every_function_that_calls_the_processor_counts_against_its_limit(
    stack: ClearlineStack, template: Template
) -> None:
    table_ref = {"Ref": logical_id(stack, stack.tables[COUNTERS_TABLE.key])}
    callers = [spec for spec in TOPOLOGY.functions if spec.calls_processor]
    assert {spec.key for spec in callers} >= {"api", "capture_worker", "processor_sync"}
    functions = template.find_resources("AWS::Lambda::Function")
    for spec in callers:
        assert spec.tables.get(COUNTERS_TABLE.key) == "readwrite", spec.key
        props = functions[logical_id(stack, stack.functions[spec.key])]["Properties"]
        variables = props["Environment"]["Variables"]
        assert variables[table_env_var(COUNTERS_TABLE.key)] == table_ref, spec.key


def test_the_limit_windows_expire(stack: ClearlineStack, template: Template) -> None:
    table = template.find_resources("AWS::DynamoDB::Table")[
        logical_id(stack, stack.tables[COUNTERS_TABLE.key])
    ]["Properties"]
    assert table["TimeToLiveSpecification"] == {
        "AttributeName": COUNTERS_TABLE.ttl_attribute,
        "Enabled": True,
    }
    assert "StreamSpecification" not in table  # permits never reach the outbox relay


def test_every_function_that_calls_the_processor_is_told_its_limit(
    stack: ClearlineStack, template: Template
) -> None:
    """One deploy parameter, ProcessorTps (0: no limit), reaches every caller of the
    processor and nothing else."""
    parameter = template.to_json()["Parameters"][PROCESSOR_TPS_PARAMETER_ID]
    assert (parameter["Type"], parameter["Default"], parameter["MinValue"]) == ("Number", 0, 0)
    functions = template.find_resources("AWS::Lambda::Function")
    for spec in TOPOLOGY.functions:
        env = functions[logical_id(stack, stack.functions[spec.key])]["Properties"]
        told = env.get("Environment", {}).get("Variables", {}).get(PROCESSOR_TPS_ENV)
        if spec.calls_processor:
            assert told == {"Ref": PROCESSOR_TPS_PARAMETER_ID}, spec.key
        else:
            assert told is None, spec.key
