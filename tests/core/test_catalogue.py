"""Catalogue import: CSV tags, limits, a summary with reasons, and resuming after an interruption."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from fashion_search.catalogue import import_catalogue, list_images, read_tags_csv
from fashion_search.errors import InputError, TransientError
from fashion_search.records import image_id_for_key
from fashion_search.services import Services


@pytest.fixture
def folder(tmp_path: Path, kagl_dir: Path, kagl_sample_ids: list[str]) -> Path:
    """30 KAGL photos, one corrupt file and one non-image file that the importer must skip."""
    out = tmp_path / "catalogue"
    out.mkdir()
    for pid in kagl_sample_ids[:30]:
        shutil.copy(kagl_dir / "images" / f"{pid}.jpg", out / f"{pid}.jpg")
    (out / "99999999.jpg").write_bytes((kagl_dir / "images" / f"{kagl_sample_ids[0]}.jpg").read_bytes()[:400])
    (out / "notes.txt").write_text("not an image")
    return out


def test_import_with_tags_and_summary(services: Services, folder: Path, kagl_dir: Path) -> None:
    summary = import_catalogue(services, folder, kagl_dir / "styles.csv", chunk_size=8)
    assert (summary.ingested, summary.skipped, summary.failed) == (30, 0, 1)
    assert summary.reasons == {"corrupt_image": 1}
    assert summary.failed_keys == ["99999999.jpg"]
    record = services.metadata.get(image_id_for_key("15970.jpg")) or next(
        services.metadata.iter_records("indexed")
    )
    assert record.tags["productDisplayName"] and "id" not in record.tags
    assert services.objects.get(record.key, max_bytes=10**6) == (folder / record.key).read_bytes()


def test_limit(services: Services, folder: Path) -> None:
    summary = import_catalogue(services, folder, limit=5)
    assert summary.total == 5 and services.vectors.count() == 5


def test_rerun_skips_everything(services: Services, folder: Path) -> None:
    import_catalogue(services, folder, chunk_size=8)
    again = import_catalogue(services, folder, chunk_size=8)
    assert (again.ingested, again.skipped, again.failed) == (0, 31, 0)


def test_interrupted_import_resumes(make_services: Callable[..., Services], folder: Path) -> None:
    calls = []

    def interrupt_after_two_chunks(n: int) -> None:
        calls.append(n)
        if len(calls) == 2:
            raise KeyboardInterrupt

    # Ctrl-C drops the chunks not yet embedded; those already embedded are committed first.
    first = import_catalogue(make_services(), folder, chunk_size=2, on_progress=interrupt_after_two_chunks)
    done = first.ingested + first.failed
    assert first.interrupted and 4 <= done < 31
    assert make_services().vectors.count() == first.ingested
    resumed = import_catalogue(make_services(), folder, chunk_size=2)  # a new process
    assert not resumed.interrupted
    assert resumed.skipped == done and resumed.ingested + resumed.failed == 31 - done
    assert make_services().vectors.count() == 30


def test_a_failed_commit_stops_the_import_and_a_rerun_repairs_it(
    make_services: Callable[..., Services], folder: Path
) -> None:
    """The writer thread's failure (here SQLite busy: another process holds the metadata write
    lock) ends the import with that error, leaves no record claiming a vector that is missing,
    and the next run indexes everything once."""
    services = make_services()
    services.metadata._db._busy_timeout_s = 0.2  # type: ignore[attr-defined]  # fail fast, not after 30 s
    holder = sqlite3.connect(services.settings.sqlite_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(TransientError):
            import_catalogue(services, folder, chunk_size=8)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # Vectors precede their records, so the failed chunks' vectors exist without a record: the
    # record is the commit marker, and its absence makes the next run redo them.
    assert services.metadata.counts() == {"indexed": 0, "failed": 0, "deleted": 0}
    assert services.vectors.count() > 0

    rerun = import_catalogue(make_services(), folder, chunk_size=8)
    assert (rerun.ingested, rerun.skipped, rerun.failed) == (30, 0, 1)
    final = make_services()
    indexed = {r.image_id for r in final.metadata.iter_records("indexed")}
    assert len(indexed) == 30 and final.vectors.count() == 30
    assert set(final.vectors.fetch(list(indexed))) == indexed


def test_prune_deletes_images_whose_files_left_the_folder(services: Services, folder: Path) -> None:
    import_catalogue(services, folder, chunk_size=8)
    keys = sorted(p.name for p in list_images(folder))
    removed = [keys[0], "99999999.jpg"]  # an indexed photo and the failed (corrupt) one
    for key in removed:
        (folder / key).unlink()

    kept = import_catalogue(services, folder, chunk_size=8)  # without prune, nothing goes
    assert kept.removed == 0 and services.vectors.count() == 30

    summary = import_catalogue(services, folder, chunk_size=8, prune=True)
    assert (summary.removed, summary.skipped, summary.ingested) == (2, 29, 0)
    assert services.vectors.count() == 29
    for key in removed:
        record = services.metadata.get(image_id_for_key(key))
        assert record is not None and record.status == "deleted"
        assert key not in {o.key for o in services.objects.list()}
    survivor = services.metadata.get(image_id_for_key(keys[1]))
    assert survivor is not None and survivor.status == "indexed"
    assert services.objects.get(keys[1], max_bytes=10**6) == (folder / keys[1]).read_bytes()
    again = import_catalogue(services, folder, chunk_size=8, prune=True)
    assert again.removed == 0  # tombstones are not deleted twice


def test_prune_skips_an_interrupted_import_and_refuses_a_limit(services: Services, folder: Path) -> None:
    import_catalogue(services, folder, chunk_size=8)
    (folder / sorted(p.name for p in list_images(folder))[0]).unlink()

    def interrupt(_: int) -> None:
        raise KeyboardInterrupt

    cut = import_catalogue(services, folder, chunk_size=8, on_progress=interrupt, prune=True)
    assert cut.interrupted and cut.removed == 0 and services.vectors.count() == 30
    with pytest.raises(InputError) as exc:
        import_catalogue(services, folder, limit=5, prune=True)
    assert exc.value.code == "invalid_arguments"
    assert services.vectors.count() == 30


def test_tags_csv_first_column_joins_to_the_stem(tmp_path: Path) -> None:
    csv_path = tmp_path / "tags.csv"
    csv_path.write_text('sku,colour,name\nA1,Red,"Shirt, slim"\nB2,,Plain\n')
    assert read_tags_csv(csv_path) == {
        "A1": {"colour": "Red", "name": "Shirt, slim"},
        "B2": {"name": "Plain"},
    }


def test_list_images_walks_subfolders_in_path_order_and_skips_other_files(tmp_path: Path) -> None:
    for rel in ("b/2.JPG", "a/z/3.png", "a/1.webp", "c.jpeg", "a/readme.txt", "b/notes"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == ["a/1.webp", "a/z/3.png", "b/2.JPG", "c.jpeg"]
    assert [p.name for p in list_images(tmp_path, limit=2)] == ["1.webp", "3.png"]
