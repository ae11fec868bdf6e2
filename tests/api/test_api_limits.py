"""API key, CORS, request body limits, and concurrent serving."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from fashion_search.api.app import create_app
from fashion_search.records import image_id_for_key

KEY = "s3cr3t-key"
PROTECTED = [
    ("post", "/get_image_by_text", {"json": {"text": "shirt"}}),
    ("post", "/get_similar_images", {"json": {"image_id": "0" * 24}}),
    ("get", "/facets", {}),
    ("get", "/images/" + "0" * 24, {}),
    ("get", "/images/" + "0" * 24 + "/file", {}),
]


@pytest.fixture
def keyed(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(api_key=SecretStr(KEY))


@pytest.mark.parametrize(("method", "path", "kwargs"), PROTECTED)
@pytest.mark.parametrize("given", [None, "", "wrong", KEY + "x", KEY.upper()])
def test_protected_routes_need_the_right_key(
    keyed: TestClient, method: str, path: str, kwargs: dict[str, Any], given: str | None
) -> None:
    headers = {} if given is None else {"x-api-key": given}
    response = getattr(keyed, method)(path, headers=headers, **kwargs)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_the_right_key_is_let_through(keyed: TestClient, sample_paths: list[Path]) -> None:
    assert (
        keyed.post("/get_image_by_text", json={"text": "shirt"}, headers={"x-api-key": KEY}).status_code
        == 200
    )
    image_id = image_id_for_key(sample_paths[0].name)
    assert keyed.get(f"/images/{image_id}/file", headers={"x-api-key": KEY}).status_code == 200


@pytest.mark.parametrize("path", ["/health", "/docs", "/openapi.json"])
def test_health_and_docs_need_no_key(keyed: TestClient, path: str) -> None:
    assert keyed.get(path).status_code == 200


def test_an_unresolved_key_secret_refuses_to_start(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    services = client.app.state.services  # type: ignore[attr-defined]
    services.settings = services.settings.model_copy(
        update={"api_key_secret_arn": "arn:aws:secretsmanager:x"}
    )
    with pytest.raises(ValueError, match="api_key_secret_arn"):
        create_app(services)


def test_cors_preflight_for_the_front_end(make_client: Callable[..., TestClient]) -> None:
    client = make_client(cors_origins=("https://ui.example",), api_key=SecretStr(KEY))
    preflight = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type,x-api-key",
    }
    allowed = client.options("/get_image_by_text", headers={"origin": "https://ui.example", **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://ui.example"
    assert "x-api-key" in allowed.headers["access-control-allow-headers"].lower()
    other = client.options("/get_image_by_text", headers={"origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in other.headers
    # Errors carry CORS headers too, so the front end can read them.
    refused = client.post("/get_image_by_text", json={"text": "x"}, headers={"origin": "https://ui.example"})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == "https://ui.example"


def test_no_cors_headers_without_configured_origins(client: TestClient) -> None:
    response = client.post("/get_image_by_text", json={"text": "x"}, headers={"origin": "https://ui.example"})
    assert "access-control-allow-origin" not in response.headers


def test_a_declared_oversized_body_is_refused_upfront(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_request_bytes=10_000)
    response = client.post("/get_image_by_text", json={"text": "x" * 20_000})
    assert (response.status_code, response.json()["error"]) == (413, "request_too_large")
    assert "10000" in response.json()["detail"]


@pytest.mark.parametrize(
    ("content_type", "head", "filler", "tail"),
    [
        ("application/json", b'{"image_base64": "', b"A", b'"}'),
        (
            "multipart/form-data; boundary=b",
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n',
            b"\xff",
            b"\r\n--b--\r\n",
        ),
    ],
)
def test_an_undeclared_oversized_body_is_cut_off(
    make_client: Callable[..., TestClient], content_type: str, head: bytes, filler: bytes, tail: bytes
) -> None:
    client = make_client(max_request_bytes=10_000)

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield head
        for _ in range(100):
            yield filler * 1000
        yield tail

    response = client.post("/get_similar_images", content=chunks(), headers={"content-type": content_type})
    assert (response.status_code, response.json()["error"]) == (413, "request_too_large")


def test_a_streamed_body_is_answered_413_before_the_client_finishes(
    make_live_server: Callable[..., str],
) -> None:
    """Over a real socket: the 413 arrives while the client is still sending its 20 MB."""
    limit, chunk, total_chunks = 100_000, b"A" * 16384, 1280
    address = urlsplit(make_live_server(max_request_bytes=limit))
    sent = 0
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(
            b"POST /get_similar_images HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b'Transfer-Encoding: chunked\r\n\r\n13\r\n{"image_base64": "A\r\n'
        )
        try:
            for _ in range(total_chunks):
                if select.select([sock], [], [], 0)[0]:
                    break  # the answer is in
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except OSError:  # the server closed the connection on us
            pass
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"request_too_large" in answer
    assert sent < total_chunks * len(chunk)


def test_concurrent_requests_are_served_concurrently(
    make_client: Callable[..., TestClient], url_server: Any
) -> None:
    """Four URL queries whose image server only answers once all four are waiting on it at once.

    If the app handled requests one at a time (an endpoint blocking the event loop), the first
    download would wait at the server's barrier alone, the barrier would break, and the requests
    would fail: overlap is shown by the server, not by timing the client.
    """
    client = make_client(url_allow_private=True)
    url_server.barrier = threading.Barrier(4, timeout=8)
    url_server.rendezvous.clear()
    responses: list[Any] = [None] * 4

    def query(n: int) -> None:
        responses[n] = client.post("/get_similar_images", json={"url": url_server.url("/rendezvous.jpg")})

    threads = [threading.Thread(target=query, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
    assert len(url_server.rendezvous) == 4
    last_arrival = max(arrived for arrived, _ in url_server.rendezvous)
    first_departure = min(left for _, left in url_server.rendezvous)
    assert last_arrival <= first_departure  # all four were inside the server at the same time
