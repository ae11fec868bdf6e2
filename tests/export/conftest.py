"""Tiny checkpoints and their exports, built once per session (a few seconds each).

The checkpoints are written with ``save_pretrained`` and exported from that local directory, the
same ``from_pretrained`` path a hub id takes on a machine with internet.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from model_export.__main__ import main
from model_export.tiny import build_tiny_checkpoint


def export(source: Path, out: Path, *extra: str) -> int:
    return main(["export", "--from", str(source), "--out", str(out), *extra])


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt-seed0"), seed=0)


@pytest.fixture(scope="session")
def other_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same architecture, another seed: a model the seed-0 export does not belong to."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt-seed1"), seed=1)


@pytest.fixture(scope="session")
def export_fp32(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "fp32"
    assert export(tiny_checkpoint, out, "--name", "tiny-test") == 0
    return out


@pytest.fixture(scope="session")
def export_int8(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "int8"
    assert export(tiny_checkpoint, out, "--precision", "int8") == 0
    return out
