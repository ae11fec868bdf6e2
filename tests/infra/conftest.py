"""In-process synths of the whole CDK app, once per test session (no node CLI, no AWS credentials).

The first synth costs tens of seconds (jsii loads aws-cdk-lib into node, and CDK's CloudFormation
schema check runs), so every infra test shares it; a second one with every optional path switched
on, unchecked, costs a few more. Asset staging is
off: the templates are the same, and test_infra_assets.py checks what the image builds receive.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

# jsii prints a large banner on node releases it considers end-of-life; the tests do not care.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "18,20")

# What a deployer passes with -c on top of cdk.json's defaults.
DEPLOY_CONTEXT = {
    "pinecone_index_host": "https://products-abc1234.svc.aped-4627-b74a.pinecone.io",
    "pinecone_namespace": "catalogue",
    "alarm_email": "ops@example.com",
    "aws:cdk:disable-asset-staging": True,
}

VARIANT_CONTEXT = {
    "stage": "prod",
    "images_prefix": "catalogue/",
    "pinecone_api_key_secret_arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pinecone-AbCdEf",
    "backfill_gpus": 0,
    "backfill_instance_type": "c7i.4xlarge",
    "retain_data": False,
    "cors_origins": ["https://shop.example.com"],
    "frontend_host": "apprunner",
}


@dataclass(frozen=True)
class Synth:
    template: Any  # aws_cdk.assertions.Template
    resources: dict[str, dict[str, Any]]
    outputs: dict[str, dict[str, Any]]
    warnings: list[str]

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {lid: r for lid, r in self.resources.items() if r["Type"] == resource_type}

    def one(self, resource_type: str, where: Callable[[str, dict[str, Any]], bool] = lambda *_: True) -> Any:
        """(logical id, resource) of the single resource of that type matching ``where``."""
        found = [(lid, r) for lid, r in self.of_type(resource_type).items() if where(lid, r)]
        assert len(found) == 1, f"expected one {resource_type}, found {[lid for lid, _ in found]}"
        return found[0]


def synthesise(overrides: dict[str, Any], outdir: str, *, validate: bool) -> Synth:
    from aws_cdk.assertions import Template

    from infra.app import build_app

    app = build_app({**DEPLOY_CONTEXT, **overrides}, outdir=outdir, validate_templates=validate)
    stage = app.node.try_get_context("stage")
    artifact = app.synth().get_stack_by_name(f"FashionSearch-{stage}")
    return Synth(
        template=Template.from_json(artifact.template),
        resources=artifact.template["Resources"],
        outputs=artifact.template.get("Outputs", {}),
        warnings=[str(m.entry.data) for m in artifact.messages if m.level.name == "WARNING"],
    )


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """cdk.json's defaults plus what every deployment passes; a CloudFormation schema error fails it."""
    return synthesise({}, str(tmp_path_factory.mktemp("cdk.out")), validate=True)


@pytest.fixture(scope="session")
def variant_synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """Every optional path at once; without the schema check, which would double the session's cost."""
    return synthesise(VARIANT_CONTEXT, str(tmp_path_factory.mktemp("cdk.out")), validate=False)


@pytest.fixture(params=["defaults", "variant"])
def any_synth(request: pytest.FixtureRequest) -> Synth:
    return request.getfixturevalue("synth" if request.param == "defaults" else "variant_synth")
