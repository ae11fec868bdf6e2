"""FaissVectorIndex: exact results (checked against numpy), filters, and SQLite as the truth."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from fashion_search.errors import ModelError
from fashion_search.stores.base import VectorIndex, VectorItem
from fashion_search.stores.faiss_index import FaissVectorIndex, ReadWriteLock

DIM = 16
COLOURS = ["Black", "Blue", "Red", "White"]
GENDERS = ["Men", "Women"]


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def tags_for(n: int) -> dict[str, str]:
    return {"_key": f"img/{n}.jpg", "colour": COLOURS[n % 4], "gender": GENDERS[n % 2 if n % 3 else 0]}


@pytest.fixture
def vectors() -> np.ndarray:
    return unit(np.random.default_rng(42).standard_normal((300, DIM)))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "vectors.sqlite3"


@pytest.fixture
def index(path: Path, vectors: np.ndarray) -> FaissVectorIndex:
    built = FaissVectorIndex(path, DIM)
    built.upsert(VectorItem(id=f"id{n}", vector=v, metadata=tags_for(n)) for n, v in enumerate(vectors))
    return built


def brute_force(
    vectors: np.ndarray, query: np.ndarray, top_k: int, keep: set[int] | None = None
) -> list[tuple[str, float]]:
    scores = vectors @ query
    order = [int(n) for n in np.argsort(-scores) if keep is None or int(n) in keep]
    return [(f"id{n}", float(scores[n])) for n in order[:top_k]]


def assert_same(matches: list, expected: list[tuple[str, float]]) -> None:
    assert [m.id for m in matches] == [id_ for id_, _ in expected]
    np.testing.assert_allclose([m.score for m in matches], [s for _, s in expected], rtol=0, atol=1e-5)


def test_implements_the_protocol(index: FaissVectorIndex) -> None:
    assert isinstance(index, VectorIndex)


def test_results_equal_brute_force_inner_product(index: FaissVectorIndex, vectors: np.ndarray) -> None:
    queries = unit(np.random.default_rng(7).standard_normal((20, DIM)))
    for query in queries:
        assert_same(index.query(query, top_k=10), brute_force(vectors, query, 10))
    own = index.query(vectors[5], top_k=1)[0]
    assert own.id == "id5" and own.score == pytest.approx(1.0, abs=1e-5)
    assert own.metadata == tags_for(5)


def test_filters_equal_brute_force_over_the_matching_subset(
    index: FaissVectorIndex, vectors: np.ndarray
) -> None:
    query = unit(np.random.default_rng(3).standard_normal(DIM))
    cases = [
        ({"colour": ["Red"]}, lambda t: t["colour"] == "Red"),
        ({"colour": ["Red", "Blue"]}, lambda t: t["colour"] in ("Red", "Blue")),
        (
            {"colour": ["Red", "Blue"], "gender": ["Women"]},
            lambda t: t["colour"] in ("Red", "Blue") and t["gender"] == "Women",
        ),
        ({"colour": "Black"}, lambda t: t["colour"] == "Black"),  # a bare string is one value
        ({"_key": ["img/7.jpg", "img/8.jpg"]}, lambda t: t["_key"] in ("img/7.jpg", "img/8.jpg")),
    ]
    for filters, predicate in cases:
        keep = {n for n in range(len(vectors)) if predicate(tags_for(n))}
        matches = index.query(query, top_k=15, filters=filters)
        assert_same(matches, brute_force(vectors, query, 15, keep))
        assert all(predicate(m.metadata) for m in matches)


@pytest.mark.parametrize(
    "filters",
    [
        {"colour": ["Green"]},
        {"material": ["Silk"]},
        {"colour": []},
        {"colour": ["Red"], "gender": ["Nobody"]},
    ],
)
def test_filters_without_a_match_give_nothing(
    index: FaissVectorIndex, vectors: np.ndarray, filters: dict
) -> None:
    assert index.query(vectors[0], top_k=5, filters=filters) == []


def test_exclude_ids_with_and_without_filters(index: FaissVectorIndex, vectors: np.ndarray) -> None:
    query = vectors[10]
    everyone_but = set(range(len(vectors))) - {10, 11}
    got = index.query(query, top_k=5, exclude_ids=["id10", "id11", "unknown"])
    assert_same(got, brute_force(vectors, query, 5, everyone_but))
    red = {n for n in everyone_but if tags_for(n)["colour"] == "Red"}
    got = index.query(query, top_k=5, filters={"colour": ["Red"]}, exclude_ids=["id10", "id11"])
    assert_same(got, brute_force(vectors, query, 5, red))


def test_top_k_larger_than_the_index_returns_everything(index: FaissVectorIndex, vectors: np.ndarray) -> None:
    assert len(index.query(vectors[0], top_k=1000)) == len(vectors)
    matching = index.query(vectors[0], top_k=1000, filters={"colour": ["Red"]}, exclude_ids=["id2"])
    assert len(matching) == len(vectors) // 4 - 1
    assert index.query(vectors[0], top_k=0) == []


def test_empty_index(path: Path) -> None:
    empty = FaissVectorIndex(path, DIM)
    assert empty.count() == 0
    assert empty.query(np.ones(DIM, dtype=np.float32) / 4, top_k=3) == []
    assert empty.fetch(["x"]) == {}


def test_deleted_ids_leave_queries_count_and_fetch(index: FaissVectorIndex, vectors: np.ndarray) -> None:
    index.delete(["id5", "id6", "never-existed"])
    index.delete(["id5"])  # twice is fine
    assert index.count() == len(vectors) - 2
    assert index.fetch(["id5", "id6", "id7"]).keys() == {"id7"}
    got = index.query(vectors[5], top_k=len(vectors))
    assert {"id5", "id6"}.isdisjoint(m.id for m in got)
    assert index.query(vectors[5], top_k=10, filters={"_key": ["img/5.jpg"]}) == []


def test_upsert_of_an_existing_id_replaces_vector_and_metadata(
    index: FaissVectorIndex, vectors: np.ndarray
) -> None:
    index.upsert([VectorItem(id="id1", vector=vectors[200], metadata={"colour": "Green"})])
    assert index.count() == len(vectors)
    np.testing.assert_array_equal(index.fetch(["id1"])["id1"].vector, vectors[200])
    best = index.query(vectors[200], top_k=2)
    assert {m.id for m in best} == {"id1", "id200"}
    assert (
        index.query(vectors[1], top_k=5, filters={"colour": [tags_for(1)["colour"]], "_key": ["img/1.jpg"]})
        == []
    )
    assert [m.id for m in index.query(vectors[0], top_k=5, filters={"colour": ["Green"]})] == ["id1"]


def test_duplicate_ids_in_one_batch_keep_the_last(path: Path, vectors: np.ndarray) -> None:
    idx = FaissVectorIndex(path, DIM)
    idx.upsert([VectorItem("a", vectors[0]), VectorItem("a", vectors[1], {"v": "2"})])
    assert idx.count() == 1
    assert idx.query(vectors[1], top_k=3)[0].metadata == {"v": "2"}


def test_fetch_returns_the_stored_vectors(index: FaissVectorIndex, vectors: np.ndarray) -> None:
    got = index.fetch(["id3", "id299", "id3", "missing"])
    assert got.keys() == {"id3", "id299"}
    np.testing.assert_array_equal(got["id299"].vector, vectors[299])
    assert got["id3"].vector.dtype == np.float32
    assert got["id3"].metadata == tags_for(3)  # the metadata comes with the vector


def test_survives_a_restart(index: FaissVectorIndex, path: Path, vectors: np.ndarray) -> None:
    index.delete(["id0"])
    index.upsert([VectorItem("id9", vectors[100], {"colour": "Green"})])
    query = unit(np.random.default_rng(5).standard_normal(DIM))
    before = index.query(query, top_k=20, filters={"colour": ["Red", "Green"]})
    index.close()
    reopened = FaissVectorIndex(path, DIM)
    assert reopened.count() == len(vectors) - 1
    assert reopened.query(query, top_k=20, filters={"colour": ["Red", "Green"]}) == before


def test_a_second_instance_sees_writes_at_its_next_query(
    index: FaissVectorIndex, path: Path, vectors: np.ndarray
) -> None:
    server = FaissVectorIndex(path, DIM)  # another process's view of the same file
    assert server.count() == len(vectors)
    index.upsert([VectorItem("new", -vectors[0], {"colour": "Purple"})])
    assert [m.id for m in server.query(-vectors[0], top_k=1)] == ["new"]
    assert [m.id for m in server.query(vectors[0], top_k=3, filters={"colour": ["Purple"]})] == ["new"]
    index.delete(["new", "id1"])
    assert server.query(vectors[0], top_k=3, filters={"colour": ["Purple"]}) == []
    assert server.count() == len(vectors) - 1
    server.upsert([VectorItem("id1", vectors[1], tags_for(1))])  # and the other way round
    assert index.query(vectors[1], top_k=1)[0].id == "id1"


def test_dimension_mismatches_are_clear_errors(index: FaissVectorIndex, path: Path) -> None:
    with pytest.raises(ModelError, match="16-dimensional"):
        FaissVectorIndex(path, DIM + 1)
    with pytest.raises(ValueError, match="16-d"):
        index.upsert([VectorItem("x", np.ones(DIM + 1, dtype=np.float32))])
    with pytest.raises(ValueError, match="16-d"):
        index.query(np.ones(DIM - 1, dtype=np.float32), top_k=1)
    with pytest.raises(ValueError, match="NaN"):
        index.upsert([VectorItem("x", np.full(DIM, np.nan, dtype=np.float32))])
    with pytest.raises(ValueError, match="metadata"):
        index.upsert([VectorItem("x", np.ones(DIM, dtype=np.float32), {"n": 1})])  # type: ignore[dict-item]
    assert index.fetch(["x"]) == {}  # nothing of a rejected batch was written


def test_concurrent_queries_and_writes(index: FaissVectorIndex, vectors: np.ndarray) -> None:
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for n in range(50):
                assert len(index.query(vectors[n], top_k=5, filters={"colour": ["Red", "Blue"]})) == 5
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    def writer() -> None:
        try:
            for n in range(50):
                index.upsert([VectorItem(f"extra{n}", vectors[n], {"colour": "Red"})])
                index.delete([f"extra{n - 1}"])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)] + [threading.Thread(target=writer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert index.count() == len(vectors) + 1


def test_readers_share_the_lock_and_a_writer_waits_for_them() -> None:
    """Searches run side by side; catching up waits until they finish, and a waiting writer keeps
    new readers out (otherwise a stream of searches could hide an import forever)."""
    lock = ReadWriteLock()
    first_in, release_first = threading.Event(), threading.Event()
    order: list[str] = []

    def long_reader() -> None:
        with lock.read():
            first_in.set()
            release_first.wait(5)
            order.append("reader 1 done")

    def writer() -> None:
        with lock.write():
            order.append("writer")

    def late_reader() -> None:
        with lock.read():
            order.append("reader 3")

    threading.Thread(target=long_reader).start()
    assert first_in.wait(5)
    second_reader_in = threading.Event()

    def second_reader() -> None:
        with lock.read():
            second_reader_in.set()

    threading.Thread(target=second_reader).start()
    assert second_reader_in.wait(5), "a second reader must not wait for the first"
    w = threading.Thread(target=writer)
    w.start()
    while not lock._writers_waiting:  # the writer is queued behind reader 1
        threading.Event().wait(0.005)
    late = threading.Thread(target=late_reader)
    late.start()
    late.join(0.2)
    assert late.is_alive(), "a reader arriving after a waiting writer must queue behind it"
    assert order == []
    release_first.set()
    w.join(5)
    late.join(5)
    assert order == ["reader 1 done", "writer", "reader 3"]


def test_another_process_writes_are_seen_at_the_next_query(
    index: FaissVectorIndex, path: Path, vectors: np.ndarray
) -> None:
    """The local deployment: the CLI importer (a real second process) writes, the API server reads."""
    importer = f"""
