"""SqliteDatabase: lock timeouts become TransientError, failed transactions leave no trace."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fashion_search.errors import TransientError
from fashion_search.stores.sqlite_db import SqliteDatabase

SCHEMA = ("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v TEXT)",)


def test_a_held_write_lock_is_a_transient_error(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "db.sqlite3", SCHEMA, version=1, busy_timeout_s=0.05)
    other = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(TransientError), db.write() as conn:
        conn.execute("INSERT INTO t VALUES ('a', '1')")
    assert db.query("SELECT COUNT(*) FROM t") == [(0,)]  # readers are not blocked by the writer (WAL)
    other.execute("ROLLBACK")
    with db.write() as conn:
        conn.execute("INSERT INTO t VALUES ('a', '1')")
    assert db.query("SELECT v FROM t") == [("1",)]


def test_an_exception_rolls_the_transaction_back(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "db.sqlite3", SCHEMA, version=1)
    with pytest.raises(ValueError), db.write() as conn:
        conn.execute("INSERT INTO t VALUES ('a', '1')")
        raise ValueError("bad batch")
    assert db.query("SELECT COUNT(*) FROM t") == [(0,)]


def test_a_file_from_another_schema_version_is_refused(tmp_path: Path) -> None:
    SqliteDatabase(tmp_path / "db.sqlite3", SCHEMA, version=1).close()
    with pytest.raises(RuntimeError, match="schema version 1"):
        SqliteDatabase(tmp_path / "db.sqlite3", SCHEMA, version=2)
