"""S3ObjectStore against moto's S3 server."""

from __future__ import annotations

import urllib.parse
import urllib.request

import boto3
import pytest
from botocore.config import Config

from fashion_search.errors import InputError, NotFoundError, TransientError
from fashion_search.stores.aws import boto_client
from fashion_search.stores.s3_objects import S3ObjectStore
from tests.plugins.aws_servers import REGION, free_port

pytestmark = pytest.mark.aws


@pytest.fixture
def store(aws_stack) -> S3ObjectStore:
    stack = aws_stack(dim=4)
    settings = stack.settings(presign_ttl_s=120)
    return S3ObjectStore(boto_client(settings, "s3", stack.moto.session), stack.bucket, 120)


def test_put_get_head_round_trip_with_metadata_as_tags(store: S3ObjectStore) -> None:
    store.put("shirts/1.jpg", b"\xff\xd8jpeg", {"gender": "Men", "productDisplayName": "Café Shirt"})
    assert store.get("shirts/1.jpg", max_bytes=100) == b"\xff\xd8jpeg"
    info = store.head("shirts/1.jpg")
    assert info.size == 6
    assert info.etag
    # S3 lower-cases metadata names; non-ASCII values survive as RFC 2047 encoded-words.
    assert info.metadata == {"gender": "Men", "productdisplayname": "Café Shirt"}


def test_get_refuses_objects_over_the_cap_with_413(store: S3ObjectStore) -> None:
    store.put("big.jpg", b"x" * 1000)
    with pytest.raises(InputError) as err:
        store.get("big.jpg", max_bytes=999)
    assert err.value.code == "too_large"
    assert err.value.status_code == 413
    assert store.get("big.jpg", max_bytes=1000) == b"x" * 1000


def test_missing_objects_are_not_found(store: S3ObjectStore) -> None:
    with pytest.raises(NotFoundError):
        store.get("nope.jpg", max_bytes=10)
    with pytest.raises(NotFoundError):
        store.head("nope.jpg")


def test_delete_and_list_with_prefix_and_start_after(store: S3ObjectStore) -> None:
    for key in ["a/1.jpg", "a/2.jpg", "a/3.jpg", "b/1.jpg"]:
        store.put(key, key.encode())
    store.delete("a/2.jpg")
    store.delete("a/never-existed.jpg")  # S3 deletes are idempotent
    assert [o.key for o in store.list("a/")] == ["a/1.jpg", "a/3.jpg"]
    assert [o.key for o in store.list("", start_after="a/1.jpg")] == ["a/3.jpg", "b/1.jpg"]
    assert next(iter(store.list("b/"))).size == len(b"b/1.jpg")


def test_url_is_a_presigned_get_with_the_configured_ttl(store: S3ObjectStore) -> None:
    store.put("dir/with space+plus.jpg", b"pixels")
    url = store.url("dir/with space+plus.jpg")
    query = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)
    assert query["X-Amz-Expires"] == ["120"]
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.read() == b"pixels"


def test_unreachable_endpoint_is_transient(aws_test_env: None) -> None:
    client = boto3.session.Session().client(
        "s3",
        region_name=REGION,
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    with pytest.raises(TransientError):
        S3ObjectStore(client, "bucket", 60).get("k.jpg", max_bytes=10)


def test_put_many_stores_each_object_with_its_metadata(store: S3ObjectStore) -> None:
    store.put_many([("a/1.jpg", b"one", {"colour": "Black"}), ("a/2.jpg", b"two", {})])
    assert [i.key for i in store.list("a/")] == ["a/1.jpg", "a/2.jpg"]  # listings carry no metadata
    assert store.head("a/1.jpg").metadata == {"colour": "Black"}
    assert (store.get("a/2.jpg", max_bytes=10), store.head("a/2.jpg").metadata) == (b"two", {})
