"""Local object store: a directory standing in for an S3 bucket.

Keys map to relative paths, so the catalogue stays browsable with ordinary tools. Keys reach this
store from uploads and event payloads, so each one is checked lexically before it touches the file
system: no ``..``, ``.`` or empty segments, no absolute paths, no NUL or backslash. A key is never
resolved through symlinks, so an operator may link a catalogue folder into the root on purpose.

Writes are atomic (temporary file + ``os.replace``), so a reader (the API serving a file while the
importer overwrites it) sees the old or the new bytes, never half, and a killed process leaves no
torn file. There is no ``fsync``: it made each put about 7x slower, which a 44k-image import cannot
afford; a power cut may therefore lose the latest files, the same trade as the SQLite stores'
``synchronous=NORMAL``. User metadata and the etag live in a small SQLite table under a hidden tree
(``.store/objects.sqlite3``) that listings skip: one row write instead of a second file per
object, which halves the file-system work of an import (earlier versions kept a JSON sidecar per
object under ``.store/meta``; they are moved into the table on first open). As in S3, metadata
keys are lower-cased and ``put`` replaces them wholesale. Files copied in by hand have no row:
empty metadata and etag. Listing walks the tree in S3's order (lexicographic by key), pruning
subtrees outside the prefix or before ``start_after``, so a resumed listing does not rescan
finished work.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import secrets
import shutil
import stat
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from fashion_search.errors import InputError, NotFoundError
from fashion_search.records import image_id_for_key
from fashion_search.stores.base import ObjectInfo
from fashion_search.stores.sqlite_db import SqliteDatabase

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS objects (key TEXT PRIMARY KEY, etag TEXT NOT NULL, metadata TEXT NOT NULL)",
)
_UPSERT = (
    "INSERT INTO objects (key, etag, metadata) VALUES (?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET etag = excluded.etag, metadata = excluded.metadata"
)

_HIDDEN = ".store"  # reserved first segment: the metadata table and temporary files
_MAX_SEGMENT_BYTES = 255  # the usual file-system limit on one name


def _check_key(key: str) -> list[str]:
    """The key's path segments, or ``InputError('invalid_key')`` if it could escape or alias."""
    if not isinstance(key, str) or not key:
        raise InputError("invalid_key", "object keys must be non-empty strings")
    if "\x00" in key or "\\" in key:
        raise InputError("invalid_key", "object keys may not contain NUL or backslash characters")
    if key.startswith("/"):
        raise InputError("invalid_key", "object keys must be relative")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InputError("invalid_key", "object keys may not contain empty, '.' or '..' segments")
    if parts[0] == _HIDDEN:
        raise InputError("invalid_key", f"the prefix '{_HIDDEN}/' is reserved")
    if any(len(part.encode("utf-8")) > _MAX_SEGMENT_BYTES for part in parts):
        raise InputError("invalid_key", f"key segments are limited to {_MAX_SEGMENT_BYTES} bytes")
    return parts


# Temporary names: a random token per process start (a restarted container reuses pids and
# thread ids, and a killed write may have left its file), the pid (forked workers), a counter.
_tmp_names = itertools.count()
_TMP_TOKEN = secrets.token_hex(4)


