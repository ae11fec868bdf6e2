"""The API on the AWS backend: through Mangum with API Gateway events (HTTP and REST APIs), and over
real HTTP from uvicorn, finding what the ingest Lambda indexed."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from mangum import Mangum
from urllib3 import encode_multipart_formdata

from fashion_search.api.app import create_app
from fashion_search.handlers import api_lambda
from fashion_search.handlers.api_lambda import LAMBDA_MAX_REQUEST_BYTES, lambda_settings, make_handler
from fashion_search.records import image_id_for_key
from fashion_search.services import Services, build_services
from tests.aws.catalogue import PREFIX, SAMPLE_SIZE, Catalogue
from tests.aws.lambda_events import http_api_event, json_body, rest_api_event
from tests.plugins.aws_servers import free_port

pytestmark = pytest.mark.aws
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def services(catalogue: Catalogue) -> Services:
    return build_services(lambda_settings(catalogue.services.settings), encoder=catalogue.services.encoder)


@pytest.fixture(scope="module")
def lambda_handler(services: Services) -> Mangum:
    return make_handler(services)


def invoke(handler: Mangum, event: dict[str, Any]) -> tuple[int, Any]:
    response = handler(event, None)
    return response["statusCode"], json_body(response)


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


def test_similar_images_by_upload_find_the_photo_itself_first(
    catalogue: Catalogue, lambda_handler: Mangum
) -> None:
    for product_id in list(catalogue.keys)[:3]:
        photo = catalogue.photos[product_id]
        body = json.dumps({"image_base64": base64.b64encode(photo).decode(), "top_k": 3})
        status, payload = invoke(lambda_handler, http_api_event("POST", "/get_similar_images", body, JSON))
        assert status == 200, payload
        first = payload["results"][0]
        assert first["image_id"] == image_id_for_key(catalogue.keys[product_id])
        assert first["score"] == pytest.approx(1.0, abs=1e-4)
        assert len(payload["results"]) == 3
        assert first["tags"]["articletype"] == catalogue.rows[product_id]["articleType"]
        assert fetch(first["url"]) == photo  # a presigned S3 URL
        assert "X-Amz-Signature=" in first["url"]


def test_multipart_upload_through_the_http_api(catalogue: Catalogue, lambda_handler: Mangum) -> None:
    product_id = list(catalogue.keys)[4]
    body, content_type = encode_multipart_formdata(
        {"file": ("photo.jpg", catalogue.photos[product_id], "image/jpeg"), "top_k": "2"}
    )
    event = http_api_event("POST", "/get_similar_images", body, {"content-type": content_type})
    status, payload = invoke(lambda_handler, event)
    assert status == 200, payload
    assert payload["results"][0]["image_id"] == image_id_for_key(catalogue.keys[product_id])


def test_text_search_with_filters_through_the_rest_api(catalogue: Catalogue, lambda_handler: Mangum) -> None:
    body = json.dumps({"text": "a blue shirt for men", "top_k": 5, "filters": {"gender": ["Men"]}})
    status, payload = invoke(lambda_handler, rest_api_event("POST", "/get_image_by_text", body, JSON))
    assert status == 200, payload
    men = sum(1 for row in catalogue.rows.values() if row["gender"] == "Men")
    assert 0 < len(payload["results"]) == min(5, men)
    assert all(r["tags"]["gender"] == "Men" for r in payload["results"])
    status, health = invoke(lambda_handler, rest_api_event("GET", "/health"))
    assert status == 200 and health["backend"] == "aws" and health["vectors"] >= SAMPLE_SIZE


def test_hybrid_text_search_reads_the_words_from_pinecone_metadata(
    catalogue: Catalogue, lambda_handler: Mangum
) -> None:
    """The tags come back with Pinecone's matches, so words re-rank them as in local mode."""
    article = Counter(row["articleType"] for row in catalogue.rows.values()).most_common(1)[0][0]
    body = json.dumps({"text": article.lower(), "top_k": SAMPLE_SIZE})
    status, payload = invoke(lambda_handler, rest_api_event("POST", "/get_image_by_text", body, JSON))
    assert status == 200, payload
    results = payload["results"]
    matched = [bool(r["matched_terms"]) for r in results]
    assert matched == sorted(matched, reverse=True) and any(matched)
    of_type = {r["key"] for r in results if r["tags"]["articletype"] == article}
    assert of_type and of_type <= {r["key"] for r in results if r["matched_terms"]}


def page_keys(handler: Mangum, path: str, body: dict[str, Any]) -> list[str]:
    status, payload = invoke(handler, rest_api_event("POST", path, json.dumps(body), JSON))
    assert status == 200, payload
    return [r["key"] for r in payload["results"]]


def test_pages_join_up_on_pinecone(catalogue: Catalogue, lambda_handler: Mangum) -> None:
    image_id = image_id_for_key(next(iter(catalogue.keys.values())))
    for path, query in (
        ("/get_image_by_text", {"text": "blue shirt for men"}),
        ("/get_similar_images", {"image_id": image_id}),
    ):
        whole = page_keys(lambda_handler, path, {**query, "top_k": 9})
        pages = [page_keys(lambda_handler, path, {**query, "top_k": 3, "offset": o}) for o in (0, 3, 6)]
        assert len(whole) == 9 and [k for p in pages for k in p] == whole


def test_more_like_this_by_image_id_leaves_the_image_out(
    catalogue: Catalogue, lambda_handler: Mangum
) -> None:
    image_id = image_id_for_key(next(iter(catalogue.keys.values())))
    body = json.dumps({"image_id": image_id, "top_k": 4})
    status, payload = invoke(lambda_handler, http_api_event("POST", "/get_similar_images", body, JSON))
    assert status == 200, payload
    assert len(payload["results"]) == 4 and image_id not in {r["image_id"] for r in payload["results"]}


