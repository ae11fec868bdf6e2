"""Every endpoint's happy path over ~20 real KAGL images indexed with the tiny model."""

from __future__ import annotations

import base64
import dataclasses
import io
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from fashion_search.api.app import create_app
from fashion_search.api.facets import FacetCache, count_facets
from fashion_search.records import ImageRecord, image_id_for_key
from fashion_search.stores.sqlite_metadata import SqliteMetadataStore

RESULT_FIELDS = {"image_id", "key", "score", "url", "tags", "matched_terms"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["image_id"] for r in response.json()["results"]]


def sample_tags(sample_paths: list[Path], styles: dict[str, dict[str, str]], tag: str) -> Counter[str]:
    return Counter(styles[p.stem][tag] for p in sample_paths)


def test_text_search_returns_ranked_results_with_every_field(client: TestClient) -> None:
    response = client.post(
        "/get_image_by_text", json={"text": "blue denim jeans", "top_k": 5, "hybrid": False}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["took_ms"] >= 0
    results = body["results"]
    assert len(results) == 5
    assert all(set(r) == RESULT_FIELDS for r in results)
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    first = results[0]
    assert first["image_id"] == image_id_for_key(first["key"])
    assert first["url"] == f"/images/{first['image_id']}/file"
    assert first["tags"]["gender"] and "_key" not in first["tags"]


def test_text_search_returns_one_result_by_default(client: TestClient) -> None:
    assert len(ids(client.post("/get_image_by_text", json={"text": "shirt"}))) == 1


def test_text_filters_restrict_results(
    client: TestClient, sample_paths: list[Path], kagl_styles: dict[str, dict[str, str]]
) -> None:
    genders = sample_tags(sample_paths, kagl_styles, "gender")
    gender, expected = genders.most_common(1)[0]
    response = client.post(
        "/get_image_by_text", json={"text": "clothes", "top_k": 20, "filters": {"gender": gender}}
    )
    results = response.json()["results"]
    assert len(results) == expected < len(sample_paths)
    assert {r["tags"]["gender"] for r in results} == {gender}

    colours = [c for c, _ in sample_tags(sample_paths, kagl_styles, "baseColour").most_common(2)]
    response = client.post(
        "/get_image_by_text", json={"text": "clothes", "top_k": 20, "filters": {"baseColour": colours}}
    )
    assert {r["tags"]["baseColour"] for r in response.json()["results"]} == set(colours)


def test_min_score_cuts_results(client: TestClient) -> None:
    everything = client.post("/get_image_by_text", json={"text": "sports shoes", "top_k": 20}).json()[
        "results"
    ]
    scores = [r["score"] for r in everything]
    cut = (max(scores) + min(scores)) / 2  # hybrid ranking: results need not be in score order
    kept = client.post(
        "/get_image_by_text", json={"text": "sports shoes", "top_k": 20, "min_score": cut}
    ).json()
    assert 0 < len(kept["results"]) < len(everything)
    assert all(r["score"] >= cut for r in kept["results"])
    none = client.post(
        "/get_image_by_text", json={"text": "sports shoes", "top_k": 20, "min_score": 1.5}
    ).json()
    assert none["results"] == []


def test_every_image_finds_itself_first_by_its_bytes(client: TestClient, sample_paths: list[Path]) -> None:
    for path in sample_paths:
        response = client.post("/get_similar_images", json={"image_base64": b64(path.read_bytes())})
        results = response.json()["results"]
        assert len(results) == 3  # the default top_k for image queries
        assert results[0]["key"] == path.name, path
        assert results[0]["score"] > 0.99


def test_base64_as_a_data_url_with_line_breaks_is_accepted(
    client: TestClient, sample_paths: list[Path]
) -> None:
    encoded = b64(sample_paths[1].read_bytes())
    wrapped = "data:image/jpeg;base64," + "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    assert ids(client.post("/get_similar_images", json={"image_base64": wrapped}))[0] == image_id_for_key(
        sample_paths[1].name
    )


def test_multipart_upload_with_form_options(
    client: TestClient, sample_paths: list[Path], kagl_styles: dict[str, dict[str, str]]
) -> None:
    path = sample_paths[2]
    gender = kagl_styles[path.stem]["gender"]
    response = client.post(
        "/get_similar_images",
        files={"file": (path.name, path.read_bytes(), "image/jpeg")},
        data={"top_k": "2", "filters": f'{{"gender": "{gender}"}}', "min_score": "-1"},
    )
    results = response.json()["results"]
    assert len(results) == 2
    assert results[0]["key"] == path.name and results[0]["score"] > 0.99
    assert {r["tags"]["gender"] for r in results} == {gender}


@pytest.mark.parametrize(("fmt", "mode"), [("PNG", "RGBA"), ("WEBP", "RGB")])
def test_png_and_webp_uploads_are_accepted(
    client: TestClient, sample_paths: list[Path], fmt: str, mode: str
) -> None:
    buffer = io.BytesIO()
    Image.open(sample_paths[3]).convert(mode).save(
        buffer, format=fmt, **({"quality": 95} if fmt == "WEBP" else {})
    )
    response = client.post(
        "/get_similar_images",
        files={"file": (f"query.{fmt.lower()}", buffer.getvalue(), f"image/{fmt.lower()}")},
    )
    results = response.json()["results"]
    assert len(results) == 3
    assert results[0]["key"] == sample_paths[3].name  # a re-encoding still finds the original


