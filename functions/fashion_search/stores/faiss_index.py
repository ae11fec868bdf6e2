"""Local vector index: SQLite is the truth, an in-memory FAISS index is a cache of it.

FAISS has no transactions and no story for two processes: a saved index file is either rewritten
whole after every batch (slow, and a crash mid-write loses it) or stale. So the durable state is a
SQLite table (id, float32 vector, metadata JSON, ``rev``): each upsert or delete is a transaction
and survives a killed import. Every change stamps its rows with a new, strictly increasing ``rev``
(allocated under the write lock, so revisions commit in order); a delete leaves a tombstone row
(vector NULL) so other processes learn of it. Each process keeps an exact FAISS index
(``IndexIDMap2`` over ``IndexFlatIP``: inner product on unit vectors, no training, exact results)
and, before every query, applies the rows with a ``rev`` above the last one it saw: one indexed
SELECT that returns nothing when nothing changed. That is how the API server sees what the CLI
importer wrote, at its next query, without a restart.

Metadata filters (``{tag: [values]}``: any-of within a key, AND across keys) use an in-memory
inverted index tag -> value -> internal ids, turned into a FAISS ``IDSelector`` so the search
itself skips everything else; ``exclude_ids`` works the same way. A readers-writer lock covers
the FAISS index and its side tables: FAISS searches may run side by side (the API serves
concurrent requests from a thread pool, and a search over 44k vectors is half of a text query's
time), but it is not safe to mutate while another thread searches, so catching up waits for them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from fashion_search.errors import ModelError
from fashion_search.stores.base import Filters, VectorItem, VectorMatch
from fashion_search.stores.sqlite_db import SqliteDatabase, chunked, placeholders

_SCHEMA_VERSION = 1
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS vectors (
        id TEXT PRIMARY KEY,
        vector BLOB,
        metadata TEXT,
        rev INTEGER NOT NULL
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS vectors_by_rev ON vectors (rev)",
    "CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
_UPSERT = (
    "INSERT INTO vectors (id, vector, metadata, rev) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE "
    "SET vector = excluded.vector, metadata = excluded.metadata, rev = excluded.rev"
)
_TOMBSTONE = "UPDATE vectors SET vector = NULL, metadata = NULL, rev = ? WHERE id = ? AND vector IS NOT NULL"
_WRITE_BATCH = 1000  # rows per write transaction: bounds how long other writers wait
_READ_BATCH = 4096  # rows per page while catching up (bounds memory when loading a large index)
_ANY_CHANGE = "SELECT 1 FROM vectors WHERE rev > ? LIMIT 1"
_CHANGES = f"SELECT id, vector, metadata, rev FROM vectors WHERE rev > ? ORDER BY rev LIMIT {_READ_BATCH}"


class ReadWriteLock:
    """Many readers or one writer. A waiting writer stops new readers from entering, so a steady
    stream of searches cannot starve the catch-up that makes an import visible."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writing and not self._writers_waiting)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            self._cond.wait_for(lambda: not self._writing and not self._readers)
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


# Reserved fields (the object key, the image hash) hold a distinct value per vector and are not
# what searches filter on: posting lists for the two cost 21 MB of the API's RSS at 44k vectors
# (bench/api_latency.py), so a filter on one scans instead.
_UNINDEXED = "_"


def _indexed(metadata: dict[str, str]) -> Iterator[tuple[str, str]]:
    return ((tag, value) for tag, value in metadata.items() if not tag.startswith(_UNINDEXED))


def _labels(labels: set[int]) -> np.ndarray:
    return np.fromiter(labels, dtype=np.int64, count=len(labels))


