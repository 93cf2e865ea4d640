"""The local runtime, as Lambda behaves on AWS.

Workers are supervised as Lambda does its execution environments: one that dies or hangs
fails only the invocation it was serving, is logged once, and is replaced; the next
invocation is served by a new process. The stream trigger isolates a record its function
keeps failing (bisect), retries it a bounded number of times, sends its position to the
on-failure queue and goes on with the records behind it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from clearline.topology import MAIN_TABLE, RELAY_FAILURE_QUEUE, FunctionSpec, StreamFailureSpec
from clearline_local.lambda_runtime import FunctionError, FunctionTimeout, LocalFunction
from clearline_local.triggers import StreamPoller
from tests.polling import eventually

HANDLER = """
import os
import time
from pathlib import Path


def lambda_handler(event, context):
    if "started" in event:  # tell the test which process serves it, then wait
        Path(event["started"]).write_text(str(os.getpid()))
        deadline = time.monotonic() + event.get("hold_seconds", 60)
        while time.monotonic() < deadline and not Path(event.get("release", "-")).exists():
            time.sleep(0.01)
    if event.get("fail"):
        raise ValueError("bad event")
    return {"pid": os.getpid(), "remaining_ms": context.get_remaining_time_in_millis()}
"""


@pytest.fixture
def make_function(tmp_path: Path) -> Iterator[Callable[..., LocalFunction]]:
    (tmp_path / "probe_handler.py").write_text(HANDLER)
    started: list[LocalFunction] = []

    def make(
        key: str = "probe",
        *,
        timeout_seconds: int = 20,
        concurrency: int = 1,
        handler: str = "probe_handler.lambda_handler",
    ) -> LocalFunction:
        spec = FunctionSpec(
            key=key,
            code_dir=str(tmp_path),  # absolute: the runtime joins it to the repository root
            handler=handler,
            description="a handler the tests drive",
            timeout_seconds=timeout_seconds,
        )
        function = LocalFunction(spec, {}, concurrency)
        started.append(function)
        return function

    yield make
    for function in started:
        function.close()


class Invocation(threading.Thread):
    """An invocation in the background, so the test can act on its worker meanwhile."""

    def __init__(self, function: LocalFunction, event: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.function, self.event = function, event
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.function.invoke(self.event)
        except BaseException as exc:
            self.error = exc


def serving_pid(marker: Path) -> int:
    return int(eventually(lambda: marker.exists() and marker.read_text(), message="a worker"))


def lines_naming(caplog: pytest.LogCaptureFixture, *words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if all(w in r.getMessage() for w in words)]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_worker_killed_mid_invocation_fails_that_invocation_only(
    make_function: Callable[..., LocalFunction], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clearline.local")
    function = make_function("payments")
    function.warm()
    marker = tmp_path / "started"
    invocation = Invocation(function, {"started": str(marker)})
    invocation.start()
    pid = serving_pid(marker)

    os.kill(pid, signal.SIGKILL)
    invocation.join(timeout=10)

    assert not invocation.is_alive(), "the caller gets an answer, not a hang"
    assert isinstance(invocation.error, FunctionError)
    assert not isinstance(invocation.error, FunctionTimeout)
    assert f"pid {pid} killed by SIGKILL during an invocation" in str(invocation.error)
    assert len(lines_naming(caplog, "payments", str(pid))) == 1
    assert len(lines_naming(caplog, "payments")) == 1, "logged once, no flood"

    served = function.invoke({})
    assert served["pid"] != pid
    assert function.pids() == [served["pid"]]
    assert len(lines_naming(caplog, "payments")) == 1


def test_a_worker_past_its_timeout_is_stopped_and_replaced(
    make_function: Callable[..., LocalFunction], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clearline.local")
    function = make_function("slowpoke", timeout_seconds=1)
    function.warm()
    marker = tmp_path / "started"
    started = time.monotonic()

    with pytest.raises(FunctionTimeout, match="slowpoke: timed out after 1s"):
        function.invoke({"started": str(marker), "hold_seconds": 60})

    assert time.monotonic() - started < 10
    hung = int(marker.read_text())
    assert not alive(hung), "the hung worker is stopped, as Lambda stops the environment"
    assert len(lines_naming(caplog, "slowpoke", str(hung))) == 1
    served = function.invoke({})
    assert served["pid"] != hung
    assert 0 < served["remaining_ms"] <= 1000, "a fresh context counts down from the timeout"


def test_a_worker_that_dies_while_idle_is_replaced_before_it_is_needed(
    make_function: Callable[..., LocalFunction], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clearline.local")
    function = make_function("idler")
    function.warm()
    (pid,) = function.pids()

    os.kill(pid, signal.SIGKILL)

    (replacement,) = eventually(
        lambda: function.pids() != [pid] and function.pids(), message="a replacement"
    )
    assert lines_naming(caplog, "idler", f"pid {pid} killed by SIGKILL while idle")
    assert len(lines_naming(caplog, "idler")) == 1
    assert function.invoke({})["pid"] == replacement


def test_a_handler_error_fails_the_invocation_and_keeps_the_worker(
    make_function: Callable[..., LocalFunction], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clearline.local")
    function = make_function("picky")
    pid = function.invoke({})["pid"]

    with pytest.raises(FunctionError, match="picky: ValueError: bad event"):
        function.invoke({"fail": True})

    assert len(lines_naming(caplog, "picky", "ValueError")) == 1
    assert function.invoke({})["pid"] == pid


def test_concurrency_is_per_function(
    make_function: Callable[..., LocalFunction], tmp_path: Path
) -> None:
    function = make_function("pair", concurrency=2)
    release = tmp_path / "release"
    markers = [tmp_path / "first", tmp_path / "second", tmp_path / "third"]
    running = [
        Invocation(function, {"started": str(marker), "release": str(release)})
        for marker in markers
    ]
    for invocation in running:
        invocation.start()

    # Two run at once, in two workers; the third waits for one of them.
    eventually(lambda: sum(m.exists() for m in markers) == 2, message="two at once")
    assert sum(invocation.is_alive() for invocation in running) == 3
    release.write_text("go")
    for invocation in running:
        invocation.join(timeout=20)
    assert [invocation.error for invocation in running] == [None, None, None]
    assert len({invocation.result["pid"] for invocation in running}) == 2


def test_a_handler_that_cannot_load_fails_each_invocation_without_a_restart_loop(
    make_function: Callable[..., LocalFunction], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clearline.local")
    function = make_function("broken", handler="no_such_module.lambda_handler")

    with pytest.raises(FunctionError, match="broken: init failed: ModuleNotFoundError"):
        function.warm()
    with pytest.raises(FunctionError, match=r"Runtime\.InitError"):
        function.invoke({})

    (pid,) = function.pids()
    # The replacement waits for its next event rather than exiting, so the supervisor
    # does not restart it again and again: one line per failed attempt, no more.
    assert alive(pid)
    assert len(lines_naming(caplog, "broken", "init failed")) == 2
    with pytest.raises(FunctionError, match=r"Runtime\.InitError"):
        function.invoke({})
    assert len(lines_naming(caplog, "broken")) == 3


# --- the stream trigger ------------------------------------------------------------------


class FakeStreamFunction:
    """Stands in for the relay behind the stream trigger. Records whose item is marked
    `poison` always fail, `flaky` ones fail their first two times; the failures are
    reported per record (a partial batch response) or, with `crash`, fail the whole
    invocation as a dying worker would."""

    def __init__(self, failures: StreamFailureSpec, *, crash: bool = False) -> None:
        self.spec = FunctionSpec(
            key="relay",
            code_dir="functions/relay",
            handler="relay_handler.lambda_handler",
            description="a stand-in for the relay",
            stream_from=MAIN_TABLE.key,
            stream_failures=failures,
            batch_size=10,
        )
        self.crash = crash
        self.batches: list[list[str]] = []
        self.done: list[str] = []
        self.flaky_failures = 0

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        records = event["Records"]
        self.batches.append([pk(r) for r in records])
        failed = []
        for record in records:
            image = record["dynamodb"]["NewImage"]
            if "flaky" in image and self.flaky_failures < 2:
                self.flaky_failures += 1
                failed.append(record["dynamodb"]["SequenceNumber"])
            elif "poison" in image:
                failed.append(record["dynamodb"]["SequenceNumber"])
        if failed and self.crash:
            raise FunctionError("relay: execution environment pid 1 killed by SIGKILL")
        self.done += [pk(r) for r in records if r["dynamodb"]["SequenceNumber"] not in failed]
        return {"batchItemFailures": [{"itemIdentifier": s} for s in failed]}


def pk(record: dict[str, Any]) -> str:
    return str(record["dynamodb"]["Keys"]["pk"]["S"])


class StreamRig:
    """A table with a stream and an on-failure queue in moto, and the poller between them."""

    def __init__(self, dynamodb: Any, function: FakeStreamFunction) -> None:
        self.dynamodb = dynamodb
        self.sqs = boto3.client("sqs", region_name="us-east-1")
        self.queue_url = self.sqs.create_queue(QueueName=RELAY_FAILURE_QUEUE.name)["QueueUrl"]
        arn = dynamodb.describe_table(TableName=MAIN_TABLE.name)["Table"]["LatestStreamArn"]
        self.stream_arn = arn
        # moto in-process answers DynamoDB Streams on its regional endpoint only.
        streams = boto3.client(
            "dynamodbstreams",
            region_name="us-east-1",
            config=Config(account_id_endpoint_mode="disabled"),
        )
        self.poller = StreamPoller(
            function,  # type: ignore[arg-type]  # it has what the poller uses: spec, invoke
            streams,
            arn,
            self.sqs,
            self.queue_url,
            retry_delay=0,
        )

    def put(self, key: str, **marks: bool) -> None:
        item = {"pk": {"S": key}, "sk": {"S": "ITEM"}}
        item |= {mark: {"BOOL": True} for mark in marks}
        self.dynamodb.put_item(TableName=MAIN_TABLE.name, Item=item)

    def drain(self) -> None:
        """Polls until the poller has nothing left to hand over."""
        for _ in range(500):
            if not self.poller.poll():
                return
        raise AssertionError("the poller never caught up")

    def on_failure_messages(self) -> list[dict[str, Any]]:
        received = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
        return [json.loads(m["Body"]) for m in received.get("Messages", [])]


def sequence_number_of(rig: StreamRig, key: str) -> str:
    shard = rig.poller.streams.describe_stream(StreamArn=rig.stream_arn)["StreamDescription"][
        "Shards"
    ][0]["ShardId"]
    iterator = rig.poller.streams.get_shard_iterator(
        StreamArn=rig.stream_arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = rig.poller.streams.get_records(ShardIterator=iterator)["Records"]
    return str(next(r for r in records if pk(r) == key)["dynamodb"]["SequenceNumber"])


RETRIES = StreamFailureSpec(on_failure_queue=RELAY_FAILURE_QUEUE.key, maximum_retry_attempts=2)


@pytest.mark.parametrize("crash", [False, True], ids=["partial-failure", "function-error"])
def test_a_poison_record_is_isolated_retried_then_sent_to_the_on_failure_queue(
    aws: Any, crash: bool
) -> None:
    function = FakeStreamFunction(RETRIES, crash=crash)
    rig = StreamRig(aws, function)
    keys = [f"ITEM#{n}" for n in range(7)]
    for key in keys:
        rig.put(key, **({"poison": True} if key == "ITEM#3" else {}))

    rig.drain()

    good = [k for k in keys if k != "ITEM#3"]
    assert list(dict.fromkeys(function.done)) == good, "the others, in stream order"
    if crash:
        assert function.done == good, "a failed invocation delivered nothing: each once"
    # Halved down to the poison record alone, which is tried 1 + 2 retries times, no more.
    assert function.batches.count(["ITEM#3"]) == 1 + RETRIES.maximum_retry_attempts
    assert sum("ITEM#3" in batch for batch in function.batches) <= 8

    (message,) = rig.on_failure_messages()
    poison = sequence_number_of(rig, "ITEM#3")
    where = message["DDBStreamBatchInfo"]
    assert (where["startSequenceNumber"], where["endSequenceNumber"]) == (poison, poison)
    assert where["batchSize"] == 1
    assert where["streamArn"] == rig.stream_arn
    assert where["shardId"].startswith("shardId-")
    assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert message["requestContext"]["approximateInvokeCount"] == 3
    assert message["requestContext"]["functionArn"].endswith(":function:relay")
    assert ("functionError" in message["responseContext"]) is crash

    # The shard is not blocked: what comes behind flows.
    rig.put("ITEM#7")
    rig.drain()
    assert function.done[-1] == "ITEM#7"
    assert rig.on_failure_messages() == []


def test_a_record_that_fails_for_a_while_is_retried_not_given_up(aws: Any) -> None:
    function = FakeStreamFunction(RETRIES)
    rig = StreamRig(aws, function)
    rig.put("ITEM#0")
    rig.put("ITEM#1", flaky=True)
    rig.put("ITEM#2")

    rig.drain()

    assert set(function.done) == {"ITEM#0", "ITEM#1", "ITEM#2"}
    assert function.batches.count(["ITEM#1"]) == 2  # failed once alone, then succeeded
    assert rig.on_failure_messages() == []


def test_without_bisect_the_failing_rest_of_the_batch_goes_to_the_on_failure_queue(
    aws: Any,
) -> None:
    function = FakeStreamFunction(dataclasses.replace(RETRIES, bisect_batch_on_error=False))
    rig = StreamRig(aws, function)
    for n in range(4):
        rig.put(f"ITEM#{n}", **({"poison": True} if n == 1 else {}))

    rig.drain()

    assert function.batches == [
        ["ITEM#0", "ITEM#1", "ITEM#2", "ITEM#3"],
        *[["ITEM#1", "ITEM#2", "ITEM#3"]] * 2,
    ]
    (message,) = rig.on_failure_messages()
    assert message["DDBStreamBatchInfo"]["batchSize"] == 3
    assert message["DDBStreamBatchInfo"]["startSequenceNumber"] == sequence_number_of(rig, "ITEM#1")
