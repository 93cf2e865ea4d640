"""Fault schedules for the money path, and the invariants that must hold after each.

In the spirit of a deterministic simulator: a schedule is a seed. It picks an operation
(a charge, a capture, a refund, a void, an expiry), one step of that operation to break
and how (the worker dies before or after the step, DynamoDB refuses, conflicts or is
unreachable, the processor times out before or after committing, or answers 5xx), and
what happens next (the client retries with the same key or gives up, the resolver runs).
Then the invariants are checked against the processor's own records:

- every movement at the processor appears exactly once in Clearline, with its amount;
- nothing is left pending (charges, operations, refunds);
- the ledger verifies (journals balance, shards match entries, charges match journals);
- each idempotency key has at most one charge.

The store's faults are raised by its DynamoDB client (real botocore errors, so the
store's own error mapping is exercised); the processor's are the sandbox's.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from clearline import fx, ledger
from clearline.audit import Caller
from clearline.charges import AUTHORIZED, CANCELED, CAPTURED, EXPIRED, FAILED, ChargeService
from clearline.ids import derived_id
from clearline.merchants import Merchant, create_merchant
from clearline.params import ChargeCaptureParams, ChargeCreateParams, RefundCreateParams
from clearline.processor import ProcessorClient
from clearline.refunds import RefundService
from clearline.resolver import PENDING_GRACE_SECONDS, Resolver
from clearline.store import Store
from clearline_local import moto_transactions
from clearline_local.sandbox_processor import SandboxProcessor
from clearline_local.sandbox_rates import BASE_RATES

OPERATIONS = ("charge", "capture", "refund", "void", "expire")
STORE_FAULTS = ("store_unavailable", "store_conflict", "store_rejected")
PROCESSOR_FAULTS = ("timeout_before", "timeout_after", "error_500")
CRASHES = ("crash_before", "crash_after")
FAULTS = CRASHES + STORE_FAULTS + PROCESSOR_FAULTS
_WRITES = frozenset(
    {"put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item"}
)


class Crash(BaseException):
    """The worker died here. A BaseException, so no `except Exception` in the code under
    test can swallow it: nothing after this point runs, as in a killed process."""


@dataclass
class Fault:
    kind: str
    step: int  # which step of its kind: store writes, processor calls, or any step for crashes


@dataclass
class Steps:
    """Counts the steps of an operation and breaks the one the fault names."""

    sandbox: SandboxProcessor
    fault: Fault | None = None
    taken: list[str] = field(default_factory=list)

    def _fires(self, where: str, kinds: tuple[str, ...]) -> str | None:
        self.taken.append(where)
        if self.fault is None or self.fault.kind not in kinds:
            return None
        index = len(self.taken) - 1 if self.fault.kind in CRASHES else self.taken.count(where) - 1
        if index != self.fault.step:
            return None
        fired, self.fault = self.fault.kind, None
        return fired

    def store_write(self, call: Callable[[], Any], operation: str) -> Any:
        fired = self._fires("store", CRASHES + STORE_FAULTS)
        if fired == "crash_before":
            raise Crash(f"before {operation}")
        if fired == "store_unavailable":
            raise _client_error("InternalServerError", operation)
        if fired == "store_rejected":
            raise _client_error("ValidationException", operation)
        if fired == "store_conflict":
            if operation != "transact_write_items":
                raise _client_error("InternalServerError", operation)
            raise _client_error(
                "TransactionCanceledException",
                operation,
                reasons=[{"Code": "None"}, {"Code": "TransactionConflict"}],
            )
        result = call()
        if fired == "crash_after":
            raise Crash(f"after {operation}")
        return result

    def processor_call(self, call: Callable[[], Any], path: str) -> Any:
        fired = self._fires("processor", CRASHES + PROCESSOR_FAULTS)
        if fired == "crash_before":
            raise Crash(f"before POST {path}")
        if fired in PROCESSOR_FAULTS:
            self.sandbox.inject_fault(fired)
        result = call()
        if fired == "crash_after":
            raise Crash(f"after POST {path}")
        return result


def _client_error(code: str, operation: str, reasons: list[dict[str, str]] | None = None) -> Any:
    response: dict[str, Any] = {"Error": {"Code": code, "Message": "injected"}}
    if reasons is not None:
        response["CancellationReasons"] = reasons
    return ClientError(response, operation)  # type: ignore[arg-type]


class FaultyClient:
    """A DynamoDB client whose writes go through `Steps`; everything else passes through."""

    def __init__(self, client: Any, steps: Steps) -> None:
        self._client = client
        self._steps = steps

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if name not in _WRITES:
            return method
        return lambda **kwargs: self._steps.store_write(lambda: method(**kwargs), name)


class FaultyProcessor(ProcessorClient):
    def __init__(self, base_url: str, steps: Steps, timeout_seconds: float) -> None:
        super().__init__(base_url, timeout_seconds)
        self._steps = steps

    def _request(self, method: str, path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if method != "POST":
            return super()._request(method, path, *args, **kwargs)
        return dict(
            self._steps.processor_call(
                lambda: super(FaultyProcessor, self)._request(method, path, *args, **kwargs), path
            )
        )


@dataclass
class Schedule:
    seed: int
    operation: str
    fault: Fault | None
    capture: bool  # for a charge: captured at once, or only authorized
    client_retries: bool
    amount: int
    partial: bool
    # Not usd: the charge converts into the merchant's dollars (two linked journals).
    currency: str = "usd"

    def describe(self) -> str:
        fault = f"{self.fault.kind}@{self.fault.step}" if self.fault else "no fault"
        retry = "client retries" if self.client_retries else "client gives up"
        return f"seed {self.seed}: {self.operation} in {self.currency} ({fault}; {retry})"


@dataclass
class Outcome:
    schedules: int = 0
    invariants_checked: int = 0
    violations: list[str] = field(default_factory=list)


class Harness:
    """Runs schedules against one store and one sandbox processor; each schedule has its
    own merchant, so its invariants are checked on its own charges."""

    def __init__(self, client: Any, table: str, *, processor_timeout: float = 0.15) -> None:
        # In-process moto, driven from this one thread: its transactions can skip the
        # whole-table snapshot, as the local stack's serialized moto server does.
        moto_transactions.install()
        # The processor's fault delay outlasts the client's timeout: a timeout it is.
        self.sandbox = SandboxProcessor(fault_delay_seconds=processor_timeout * 2).start()
        self.steps = Steps(self.sandbox)
        self.store = Store(table, FaultyClient(client, self.steps))
        processor = FaultyProcessor(self.sandbox.url, self.steps, processor_timeout)
        self.charges = ChargeService(self.store, processor)
        self.refunds = RefundService(self.store, processor)
        self.resolver = Resolver(self.charges, self.refunds)
        self.clean_store = Store(table, client)
        # The sandbox provider's rates, as the rates function stores them: conversions read
        # them through the faulty store, so a fault can land on that read too.
        fx.RateBook(self.clean_store).record(
            fx.RateSheet(int(time.time()), {c: Decimal(r) for c, r in BASE_RATES.items()})
        )
        self.outcome = Outcome()

    def close(self) -> None:
        self.sandbox.stop()

    # ---- schedules --------------------------------------------------------------------------

    def exhaustive(
        self, operation: str, *, capture: bool = True, currency: str = "usd"
    ) -> list[Schedule]:
        """Every fault at every step of one operation (as a clean run takes them)."""
        clean = Schedule(0, operation, None, capture, False, 5000, False, currency)
        steps = self.run(clean)
        schedules = []
        for kind in FAULTS:
            where = None if kind in CRASHES else ("store" if kind in STORE_FAULTS else "processor")
            count = len(steps) if where is None else steps.count(where)
            for step in range(count):
                for retries in (False, True):
                    schedules.append(
                        Schedule(
                            0, operation, Fault(kind, step), capture, retries, 5000, False, currency
                        )
                    )
        return schedules

    @staticmethod
    def random(seed: int) -> Schedule:
        rng = random.Random(seed)
        return Schedule(
            seed=seed,
            operation=rng.choice(OPERATIONS),
            fault=Fault(rng.choice(FAULTS), rng.randrange(6)),
            capture=rng.random() < 0.5,
            client_retries=rng.random() < 0.5,
            amount=rng.randrange(100, 100_000),
            partial=rng.random() < 0.5,
            currency=rng.choice(("usd", "usd", "eur", "jpy")),
        )

    # ---- one schedule -----------------------------------------------------------------------

    def run(self, schedule: Schedule) -> list[str]:
        """Set up, run the faulted operation, maybe retry, resolve; check the invariants.
        Returns the steps the faulted operation took."""
        merchant = create_merchant(self.clean_store, f"Fault {schedule.seed}").merchant
        caller = Caller(merchant, f"req_{uuid.uuid4().hex}")
        setup, faulted, keys = self._operation(schedule, caller)
        setup()
        self.steps.taken = []
        self.steps.fault = schedule.fault
        with contextlib.suppress(Crash, Exception):  # whatever failed is what was scheduled
            faulted()
        taken, self.steps.fault = list(self.steps.taken), None
        if schedule.client_retries:
            with contextlib.suppress(Exception):  # a refusal is a fine answer to a retry
                faulted()
        self._resolve()
        self.check(schedule, merchant, [derived_id("ch", merchant.id, key) for key in keys])
        return taken

    def _operation(
        self, schedule: Schedule, caller: Caller
    ) -> tuple[Callable[[], None], Callable[[], None], list[str]]:
        """(unfaulted set-up, the faulted operation, the charges' idempotency keys), as the
        merchant would call them."""
        amount, key, setup_key = schedule.amount, str(uuid.uuid4()), str(uuid.uuid4())
        part = amount // 2 if schedule.partial else None
        holder: dict[str, str] = {}

        def charge(capture: bool, idem: str) -> None:
            params = ChargeCreateParams(
                amount=amount, currency=schedule.currency, source="tok_visa", capture=capture
            )
            holder["charge"] = self.charges.create(caller, params, idempotency_key=idem).id

        def nothing() -> None:
            return None

        if schedule.operation == "charge":
            return nothing, lambda: charge(schedule.capture, key), [key]
        captured = schedule.operation == "refund"
        faulted: dict[str, Callable[[], object]] = {
            "capture": lambda: self.charges.capture(
                caller, holder["charge"], ChargeCaptureParams(amount=part)
            ),
            "refund": lambda: self.refunds.create(
                caller,
                RefundCreateParams(charge=holder["charge"], amount=part),
                idempotency_key=key,
            ),
            "void": lambda: self.refunds.create(
                caller, RefundCreateParams(charge=holder["charge"]), idempotency_key=key
            ),
            "expire": lambda: self.charges.expire(holder["charge"]),
        }
        operation = faulted[schedule.operation]
        return lambda: charge(captured, setup_key), lambda: _ignore(operation()), [setup_key]

    def _resolve(self) -> None:
        later = int(time.time()) + PENDING_GRACE_SECONDS + 1
        for _ in range(3):  # a settlement may itself leave work for the next pass
            if not self.resolver.run(later)["unreachable"]:
                return

    # ---- invariants -------------------------------------------------------------------------

    def check(self, schedule: Schedule, merchant: Merchant, charge_ids: list[str]) -> None:
        what = schedule.describe()
        store = self.clean_store
        charges = [c for c in (store.get(f"CHARGE#{i}", "CHARGE") for i in charge_ids) if c]
        by_reference = {a["reference"]: a for a in self.sandbox.authorizations()}
        violations: list[str] = []
        keys = [c["idempotency_key"] for c in charges]
        if len(keys) != len(set(keys)):
            violations.append(f"{what}: an idempotency key has two charges")
        for charge in charges:
            violations += _compare(what, charge, by_reference.get(charge["id"]))
            for item in store.query_partition(charge["pk"]):
                if item["sk"].startswith("OP#") and item["status"] == "pending":
                    violations.append(f"{what}: {item['sk']} of {charge['id']} left pending")
            for refund in (charge.get("refunds") or {}).values():
                if refund["status"] == "pending":
                    violations.append(f"{what}: refund {refund['id']} left pending")
        self.outcome.schedules += 1
        self.outcome.invariants_checked += 4
        self.outcome.violations += violations

    def verify_ledger(self) -> ledger.VerifyReport:
        report = ledger.verify(self.clean_store)
        self.outcome.invariants_checked += 1
        self.outcome.violations += [f"ledger: {v}" for v in report.violations]
        return report


def _ignore(_: object) -> None:
    return None


def _compare(what: str, charge: dict[str, Any], auth: dict[str, Any] | None) -> list[str]:
    """Clearline's charge against the processor's authorization for it."""
    name = f"{what}: {charge['id']} ({charge['state']})"
    if charge["state"] == "pending":
        return [f"{name} left pending"]
    if auth is None:
        ok = charge["state"] == FAILED
        return [] if ok else [f"{name} has no authorization at the processor"]
    refunded_at_processor = sum(auth["refunds"])
    if charge.get("compensated"):
        net = auth["amount_captured"] - refunded_at_processor
        held = auth["status"] == "approved" and not auth["captured"] and not auth["voided"]
        return [f"{name}: compensated, but the processor still holds money"] if net or held else []
    if auth["status"] == "declined":
        return [] if charge["state"] == FAILED else [f"{name}: declined at the processor"]
    problems = []
    if auth["captured"]:
        expected = {CAPTURED}
    else:
        expected = {CANCELED, EXPIRED} if auth["voided"] else {AUTHORIZED}
    if charge["state"] not in expected:
        problems.append(f"{name}: the processor says {sorted(expected)}")
    if charge["amount_captured"] != auth["amount_captured"]:
        problems.append(
            f"{name}: captured {charge['amount_captured']}, processor {auth['amount_captured']}"
        )
    if charge["amount_refunded"] != refunded_at_processor:
        problems.append(
            f"{name}: refunded {charge['amount_refunded']}, processor {refunded_at_processor}"
        )
    # A void is a refund object too, but no refund at the processor: count captured money's.
    refunds = [r for r in (charge.get("refunds") or {}).values() if r["status"] == "succeeded"]
    if charge["state"] == CAPTURED and len(refunds) != len(auth["refunds"]):
        problems.append(f"{name}: {len(refunds)} refunds, processor {len(auth['refunds'])}")
    return problems