class FaissVectorIndex:
    """``VectorIndex`` over ``path`` (SQLite) with an exact in-memory FAISS index per process."""

    def __init__(self, path: Path, dim: int, threads: int = 1) -> None:
        if dim < 1:
            raise ValueError(f"vector dimension must be positive, got {dim}")
        self.dim = dim
        self._db = SqliteDatabase(path, _SCHEMA, version=_SCHEMA_VERSION)
        with self._db.write() as conn:
            conn.execute("INSERT OR IGNORE INTO settings (name, value) VALUES ('dim', ?)", (str(dim),))
            stored = int(conn.execute("SELECT value FROM settings WHERE name = 'dim'").fetchone()[0])
        if stored != dim:
            raise ModelError(
                f"the vector index {path} holds {stored}-dimensional vectors but the model makes "
                f"{dim}-dimensional ones; use another data directory (or delete {path} and re-import)"
            )
        self._threads = threads
        self._lock = ReadWriteLock()
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._internal: dict[str, int] = {}  # id -> FAISS label
        self._ids: dict[int, str] = {}  # FAISS label -> id
        self._metadata: dict[int, dict[str, str]] = {}
        self._postings: dict[str, dict[str, set[int]]] = {}  # tag -> value -> labels (not "_" tags)
        self._next_label = 0
        self._rev = 0  # highest revision applied to the in-memory index
        self._catch_up()

    # --- writes: SQLite first, then the cache catches up ------------------------------------------

    def upsert(self, items: Iterable[VectorItem]) -> None:
        """Insert or replace; each batch of ``_WRITE_BATCH`` items is one transaction."""
        iterator = iter(items)
        while batch := list(islice(iterator, _WRITE_BATCH)):
            rows = [self._row(item) for item in batch]  # validate the whole batch before writing
            with self._db.write() as conn:
                base = self._last_rev(conn)
                conn.executemany(_UPSERT, [(*row, base + i) for i, row in enumerate(rows, 1)])
        self._catch_up()

    def delete(self, ids: Sequence[str]) -> None:
        """Unknown ids are ignored, as in Pinecone."""
        for chunk in chunked(list(dict.fromkeys(ids)), _WRITE_BATCH):
            with self._db.write() as conn:
                base = self._last_rev(conn)
                conn.executemany(_TOMBSTONE, [(base + i, id_) for i, id_ in enumerate(chunk, 1)])
        self._catch_up()

    @staticmethod
    def _last_rev(conn: Any) -> int:
        return conn.execute("SELECT COALESCE(MAX(rev), 0) FROM vectors").fetchone()[0]

    def _row(self, item: VectorItem) -> tuple[str, bytes, str]:
        if not isinstance(item.id, str) or not item.id:
            raise ValueError(f"vector ids must be non-empty strings, got {item.id!r}")
        metadata = item.metadata
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError(f"vector metadata must map strings to strings (id {item.id!r})")
        vector = self._as_vector(item.vector, f"vector {item.id!r}")
        return item.id, vector.tobytes(), json.dumps(metadata, ensure_ascii=False, sort_keys=True)

    def _as_vector(self, vector: np.ndarray, what: str) -> np.ndarray:
        array = np.asarray(vector, dtype=np.float32)
        if array.size != self.dim or array.ndim not in (1, 2):
            raise ValueError(f"{what} has shape {array.shape}; the index holds {self.dim}-d vectors")
        if not np.isfinite(array).all():
            raise ValueError(f"{what} contains NaN or infinite values")
        return np.ascontiguousarray(array.reshape(self.dim))

    # --- keeping the FAISS cache in step with SQLite ---------------------------------------------

    def _catch_up(self) -> None:
        """Apply every row changed since the last call (written by this process or another).

        The common case, nothing new, costs one indexed SELECT and takes no lock at all. Every
        path into FAISS starts here, in the caller's thread, which is where the OpenMP thread
        count must be set: libgomp keeps it per thread. Set once from the main thread, it would not
        reach the API's worker threads, whose searches would use every core and leave an OpenMP
        thread spinning for ~10 ms of CPU per request (measured: half the server's CPU).
        """
        faiss.omp_set_num_threads(self._threads)
        if not self._db.query(_ANY_CHANGE, (self._rev,)):
            return
        with self._lock.write():
            while True:
                rows = self._db.query(_CHANGES, (self._rev,))
                if not rows:
                    return
                self._forget([self._internal[row[0]] for row in rows if row[0] in self._internal])
                self._add([row for row in rows if row[1] is not None])
                self._rev = rows[-1][3]

    def _forget(self, labels: list[int]) -> None:
        if not labels:
            return
        self._index.remove_ids(np.asarray(labels, dtype=np.int64))
        for label in labels:
            for tag, value in _indexed(self._metadata.pop(label)):
                values = self._postings[tag]
                values[value].discard(label)
                if not values[value]:
                    del values[value]
            del self._internal[self._ids.pop(label)]

    def _add(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        labels = np.arange(self._next_label, self._next_label + len(rows), dtype=np.int64)
        self._next_label += len(rows)
        vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(-1, self.dim)
        self._index.add_with_ids(vectors, labels)
        for label, (id_, _, metadata_json, _) in zip(labels.tolist(), rows, strict=True):
            metadata = json.loads(metadata_json)
            self._internal[id_], self._ids[label], self._metadata[label] = label, id_, metadata
            for tag, value in _indexed(metadata):
                self._postings.setdefault(tag, {}).setdefault(value, set()).add(label)

    # --- reads -------------------------------------------------------------------------------------

    def query(
        self, vector: np.ndarray, top_k: int, filters: Filters | None = None, exclude_ids: Sequence[str] = ()
    ) -> list[VectorMatch]:
        query = self._as_vector(vector, "query vector").reshape(1, self.dim)
        self._catch_up()
        with self._lock.read():
            excluded = {self._internal[id_] for id_ in exclude_ids if id_ in self._internal}
            if filters:
                allowed = self._matching(filters) - excluded
                # The selector object must outlive the search: FAISS only holds a raw pointer to it.
                selector = faiss.IDSelectorBatch(_labels(allowed))
                candidates = len(allowed)
            elif excluded:
                excluded_batch = faiss.IDSelectorBatch(_labels(excluded))
                selector = faiss.IDSelectorNot(excluded_batch)
                candidates = self._index.ntotal - len(excluded)
            else:
                selector, candidates = None, self._index.ntotal
            k = min(top_k, candidates)
            if k <= 0:
                return []
            params = faiss.SearchParameters(sel=selector) if selector is not None else None
            scores, labels = self._index.search(query, k, params=params)
            return [
                VectorMatch(id=self._ids[label], score=float(score), metadata=dict(self._metadata[label]))
                for score, label in zip(scores[0].tolist(), labels[0].tolist(), strict=True)
                if label >= 0
            ]

    def _matching(self, filters: Filters) -> set[int]:
        """Labels whose tags match every key of ``filters`` (any of the listed values per key)."""
        allowed: set[int] | None = None
        for tag, values in filters.items():
            wanted = [values] if isinstance(values, str) else values
            matched: set[int]
            if tag.startswith(_UNINDEXED):
                matched = {label for label, tags in self._metadata.items() if tags.get(tag) in wanted}
            else:
                postings = self._postings.get(tag, {})
                matched = set().union(*(postings.get(value, ()) for value in wanted))
            allowed = matched if allowed is None else allowed & matched
            if not allowed:
                return set()
        return allowed or set()

    def fetch(self, ids: Sequence[str]) -> dict[str, VectorItem]:
        """Read from SQLite, not the cache: always current, and ids absent or deleted are left out."""
        found: dict[str, VectorItem] = {}
        for chunk in chunked(list(dict.fromkeys(ids)), 500):
            where = f"vector IS NOT NULL AND id IN ({placeholders(len(chunk))})"
            rows = self._db.query(f"SELECT id, vector, metadata FROM vectors WHERE {where}", chunk)
            for id_, blob, metadata in rows:
                vector = np.frombuffer(blob, dtype=np.float32).copy()
                found[id_] = VectorItem(id_, vector, json.loads(metadata))
        return found

    def count(self) -> int:
        self._catch_up()
        with self._lock.read():
            return int(self._index.ntotal)

    def close(self) -> None:
        self._db.close()
