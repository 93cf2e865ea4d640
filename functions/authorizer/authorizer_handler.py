"""API Gateway's Lambda REQUEST authorizer: an API key -> its merchant and rate plan.

API Gateway caches each answer for the Authorization header it was given (see
AUTHORIZER_CACHE_TTL_SECONDS), so this runs about once a minute per key. Its answers:

- a valid key: Allow on the whole API (the cached answer serves every route), with the
  merchant in the context (the api then needs no key lookup) and, as usageIdentifierKey,
  the merchant's API Gateway key, whose usage plan throttles it;
- an invalid key: Deny, with Stripe's code and message in the context (a 401);
- an invalid key from an address locked out for failing too often: Allow, through the
  lockout plan, which API Gateway answers with a 429 and never lets through (its quota
  is spent), so nothing is invoked behind it.
"""

from __future__ import annotations

import os
from typing import Any

import boto3

from clearline.config import Settings
from clearline.logs import new_logger
from clearline.rate_limits import (
    DEFAULT_RATE_ENV,
    FAILED_AUTH_LIMIT,
    FAILED_AUTH_LIMIT_ENV,
    USAGE_API_ENV,
    USAGE_STAGE_ENV,
    Decision,
    DynamoCounters,
    FailedAuthentications,
    KeyAuthorizer,
    UsageKeys,
    default_rate_from,
)
from clearline.store import Store
from clearline.topology import COUNTERS_TABLE, table_env_var

logger = new_logger()
settings = Settings.from_env()
_store = Store(settings.main_table)
_counters = DynamoCounters(_store.client, os.environ[table_env_var(COUNTERS_TABLE.key)])
_usage_api = os.environ.get(USAGE_API_ENV)
authorizer = KeyAuthorizer(
    _store,
    FailedAuthentications(
        _counters, limit=int(os.environ.get(FAILED_AUTH_LIMIT_ENV) or FAILED_AUTH_LIMIT)
    ),
    default_rate=default_rate_from(os.environ.get(DEFAULT_RATE_ENV)),
    # In AWS: each merchant's API Gateway key, in its usage plan, made on first sight.
    usage_keys=UsageKeys(
        boto3.client("apigateway"), _usage_api, os.environ.get(USAGE_STAGE_ENV, "prod")
    )
    if _usage_api
    else None,
    registrations=_counters,
)


def _header(event: dict[str, Any], name: str) -> str | None:
    for key, value in (event.get("headers") or {}).items():
        if key.lower() == name:
            return str(value) if value is not None else None
    return None


def _whole_api(method_arn: str) -> str:
    """arn:...:{api}/{stage}/{method}/{path} -> arn:...:{api}/{stage}/*: the answer is cached
    per key, not per route, so it must hold for every route."""
    api_and_stage = method_arn.split("/", 2)[:2]
    return "/".join([*api_and_stage, "*"])


def policy(decision: Decision, method_arn: str) -> dict[str, Any]:
    allowed = decision.outcome in ("allow", "locked_out")
    answer: dict[str, Any] = {
        "principalId": decision.merchant.id if decision.merchant else "anonymous",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Action": "execute-api:Invoke",
                    "Effect": "Allow" if allowed else "Deny",
                    "Resource": _whole_api(method_arn),
                }
            ],
        },
        "context": decision.context(),
    }
    if decision.usage_key is not None:
        answer["usageIdentifierKey"] = decision.usage_key
    return answer


@logger.inject_lambda_context(log_event=False)  # the event holds the API key
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    source_ip = str((event.get("requestContext") or {}).get("identity", {}).get("sourceIp", ""))
    decision = authorizer.decide(_header(event, "authorization"), source_ip)
    if decision.outcome != "allow":
        logger.info("authentication refused", extra={"outcome": decision.outcome})
    return policy(decision, str(event.get("methodArn", "")))
