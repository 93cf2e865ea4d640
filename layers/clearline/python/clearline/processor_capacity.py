"""The card processor's rate limit, shared by every function that calls it.

The processor takes at most `tps` money-moving calls (authorize, capture, void, refund) a
second and refuses the rest with 429. Every Lambda instance counts against that one
limit, so the count lives in DynamoDB, in the counters table (short-lived items, no
stream, TTL): one item per second (per shard, below), whose `used` counter a call raises
with a conditional ADD that holds only while the counter is under the second's budget.
That one UpdateItem is the whole cost: one small DynamoDB write per processor call, no
read, no lock, no second round trip. The items expire by TTL.

A call that finds its second full waits for the next one, up to the limiter's wait, and is
then refused with ProcessorBusy, before anything is sent: the caller knows that nothing
happened under its key.

Seconds are the processor's too: a call admitted in one second must reach the processor
in it. A permit that comes back from DynamoDB in the last moments of its second is not
used (the call could land in the next second, on top of that second's budget): the call
takes one in the next second instead.

One item takes at most a few hundred writes a second, so a budget above that is spread
over several items (shards) of the same second, each with its part of it; a call tries
them in a random order, and a second full on one shard is usually not full on all.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable
from functools import cached_property

from botocore.exceptions import BotoCoreError, ClientError

from clearline.config import (
    PROCESSOR_CAPACITY_WAIT_ENV,
    PROCESSOR_TPS_ENV,
    parse_capacity_wait,
    parse_processor_tps,
)
from clearline.processor import ProcessorBusy
from clearline.store import Store, serialize
from clearline.topology import COUNTERS_TABLE, table_env_var

log = logging.getLogger(__name__)

CAPACITY_PK_PREFIX = "CAPACITY#processor#"
# A permit is used only if it is in hand this long before its second ends: the time the
# call may take to reach the processor.
SEND_MARGIN_SECONDS = 0.2
# Successful writes a second one window item may take (DynamoDB's per-partition ceiling
# is about 1,000 write units; refused conditional writes cost units too).
MAX_PERMITS_PER_ITEM = 250
# Window items are kept an hour for whoever looks into a burst, then expire.
WINDOW_TTL_SECONDS = 3600
WINDOW_TTL_ATTRIBUTE = COUNTERS_TABLE.ttl_attribute or "expires_at"
# Waiters spread their next try over the first moments of the next second.
WAKE_JITTER_SECONDS = 0.05


def shard_budgets(tps: int) -> list[int]:
    """Each shard's part of a second's budget: as even as whole calls allow."""
    shards = max(1, math.ceil(tps / MAX_PERMITS_PER_ITEM))
    return [tps // shards + (1 if shard < tps % shards else 0) for shard in range(shards)]


class ProcessorCapacity:
    def __init__(
        self,
        store: Store | Callable[[], Store],
        tps: int,
        *,
        wait_seconds: float,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if tps < 1:
            raise ValueError("a processor limit is at least 1 call a second")
        self._store = store
        self.tps = tps
        self.wait_seconds = wait_seconds
        self.clock = clock
        self.sleep = sleep
        self.budgets = shard_budgets(tps)
        self._rng = rng or random.Random()  # spreading load, not a secret

    @classmethod
    def from_env(cls, *, wait_seconds: float | None = None) -> ProcessorCapacity | None:
        """The limiter the function's environment sets, or None when it sets no limit.
        The table's client is made on first use: a function that never moves money pays
        nothing for it."""
        tps = parse_processor_tps(os.environ.get(PROCESSOR_TPS_ENV))
        if tps == 0:
            return None
        table = os.environ[table_env_var(COUNTERS_TABLE.key)]
        if wait_seconds is None:
            wait_seconds = parse_capacity_wait(os.environ.get(PROCESSOR_CAPACITY_WAIT_ENV))
        return cls(lambda: Store(table), tps, wait_seconds=wait_seconds)

    @cached_property
    def store(self) -> Store:
        return self._store if isinstance(self._store, Store) else self._store()

    def acquire(self, operation: str = "call") -> None:
        """Take a permit for one call now, waiting up to `wait_seconds` for a second with
        room. Raises ProcessorBusy (nothing was sent) when there is none."""
        deadline = self.clock() + self.wait_seconds
        while True:
            now = self.clock()
            second = math.floor(now)
            usable_until = second + 1 - SEND_MARGIN_SECONDS
            if now < usable_until and self._take(second) and self.clock() < usable_until:
                return
            # Full, or too late in this second: the next one.
            next_second = second + 1
            if next_second > deadline:
                raise ProcessorBusy(
                    f"no processor capacity to {operation} within {self.wait_seconds:g} s "
                    f"(limit {self.tps} a second)"
                )
            self.sleep(next_second - now + self._rng.uniform(0, WAKE_JITTER_SECONDS))

    def _take(self, second: int) -> bool:
        """One permit of `second`, from the first shard in a random order with room."""
        shards = list(range(len(self.budgets)))
        self._rng.shuffle(shards)
        return any(self._take_from(second, shard) for shard in shards)

    def _take_from(self, second: int, shard: int) -> bool:
        key = {"pk": f"{CAPACITY_PK_PREFIX}{second}", "sk": f"SHARD#{shard}"}
        values = {
            ":one": 1,
            ":budget": self.budgets[shard],
            ":expires": second + WINDOW_TTL_SECONDS,
        }
        try:
            self.store.client.update_item(
                TableName=self.store.table_name,
                Key=serialize(key),
                UpdateExpression="ADD used :one SET #expires = :expires",
                ConditionExpression="attribute_not_exists(used) OR used < :budget",
                ExpressionAttributeValues=serialize(values),
                ExpressionAttributeNames={"#expires": WINDOW_TTL_ATTRIBUTE},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise _capacity_unknown(exc) from exc
        except BotoCoreError as exc:  # unreachable, timed out
            raise _capacity_unknown(exc) from exc
        return True

    def used(self, second: int) -> int:
        """Permits taken in `second`, over every shard (for tests and operators)."""
        items = self.store.query_partition(f"{CAPACITY_PK_PREFIX}{second}", "SHARD#")
        return sum(int(item.get("used", 0)) for item in items)


def _capacity_unknown(exc: Exception) -> ProcessorBusy:
    # Without the count the limit cannot be kept: fail closed, unsent, and retryable.
    log.warning("processor capacity unknown: %s", exc)
    return ProcessorBusy(f"processor capacity could not be counted: {type(exc).__name__}")
