"""One description of the deployed system, read by both the CDK app and the local stack.

Tables, functions and their wiring are declared here once, so the cloud and the laptop
cannot drift: the CDK app turns each spec into constructs, the local stack into moto
resources and in-process invokers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Access = Literal["read", "readwrite"]


@dataclass(frozen=True)
class IndexSpec:
    name: str
    partition_key: str
    sort_key: str


@dataclass(frozen=True)
class TableSpec:
    key: str  # stable logical name, used for env vars and construct ids
    name: str  # physical name on the local stack (the CDK app lets CloudFormation name it)
    partition_key: str
    sort_key: str | None = None
    indexes: tuple[IndexSpec, ...] = ()
    ttl_attribute: str | None = None
    stream: bool = False


@dataclass(frozen=True)
class FunctionSpec:
    key: str
    code_dir: str  # relative to the repository root
    handler: str  # "module.function", importable from code_dir
    description: str
    timeout_seconds: int = 10
    memory_mb: int = 512
    # table key -> access; each becomes an env var naming the table and an IAM grant
    tables: dict[str, Access] = field(default_factory=dict)
    # needs the sandbox processor's URL (CLEARLINE_PROCESSOR_URL)
    calls_processor: bool = False
    environment: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ApiSpec:
    function: str  # key of the function behind the REST API's proxy resource
    stage: str = "prod"  # the SDK base URL is https://{api}.execute-api.{region}.amazonaws.com/prod


@dataclass(frozen=True)
class Topology:
    tables: tuple[TableSpec, ...]
    functions: tuple[FunctionSpec, ...]
    api: ApiSpec

    def table(self, key: str) -> TableSpec:
        return next(t for t in self.tables if t.key == key)

    def function(self, key: str) -> FunctionSpec:
        return next(f for f in self.functions if f.key == key)


def table_env_var(table_key: str) -> str:
    """The environment variable through which a function learns a table's name."""
    return f"CLEARLINE_{table_key.upper()}_TABLE"


PROCESSOR_URL_ENV = "CLEARLINE_PROCESSOR_URL"
SERVICE_NAME = "clearline"

MAIN_TABLE = TableSpec(
    key="main",
    name="clearline-main",
    partition_key="pk",
    sort_key="sk",
    # Lists of a merchant's objects, newest first.
    indexes=(IndexSpec(name="by_merchant", partition_key="gsi1pk", sort_key="gsi1sk"),),
    stream=True,
)

IDEMPOTENCY_TABLE = TableSpec(
    key="idempotency",
    name="clearline-idempotency",
    partition_key="id",
    ttl_attribute="expiration",
)

API_FUNCTION = FunctionSpec(
    key="api",
    code_dir="functions/api",
    handler="api_handler.lambda_handler",
    description="The Stripe-compatible /v1 REST API",
    timeout_seconds=29,  # API Gateway's integration limit
    memory_mb=1024,
    tables={"main": "readwrite", "idempotency": "readwrite"},
    calls_processor=True,
)

TOPOLOGY = Topology(
    tables=(MAIN_TABLE, IDEMPOTENCY_TABLE),
    functions=(API_FUNCTION,),
    api=ApiSpec(function="api"),
)