import numpy as np
from fashion_search.stores.base import VectorItem
from fashion_search.stores.faiss_index import FaissVectorIndex, ReadWriteLock
index = FaissVectorIndex({str(path)!r}, {DIM})
index.upsert([VectorItem("from-cli", np.eye({DIM}, dtype=np.float32)[0], {{"colour": "Teal"}})])
index.delete(["id0"])
"""
    functions_dir = Path(__file__).resolve().parents[2] / "functions"
    env = {**os.environ, "PYTHONPATH": str(functions_dir)}
    subprocess.run([sys.executable, "-c", importer], check=True, env=env, timeout=120)
    assert index.count() == len(vectors)  # one added, one deleted
    teal = index.query(vectors[0], top_k=5, filters={"colour": ["Teal"]})
    assert [m.id for m in teal] == ["from-cli"]
    assert "id0" not in {m.id for m in index.query(vectors[0], top_k=len(vectors) + 1)}


@pytest.mark.parametrize("threads", [1, (os.cpu_count() or 1) + 1])
def test_searches_use_the_configured_threads_in_whichever_thread_searches(
    path: Path, vectors: np.ndarray, threads: int
) -> None:
    """libgomp keeps the thread count per thread: the API searches from worker threads, which
    must not fall back to every core (an OpenMP thread then spins between requests)."""
    import faiss

    idx = FaissVectorIndex(path, DIM, threads=threads)
    idx.upsert([VectorItem(id="a", vector=vectors[0], metadata={})])
    seen: list[tuple[int, int]] = []

    def search() -> None:
        before = faiss.omp_get_max_threads()
        assert idx.query(vectors[0], 1)[0].id == "a"
        seen.append((before, faiss.omp_get_max_threads()))

    worker = threading.Thread(target=search)
    worker.start()
    worker.join()
    assert seen[0][1] == threads
    if threads > 1:  # more than the cores: no thread starts with that count by default
        assert seen[0][0] != threads
