"""Byte-identical photos under several keys (one photo reused for several SKUs, or a catalogue's
own repeats: 1,433 of KAGL's files) show once in results unless the caller asks for every key."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from fashion_search.api.app import create_app
from fashion_search.catalogue import CatalogueImporter, list_images
from fashion_search.config import Settings
from fashion_search.encoder import Encoder
from fashion_search.ingest import KEY_FIELD
from fashion_search.records import image_id_for_key
from fashion_search.services import Services, build_services
from fashion_search.stores.base import VectorItem

ORIGINALS = 8
COPIES_OF_FIRST = 1  # photo 0 also stored as copy-0/<name>
COPIES_OF_SECOND = 5  # photo 1 also stored as copy-1/<name> ... copy-5/<name>


@pytest.fixture
def catalogue(tmp_path: Path, sample_paths: list[Path]) -> Path:
    """The originals at the top, their copies in sub-folders (other keys, same bytes)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in sample_paths[:ORIGINALS]:
        shutil.copyfile(path, folder / path.name)
    for n in range(COPIES_OF_FIRST):
        (folder / f"copy-{n}").mkdir(exist_ok=True)
        shutil.copyfile(sample_paths[0], folder / f"copy-{n}" / sample_paths[0].name)
    for n in range(1, COPIES_OF_SECOND + 1):
        (folder / f"copy-{n}").mkdir(exist_ok=True)
        shutil.copyfile(sample_paths[1], folder / f"copy-{n}" / sample_paths[1].name)
    return folder


@pytest.fixture
def services(tmp_path: Path, tiny_model_dir: Path, api_encoder: Encoder, catalogue: Path) -> Services:
    services = build_services(
        Settings(model_dir=tiny_model_dir, data_dir=tmp_path / "data"), encoder=api_encoder
    )
    summary = CatalogueImporter(services, catalogue, {}).run(list_images(catalogue))
    assert summary.ingested == ORIGINALS + COPIES_OF_FIRST + COPIES_OF_SECOND, summary.as_dict()
    return services


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services)) as client:
        yield client


def keys(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["key"] for r in response.json()["results"]]


def copies_of(name: str, found: list[str]) -> list[str]:
    return [k for k in found if k.rsplit("/", 1)[-1] == name]


def test_text_search_shows_each_photo_once_unless_asked_for_every_key(
    client: TestClient, sample_paths: list[Path]
) -> None:
    collapsed = keys(client.post("/get_image_by_text", json={"text": "shirt", "top_k": 100}))
    assert len(collapsed) == ORIGINALS
    assert len(copies_of(sample_paths[0].name, collapsed)) == 1
    assert len(copies_of(sample_paths[1].name, collapsed)) == 1

    every = keys(
        client.post("/get_image_by_text", json={"text": "shirt", "top_k": 100, "collapse_duplicates": False})
    )
    assert len(every) == ORIGINALS + COPIES_OF_FIRST + COPIES_OF_SECOND
    assert set(collapsed) < set(every)


def test_collapsing_still_fills_top_k_when_copies_crowd_the_top(
    client: TestClient, sample_paths: list[Path]
) -> None:
    """Photo 1's six keys are the six best matches for its own bytes: the index has to be asked
    for more candidates than the first 2 * top_k to find a second photo."""
    query = {"image_base64": base64.b64encode(sample_paths[1].read_bytes()).decode(), "top_k": 2}
    every = keys(client.post("/get_similar_images", json={**query, "collapse_duplicates": False}))
    assert copies_of(sample_paths[1].name, every) == every  # the crowd: both slots are copies

    found = keys(client.post("/get_similar_images", json=query))
    assert len(found) == 2
    assert len(copies_of(sample_paths[1].name, found)) == 1
    assert found[0].rsplit("/", 1)[-1] == sample_paths[1].name  # the photo itself still comes first


def test_more_like_this_leaves_out_the_photos_own_copies(
    client: TestClient, sample_paths: list[Path]
) -> None:
    name = sample_paths[0].name
    query = {"image_id": image_id_for_key(name), "top_k": 5}
    found = keys(client.post("/get_similar_images", json=query))
    assert len(found) == 5 and not copies_of(name, found)

    every = keys(client.post("/get_similar_images", json={**query, "collapse_duplicates": False}))
    assert every[0] == f"copy-0/{name}"  # identical bytes: the best match, unless collapsed


def test_multipart_upload_takes_the_option_as_a_form_field(
    client: TestClient, sample_paths: list[Path]
) -> None:
    path = sample_paths[1]
    upload = {"file": (path.name, path.read_bytes(), "image/jpeg")}
    found = keys(client.post("/get_similar_images", files=upload, data={"top_k": "10"}))
    every = keys(
        client.post("/get_similar_images", files=upload, data={"top_k": "10", "collapse_duplicates": "false"})
    )
    assert len(copies_of(path.name, found)) == 1
    assert len(copies_of(path.name, every)) == 1 + COPIES_OF_SECOND


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_a_non_boolean_option_is_refused_by_name(client: TestClient, value: Any) -> None:
    response = client.post("/get_image_by_text", json={"text": "shirt", "collapse_duplicates": value})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_request" and "collapse_duplicates" in body["detail"]


def test_vectors_without_a_stored_hash_are_never_collapsed(
    services: Services, sample_paths: list[Path]
) -> None:
    """Vectors written before hashes were stored (or by another writer) carry only the key."""
    name = sample_paths[2].name
    vector = services.vectors.fetch([image_id_for_key(name)])[image_id_for_key(name)].vector
    services.vectors.upsert([VectorItem("legacy-copy", np.asarray(vector), {KEY_FIELD: f"legacy/{name}"})])
    found = [h.key for h in services.searcher.by_image_bytes(sample_paths[2].read_bytes(), top_k=3)]
    assert set(found[:2]) == {name, f"legacy/{name}"}
