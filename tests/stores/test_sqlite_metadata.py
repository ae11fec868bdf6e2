"""SqliteMetadataStore: records survive, sequencers order writes, other connections see them."""

from __future__ import annotations

import random
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fashion_search.records import ImageRecord, image_id_for_key
from fashion_search.stores.base import MetadataStore
from fashion_search.stores.sqlite_metadata import SqliteMetadataStore


def record(key: str, **changes: object) -> ImageRecord:
    base = ImageRecord(image_id=image_id_for_key(key), key=key, status="indexed")
    return base.with_(**changes) if changes else base


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "meta" / "metadata.sqlite3"


@pytest.fixture
def store(path: Path) -> SqliteMetadataStore:
    return SqliteMetadataStore(path)


def test_implements_the_protocol(store: SqliteMetadataStore) -> None:
    assert isinstance(store, MetadataStore)


def test_every_field_round_trips_and_survives_a_restart(store: SqliteMetadataStore, path: Path) -> None:
    embedding = np.random.default_rng(0).standard_normal(16).astype(np.float32)
    full = record(
        "shoes/ü 1.jpg",
        sha256="ab" * 32,
        width=60,
        height=80,
        format="JPEG",
        size_bytes=1234,
        tags={"gender": "Men", "productDisplayName": "Café « noir » 🙂"},
        model_id="tiny@1",
        embedding=embedding,
        sequencer="0A1B",
    )
    failed = record("bad.jpg", status="failed", reason="not_an_image: cannot identify image file")
    assert store.put(full)
    assert store.put(failed)
    store.close()

    reopened = SqliteMetadataStore(path)
    got = reopened.get(full.image_id)
    assert got is not None
    assert got.embedding is not None and got.embedding.dtype == np.float32
    np.testing.assert_array_equal(got.embedding, embedding)
    assert replace(got, embedding=None) == replace(full, embedding=None)
    assert reopened.get(failed.image_id) == failed  # embedding None compares equal
    assert reopened.get("absent") is None


@pytest.mark.parametrize(
    ("stored", "candidate", "written"),
    [
        ("0A", "0B", True),
        ("0B", "0A", False),
        ("0B", "0B", True),  # a redelivery is written again, finishing interrupted work
        ("FF", "100", True),  # hex of different lengths compares as a number
        ("100", "FF", False),
        ("ff", "0100", True),  # case and padding do not matter
        (None, "01", True),
        ("01", None, True),  # local ingest and backfill carry no sequencer and always write
        (None, None, True),
    ],
)
def test_conditional_put_respects_sequencers(
    store: SqliteMetadataStore, stored: str | None, candidate: str | None, written: bool
) -> None:
    first = record("k.jpg", sha256="first", sequencer=stored)
    second = record("k.jpg", sha256="second", sequencer=candidate)
    assert store.put(first)
    assert store.put(second) is written
    got = store.get(first.image_id)
    assert got is not None and got.sha256 == ("second" if written else "first")


def test_concurrent_conditional_puts_keep_the_newest(path: Path) -> None:
    """Two store instances (two processes' worth of connections), many threads, shuffled events."""
    stores = [SqliteMetadataStore(path), SqliteMetadataStore(path)]
    sequencers = [f"{n:X}" for n in range(1, 201)]
    random.Random(1).shuffle(sequencers)
    key = "contested.jpg"
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for seq in sequencers[n::8]:
                stores[n % 2].put(record(key, sha256=seq, sequencer=seq))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    got = stores[0].get(image_id_for_key(key))
    assert got is not None and got.sequencer == "C8" and got.sha256 == "C8"


def test_second_instance_sees_writes(path: Path) -> None:
    writer, reader = SqliteMetadataStore(path), SqliteMetadataStore(path)
    assert reader.get(image_id_for_key("a")) is None
    writer.put(record("a", sha256="1"))
    got = reader.get(image_id_for_key("a"))
    assert got is not None and got.sha256 == "1"
    writer.put_many([record("b"), record("c", status="deleted")])
    assert reader.counts() == {"indexed": 2, "failed": 0, "deleted": 1}


def test_put_many_is_unconditional_and_get_many_skips_unknown(store: SqliteMetadataStore) -> None:
    store.put(record("a", sequencer="FF", sha256="old"))
    records = [record(f"k{n}", tags={"n": str(n)}) for n in range(1200)] + [record("a", sha256="new")]
    store.put_many(records)
    ids = [r.image_id for r in records] + ["unknown"]
    found = store.get_many(ids)
    assert set(found) == {r.image_id for r in records}
    assert found[image_id_for_key("a")].sha256 == "new"
    assert found[image_id_for_key("k7")].tags == {"n": "7"}
    assert store.get_many([]) == {}


def test_iter_records_pages_through_everything_and_filters_by_status(store: SqliteMetadataStore) -> None:
    statuses = ["indexed", "failed", "deleted"]
    store.put_many([record(f"k{n}", status=statuses[n % 3]) for n in range(1100)])
    everything = list(store.iter_records())
    assert len(everything) == 1100
    assert len({r.image_id for r in everything}) == 1100
    failed = list(store.iter_records("failed"))
    assert {r.key for r in failed} == {f"k{n}" for n in range(1, 1100, 3)}
    assert store.counts() == {"indexed": 367, "failed": 367, "deleted": 366}


def test_writing_while_iterating_does_not_deadlock(store: SqliteMetadataStore) -> None:
    store.put_many([record(f"k{n}") for n in range(1000)])
    for r in store.iter_records("indexed"):
        store.put(r.with_(status="deleted"))
    assert store.counts() == {"indexed": 0, "failed": 0, "deleted": 1000}


def test_empty_store_counts_zero(store: SqliteMetadataStore) -> None:
    assert store.counts() == {"indexed": 0, "failed": 0, "deleted": 0}
    assert list(store.iter_records()) == []
