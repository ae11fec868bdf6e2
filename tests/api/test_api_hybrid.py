"""Hybrid text search over ~20 real KAGL images with their styles.csv tags (tiny model): the
query's words found in a result's tags move it up, and the caller can turn that off."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from fashion_search.records import image_id_for_key
from tests.api.test_api_errors import assert_error

TEXT = "/get_image_by_text"
SIMILAR = "/get_similar_images"


def search(client: TestClient, **body: Any) -> list[dict[str, Any]]:
    response = client.post(TEXT, json={"top_k": 20, **body})
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def common_article_type(sample_paths: list[Path], styles: dict[str, dict[str, str]]) -> str:
    return Counter(styles[p.stem]["articleType"] for p in sample_paths).most_common(1)[0][0]


def test_results_carrying_the_query_words_come_first(
    client: TestClient, sample_paths: list[Path], kagl_styles: dict[str, dict[str, str]]
) -> None:
    article = common_article_type(sample_paths, kagl_styles)  # e.g. "Tshirts"
    results = search(client, text=article.lower())
    matched = [bool(r["matched_terms"]) for r in results]
    assert len(results) == len(sample_paths)
    # 20 candidates: a word match's fused rank always beats a result without one
    assert matched == sorted(matched, reverse=True) and any(matched) and not all(matched)
    of_type = {r["key"] for r in results if r["tags"]["articleType"] == article}
    assert of_type and of_type <= {r["key"] for r in results if r["matched_terms"]}
    word = article.lower().rstrip("s")
    for r in results:
        if not r["matched_terms"]:
            assert word not in " ".join(r["tags"].values()).lower()


def test_vector_only_ranks_by_score_and_reports_no_words(client: TestClient) -> None:
    hybrid = search(client, text="navy blue shirt for men")
    vector = search(client, text="navy blue shirt for men", hybrid=False)
    assert {r["key"] for r in hybrid} == {r["key"] for r in vector}
    assert [r["score"] for r in vector] == sorted((r["score"] for r in vector), reverse=True)
    assert all(r["matched_terms"] == [] for r in vector)
    assert [r["key"] for r in hybrid] != [r["key"] for r in vector]
    # same cosine per image either way: hybrid changes the order, not the score
    assert {r["key"]: r["score"] for r in hybrid} == {r["key"]: r["score"] for r in vector}


def test_words_that_match_no_tag_leave_the_vector_order(client: TestClient) -> None:
    text = "zzqx qqzv"
    assert [r["key"] for r in search(client, text=text)] == [
        r["key"] for r in search(client, text=text, hybrid=False)
    ]


def test_only_the_hybrid_candidates_are_re_ranked(
    make_client: Callable[..., TestClient], sample_paths: list[Path], kagl_styles: dict[str, dict[str, str]]
) -> None:
    """A brand name unique to one product finds it at once, unless the pool of vector candidates
    (``hybrid_candidates``, and at least twice ``top_k``) is too small to contain it."""
    wide, narrow = make_client(), make_client(hybrid_candidates=1)
    brands = Counter(kagl_styles[p.stem]["productDisplayName"].split()[0].lower() for p in sample_paths)
    picked = None
    for path in sample_paths:
        brand = kagl_styles[path.stem]["productDisplayName"].split()[0].lower()
        vector = [r["key"] for r in search(wide, text=brand, hybrid=False)]
        if brands[brand] == 1 and vector.index(path.name) >= 2:
            picked = brand, path.name, vector
            break
    assert picked, "no product with a unique brand outside the vector top 2 in the sample"
    brand, key, vector = picked
    first = search(wide, text=brand, top_k=1)[0]
    assert first["key"] == key and brand in first["matched_terms"]
    assert search(narrow, text=brand, top_k=1)[0]["key"] in vector[:2]


def test_hybrid_keeps_filters_and_min_score(
    client: TestClient, sample_paths: list[Path], kagl_styles: dict[str, dict[str, str]]
) -> None:
    gender = Counter(kagl_styles[p.stem]["gender"] for p in sample_paths).most_common(1)[0][0]
    scores = [r["score"] for r in search(client, text="black shoes", hybrid=False)]
    cut = (max(scores) + min(scores)) / 2
    results = search(client, text="black shoes", filters={"gender": gender}, min_score=cut)
    assert results and all(r["tags"]["gender"] == gender and r["score"] >= cut for r in results)


def test_hybrid_must_be_a_boolean(client: TestClient) -> None:
    for path, body in ((TEXT, {"text": "shirt"}), (SIMILAR, {"image_id": "x"})):
        for value in ("yes", 1, None):
            body_ = {**body, "hybrid": value}
            assert "hybrid" in assert_error(client.post(path, json=body_), 422, "invalid_request")["detail"]


def similar(client: TestClient, **body: Any) -> list[dict[str, Any]]:
    response = client.post(SIMILAR, json=body)
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def test_more_like_this_favours_products_sharing_the_images_tags(
    client: TestClient, sample_paths: list[Path], kagl_styles: dict[str, dict[str, str]]
) -> None:
    """Over every sample image as the query, more of the top 3 share its article type when the
    words of its tags re-rank the visual matches than with the vector alone."""
    same_type = {True: 0, False: 0}
    for path in sample_paths:
        article = kagl_styles[path.stem]["articleType"]
        for hybrid in (True, False):
            top = similar(client, image_id=image_id_for_key(path.name), top_k=3, hybrid=hybrid)
            assert path.name not in {r["key"] for r in top}
            same_type[hybrid] += sum(r["tags"]["articleType"] == article for r in top)
            if not hybrid:
                assert all(r["matched_terms"] == [] for r in top)
    assert same_type[True] > same_type[False]


def test_an_uploaded_photo_has_no_words_so_hybrid_changes_nothing(
    client: TestClient, sample_paths: list[Path]
) -> None:
    photo = base64.b64encode(sample_paths[3].read_bytes()).decode("ascii")
    with_words = similar(client, image_base64=photo, top_k=10, hybrid=True)
    assert with_words == similar(client, image_base64=photo, top_k=10, hybrid=False)
    assert all(r["matched_terms"] == [] for r in with_words)