def test_image_id_mode_finds_neighbours_and_leaves_itself_out(
    client: TestClient, sample_paths: list[Path]
) -> None:
    image_id = image_id_for_key(sample_paths[4].name)
    found = ids(client.post("/get_similar_images", json={"image_id": image_id, "top_k": 5, "hybrid": False}))
    assert len(found) == 5 and image_id not in found
    by_bytes = ids(
        client.post(
            "/get_similar_images", json={"image_base64": b64(sample_paths[4].read_bytes()), "top_k": 6}
        )
    )
    assert found == [i for i in by_bytes if i != image_id][:5]


def test_url_mode_downloads_and_searches(
    make_client: Callable[..., TestClient], url_server: Any, sample_paths: list[Path]
) -> None:
    lab = make_client(url_allow_private=True)
    results = lab.post("/get_similar_images", json={"url": url_server.url("/image.jpg"), "top_k": 1}).json()[
        "results"
    ]
    assert results[0]["key"] == sample_paths[0].name and results[0]["score"] > 0.99


def test_image_record_without_embedding(
    client: TestClient, sample_paths: list[Path], kagl_styles: dict[str, dict[str, str]]
) -> None:
    path = sample_paths[5]
    image_id = image_id_for_key(path.name)
    response = client.get(f"/images/{image_id}")
    assert response.status_code == 200
    record = response.json()
    assert "embedding" not in record
    assert record["image_id"] == image_id and record["key"] == path.name and record["status"] == "indexed"
    assert record["url"] == f"/images/{image_id}/file"
    assert record["format"] == "JPEG" and record["size_bytes"] == path.stat().st_size
    assert record["tags"]["articleType"] == kagl_styles[path.stem]["articleType"]


def test_image_file_is_served_with_its_content_type(client: TestClient, sample_paths: list[Path]) -> None:
    path = sample_paths[6]
    response = client.get(f"/images/{image_id_for_key(path.name)}/file")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == path.read_bytes()


def test_image_file_is_not_served_outside_local_mode(client: TestClient, sample_paths: list[Path]) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    remote = dataclasses.replace(services, settings=services.settings.model_copy(update={"backend": "aws"}))
    with TestClient(create_app(remote)) as aws_client:
        response = aws_client.get(f"/images/{image_id_for_key(sample_paths[6].name)}/file")
    assert (response.status_code, response.json()["error"]) == (404, "not_found")


def test_health_reports_model_and_counts(client: TestClient, sample_paths: list[Path]) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["backend"] == "local"
    assert body["model_id"].startswith("tiny-clip") and body["dim"] == 32
    assert body["records"]["indexed"] == len(sample_paths) == body["vectors"]


def test_facets_count_tag_values_for_filter_widgets(
    client: TestClient, sample_paths: list[Path], kagl_styles: dict[str, dict[str, str]]
) -> None:
    facets = client.get("/facets").json()
    genders = sample_tags(sample_paths, kagl_styles, "gender")
    assert {f["value"]: f["count"] for f in facets["gender"]} == dict(genders)
    counts = [f["count"] for f in facets["gender"]]
    assert counts == sorted(counts, reverse=True)
    assert "productDisplayName" not in facets  # one value per product: no use as a filter


def test_facets_leave_out_tags_with_too_many_values() -> None:
    records = [
        ImageRecord(
            image_id=str(n), key=f"{n}.jpg", status="indexed", tags={"size": "SML"[n % 3], "sku": str(n % 7)}
        )
        for n in range(30)
    ]
    assert set(count_facets(records, max_values=5)) == {"size"}
    assert count_facets(records, max_values=10)["size"] == [("L", 10), ("M", 10), ("S", 10)]


def test_facets_are_cached_until_they_expire(tmp_path: Path) -> None:
    store = SqliteMetadataStore(tmp_path / "meta.sqlite3")
    now = [0.0]
    cache = FacetCache(store, ttl_s=60, clock=lambda: now[0])

    def add(n: int) -> None:
        store.put_many(
            [ImageRecord(image_id=str(n), key=f"{n}.jpg", status="indexed", tags={"colour": "red"})]
        )

    add(1)
    add(2)
    assert cache.get() == {"colour": [("red", 2)]}
    add(3)
    now[0] = 59.0
    assert cache.get() == {"colour": [("red", 2)]}
    now[0] = 60.0
    assert cache.get() == {"colour": [("red", 3)]}


def test_openapi_docs_show_both_request_forms_with_examples(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {
        "/get_image_by_text",
        "/get_similar_images",
        "/images/{image_id}",
        "/images/{image_id}/file",
        "/health",
        "/facets",
    } <= set(spec["paths"])
    similar = spec["paths"]["/get_similar_images"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} == set(similar)
    assert similar["application/json"]["schema"]["examples"]
    assert spec["components"]["schemas"]["TextSearchRequest"]["examples"]
