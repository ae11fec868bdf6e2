"""Local metadata store: one SQLite table of ``ImageRecord`` rows.

SQLite because local mode must work with no server and survive a killed import: every write is a
transaction, and WAL mode lets the API server read while the CLI importer writes. The embedding is
kept as a float32 blob so the vector index can be rebuilt without the model; tags are JSON because
they are free-form (every catalogue column becomes one).

``put`` mirrors the DynamoDB store's conditional write: S3 events for one key can arrive out of
order, so a record never replaces one with a newer sequencer (``records.is_stale``; an equal one is
a redelivery and is written again). The comparison is numeric and needs Python, so it runs inside
``BEGIN IMMEDIATE``: the read and the write happen under the write lock, and no other thread or
process can slip in between.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fashion_search.records import ImageRecord, Status, is_stale
from fashion_search.stores.sqlite_db import SqliteDatabase, chunked, placeholders

_SCHEMA_VERSION = 1
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS images (
        image_id TEXT PRIMARY KEY,
        key TEXT NOT NULL,
        status TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        format TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        tags TEXT NOT NULL,
        model_id TEXT NOT NULL,
        embedding BLOB,
        reason TEXT,
        sequencer TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS images_by_status ON images (status, image_id)",
)
_COLUMNS = (
    "image_id, key, status, sha256, width, height, format, size_bytes, tags, model_id, embedding, "
    "reason, sequencer, created_at, updated_at"
)
_UPSERT = f"INSERT OR REPLACE INTO images ({_COLUMNS}) VALUES ({placeholders(15)})"
_SELECT = f"SELECT {_COLUMNS} FROM images"
_BATCH = 500  # ids per IN (...) and rows per page of iter_records


def _to_row(record: ImageRecord) -> tuple[Any, ...]:
    embedding = None
    if record.embedding is not None:
        embedding = np.ascontiguousarray(record.embedding, dtype=np.float32).reshape(-1).tobytes()
    return (
        record.image_id,
        record.key,
        record.status,
        record.sha256,
        record.width,
        record.height,
        record.format,
        record.size_bytes,
        json.dumps(record.tags, ensure_ascii=False, sort_keys=True),
        record.model_id,
        embedding,
        record.reason,
        record.sequencer,
        record.created_at,
        record.updated_at,
    )


def _from_row(row: tuple[Any, ...]) -> ImageRecord:
    (image_id, key, status, sha256, width, height, fmt, size_bytes, tags, model_id, embedding,
     reason, sequencer, created_at, updated_at) = row  # fmt: skip
    return ImageRecord(
        image_id=image_id,
        key=key,
        status=status,
        sha256=sha256,
        width=width,
        height=height,
        format=fmt,
        size_bytes=size_bytes,
        tags=json.loads(tags),
        model_id=model_id,
        embedding=None if embedding is None else np.frombuffer(embedding, dtype=np.float32).copy(),
        reason=reason,
        sequencer=sequencer,
        created_at=created_at,
        updated_at=updated_at,
    )


class SqliteMetadataStore:
    """``MetadataStore`` over one SQLite file; safe to share between threads and processes."""

    counts_are_cheap = True

    def __init__(self, path: Path) -> None:
        self._db = SqliteDatabase(path, _SCHEMA, version=_SCHEMA_VERSION)

    def get(self, image_id: str) -> ImageRecord | None:
        rows = self._db.query(f"{_SELECT} WHERE image_id = ?", (image_id,))
        return _from_row(rows[0]) if rows else None

    def get_many(self, image_ids: Sequence[str]) -> dict[str, ImageRecord]:
        found: dict[str, ImageRecord] = {}
        for chunk in chunked(list(dict.fromkeys(image_ids)), _BATCH):
            rows = self._db.query(f"{_SELECT} WHERE image_id IN ({placeholders(len(chunk))})", chunk)
            found.update((row[0], _from_row(row)) for row in rows)
        return found

    def put(self, record: ImageRecord) -> bool:
        with self._db.write() as conn:
            stored = conn.execute("SELECT sequencer FROM images WHERE image_id = ?", (record.image_id,))
            row = stored.fetchone()
            if row is not None and is_stale(record.sequencer, row[0]):
                return False
            conn.execute(_UPSERT, _to_row(record))
        return True

    def put_many(self, records: Sequence[ImageRecord]) -> None:
        rows = [_to_row(record) for record in records]
        with self._db.write() as conn:
            conn.executemany(_UPSERT, rows)

    def iter_records(self, status: Status | None = None) -> Iterator[ImageRecord]:
        """Pages by image id, so no read transaction stays open while the caller works (or writes)."""
        where, params = ("status = ? AND image_id > ?", [status]) if status else ("image_id > ?", [])
        after = ""
        while True:
            rows = self._db.query(
                f"{_SELECT} WHERE {where} ORDER BY image_id LIMIT {_BATCH}", (*params, after)
            )
            yield from (_from_row(row) for row in rows)
            if len(rows) < _BATCH:
                return
            after = rows[-1][0]

    def counts(self) -> dict[str, int]:
        found = dict(self._db.query("SELECT status, COUNT(*) FROM images GROUP BY status"))
        return {status: found.get(status, 0) for status in typing.get_args(Status)}

    def close(self) -> None:
        self._db.close()
