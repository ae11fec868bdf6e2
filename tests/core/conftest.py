"""Local services over a temporary data directory, with the tiny test model loaded once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fashion_search.config import Settings
from fashion_search.encoder import Encoder
from fashion_search.services import Services, build_services


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir: Path) -> Encoder:
    return Encoder.load(tiny_model_dir, threads=1)


@pytest.fixture
def make_services(tmp_path: Path, tiny_model_dir: Path, tiny_encoder: Encoder) -> Callable[..., Services]:
    """Builds services over one data dir; calling it again simulates a process restart."""

    def make(**overrides: object) -> Services:
        settings = Settings(model_dir=tiny_model_dir, data_dir=tmp_path / "data", **overrides)
        return build_services(settings, encoder=tiny_encoder)

    return make


@pytest.fixture
def services(make_services: Callable[..., Services]) -> Services:
    return make_services()
