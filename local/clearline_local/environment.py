"""The environment each function gets locally: what the CDK app sets, with local names."""

from __future__ import annotations

from clearline.config import WEBHOOK_ONLY_VARIABLES, WEBHOOK_SECRET_USERS
from clearline.topology import (
    BANK_ACCOUNTS_KEY_ENV,
    BANK_URL_ENV,
    MAIN_TABLE,
    METRICS_NAMESPACE,
    PROCESSOR_NOTIFICATION_SECRET_ENV,
    PROCESSOR_NOTIFICATION_SECRET_NAME,
    PROCESSOR_URL_ENV,
    RATE_PROVIDER_URL_ENV,
    SERVICE_NAME,
    VAULT_URL_ENV,
    Topology,
    bucket_env_var,
    bus_env_var,
    dlq_env_var,
    queue_env_var,
    table_env_var,
)
from clearline_local.lambda_runtime import ACCOUNT, REGION

# moto accepts any credentials; fixed fake ones keep boto3 from looking for real ones.
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def queue_url(aws_endpoint_url: str, name: str) -> str:
    return f"{aws_endpoint_url}/{ACCOUNT}/{name}"


def function_environment(
    topology: Topology,
    key: str,
    *,
    aws_endpoint_url: str,
    processor_url: str,
    extra: dict[str, str],
    vault_url: str = "",
    bank_url: str = "",
    bank_accounts_key: str = "",
    rates_url: str = "",
) -> dict[str, str]:
    spec = topology.function(key)
    env = {
        **FAKE_CREDENTIALS,
        "AWS_ENDPOINT_URL": aws_endpoint_url,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
        "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
        **spec.environment,
        **extra,
    }
    if key not in WEBHOOK_SECRET_USERS:  # as in the CDK app: only they get the webhook settings
        for name in WEBHOOK_ONLY_VARIABLES:
            env.pop(name, None)
    for table_key in spec.tables:
        env[table_env_var(table_key)] = topology.table(table_key).name
    if spec.calls_processor:
        env[PROCESSOR_URL_ENV] = processor_url
    if spec.calls_bank and bank_url:
        env[BANK_URL_ENV] = bank_url
    if spec.calls_rate_provider and rates_url:
        env[RATE_PROVIDER_URL_ENV] = rates_url
    if spec.bank_account_key and bank_accounts_key:  # as in the CDK app: only its users
        env[BANK_ACCOUNTS_KEY_ENV] = bank_accounts_key
    if spec.calls_vault and vault_url:
        env[VAULT_URL_ENV] = vault_url
    if spec.reads_processor_secret:
        env[PROCESSOR_NOTIFICATION_SECRET_ENV] = PROCESSOR_NOTIFICATION_SECRET_NAME
    if spec.reads_api_keys:  # the vault: a publishable key's merchant, from Clearline's table
        env[table_env_var(MAIN_TABLE.key)] = MAIN_TABLE.name
    for queue_key in {*spec.sends_to, *([spec.queue_trigger] if spec.queue_trigger else [])}:
        env[queue_env_var(queue_key)] = queue_url(aws_endpoint_url, topology.queue(queue_key).name)
    if spec.operates_queues:  # as in the CDK app: every queue, and each dead-letter queue
        for queue in topology.queues:
            env[queue_env_var(queue.key)] = queue_url(aws_endpoint_url, queue.name)
            if queue.max_receive_count is not None:
                env[dlq_env_var(queue.key)] = queue_url(aws_endpoint_url, queue.dlq_name)
    for bucket_key in spec.buckets:
        env[bucket_env_var(bucket_key)] = topology.bucket(bucket_key).name
    if spec.publishes_to:
        env[bus_env_var(spec.publishes_to)] = topology.bus(spec.publishes_to).name
    return env
