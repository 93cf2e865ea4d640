"""A deployment's table of where client addresses are (`:ip_country:`), given at synth as
`-c clearline:ipCountries=<csv>`: a layer of its own beside the functions that screen
charges, and the path to it in their environment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
from aws_cdk.assertions import Template

from clearline.ip_geolocation import IP_COUNTRIES_ENV
from clearline.topology import API_FUNCTION, TOPOLOGY
from infra_cdk.app import create_app
from infra_cdk.clearline_stack import IP_COUNTRIES_CONTEXT, ClearlineStack

from .conftest import NO_BUNDLING

pytestmark = pytest.mark.cdk


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> ClearlineStack:
    table = tmp_path_factory.mktemp("geo") / "countries.csv"
    table.write_text("network,country\n100.64.0.0/10,NL\n")
    context = {**NO_BUNDLING, IP_COUNTRIES_CONTEXT: str(table)}
    app, stack, _ = create_app(context, outdir=str(tmp_path_factory.mktemp("cdk.out")))
    app.synth()
    return stack


def test_the_functions_that_screen_charges_read_the_deployments_table(
    stack: ClearlineStack,
) -> None:
    template = Template.from_stack(stack)
    described = "Where client addresses are, for fraud rules on :ip_country:"
    (layer_id,) = template.find_resources(
        "AWS::Lambda::LayerVersion", {"Properties": {"Description": described}}
    )
    screening = {spec.key for spec in TOPOLOGY.functions if spec.calls_processor}
    assert API_FUNCTION.key in screening
    resources = template.to_json()["Resources"]
    for key, function in stack.functions.items():
        logical_id = stack.resolve(cast(Any, function.node.default_child).logical_id)
        properties = resources[logical_id]["Properties"]
        env = (properties.get("Environment") or {}).get("Variables") or {}
        layers = [json.dumps(layer) for layer in properties.get("Layers") or []]
        if key in screening:
            assert env.get(IP_COUNTRIES_ENV) == "/opt/ip_countries/countries.csv", key
            assert any(layer_id in layer for layer in layers), key
        else:
            assert IP_COUNTRIES_ENV not in env, key


def test_a_table_that_cannot_be_loaded_fails_the_synth(tmp_path: Path) -> None:
    bad = tmp_path / "overlapping.csv"
    bad.write_text("192.0.2.0/24,US\n192.0.2.128/25,GB\n")
    with pytest.raises(Exception, match="overlap"):
        create_app({**NO_BUNDLING, IP_COUNTRIES_CONTEXT: str(bad)}, outdir=str(tmp_path / "out"))
