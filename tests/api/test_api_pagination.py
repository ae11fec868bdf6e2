"""Pages (``offset``) over ~20 real KAGL images: they come from one fixed ranking, so pages of
five join up into the list a single request for twenty returns, in every search mode."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fashion_search.records import image_id_for_key
from tests.api.test_api_errors import assert_error

TEXT = "/get_image_by_text"
SIMILAR = "/get_similar_images"


def page(client: TestClient, path: str, **body: Any) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def keys(body: dict[str, Any]) -> list[str]:
    return [r["key"] for r in body["results"]]


def queries(sample_paths: list[Path]) -> list[tuple[str, dict[str, Any]]]:
    photo = base64.b64encode(sample_paths[2].read_bytes()).decode("ascii")
    return [
        (TEXT, {"text": "black shoes for men"}),  # hybrid, the default
        (TEXT, {"text": "black shoes for men", "hybrid": False}),
        (SIMILAR, {"image_id": image_id_for_key(sample_paths[1].name)}),  # hybrid by its tags
        (SIMILAR, {"image_base64": photo}),
    ]


def test_pages_join_up_into_one_ranking(client: TestClient, sample_paths: list[Path]) -> None:
    for path, query in queries(sample_paths):
        whole = keys(page(client, path, **query, top_k=20))
        joined: list[str] = []
        for offset in (0, 5, 10, 15):
            joined += keys(page(client, path, **query, top_k=5, offset=offset))
        assert joined == whole, query
        assert len(set(joined)) == len(joined)


def test_pages_join_up_when_hybrid_re_ranks_only_the_first_candidates(
    make_client: Callable[..., TestClient], sample_paths: list[Path]
) -> None:
    """With 4 hybrid candidates the first four are re-ranked by words and the rest follow in vector
    order, whatever page is asked for (re-ranking all that a page happened to fetch would not join)."""
    narrow = make_client(hybrid_candidates=4)
    for path, query in queries(sample_paths)[:3:2]:
        whole = keys(page(narrow, path, **query, top_k=20))
        joined = [
            k
            for offset in (0, 3, 6, 9, 12, 15, 18)
            for k in keys(page(narrow, path, **query, top_k=3, offset=offset))
        ]
        assert joined == whole, query


def test_next_offset_points_at_the_next_page_until_the_results_run_out(
    client: TestClient, sample_paths: list[Path]
) -> None:
    first = page(client, TEXT, text="shirt", top_k=8)
    assert len(first["results"]) == 8 and first["next_offset"] == 8
    second = page(client, TEXT, text="shirt", top_k=8, offset=first["next_offset"])
    assert len(second["results"]) == 8 and second["next_offset"] == 16
    last = page(client, TEXT, text="shirt", top_k=8, offset=second["next_offset"])
    assert len(last["results"]) == len(sample_paths) - 16 and last["next_offset"] is None
    beyond = page(client, TEXT, text="shirt", top_k=8, offset=40)
    assert beyond["results"] == [] and beyond["next_offset"] is None
    # no page of 100 fits after offset 900 (offset + top_k at most 1000)
    assert page(client, TEXT, text="shirt", top_k=100, offset=900)["next_offset"] is None


def test_multipart_uploads_take_an_offset_form_field(client: TestClient, sample_paths: list[Path]) -> None:
    photo = sample_paths[2].read_bytes()
    whole = keys(page(client, SIMILAR, image_base64=base64.b64encode(photo).decode("ascii"), top_k=6))
    response = client.post(
        SIMILAR, files={"file": ("q.jpg", photo, "image/jpeg")}, data={"top_k": "3", "offset": "3"}
    )
    assert response.status_code == 200, response.text
    assert keys(response.json()) == whole[3:6]


@pytest.mark.parametrize("offset", [-1, 996])
def test_offsets_out_of_range_get_a_400(client: TestClient, offset: int) -> None:
    for path, body in ((TEXT, {"text": "shirt"}), (SIMILAR, {"image_id": "not-even-looked-up"})):
        error = assert_error(
            client.post(path, json={**body, "top_k": 5, "offset": offset}), 400, "invalid_offset"
        )
        assert "995" in error["detail"]
    files = {"file": ("q.jpg", b"not read: the options are checked first", "image/jpeg")}
    response = client.post(SIMILAR, files=files, data={"top_k": "5", "offset": str(offset)})
    assert_error(response, 400, "invalid_offset")


@pytest.mark.parametrize("offset", ["3", 2.0, True, None])
def test_offsets_of_the_wrong_type_get_a_422(client: TestClient, offset: Any) -> None:
    body = assert_error(client.post(TEXT, json={"text": "shirt", "offset": offset}), 422, "invalid_request")
    assert "offset" in body["detail"]
