"""LocalObjectStore: S3-like semantics on a directory, and keys that cannot leave it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fashion_search.errors import InputError, NotFoundError
from fashion_search.records import image_id_for_key
from fashion_search.stores.base import ObjectStore
from fashion_search.stores.local_objects import LocalObjectStore


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects", public_base_url="http://localhost:8000/")


def test_implements_the_protocol(store: LocalObjectStore) -> None:
    assert isinstance(store, ObjectStore)


def test_put_get_head_round_trip(store: LocalObjectStore) -> None:
    store.put("shoes/1.jpg", b"jpeg bytes", {"Gender": "Men", "colour": "Black"})
    assert store.get("shoes/1.jpg", max_bytes=100) == b"jpeg bytes"
    info = store.head("shoes/1.jpg")
    assert info.key == "shoes/1.jpg"
    assert info.size == len(b"jpeg bytes")
    assert info.etag == hashlib.md5(b"jpeg bytes").hexdigest()
    assert info.metadata == {"gender": "Men", "colour": "Black"}  # lower-cased keys, as S3 does


def test_put_replaces_bytes_and_metadata(store: LocalObjectStore) -> None:
    store.put("a.jpg", b"old", {"tag": "x"})
    store.put("a.jpg", b"newer")
    assert store.get("a.jpg", max_bytes=100) == b"newer"
    assert store.head("a.jpg").metadata == {}


def test_survives_a_restart(store: LocalObjectStore, tmp_path: Path) -> None:
    store.put("dir/x.png", b"png", {"k": "v"})
    reopened = LocalObjectStore(tmp_path / "objects")
    assert reopened.get("dir/x.png", max_bytes=10) == b"png"
    assert reopened.head("dir/x.png").metadata == {"k": "v"}
    assert [info.key for info in reopened.list()] == ["dir/x.png"]


def test_get_beyond_max_bytes_is_a_413(store: LocalObjectStore) -> None:
    store.put("big.jpg", b"x" * 11)
    assert store.get("big.jpg", max_bytes=11) == b"x" * 11
    with pytest.raises(InputError) as exc:
        store.get("big.jpg", max_bytes=10)
    assert exc.value.code == "too_large"
    assert exc.value.status_code == 413


def test_missing_objects_are_not_found(store: LocalObjectStore) -> None:
    store.put("folder/inside.jpg", b"x")
    for key in ("nope.jpg", "folder", "folder/inside.jpg/deeper"):
        with pytest.raises(NotFoundError):
            store.get(key, max_bytes=10)
        with pytest.raises(NotFoundError):
            store.head(key)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "../escape.jpg",
        "a/../../escape.jpg",
        "a/..",
        "/etc/passwd",
        "a\x00b.jpg",
        "a\\..\\b.jpg",
        "a//b.jpg",
        "./a.jpg",
        "a/",
        ".store/meta/x",
        "x" * 256,
    ],
)
def test_keys_that_could_escape_or_alias_are_rejected(
    store: LocalObjectStore, tmp_path: Path, key: str
) -> None:
    for call in (
        lambda: store.put(key, b"data"),
        lambda: store.get(key, max_bytes=10),
        lambda: store.head(key),
        lambda: store.delete(key),
        lambda: store.url(key),
    ):
        with pytest.raises(InputError) as exc:
            call()
        assert exc.value.code == "invalid_key"
        assert exc.value.status_code == 400
    assert not (tmp_path / "escape.jpg").exists()


def test_unicode_and_odd_but_safe_keys_work(store: LocalObjectStore) -> None:
    for key in ("é/ß 1.jpg", "..hidden.jpg", "a..b/c.jpg", "with space/and+plus=.jpg"):
        store.put(key, key.encode())
        assert store.get(key, max_bytes=100) == key.encode()


def test_delete_is_idempotent_and_frees_folder_names(store: LocalObjectStore) -> None:
    store.put("a/b/c.jpg", b"1")
    store.delete("a/b/c.jpg")
    store.delete("a/b/c.jpg")
    with pytest.raises(NotFoundError):
        store.head("a/b/c.jpg")
    assert list(store.list()) == []
    store.put("a", b"a file where a folder was")  # the emptied folders were removed
    assert store.get("a", max_bytes=100) == b"a file where a folder was"


def test_a_key_clashing_with_a_folder_is_a_409_and_changes_nothing(store: LocalObjectStore) -> None:
    store.put("a/b.jpg", b"1")
    store.put("c", b"2")
    for key in ("a", "c/d.jpg"):
        with pytest.raises(InputError) as exc:
            store.put(key, b"x")
        assert (exc.value.code, exc.value.status_code) == ("key_conflict", 409)
    assert [info.key for info in store.list()] == ["a/b.jpg", "c"]
    assert store.get("c", max_bytes=10) == b"2"
    assert not any((store.root / ".store" / "tmp").iterdir())  # the refused writes cleaned up


def test_list_is_lexicographic_by_key_and_hides_internal_files(store: LocalObjectStore) -> None:
    # '-' (0x2d) and '.' (0x2e) sort before '/' (0x2f): a naive directory walk gets these wrong.
    keys = ["a/b", "a-c", "a.d", "a!", "ab", "b/c/d", "b/c-", "é", "Z", "a/a/a", "a0"]
    for key in keys:
        store.put(key, key.encode(), {"k": key})
    listed = list(store.list())
    assert [info.key for info in listed] == sorted(keys)
    assert all(info.metadata == {"k": info.key} and info.size == len(info.key.encode()) for info in listed)


def test_list_prefix_and_start_after(store: LocalObjectStore) -> None:
    keys = ["img/001.jpg", "img/002.jpg", "img/010.jpg", "img-x/1.jpg", "img2/1.jpg", "other.jpg"]
    for key in keys:
        store.put(key, b"x")
    assert [i.key for i in store.list(prefix="img/")] == ["img/001.jpg", "img/002.jpg", "img/010.jpg"]
    assert [i.key for i in store.list(prefix="img")] == sorted(k for k in keys if k.startswith("img"))
    assert [i.key for i in store.list(prefix="img/0", start_after="img/001.jpg")] == [
        "img/002.jpg",
        "img/010.jpg",
    ]
    assert [i.key for i in store.list(start_after="img/")] == sorted(k for k in keys if k > "img/")
    assert [i.key for i in store.list(start_after="img2/1.jpg")] == ["other.jpg"]
    assert list(store.list(prefix="nothing")) == []
    # Resuming after every key in turn reproduces the tail of the full listing.
    full = [i.key for i in store.list()]
    for n, key in enumerate(full):
        assert [i.key for i in store.list(start_after=key)] == full[n + 1 :]


def test_files_copied_in_by_hand_are_listed_without_metadata(store: LocalObjectStore) -> None:
    (store.root / "hand").mkdir()
    (store.root / "hand" / "made.jpg").write_bytes(b"abc")
    (store.root / "back\\slash.jpg").write_bytes(b"no key can name this")
    assert [(i.key, i.size, i.etag, i.metadata) for i in store.list()] == [("hand/made.jpg", 3, "", {})]


def test_url_points_at_the_local_file_route(store: LocalObjectStore, tmp_path: Path) -> None:
    key = "shoes/1.jpg"
    assert store.url(key) == f"http://localhost:8000/images/{image_id_for_key(key)}/file"
    assert LocalObjectStore(tmp_path / "o2").url(key) == f"/images/{image_id_for_key(key)}/file"


def test_no_temporary_files_are_left_behind(store: LocalObjectStore) -> None:
    for n in range(5):
        store.put(f"k{n}", b"x" * n)
    assert not any((store.root / ".store" / "tmp").iterdir())


def test_metadata_is_a_table_row_not_a_second_file_per_object(store: LocalObjectStore) -> None:
    for n in range(20):
        store.put(f"shoes/{n}.jpg", b"x" * n, {"n": str(n)})
    files = [p for p in store.root.rglob("*") if p.is_file() and ".store" not in p.parts]
    assert len(files) == 20
    hidden = {p.name for p in (store.root / ".store").iterdir() if p.is_file()}
    assert hidden <= {"objects.sqlite3", "objects.sqlite3-wal", "objects.sqlite3-shm"}
    assert store.head("shoes/7.jpg").metadata == {"n": "7"}
    store.delete("shoes/7.jpg")
    store.put("shoes/7.jpg", b"again")  # a re-put after a delete starts with no metadata
    assert store.head("shoes/7.jpg").metadata == {}


def test_an_earlier_versions_sidecars_are_adopted(tmp_path: Path) -> None:
    """Data dirs written before the metadata table kept one JSON sidecar per object; opening one
    moves them into the table (a torn one counts as no metadata) and removes the old tree."""
    root = tmp_path / "objects"
    (root / "a").mkdir(parents=True)
    (root / "a" / "1.jpg").write_bytes(b"one")
    (root / "a" / "2.jpg").write_bytes(b"two")
    meta = root / ".store" / "meta"
    for key, doc in (
        ("a/1.jpg", '{"key": "a/1.jpg", "etag": "e1", "metadata": {"colour": "Black"}}'),
        ("a/2.jpg", '{"key": "a/2.jpg", "etag": "e2", "metad'),
    ):
        digest = hashlib.sha256(key.encode()).hexdigest()
        (meta / digest[:2]).mkdir(parents=True, exist_ok=True)
        (meta / digest[:2] / f"{digest}.json").write_text(doc)
    store = LocalObjectStore(root)
    assert (store.head("a/1.jpg").etag, store.head("a/1.jpg").metadata) == ("e1", {"colour": "Black"})
    assert (store.head("a/2.jpg").etag, store.head("a/2.jpg").metadata) == ("", {})
    assert not meta.exists()
    assert [i.key for i in LocalObjectStore(root).list()] == ["a/1.jpg", "a/2.jpg"]


def test_put_many_commits_every_row_once_and_keeps_what_came_before_a_refused_key(
    store: LocalObjectStore,
) -> None:
    store.put("taken", b"a file where a folder would have to be")
    items = [("ok/1.jpg", b"1", {"n": "1"}), ("ok/2.jpg", b"2", {"n": "2"}), ("taken/x.jpg", b"x", {})]
    items.append(("never.jpg", b"not reached", {}))
    with pytest.raises(InputError) as info:
        store.put_many(items)
    assert info.value.code == "key_conflict"
    assert [(i.key, i.metadata) for i in store.list()] == [
        ("ok/1.jpg", {"n": "1"}),
        ("ok/2.jpg", {"n": "2"}),
        ("taken", {}),
    ]
