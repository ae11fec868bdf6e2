"""Backfill fixtures: the tiny model, a local catalogue, and helpers to build and run one job.

The moto and needledb servers come from the shared plugin; they are imported here explicitly
(non-root conftests may not declare ``pytest_plugins``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fashion_search.backfill import (
    Backfill,
    BackfillOptions,
    GatedEncoder,
    add_arguments,
    build_backfill,
)
from fashion_search.backfill_checkpoint import CheckpointStore, JobIdentity
from fashion_search.backfill_report import StageClock
from fashion_search.config import Settings
from fashion_search.encoder import Encoder
from fashion_search.ingest import Ingestor
from fashion_search.services import Services, build_services
from fashion_search.stores.base import ObjectStore, VectorIndex
from fashion_search.stores.local_objects import LocalObjectStore
from tests.plugins.aws_servers import (  # noqa: F401  (fixtures)
    aws_stack,
    aws_test_env,
    moto_server,
    needledb_server,
)


def kagl_tags(row: dict[str, str]) -> dict[str, str]:
    """A styles.csv row as an uploader would attach it: every non-empty column but the id."""
    return {k: v for k, v in row.items() if k != "id" and v}


def parse_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def run_cli_job(settings: Settings, *argv: str) -> dict[str, Any]:
    """One job wired exactly as the command line wires it; returns the report as a dict."""
    job = build_backfill(settings, parse_args(*argv))
    return job.run().as_dict()


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir: Path) -> Encoder:
    return Encoder.load(tiny_model_dir, threads=1)


@pytest.fixture(scope="session")
def local_catalogue(
    tmp_path_factory: pytest.TempPathFactory, kagl_dir: Path, kagl_styles: dict[str, dict[str, str]]
) -> tuple[Path, list[str]]:
    """60 KAGL photos with their styles.csv rows as metadata, in a directory object store."""
    root = tmp_path_factory.mktemp("bucket")
    store = LocalObjectStore(root)
    paths = sorted((kagl_dir / "images").glob("*.jpg"))[::700][:60]
    keys = []
    for path in paths:
        key = f"catalogue/{path.name}"
        store.put(key, path.read_bytes(), kagl_tags(kagl_styles[path.stem]))
        keys.append(key)
    return root, keys


@pytest.fixture
def local_settings(tmp_path: Path, tiny_model_dir: Path) -> Settings:
    return Settings(model_dir=tiny_model_dir, data_dir=tmp_path / "data", onnx_threads=1)


@pytest.fixture
def local_services(local_settings: Settings, tiny_encoder: Encoder) -> Services:
    return build_services(local_settings, encoder=tiny_encoder)


@pytest.fixture
def make_job(
    local_settings: Settings, local_services: Services, local_catalogue: tuple[Path, list[str]]
) -> Callable[..., Backfill]:
    """A job over the local catalogue; ``vectors``/``source``/``checkpoints`` swap in test doubles."""

    def make(
        *,
        vectors: VectorIndex | None = None,
        source: ObjectStore | None = None,
        settings: dict[str, Any] | None = None,
        **options: Any,
    ) -> Backfill:
        root, _ = local_catalogue
        opts = BackfillOptions(**{"prefix": "catalogue/", "batch_size": 16, "workers": 0, **options})
        job_settings = local_settings.model_copy(update=settings or {})
        clock = StageClock()
        ingestor = Ingestor(
            GatedEncoder(local_services.encoder, clock),  # type: ignore[arg-type]
            local_services.metadata,
            vectors or local_services.vectors,
            job_settings,
        )
        identity = JobIdentity(
            f"dir:{root}", opts.prefix, str(opts.shard), local_services.encoder.model_id, "test"
        )
        store = CheckpointStore(LocalObjectStore(local_settings.data_dir / "backfill"), identity)
        return Backfill(source or LocalObjectStore(root), ingestor, job_settings, store, opts, clock)

    return make
