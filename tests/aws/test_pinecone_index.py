"""PineconeVectorIndex through the official pinecone client against a needledb server."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from pinecone import Pinecone

from fashion_search.errors import ModelError, TransientError
from fashion_search.stores.base import VectorItem
from fashion_search.stores.pinecone_index import (
    MAX_UPSERT_BYTES,
    MAX_VECTORS_PER_UPSERT,
    PineconeVectorIndex,
    pinecone_filter,
    upsert_batches,
)
from tests.plugins.aws_servers import free_port

pytestmark = pytest.mark.aws
DIM = 8


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def index_for(host: str, api_key: str, namespace: str = "") -> PineconeVectorIndex:
    return PineconeVectorIndex(Pinecone(api_key=api_key).Index(host=host), DIM, namespace)


@pytest.fixture
def stack(aws_stack):
    return aws_stack(dim=DIM)


@pytest.fixture
def index(stack) -> PineconeVectorIndex:
    return index_for(stack.pinecone_host, stack.pinecone_api_key, "catalogue")


def items(n: int) -> list[VectorItem]:
    colours = ["Black", "Blue", "Red"]
    return [
        VectorItem(
            f"id{i}",
            unit(i),
            {"baseColour": colours[i % 3], "gender": "Men" if i < 6 else "Women", "_key": f"k/{i}.jpg"},
        )
        for i in range(n)
    ]


def test_upsert_query_fetch_delete_count(index: PineconeVectorIndex) -> None:
    index.upsert(items(9))
    assert index.count() == 9
    best = index.query(unit(4), top_k=3)
    assert best[0].id == "id4" and best[0].score == pytest.approx(1.0, abs=1e-5)
    assert best[0].metadata == {"baseColour": "Blue", "gender": "Men", "_key": "k/4.jpg"}
    assert [m.score for m in best] == sorted((m.score for m in best), reverse=True)
    fetched = index.fetch(["id1", "id2", "absent"])
    assert set(fetched) == {"id1", "id2"}
    np.testing.assert_allclose(fetched["id1"].vector, unit(1), atol=1e-6)
    assert fetched["id1"].metadata == {"baseColour": "Blue", "gender": "Men", "_key": "k/1.jpg"}
    index.delete(["id1", "id2", "absent"])
    assert index.count() == 7
    assert index.fetch(["id1"]) == {}
    index.upsert([VectorItem("id3", unit(100), {"baseColour": "Green"})])  # overwrite, not duplicate
    assert index.count() == 7
    assert index.query(unit(100), top_k=1)[0].metadata == {"baseColour": "Green"}


def test_filters_are_any_of_within_a_tag_and_all_of_across_tags(index: PineconeVectorIndex) -> None:
    index.upsert(items(9))
    hits = index.query(unit(0), top_k=9, filters={"baseColour": ["Black", "Red"], "gender": ["Women"]})
    assert sorted(m.id for m in hits) == ["id6", "id8"]
    assert {m.id for m in index.query(unit(0), top_k=9, filters={"gender": ["Men"]})} == {
        f"id{i}" for i in range(6)
    }
    assert index.query(unit(0), top_k=9, filters={"gender": []}) == []


def test_pinecone_filter_grammar() -> None:
    assert pinecone_filter({"a": ["x"]}) == {"a": {"$in": ["x"]}}
    assert pinecone_filter({"a": ["x", "y"], "b": ["z"]}) == {
        "$and": [{"a": {"$in": ["x", "y"]}}, {"b": {"$in": ["z"]}}]
    }


def test_exclude_ids_still_returns_top_k(index: PineconeVectorIndex) -> None:
    index.upsert(items(9))
    everything = [m.id for m in index.query(unit(5), top_k=9)]
    hits = index.query(unit(5), top_k=3, exclude_ids=["id5"])
    assert [m.id for m in hits] == everything[1:4]


def test_namespaces_are_isolated(stack, index: PineconeVectorIndex) -> None:
    other = index_for(stack.pinecone_host, stack.pinecone_api_key, "other")
    default = index_for(stack.pinecone_host, stack.pinecone_api_key)
    index.upsert(items(3))
    default.upsert(items(2))
    assert (index.count(), other.count(), default.count()) == (3, 0, 2)
    assert other.query(unit(0), top_k=5) == []


def test_large_upserts_are_split_within_pinecone_limits(index: PineconeVectorIndex) -> None:
    many = [VectorItem(f"v{i}", unit(i), {"n": str(i)}) for i in range(2100)]
    index.upsert(many)
    assert index.count() == 2100


def test_upsert_batches_respect_count_and_size_limits() -> None:
    small = [{"id": str(i), "values": [0.5] * 4, "metadata": {}} for i in range(2500)]
    assert [len(b) for b in upsert_batches(small)] == [MAX_VECTORS_PER_UPSERT, MAX_VECTORS_PER_UPSERT, 500]
    wide = [
        {"id": str(i), "values": [0.123456789] * 2048, "metadata": {"t": "x" * 20_000}} for i in range(100)
    ]
    batches = list(upsert_batches(wide))
    assert len(batches) > 1 and sum(len(b) for b in batches) == 100
    assert all(len(json.dumps(b)) < MAX_UPSERT_BYTES for b in batches)


def test_dimension_mismatch_is_a_model_error(index: PineconeVectorIndex) -> None:
    with pytest.raises(ModelError):
        index.upsert([VectorItem("x", np.ones(DIM + 1, dtype=np.float32))])


def test_unreachable_server_is_transient() -> None:
    index = index_for(f"http://127.0.0.1:{free_port()}/indexes/none", "key")
    with pytest.raises(TransientError):
        index.upsert(items(1))


class StubThrottlingProxy(ThreadingHTTPServer):
    """Answers 429 to the first ``throttle`` requests, then forwards to the real server: needledb
    never throttles, Pinecone does."""

    def __init__(self, upstream: str, throttle: int) -> None:
        self.upstream, self.throttle, self.seen = upstream, throttle, 0
        super().__init__(("127.0.0.1", 0), ProxyHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ProxyHandler(BaseHTTPRequestHandler):
    server: StubThrottlingProxy

    def _forward(self) -> None:
        self.server.seen += 1
        if self.server.seen <= self.server.throttle:
            self.send_response(429)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        request = urllib.request.Request(
            self.server.upstream + self.path, data=body, headers=headers, method=self.command
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as err:
            status, payload = err.code, err.read()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _forward

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def throttling_proxy(needledb_server) -> Iterator[StubThrottlingProxy]:
    proxy = StubThrottlingProxy(needledb_server.url, throttle=2)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    yield proxy
    proxy.shutdown()


def test_throttled_requests_are_retried_with_backoff(stack, throttling_proxy: StubThrottlingProxy) -> None:
    host = stack.pinecone_host.replace(stack.pinecone_host.split("/indexes/")[0], throttling_proxy.url)
    index = index_for(host, stack.pinecone_api_key)
    index.upsert(items(2))
    assert throttling_proxy.seen == 3  # two 429s, then the upsert that landed
    assert index.count() == 2
