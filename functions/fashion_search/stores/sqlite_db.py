"""SQLite plumbing shared by the local metadata store and the local vector index.

Local mode has two processes touching the same files: the API server (reading, in FastAPI's thread
pool) and the CLI importer (writing). SQLite in WAL mode lets readers proceed while one writer
writes, so each thread gets its own connection (a connection must not be shared by concurrent
threads) and every write runs in ``BEGIN IMMEDIATE``, which takes the write lock up front: a
read-then-write (conditional put, revision numbering) can then never interleave with another
writer. A writer that waits longer than the busy timeout raises ``TransientError``, which the
ingest paths treat as retryable.

Connections are also per process: a connection inherited through ``fork`` is never reused.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fashion_search.errors import TransientError


def _translate(exc: sqlite3.OperationalError) -> Exception:
    """Lock timeouts are worth retrying; anything else (disk I/O, a bug) is passed on unchanged."""
    if exc.sqlite_errorname.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return TransientError(f"sqlite database busy: {exc}")
    return exc


def chunked(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Slices of at most ``size``: SQLite caps the number of ``?`` parameters per statement."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def placeholders(n: int) -> str:
    return ",".join("?" * n)


class SqliteDatabase:
    """One SQLite file: per-thread connections, WAL, a schema version check, write transactions."""

    def __init__(
        self, path: Path, schema: Sequence[str], *, version: int, busy_timeout_s: float = 30.0
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        with self.write() as conn:
            found = conn.execute("PRAGMA user_version").fetchone()[0]
            if found not in (0, version):
                raise RuntimeError(
                    f"{self.path} has schema version {found}, this code expects {version}; "
                    "move it aside and re-import"
                )
            for statement in schema:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {int(version)}")

    def conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: never corrupt; a power cut may lose the last commits, a crash does not.
            conn.execute("PRAGMA synchronous=NORMAL")
            local.conn, local.pid = conn, os.getpid()
            with self._lock:
                self._connections.append(conn)
        return local.conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the database's write lock from its first statement."""
        conn = self.conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise _translate(exc) from exc
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            conn.execute("ROLLBACK")
            raise _translate(exc) from exc

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """All rows of one read statement (a snapshot: no read transaction is left open)."""
        try:
            return self.conn().execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            raise _translate(exc) from exc

    def close(self) -> None:
        """Close every thread's connection; the object must not be used afterwards."""
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()