def test_bodies_over_the_lambda_limit_get_413_naming_it(lambda_handler: Mangum) -> None:
    body = json.dumps({"image_base64": "A" * (LAMBDA_MAX_REQUEST_BYTES + 10)})
    status, payload = invoke(lambda_handler, http_api_event("POST", "/get_similar_images", body, JSON))
    assert status == 413
    assert payload["error"] == "request_too_large" and str(LAMBDA_MAX_REQUEST_BYTES) in payload["detail"]


def test_bad_input_is_a_4xx_json_error(lambda_handler: Mangum) -> None:
    status, payload = invoke(
        lambda_handler, http_api_event("POST", "/get_image_by_text", '{"text": ""}', JSON)
    )
    assert status == 400 and payload["error"] == "empty_text"
    status, payload = invoke(lambda_handler, http_api_event("GET", "/images/ffffffffffffffffffffffff"))
    assert status == 404 and payload["error"] == "not_found"


def test_api_key_from_secrets_manager(catalogue: Catalogue, services: Services) -> None:
    arn = catalogue.stack.client("secretsmanager").create_secret(
        Name="api-key-test", SecretString="s3cret-key"
    )["ARN"]
    settings = lambda_settings(catalogue.services.settings.model_copy(update={"api_key_secret_arn": arn}))
    handler = make_handler(build_services(settings, encoder=services.encoder))
    body = '{"text": "red dress"}'
    assert invoke(handler, http_api_event("POST", "/get_image_by_text", body, JSON))[0] == 401
    wrong = invoke(handler, http_api_event("POST", "/get_image_by_text", body, {**JSON, "x-api-key": "nope"}))
    assert wrong[0] == 401
    right = invoke(
        handler, http_api_event("POST", "/get_image_by_text", body, {**JSON, "x-api-key": "s3cret-key"})
    )
    assert right[0] == 200
    assert invoke(handler, http_api_event("GET", "/health"))[0] == 200


def test_deleted_images_are_no_longer_found(catalogue: Catalogue, lambda_handler: Mangum) -> None:
    product_id = list(catalogue.keys)[7]
    image_id = image_id_for_key(catalogue.keys[product_id])
    catalogue.services.objects.delete(catalogue.keys[product_id])
    assert [r["batchItemFailures"] for r in catalogue.drain()] == [[]]
    body = json.dumps({"image_base64": base64.b64encode(catalogue.photos[product_id]).decode(), "top_k": 10})
    status, payload = invoke(lambda_handler, http_api_event("POST", "/get_similar_images", body, JSON))
    assert status == 200 and image_id not in {r["image_id"] for r in payload["results"]}
    status, info = invoke(lambda_handler, http_api_event("GET", f"/images/{image_id}"))
    assert status == 404 or info["status"] == "deleted"
    catalogue.upload(product_id)
    catalogue.drain()


def test_a_photo_uploaded_under_a_second_key_shows_once(catalogue: Catalogue, lambda_handler: Mangum) -> None:
    """Pinecone keeps each vector's image hash, so copies collapse on the AWS backend too."""
    product_id = list(catalogue.keys)[5]
    original, copy = catalogue.keys[product_id], f"{PREFIX}second-sku/{product_id}.jpg"
    catalogue.services.objects.put(copy, catalogue.photos[product_id], {"gender": "Unisex"})
    assert [r["batchItemFailures"] for r in catalogue.drain()] == [[]]
    try:
        query = {"image_id": image_id_for_key(original), "top_k": 3}
        found = similar_keys(lambda_handler, query)
        assert len(found) == 3 and copy not in found
        # by the vector alone the copy (same bytes, other tags) is the closest match of all
        every = {**query, "collapse_duplicates": False, "hybrid": False}
        assert similar_keys(lambda_handler, every)[0] == copy
        by_bytes = {"image_base64": base64.b64encode(catalogue.photos[product_id]).decode(), "top_k": 3}
        assert len({original, copy} & set(similar_keys(lambda_handler, by_bytes))) == 1
    finally:
        catalogue.services.objects.delete(copy)
        catalogue.drain()


def similar_keys(handler: Mangum, query: dict[str, Any]) -> list[str]:
    status, payload = invoke(handler, http_api_event("POST", "/get_similar_images", json.dumps(query), JSON))
    assert status == 200, payload
    return [r["key"] for r in payload["results"]]


@pytest.fixture
def http_server(services: Services) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(services), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_the_same_app_over_http(catalogue: Catalogue, http_server: str) -> None:
    product_id = list(catalogue.keys)[2]
    request = urllib.request.Request(
        f"{http_server}/get_similar_images",
        data=json.dumps({"image_base64": base64.b64encode(catalogue.photos[product_id]).decode()}).encode(),
        headers=JSON,
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.loads(response.read())
    assert payload["results"][0]["image_id"] == image_id_for_key(catalogue.keys[product_id])
    assert fetch(payload["results"][0]["url"]) == catalogue.photos[product_id]


def test_module_handler_builds_the_app_once(
    catalogue: Catalogue, tiny_model_dir, monkeypatch, restore_logging
) -> None:
    for name, value in catalogue.stack.env(tiny_model_dir, LOG_FORMAT="json").items():
        monkeypatch.setenv(name, value)
    api_lambda.container_handler.cache_clear()
    try:
        for _ in range(2):
            response = api_lambda.handler(
                http_api_event("POST", "/get_image_by_text", '{"text": "watch"}', JSON), None
            )
            assert response["statusCode"] == 200
        assert api_lambda.container_handler.cache_info().misses == 1
    finally:
        api_lambda.container_handler.cache_clear()
