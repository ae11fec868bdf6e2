"""Every kind of bad input gets its 4xx with ``{"error": code, "detail": ...}``, never a 5xx."""

from __future__ import annotations

import base64
import io
import logging
import sqlite3
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from fashion_search.api.app import create_app
from fashion_search.config import Settings
from fashion_search.encoder import Encoder
from fashion_search.services import build_services

TEXT = "/get_image_by_text"
SIMILAR = "/get_similar_images"


def assert_error(response: Any, status: int, code: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == code and body["detail"], body
    return body


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def noise_png(side: int) -> bytes:
    """A valid image that does not compress, for size limits."""
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims huge dimensions in a few dozen bytes (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


# --- request shape -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [TEXT, SIMILAR])
def test_malformed_json(client: TestClient, path: str) -> None:
    response = client.post(path, content=b'{"text": "shirt",', headers={"content-type": "application/json"})
    assert_error(response, 400, "malformed_json")


@pytest.mark.parametrize("path", [TEXT, SIMILAR])
def test_json_that_is_not_an_object(client: TestClient, path: str) -> None:
    assert_error(client.post(path, json=["shirt"]), 422, "invalid_request")


def test_missing_text(client: TestClient) -> None:
    body = assert_error(client.post(TEXT, json={"top_k": 3}), 422, "invalid_request")
    assert "text" in body["detail"]


@pytest.mark.parametrize("text", [None, 42, ["shirt"]])
def test_text_of_the_wrong_type(client: TestClient, text: Any) -> None:
    assert_error(client.post(TEXT, json={"text": text}), 422, "invalid_request")


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_or_whitespace_text(client: TestClient, text: str) -> None:
    assert_error(client.post(TEXT, json={"text": text}), 400, "empty_text")


def test_absurdly_long_text(client: TestClient) -> None:
    body = assert_error(client.post(TEXT, json={"text": "dress " * 200_000}), 400, "text_too_long")
    assert "1000" in body["detail"]


@pytest.mark.parametrize("top_k", [0, -1, 101])
def test_top_k_out_of_range(client: TestClient, top_k: int) -> None:
    assert_error(client.post(TEXT, json={"text": "shirt", "top_k": top_k}), 400, "invalid_top_k")
    assert_error(client.post(SIMILAR, json={"image_id": "x", "top_k": top_k}), 400, "invalid_top_k")


def test_top_k_limit_follows_settings(make_client: Callable[..., TestClient]) -> None:
    small = make_client(max_top_k=5)
    assert small.post(TEXT, json={"text": "shirt", "top_k": 5}).status_code == 200
    assert_error(small.post(TEXT, json={"text": "shirt", "top_k": 6}), 400, "invalid_top_k")


@pytest.mark.parametrize("top_k", ["3", 2.5, True, None, [3]])
def test_top_k_of_the_wrong_type(client: TestClient, top_k: Any) -> None:
    body = assert_error(client.post(TEXT, json={"text": "shirt", "top_k": top_k}), 422, "invalid_request")
    assert "top_k" in body["detail"]


@pytest.mark.parametrize(
    "filters",
    [
        {"gender": 1},
        {"gender": {"$in": ["Men"]}},
        {"gender": ["Men", 2]},
        {"gender": [["Men"]]},
        ["gender", "Men"],
        "gender=Men",
    ],
)
def test_unknown_filter_shapes(client: TestClient, filters: Any) -> None:
    body = assert_error(client.post(TEXT, json={"text": "shirt", "filters": filters}), 422, "invalid_request")
    assert "filters" in body["detail"]


@pytest.mark.parametrize("filters", [{"gender": []}, {"_key": "15970.jpg"}, {"": "x"}])
def test_filters_that_cannot_match(client: TestClient, filters: Any) -> None:
    assert_error(client.post(TEXT, json={"text": "shirt", "filters": filters}), 400, "invalid_filters")


@pytest.mark.parametrize("min_score", ["high", [0.2], {"gte": 0.2}])
def test_min_score_of_the_wrong_type(client: TestClient, min_score: Any) -> None:
    assert_error(client.post(TEXT, json={"text": "shirt", "min_score": min_score}), 422, "invalid_request")


def test_non_finite_min_score(client: TestClient) -> None:
    for path, payload in (
        (TEXT, b'{"text": "shirt", "min_score": NaN}'),
        (SIMILAR, b'{"image_id": "x", "min_score": -Infinity}'),
    ):
        response = client.post(path, content=payload, headers={"content-type": "application/json"})
        assert_error(response, 422, "invalid_request")


def test_unknown_fields_are_refused(client: TestClient) -> None:
    body = assert_error(client.post(TEXT, json={"text": "shirt", "topk": 5}), 422, "invalid_request")
    assert "topk" in body["detail"]


def test_unsupported_content_type(client: TestClient) -> None:
    response = client.post(
        SIMILAR, content=b"https://example.com/a.jpg", headers={"content-type": "text/plain"}
    )
    assert_error(response, 415, "unsupported_media_type")


# --- image sources --------------------------------------------------------------------------------


def test_no_image_source(client: TestClient) -> None:
    assert_error(client.post(SIMILAR, json={"top_k": 3}), 422, "invalid_request")


@pytest.mark.parametrize(
    "payload",
    [
        {"url": "https://example.com/a.jpg", "image_id": "abc"},
        {"image_base64": "aGk=", "image_id": "abc"},
        {"url": "https://example.com/a.jpg", "image_base64": "aGk=", "image_id": "abc"},
    ],
)
def test_several_image_sources(client: TestClient, payload: dict[str, str]) -> None:
    body = assert_error(client.post(SIMILAR, json=payload), 422, "invalid_request")
    assert "exactly one" in body["detail"]


def test_unknown_image_id(client: TestClient) -> None:
    assert_error(client.post(SIMILAR, json={"image_id": "0" * 24}), 404, "not_found")


@pytest.mark.parametrize("path", ["/images/{}", "/images/{}/file"])
def test_unknown_image_id_on_image_routes(client: TestClient, path: str) -> None:
    assert_error(client.get(path.format("0" * 24)), 404, "not_found")


@pytest.mark.parametrize("payload", ["@@not base64@@", "aGk", "data:image/png;base64,%%%"])
def test_invalid_base64(client: TestClient, payload: str) -> None:
    assert_error(client.post(SIMILAR, json={"image_base64": payload}), 400, "invalid_base64")


def test_non_image_bytes(client: TestClient) -> None:
    assert_error(
        client.post(SIMILAR, json={"image_base64": b64(b"%PDF-1.7 not an image" * 20)}), 400, "not_an_image"
    )


def test_empty_image(client: TestClient) -> None:
    assert_error(client.post(SIMILAR, files={"file": ("a.jpg", b"", "image/jpeg")}), 400, "empty_image")


def test_truncated_image(client: TestClient, sample_paths: list[Path]) -> None:
    data = sample_paths[0].read_bytes()
    assert_error(
        client.post(SIMILAR, json={"image_base64": b64(data[: len(data) // 2])}), 400, "corrupt_image"
    )


def test_corrupt_image(client: TestClient, sample_paths: list[Path]) -> None:
    data = bytearray(sample_paths[0].read_bytes())
    data[200:600] = b"\xff" * 400  # header intact, entropy-coded data garbage
    response = client.post(SIMILAR, files={"file": ("a.jpg", bytes(data), "image/jpeg")})
    assert_error(response, 400, "corrupt_image")


def test_decompression_bomb(client: TestClient) -> None:
    response = client.post(SIMILAR, json={"image_base64": b64(png_header_only(100_000, 100_000))})
    assert_error(response, 413, "too_many_pixels")


def test_pixel_limit_follows_settings(make_client: Callable[..., TestClient]) -> None:
    response = make_client(max_image_pixels=10_000).post(
        SIMILAR, files={"file": ("n.png", noise_png(101), "image/png")}
    )
    assert_error(response, 413, "too_many_pixels")


@pytest.mark.parametrize("how", ["base64", "multipart"])
def test_image_over_the_size_limit(make_client: Callable[..., TestClient], how: str) -> None:
    client = make_client(max_image_bytes=20_000)
    data = noise_png(100)  # ~30 kB
    if how == "base64":
        response = client.post(SIMILAR, json={"image_base64": b64(data)})
    else:
        response = client.post(SIMILAR, files={"file": ("n.png", data, "image/png")})
    assert_error(response, 413, "too_large")


# --- multipart form fields ---------------------------------------------------------------------------


def test_multipart_without_a_file(client: TestClient) -> None:
    response = client.post(SIMILAR, data={"top_k": "3"}, files={"other": ("a.txt", b"x", "text/plain")})
    assert_error(response, 422, "invalid_request")


def test_multipart_file_sent_as_a_plain_field(client: TestClient) -> None:
    response = client.post(SIMILAR, data={"file": "not a file"}, files={"x": ("x", b"", "text/plain")})
    assert_error(response, 422, "invalid_request")


@pytest.mark.parametrize(
    "fields",
    [
        {"top_k": "abc"},
        {"top_k": "0.5"},
        {"filters": "gender=Men"},
        {"filters": '{"gender": 1}'},
        {"min_score": "high"},
        {"colour": "red"},
    ],
)
def test_multipart_bad_form_fields(
    client: TestClient, sample_paths: list[Path], fields: dict[str, str]
) -> None:
    files = {"file": ("a.jpg", sample_paths[0].read_bytes(), "image/jpeg")}
    assert_error(client.post(SIMILAR, files=files, data=fields), 422, "invalid_request")


def test_multipart_top_k_out_of_range(client: TestClient, sample_paths: list[Path]) -> None:
    files = {"file": ("a.jpg", sample_paths[0].read_bytes(), "image/jpeg")}
    assert_error(client.post(SIMILAR, files=files, data={"top_k": "1000"}), 400, "invalid_top_k")


def test_multipart_with_two_files(client: TestClient, sample_paths: list[Path]) -> None:
    data = sample_paths[0].read_bytes()
    response = client.post(
        SIMILAR, files=[("file", ("a.jpg", data, "image/jpeg")), ("file", ("b.jpg", data, "image/jpeg"))]
    )
    assert_error(response, 400, "bad_request")


def test_multipart_garbage(client: TestClient) -> None:
    response = client.post(
        SIMILAR, content=b"--xyz\r\ngarbage", headers={"content-type": "multipart/form-data; boundary=xyz"}
    )
    assert_error(response, 422, "invalid_request")  # parses as a form without the file


# --- URLs through the API ---------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["ftp://example.com/a.jpg", "file:///etc/passwd", "not a url"])
def test_url_scheme_other_than_http(client: TestClient, url: str) -> None:
    assert_error(client.post(SIMILAR, json={"url": url}), 400, "invalid_url")


def test_url_resolving_to_loopback(client: TestClient, url_server: Any) -> None:
    assert_error(client.post(SIMILAR, json={"url": url_server.url("/image.jpg")}), 400, "url_forbidden")


def test_url_redirecting_to_cloud_metadata(make_client: Callable[..., TestClient], url_server: Any) -> None:
    lab = make_client(url_allow_private=True)
    url = url_server.url("/redirect?to=http://169.254.169.254/latest/meta-data/")
    assert_error(lab.post(SIMILAR, json={"url": url}), 400, "url_forbidden")


def test_url_with_a_non_image_body(make_client: Callable[..., TestClient], url_server: Any) -> None:
    lab = make_client(url_allow_private=True)
    assert_error(lab.post(SIMILAR, json={"url": url_server.url("/text")}), 400, "not_an_image")


def test_url_answering_404(make_client: Callable[..., TestClient], url_server: Any) -> None:
    lab = make_client(url_allow_private=True)
    assert_error(lab.post(SIMILAR, json={"url": url_server.url("/status?code=404")}), 400, "url_fetch_failed")


def test_url_that_drips_slowly(make_client: Callable[..., TestClient], url_server: Any) -> None:
    lab = make_client(url_allow_private=True, url_read_timeout_s=1.0)
    assert_error(lab.post(SIMILAR, json={"url": url_server.url("/drip-body")}), 400, "url_timeout")


def test_url_with_an_endless_body(make_client: Callable[..., TestClient], url_server: Any) -> None:
    lab = make_client(url_allow_private=True, max_image_bytes=100_000)
    assert_error(lab.post(SIMILAR, json={"url": url_server.url("/endless")}), 413, "too_large")


# --- routing and failures ----------------------------------------------------------------------------------


def test_unknown_route(client: TestClient) -> None:
    assert_error(client.get("/no/such/route"), 404, "not_found")


def test_wrong_method(client: TestClient) -> None:
    assert_error(client.get(TEXT), 405, "method_not_allowed")


def test_unexpected_failure_is_a_bare_500_and_logged(
    tmp_path: Path, tiny_model_dir: Path, api_encoder: Encoder, caplog: pytest.LogCaptureFixture
) -> None:
    services = build_services(Settings(model_dir=tiny_model_dir, data_dir=tmp_path), encoder=api_encoder)
    with sqlite3.connect(services.settings.sqlite_path) as db:  # the metadata store breaks underneath
        db.execute("DROP TABLE images")
    with (
        TestClient(create_app(services), raise_server_exceptions=False) as client,
        caplog.at_level(logging.ERROR),
    ):
        response = client.get("/images/" + "0" * 24)
    assert response.status_code == 500
    assert response.json() == {"error": "internal", "detail": "internal server error"}  # nothing leaked
    assert any(r.exc_info for r in caplog.records if r.message == "unhandled error")
