"""Container image assets built from the repository, with an allowlist of what each build sees.

CDK fingerprints (hashes) and stages (copies) an image asset's whole directory on every synth.
The repository root holds a multi-GB virtual environment, the catalogue data, training runs and
``cdk.out`` itself, so the root-context images exclude everything (``*``) and re-include only
what their Dockerfiles copy: that keeps synth fast and the image hash stable when unrelated files
change. ``tests/infra`` checks every Dockerfile's COPY sources against these lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from aws_cdk import IgnoreMode
from aws_cdk.aws_ecr_assets import DockerImageAsset, Platform
from constructs import Construct

from infra.stacks.config import InfraConfig

REPO_ROOT = Path(__file__).resolve().parents[2]

# What the root-context Dockerfiles (Lambda and backfill) copy, besides the model directory.
CORE_SOURCES = ("functions", "requirements.txt", "pyproject.toml")
# Never part of any build context, even inside an allowed directory.
JUNK = ("**/__pycache__", "**/*.pyc", "**/.pytest_cache", "**/.ruff_cache", "**/.venv", "**/node_modules")


def allowlist(sources: Sequence[str]) -> list[str]:
    """Docker-ignore patterns excluding everything but ``sources`` (then junk inside them)."""
    return ["*", *(f"!{PurePosixPath(s).as_posix()}" for s in sources), *JUNK]


def core_image_excludes(config: InfraConfig) -> list[str]:
    return allowlist([*CORE_SOURCES, config.model_dir])


def core_image(scope: Construct, construct_id: str, config: InfraConfig, dockerfile: str) -> DockerImageAsset:
    """An image built from the repo root with ``MODEL_DIR`` baked in (Lambda or backfill)."""
    return DockerImageAsset(
        scope,
        construct_id,
        directory=str(REPO_ROOT),
        file=dockerfile,
        build_args={"MODEL_DIR": PurePosixPath(config.model_dir).as_posix()},
        exclude=core_image_excludes(config),
        ignore_mode=IgnoreMode.DOCKER,
        platform=Platform.LINUX_AMD64,
    )


def frontend_image(scope: Construct, construct_id: str, config: InfraConfig) -> DockerImageAsset:
    """The Streamlit image; its build context is its own small directory."""
    return DockerImageAsset(
        scope,
        construct_id,
        directory=str(REPO_ROOT / config.frontend_dir),
        file=config.frontend_dockerfile,
        exclude=list(JUNK),
        ignore_mode=IgnoreMode.DOCKER,
        platform=Platform.LINUX_AMD64,
    )
