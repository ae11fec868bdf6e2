"""DynamoDbMetadataStore against moto's DynamoDB server."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from fashion_search.errors import TransientError
from fashion_search.records import ImageRecord
from fashion_search.stores.aws import boto_client
from fashion_search.stores.dynamodb_metadata import DynamoDbMetadataStore, sequencer_order

pytestmark = pytest.mark.aws


@pytest.fixture
def client(aws_stack) -> tuple[Any, str]:
    stack = aws_stack(dim=4)
    return boto_client(stack.settings(), "dynamodb", stack.moto.session), stack.table


@pytest.fixture
def store(client: tuple[Any, str]) -> DynamoDbMetadataStore:
    return DynamoDbMetadataStore(*client)


def record(n: int, **changes: Any) -> ImageRecord:
    base = ImageRecord(image_id=f"id{n:04d}", key=f"k/{n}.jpg", status="indexed", sha256="ab" * 32)
    return base.with_(**changes) if changes else base


def test_round_trip_keeps_every_field_and_the_embedding_bits(store: DynamoDbMetadataStore) -> None:
    embedding = np.array([0.1, -0.25, 1e-7, 3.0], dtype=np.float32)
    rec = record(
        1,
        width=60,
        height=80,
        format="JPEG",
        size_bytes=1234,
        tags={"gender": "Women", "name": "Café"},
        model_id="tiny@1",
        embedding=embedding,
        sequencer="0A1B",
    )
    assert store.put(rec)
    got = store.get("id0001")
    assert got is not None
    assert got.embedding is not None and got.embedding.dtype == np.float32
    np.testing.assert_array_equal(got.embedding, embedding)
    assert dataclasses.replace(got, embedding=None) == dataclasses.replace(rec, embedding=None)
    assert store.get("absent") is None


def test_failed_record_keeps_its_reason_without_embedding(store: DynamoDbMetadataStore) -> None:
    store.put(record(2, status="failed", reason="not_an_image: cannot identify image file"))
    got = store.get("id0002")
    assert got is not None and got.status == "failed" and got.embedding is None
    assert got.reason == "not_an_image: cannot identify image file"


@pytest.mark.parametrize(
    ("older", "newer"),
    [("1", "2"), ("9", "0A"), ("00FF", "100"), ("0060D1D4EE11E5B1AA", "0060D1D4EE11E5B1AB"), ("ff", "100")],
)
def test_sequencer_order_matches_numeric_order(older: str, newer: str) -> None:
    assert sequencer_order(older) < sequencer_order(newer)
    assert sequencer_order(newer.lower()) == sequencer_order("000" + newer.upper())


def test_sequencer_order_rejects_non_hex() -> None:
    with pytest.raises(ValueError):
        sequencer_order("12G4")


def test_put_refuses_a_stale_sequencer_and_accepts_equal_or_newer(store: DynamoDbMetadataStore) -> None:
    assert store.put(record(3, sequencer="0B", tags={"v": "b"}))
    assert not store.put(record(3, sequencer="A", tags={"v": "a"}))  # 0xA < 0x0B: stale
    assert store.get("id0003").tags == {"v": "b"}
    assert store.put(record(3, sequencer="000B", tags={"v": "redelivery"}))  # equal: rewrite
    assert store.put(record(3, sequencer="10", status="deleted", tags={}))
    assert store.get("id0003").status == "deleted"
    assert store.put(record(3, sequencer=None, tags={"v": "backfill"}))  # no sequencer: never blocked
    assert store.put(record(3, sequencer="1", tags={"v": "after-backfill"}))
    assert store.get("id0003").tags == {"v": "after-backfill"}


def test_batches_beyond_the_request_limits(store: DynamoDbMetadataStore) -> None:
    records = [record(n, tags={"n": str(n)}) for n in range(130)]
    store.put_many([*records, record(0, tags={"n": "last wins"})])
    got = store.get_many([r.image_id for r in records] + ["absent", "id0001"])
    assert len(got) == 130
    assert got["id0000"].tags == {"n": "last wins"}
    assert got["id0129"].tags == {"n": "129"}


def test_iter_records_and_counts_by_status(store: DynamoDbMetadataStore) -> None:
    store.put_many([record(n, status="failed" if n % 3 == 0 else "indexed") for n in range(12)])
    store.put(record(100, status="deleted"))
    assert sorted(r.image_id for r in store.iter_records("failed")) == [
        "id0000",
        "id0003",
        "id0006",
        "id0009",
    ]
    assert len(list(store.iter_records())) == 13
    assert store.counts() == {"indexed": 8, "failed": 4, "deleted": 1}


class StubPartialBatches:
    """moto always processes whole batches; DynamoDB may not. This wrapper sends only the first
    ``accept`` entries of each batch to the real client and returns the rest as unprocessed, the
    way DynamoDB answers under throttling."""

    def __init__(self, client: Any, table: str, accept: int) -> None:
        self._client, self._table, self.accept, self.calls = client, table, accept, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        items = RequestItems[self._table]
        if self.accept:
            self._client.batch_write_item(RequestItems={self._table: items[: self.accept]})
        rest = items[self.accept :]
        return {"UnprocessedItems": {self._table: rest} if rest else {}}

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        request = RequestItems[self._table]
        keys = request["Keys"]
        response = self._client.batch_get_item(
            RequestItems={self._table: {**request, "Keys": keys[: self.accept]}}
        )
        rest = keys[self.accept :]
        response["UnprocessedKeys"] = {self._table: {**request, "Keys": rest}} if rest else {}
        return response


def test_unprocessed_items_and_keys_are_retried(client: tuple[Any, str]) -> None:
    stub = StubPartialBatches(*client, accept=10)
    store = DynamoDbMetadataStore(stub, client[1], sleep=lambda s: None)
    store.put_many([record(n) for n in range(25)])
    assert stub.calls == 3  # 10 + 10 + 5
    assert len(store.get_many([f"id{n:04d}" for n in range(25)])) == 25
    assert stub.calls == 6


def test_items_still_unprocessed_after_the_last_attempt_are_transient(client: tuple[Any, str]) -> None:
    stub = StubPartialBatches(*client, accept=0)
    store = DynamoDbMetadataStore(stub, client[1], max_attempts=3, sleep=lambda s: None)
    with pytest.raises(TransientError):
        store.put_many([record(1)])
    assert stub.calls == 3
