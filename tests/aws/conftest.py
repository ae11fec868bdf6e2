"""Fixtures for the AWS tests: the test model and a catalogue sample ingested through the Lambda."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fashion_search.encoder import Encoder
from tests.aws.catalogue import SAMPLE_SIZE, Catalogue, build_catalogue
from tests.plugins.aws_servers import MotoServer, NeedleDBServer


@pytest.fixture
def restore_logging():
    """configure_logging changes process-wide state; put it back for the tests that follow."""
    names = ["", "botocore", "boto3", "urllib3", "httpx", "httpcore", "pinecone"]
    levels = {n: logging.getLogger(n).level for n in names}
    formatters = [(h, h.formatter) for h in logging.getLogger().handlers]
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    for handler, formatter in formatters:
        handler.setFormatter(formatter)


@pytest.fixture(scope="session")
def encoder(tiny_model_dir: Path) -> Encoder:
    return Encoder.load(tiny_model_dir, threads=2)


@pytest.fixture(scope="module")
def catalogue(
    moto_server: MotoServer,
    needledb_server: NeedleDBServer,
    encoder: Encoder,
    kagl_dir: Path,
    kagl_styles: dict[str, dict[str, str]],
    kagl_sample_ids: list[str],
) -> Catalogue:
    """``SAMPLE_SIZE`` KAGL photos uploaded with their styles.csv row as metadata, queue drained."""
    ids = [i for i in kagl_sample_ids if i in kagl_styles][: SAMPLE_SIZE + 5]  # 5 spare for later uploads
    cat = build_catalogue(moto_server, needledb_server, encoder, kagl_dir, kagl_styles, ids)
    for product_id in ids[:SAMPLE_SIZE]:
        cat.upload(product_id)
    cat.drain()
    return cat
