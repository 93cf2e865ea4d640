"""What the CDK tests share: the jsii runtime's settings, the context that skips bundling,
and the app's two stacks synthesized once for every module that checks them as they are."""

from __future__ import annotations

import os

# Before the first aws_cdk import, which starts the jsii runtime: node 20 works, but jsii
# prints a banner about its support window on every start.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

from pathlib import Path
from typing import Any, cast

import pytest
from aws_cdk import Stack
from aws_cdk.assertions import Template

from infra_cdk.app import create_app
from infra_cdk.clearline_stack import ClearlineStack
from infra_cdk.vault_stack import VaultStack

# Skips building the Lambda assets (the CDK then uses each source folder as it is).
NO_BUNDLING: dict[str, Any] = {"aws:cdk:bundling-stacks": []}


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cdk.out")


@pytest.fixture(scope="session")
def stacks(synth_dir: Path) -> tuple[ClearlineStack, VaultStack]:
    app, clearline, vault = create_app(NO_BUNDLING, outdir=str(synth_dir))
    # With the cdk-nag plugin registered, this raises if any finding is unacknowledged.
    app.synth()
    return clearline, vault


@pytest.fixture(scope="session")
def stack(stacks: tuple[ClearlineStack, VaultStack]) -> ClearlineStack:
    return stacks[0]


@pytest.fixture(scope="session")
def template(stack: ClearlineStack) -> Template:
    return Template.from_stack(stack)


def logical_id(stack: Stack, construct: Any) -> str:
    return cast(str, stack.resolve(construct.node.default_child.logical_id))
