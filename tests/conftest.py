"""Fixtures shared by every test area: where the catalogue and the test model live."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

# moto (S3, SQS, DynamoDB), a Pinecone-API server and an image CDN on loopback, for every test area
# that needs them.
pytest_plugins = ["tests.plugins.aws_servers", "tests.plugins.image_cdn"]

REPO = Path(__file__).resolve().parents[1]
KAGL_DIR = (REPO / ".." / "shared" / "data" / "kagl").resolve()
TINY_MODEL_DIR = REPO / "tests" / "fixtures" / "tiny-clip"


@pytest.fixture(scope="session")
def kagl_dir() -> Path:
    if not (KAGL_DIR / "styles.csv").is_file():
        pytest.fail(f"the KAGL catalogue is expected at {KAGL_DIR} (../shared/data/kagl from the repo root)")
    return KAGL_DIR


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    if not (TINY_MODEL_DIR / "model.json").is_file():
        pytest.fail(f"test model missing: run `python -m model_export tiny --out {TINY_MODEL_DIR}`")
    return TINY_MODEL_DIR


@pytest.fixture(scope="session")
def kagl_styles(kagl_dir: Path) -> dict[str, dict[str, str]]:
    """styles.csv rows keyed by product id (as a string, the image file's stem)."""
    with (kagl_dir / "styles.csv").open(newline="", encoding="utf-8") as fh:
        return {row["id"]: row for row in csv.DictReader(fh)}


@pytest.fixture(scope="session")
def kagl_sample_ids(kagl_dir: Path) -> list[str]:
    """A fixed, varied sample of 40 product ids that have an image (every ~1000th file)."""
    ids = sorted(p.stem for p in (kagl_dir / "images").glob("*.jpg"))
    return ids[:: max(1, len(ids) // 40)][:40]