def _write_atomic(path: Path, data: bytes, tmp_dir: Path) -> None:
    """Write a temporary file, then rename it over ``path``, creating folders only when missing.

    The temporary name is unique by construction (see ``_TMP_TOKEN``) and opened with
    ``O_EXCL``: ``tempfile.mkstemp``'s random names, and a ``mkdir`` before every write, cost more
    than writing a catalogue-sized photo does, and an import writes two files per image.
    The rename is retried after ``mkdir`` because a concurrent delete may prune the folder.
    """
    tmp = tmp_dir / f"{_TMP_TOKEN}-{os.getpid()}-{threading.get_ident()}-{next(_tmp_names)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        for attempt in (1, 2, 3):
            try:
                os.replace(tmp, path)
                return
            except FileNotFoundError:
                if attempt == 3:
                    raise
                path.parent.mkdir(parents=True, exist_ok=True)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class LocalObjectStore:
    """``ObjectStore`` over a directory; result URLs point at the local API's file route."""

    def __init__(self, root: Path, public_base_url: str = "") -> None:
        self.root = Path(root)
        self._tmp = self.root / _HIDDEN / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._db = SqliteDatabase(self.root / _HIDDEN / "objects.sqlite3", _SCHEMA, version=1)
        self._adopt_sidecars(self.root / _HIDDEN / "meta")
        self._base_url = public_base_url.rstrip("/")

    def _adopt_sidecars(self, meta_root: Path) -> None:
        """Move an earlier version's per-object JSON sidecars into the table, then remove them."""
        if not meta_root.is_dir():
            return
        rows = []
        for sidecar in meta_root.glob("*/*.json"):
            with contextlib.suppress(ValueError, KeyError, OSError):  # a torn sidecar: no metadata
                doc = json.loads(sidecar.read_text(encoding="utf-8"))
                metadata = json.dumps(doc.get("metadata", {}), ensure_ascii=False)
                rows.append((doc["key"], str(doc.get("etag", "")), metadata))
        with self._db.write() as conn:
            conn.executemany(_UPSERT, rows)
        shutil.rmtree(meta_root, ignore_errors=True)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*_check_key(key))

    def _info(self, key: str) -> ObjectInfo:
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            raise NotFoundError(f"no object with key {key!r}")
        row = self._db.query("SELECT etag, metadata FROM objects WHERE key = ?", (key,))
        etag, metadata = (row[0][0], json.loads(row[0][1])) if row else ("", {})
        return ObjectInfo(key=key, size=st.st_size, etag=etag, metadata=metadata)

    def get(self, key: str, *, max_bytes: int) -> bytes:
        path = self._path(key)
        try:
            with path.open("rb") as fh:
                data = fh.read(max_bytes + 1)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFoundError(f"no object with key {key!r}") from None
        if len(data) > max_bytes:
            raise InputError("too_large", f"object is larger than {max_bytes} bytes", status_code=413)
        return data

    def head(self, key: str) -> ObjectInfo:
        return self._info(key)

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None:
        self.put_many([(key, data, metadata or {})])

    def put_many(self, items: Sequence[tuple[str, bytes, Mapping[str, str]]]) -> None:
        """One file per object, and all their metadata rows in one transaction (an import's
        chunk: one commit instead of one per photo). A refused key stops it there; the objects
        before it are stored, with their metadata."""
        rows = []
        try:
            for key, data, metadata in items:
                self._write_object(key, data)
                user_meta = {str(k).lower(): str(v) for k, v in metadata.items()}
                etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
                rows.append((key, etag, json.dumps(user_meta, ensure_ascii=False)))
        finally:
            if rows:
                with self._db.write() as conn:
                    conn.executemany(_UPSERT, rows)

    def _write_object(self, key: str, data: bytes) -> None:
        try:
            _write_atomic(self._path(key), data, self._tmp)
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            raise InputError(
                "key_conflict",
                f"key {key!r} clashes with an existing key that is a folder of it or inside it",
                status_code=409,
            ) from None

    def delete(self, key: str) -> None:
        """Idempotent, as in S3; emptied folders go too, so their names are free for keys."""
        path = self._path(key)
        with self._db.write() as conn:
            conn.execute("DELETE FROM objects WHERE key = ?", (key,))
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:  # not empty (or just refilled by a concurrent put): keep it
                return
            parent = parent.parent

    def list(self, prefix: str = "", start_after: str = "") -> Iterator[ObjectInfo]:
        yield from self._walk(self.root, "", prefix, start_after)

    def _walk(self, folder: Path, rel: str, prefix: str, start_after: str) -> Iterator[ObjectInfo]:
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):  # removed while listing
            return
        # A folder's keys all start with "name/": sorting folders by that string yields S3's order.
        named = sorted(
            ((entry.name + "/" if entry.is_dir() else entry.name, entry) for entry in entries),
            key=lambda pair: pair[0],
        )
        for name, entry in named:
            key = rel + name
            if not rel and name == _HIDDEN + "/":
                continue
            if not (key.startswith(prefix) or prefix.startswith(key)):
                continue
            if key <= start_after and not start_after.startswith(key):
                continue  # everything under this name sorts at or before start_after
            if name.endswith("/"):
                yield from self._walk(Path(entry.path), key, prefix, start_after)
            elif key > start_after and key.startswith(prefix):
                try:
                    info = self._info(key)
                except InputError:  # NotFoundError: deleted meanwhile; else a name no valid key reaches
                    continue
                yield info

    def url(self, key: str) -> str:
        _check_key(key)
        return f"{self._base_url}/images/{image_id_for_key(key)}/file"
