"""CDK entry point: ``cdk synth`` / ``cdk deploy`` run it as ``python3 infra/app.py`` (cdk.json).

The defaults live in cdk.json's ``context``; they are loaded here too, so that the app also
synthesises without the CLI (``python3 infra/app.py``, the tests) and the CLI's ``-c`` values
override them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make `infra` importable as a package
    sys.path.insert(0, str(REPO_ROOT))

import aws_cdk as cdk  # noqa: E402

from infra.stacks.config import InfraConfig  # noqa: E402
from infra.stacks.fashion_search_stack import FashionSearchStack  # noqa: E402


def default_context() -> dict[str, Any]:
    return dict(json.loads((REPO_ROOT / "cdk.json").read_text(encoding="utf-8"))["context"])


def build_app(
    overrides: dict[str, Any] | None = None, outdir: str | None = None, validate_templates: bool = True
) -> cdk.App:
    """The app with cdk.json's context, then ``overrides``, then the CLI's ``-c`` values.

    ``validate_templates``: CDK's built-in CloudFormation schema check (errors fail the synth, per
    cdk.json's ``validateAgainstDefaultRules``). It is most of the synth's CPU time (~11 of 15 s).
    """
    app = cdk.App(
        context={**default_context(), **(overrides or {})},
        outdir=outdir,
        builtin_cloud_formation_validation=validate_templates,
    )
    config = InfraConfig.from_context(app.node.try_get_context)
    FashionSearchStack(
        app,
        f"FashionSearch-{config.stage}",
        config=config,
        description=f"Fashion image search ({config.stage}): ingest, search API, front end, backfill",
    )
    return app


if __name__ == "__main__":
    build_app().synth()
