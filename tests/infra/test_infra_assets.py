"""What the image builds receive: CDK stages each asset's context exactly as `cdk deploy` would.

The root context is an allowlist (the repo root holds a multi-GB virtualenv), so a Dockerfile that
starts copying something new must fail here, not halfway through a deployment.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import aws_cdk as cdk
import pytest

from infra.app import default_context
from infra.stacks.assets import REPO_ROOT, core_image, frontend_image
from infra.stacks.config import InfraConfig

# A small model that lives inside an otherwise excluded directory (tests/): re-inclusion must work.
MODEL_DIR = "tests/fixtures/tiny-clip"


@pytest.fixture(scope="module")
def contexts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Staged build contexts: "core" (Lambda and backfill images) and "frontend"."""
    config = InfraConfig.from_context({**default_context(), "model_dir": MODEL_DIR}.get)
    app = cdk.App(outdir=str(tmp_path_factory.mktemp("cdk.out")), builtin_cloud_formation_validation=False)
    stack = cdk.Stack(app, "Assets")
    core = core_image(stack, "Core", config, config.backfill_dockerfile)
    frontend = frontend_image(stack, "FrontEnd", config)
    directory = Path(app.synth().directory)
    return {
        "core": directory / f"asset.{core.asset_hash}",
        "frontend": directory / f"asset.{frontend.asset_hash}",
    }


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_core_context_holds_only_the_package_requirements_and_model(contexts: dict[str, Path]) -> None:
    root = contexts["core"]
    always = {".dockerignore"} if (REPO_ROOT / ".dockerignore").is_file() else set()  # CDK keeps it
    assert {p.name for p in root.iterdir()} == {
        "functions",
        "requirements.txt",
        "pyproject.toml",
        "tests",
        "Dockerfile.backfill",
        *always,
    }
    files = files_under(root)
    assert {f for f in files if f.startswith("tests/")} == {
        f"{MODEL_DIR}/{p.name}" for p in (REPO_ROOT / MODEL_DIR).iterdir() if p.is_file()
    }
    assert "functions/fashion_search/config.py" in files
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]


def test_frontend_context_is_its_own_directory(contexts: dict[str, Path]) -> None:
    files = files_under(contexts["frontend"])
    assert {"Dockerfile", "app.py", "requirements.txt"} <= files
    assert not [f for f in files if "__pycache__" in f]


def copy_sources(dockerfile: Path, build_args: dict[str, str]) -> list[str]:
    """Sources of every COPY/ADD that reads the build context, with ARG values substituted."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text(encoding="utf-8"))
    args = dict(build_args)
    sources: list[str] = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        instruction = words[0].upper()
        if instruction == "ARG" and "=" in words[1]:
            name, default = words[1].split("=", 1)
            args.setdefault(name, default)
        elif instruction in {"COPY", "ADD"}:
            operands = [w for w in words[1:] if not w.startswith("--")]
            if any(w.startswith("--from") for w in words[1:]):
                continue
            for source in operands[:-1]:
                sources.append(re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), source))
    return sources


@pytest.mark.parametrize(
    ("dockerfile", "context"),
    [("Dockerfile", "core"), ("Dockerfile.backfill", "core"), ("streamlit_app/Dockerfile", "frontend")],
)
def test_every_copied_path_is_in_the_build_context(
    contexts: dict[str, Path], dockerfile: str, context: str
) -> None:
    path = REPO_ROOT / dockerfile
    assert path.is_file(), f"{dockerfile} is missing (the stack builds an image from it)"
    sources = copy_sources(path, {"MODEL_DIR": MODEL_DIR})
    assert sources, f"{dockerfile} copies nothing?"
    root = contexts[context]
    for source in sources:
        pattern = source.strip("/").removeprefix("./")
        assert pattern in ("", ".") or list(root.glob(pattern)), (
            f"{dockerfile}: COPY {source} is not in the context"
        )
