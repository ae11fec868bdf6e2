"""The console script end to end over a local data dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fashion_search.cli import main
from tests.plugins.image_cdn import ImageCdn


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model_dir: Path) -> Path:
    monkeypatch.setenv("FASHION_SEARCH_MODEL_DIR", str(tiny_model_dir))
    monkeypatch.setenv("FASHION_SEARCH_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, object]:
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def ingest_twelve(kagl_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, object]:
    """The first 12 KAGL images with their styles.csv tags."""
    images, styles = str(kagl_dir / "images"), str(kagl_dir / "styles.csv")
    return run(capsys, "ingest", images, "--tags-csv", styles, "--limit", "12", "--quiet")


def test_ingest_search_similar_delete_stats(env: Path, kagl_dir: Path, capsys) -> None:
    code, summary = ingest_twelve(kagl_dir, capsys)
    assert code == 0 and summary["ingested"] == 12
    code, hits = run(capsys, "search", "blue jeans", "--top-k", "3")
    assert code == 0 and len(hits) == 3 and all("tags" in h for h in hits)
    gender = hits[0]["tags"]["gender"]
    code, filtered = run(capsys, "search", "shirt", "--top-k", "12", "--filter", f"gender={gender}")
    assert filtered and all(h["tags"]["gender"] == gender for h in filtered)
    first = sorted((kagl_dir / "images").glob("*.jpg"))[0]
    code, similar = run(capsys, "similar", str(first), "--top-k", "1")
    assert similar[0]["key"] == first.name and similar[0]["score"] > 0.99
    code, deleted = run(capsys, "delete", first.name)
    assert deleted["status"] == "deleted"
    code, stats = run(capsys, "stats")
    assert stats["vectors"] == 11 and stats["records"] == {"indexed": 11, "failed": 0, "deleted": 1}


def test_a_photo_under_two_keys_shows_once_unless_all_duplicates(env: Path, kagl_dir: Path, capsys) -> None:
    photos = env / "photos"
    (photos / "second-sku").mkdir(parents=True)
    source = sorted((kagl_dir / "images").glob("*.jpg"))[:4]
    for path in source:
        (photos / path.name).write_bytes(path.read_bytes())
    (photos / "second-sku" / source[0].name).write_bytes(source[0].read_bytes())
    assert run(capsys, "ingest", str(photos), "--quiet")[1]["ingested"] == 5
    for argv in (["similar", str(source[0])], ["search", "shirt"]):
        _, collapsed = run(capsys, *argv, "--top-k", "5")
        _, every = run(capsys, *argv, "--top-k", "5", "--all-duplicates")
        assert len(collapsed) == 4 and len(every) == 5
    _, both = run(capsys, "similar", str(source[0]), "--top-k", "2", "--all-duplicates")
    assert {h["key"] for h in both} == {source[0].name, f"second-sku/{source[0].name}"}


def test_search_shows_matched_words_unless_vector_only_and_pages(env: Path, kagl_dir: Path, capsys) -> None:
    ingest_twelve(kagl_dir, capsys)
    _, hybrid = run(capsys, "search", "men", "--top-k", "12")
    _, vector = run(capsys, "search", "men", "--top-k", "12", "--vector-only")
    men = {h["key"] for h in hybrid if h["tags"]["gender"] == "Men"}
    assert men and {h["key"] for h in hybrid if h.get("matched_terms") == ["men"]} == men
    assert {h["key"] for h in hybrid[: len(men)]} == men  # the men's products first
    assert all("matched_terms" not in h for h in vector)
    _, second_page = run(capsys, "search", "men", "--top-k", "4", "--offset", "4")
    assert [h["key"] for h in second_page] == [h["key"] for h in hybrid][4:8]
    assert [h["score"] for h in vector] == sorted((h["score"] for h in vector), reverse=True)


def test_ingest_prune_removes_what_left_the_folder(env: Path, kagl_dir: Path, capsys) -> None:
    photos = env / "photos"
    photos.mkdir()
    for image in sorted((kagl_dir / "images").glob("*.jpg"))[:4]:
        (photos / image.name).write_bytes(image.read_bytes())
    assert run(capsys, "ingest", str(photos), "--quiet")[1]["ingested"] == 4
    gone = sorted(photos.iterdir())[0]
    gone.unlink()

    code, summary = run(capsys, "ingest", str(photos), "--quiet", "--prune")
    assert code == 0 and summary["removed"] == 1 and summary["skipped"] == 3
    assert run(capsys, "stats")[1]["vectors"] == 3
    assert main(["ingest", str(photos), "--prune", "--limit", "2", "--quiet"]) == 2
    assert json.loads(capsys.readouterr().err.strip().splitlines()[-1])["error"] == "invalid_arguments"


def test_ingest_urls_downloads_a_feed_and_resumes(
    env: Path, image_cdn: ImageCdn, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    base, ids, server = image_cdn
    monkeypatch.setenv("FASHION_SEARCH_URL_ALLOW_PRIVATE", "true")  # the test CDN is on loopback
    feed = env / "feed.csv"
    feed.write_text("sku,image,colour\n" + "".join(f"{i},{base}/img/{i}.jpg,Blue\n" for i in ids[:3]))

    code, summary = run(capsys, "ingest-urls", str(feed), "--url-column", "image", "--quiet")
    assert code == 0 and (summary["ingested"], summary["failed"]) == (3, 0)
    hits = run(capsys, "search", "blue", "--top-k", "3")[1]
    assert {h["key"] for h in hits} == {f"{i}.jpg" for i in ids[:3]}
    assert all(h["tags"] == {"colour": "Blue"} for h in hits)
    asked = len(server.paths)
    assert run(capsys, "ingest-urls", str(feed), "--url-column", "image", "--quiet")[1]["skipped"] == 3
    assert len(server.paths) == asked  # nothing downloaded twice
    assert main(["ingest-urls", str(feed), "--quiet"]) == 2  # no "url" column
    assert json.loads(capsys.readouterr().err.strip().splitlines()[-1])["error"] == "invalid_csv"


def test_bad_input_exits_2_with_a_json_error(env: Path, capsys) -> None:
    assert main(["search", "   "]) == 2
    err = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert err["error"] == "empty_text"
    assert main(["ingest", str(env / "missing-folder")]) == 2


@pytest.mark.parametrize(
    ("content", "error"), [(None, "not_found"), (b"id,colour\n15970,\xff\n", "invalid_csv")]
)
def test_a_bad_tags_csv_exits_2_before_importing_anything(
    env: Path, kagl_dir: Path, capsys, content: bytes | None, error: str
) -> None:
    tags = env / "tags.csv"
    if content is not None:
        tags.write_bytes(content)
    images = str(kagl_dir / "images")
    assert main(["ingest", images, "--tags-csv", str(tags), "--limit", "2", "--quiet"]) == 2
    assert json.loads(capsys.readouterr().err.strip().splitlines()[-1])["error"] == error
    assert run(capsys, "stats")[1]["vectors"] == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["ingest", "photos", "--chunk-size", "0"],
        ["ingest", "photos", "--limit", "-5"],
        ["ingest-urls", "feed.csv", "--workers", "0"],
        ["ingest-urls", "feed.csv", "--limit", "two"],
    ],
)
def test_bad_counts_are_usage_errors(env: Path, capsys, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "integer >= " in capsys.readouterr().err


def test_missing_model_is_explained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setenv("FASHION_SEARCH_MODEL_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("FASHION_SEARCH_DATA_DIR", str(tmp_path / "data"))
    assert main(["stats"]) == 1
    assert "model_export" in capsys.readouterr().err


def test_readme_documents_every_setting() -> None:
    from fashion_search.config import Settings

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [n for n in Settings.model_fields if f"FASHION_SEARCH_{n.upper()}" not in readme]
    assert not missing, f"README configuration table lacks {missing}"
