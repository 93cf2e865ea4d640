"""Entry point of the CDK app (see cdk.json): `python3 infra_cdk/app.py` synthesizes it."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
# Run as a script, only infra_cdk/ is on sys.path. Add the repository root (for the
# infra_cdk package) and the library layer's source (for clearline.topology), so the app
# reads the very topology that ships in the layer, with no install step.
for _path in (REPO_ROOT / "layers" / "clearline" / "python", REPO_ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from aws_cdk import App, Validations  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402

from infra_cdk.clearline_stack import ClearlineStack  # noqa: E402
from infra_cdk.vault_stack import VaultStack  # noqa: E402

STACK_ID = "ClearlineStack"
VAULT_STACK_ID = "ClearlineVaultStack"
# `cdk synth -c clearline:skipBundling=true` skips the pip build of the dependencies layer
# (the CLI refuses to set the aws:cdk:bundling-stacks context itself). For fast, offline
# synths; never for a deploy.
SKIP_BUNDLING_CONTEXT = "clearline:skipBundling"
BUNDLING_STACKS_CONTEXT = "aws:cdk:bundling-stacks"


def create_app(
    context: Mapping[str, Any] | None = None, outdir: str | None = None
) -> tuple[App, ClearlineStack, VaultStack]:
    """The app with Clearline's stack and the card vault's; cdk-nag findings fail the synth
    until acknowledged."""
    app = App(context=dict(context) if context is not None else None, outdir=outdir)
    if str(app.node.try_get_context(SKIP_BUNDLING_CONTEXT)).lower() == "true":
        app.node.set_context(BUNDLING_STACKS_CONTEXT, [])
    stack = ClearlineStack(app, STACK_ID)
    vault = VaultStack(
        app, VAULT_STACK_ID, main_table=stack.main_table, clearline_public_url=stack.public_url
    )
    # Its references to Clearline imply the order already; this says it.
    vault.add_stack_dependency(
        stack,
        "The vault reads Clearline's API keys and links to its API, and writes the parameter "
        "that Clearline's functions read at run time.",
    )
    Validations.of(app).add_plugins(
        # Also copy each acknowledgment and its reason into the template's Metadata,
        # so the deployed template carries its own audit trail.
        AwsSolutionsChecks(app, verbose=True, write_suppressions_to_cloud_formation=True)
    )
    return app, stack, vault


if __name__ == "__main__":
    create_app()[0].synth()
