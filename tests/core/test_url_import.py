"""Importing a catalogue listed by URL: a real HTTP server on loopback serves KAGL photos, the
guarded URL client downloads them, and the one ingest path indexes them."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest

from fashion_search.errors import InputError
from fashion_search.records import image_id_for_key
from fashion_search.services import Services
from fashion_search.url_import import UrlRow, import_urls, read_url_csv
from tests.plugins.image_cdn import ImageCdn


def _feed(tmp_path: Path, rows: list[dict[str, str]]) -> Path:
    path = tmp_path / "feed.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "url", "gender", "articleType"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _shop_feed(tmp_path: Path, base: str, ids: list[str]) -> Path:
    good = [
        {"id": pid, "url": f"{base}/img/{pid}.jpg", "gender": "Men", "articleType": "Tshirts"} for pid in ids
    ]
    bad = [
        {"id": "gone", "url": f"{base}/img/missing.jpg", "gender": "Women"},
        {"id": "text", "url": f"{base}/img/readme.txt"},
        {"id": "ftp", "url": "ftp://example.com/photo.jpg"},
        {"id": "nourl", "url": ""},
    ]
    return _feed(tmp_path, good + bad)


def test_a_url_feed_is_indexed_and_every_bad_row_is_a_failure_with_its_reason(
    make_services: Callable[..., Services], image_cdn: ImageCdn, tmp_path: Path
) -> None:
    base, ids, _ = image_cdn
    services = make_services(url_allow_private=True)  # the test CDN is on loopback
    rows = read_url_csv(_shop_feed(tmp_path, base, ids))
    assert len(rows) == 9  # the row without a URL is left out

    summary = import_urls(services, rows, workers=3, chunk_size=4)

    assert (summary.ingested, summary.failed, summary.skipped) == (6, 3, 0)
    assert summary.reasons == {"url_fetch_failed": 1, "not_an_image": 1, "invalid_url": 1}
    record = services.metadata.get(image_id_for_key(f"{ids[0]}.jpg"))
    assert record is not None and record.status == "indexed"
    assert record.tags == {"gender": "Men", "articleType": "Tshirts"}
    stored = services.objects.get(f"{ids[0]}.jpg", max_bytes=10**6)
    hits = services.searcher.by_image_bytes(stored, top_k=1)
    assert hits[0].key == f"{ids[0]}.jpg" and hits[0].score > 0.99
    failed = services.metadata.get(image_id_for_key("gone.jpg"))
    assert failed is not None and failed.status == "failed" and "404" in (failed.reason or "")
    assert services.vectors.count() == 6


def test_a_rerun_downloads_only_what_failed(
    make_services: Callable[..., Services], image_cdn: ImageCdn, tmp_path: Path
) -> None:
    base, ids, server = image_cdn
    services = make_services(url_allow_private=True)
    rows = read_url_csv(_shop_feed(tmp_path, base, ids))
    import_urls(services, rows)
    server.paths.clear()

    again = import_urls(make_services(url_allow_private=True), rows)  # a new process

    assert (again.ingested, again.skipped, again.failed) == (0, 6, 3)
    assert sorted(server.paths) == ["/img/missing.jpg", "/img/readme.txt"]
    assert services.vectors.count() == 6


def test_loopback_urls_are_refused_by_default_and_nothing_is_stored(
    services: Services, image_cdn: ImageCdn, tmp_path: Path
) -> None:
    base, ids, server = image_cdn
    summary = import_urls(services, read_url_csv(_shop_feed(tmp_path, base, ids[:2])))
    assert summary.ingested == 0 and summary.reasons["url_forbidden"] == 4
    assert server.paths == [] and list(services.objects.list()) == []


def test_keys_come_from_the_id_column_or_else_from_the_url(tmp_path: Path) -> None:
    feed = _feed(
        tmp_path,
        [
            {"id": "15970", "url": "https://cdn.shop/p/15970/main.PNG?w=800", "gender": "Men"},
            {"id": "a/b", "url": "https://cdn.shop/p/xyz", "articleType": "Watches"},
            {"id": "15970", "url": "https://cdn.shop/p/15970/back.jpg"},  # a second view
        ],
    )
    assert read_url_csv(feed) == [
        UrlRow("15970.png", "https://cdn.shop/p/15970/main.PNG?w=800", {"gender": "Men"}),
        UrlRow("a/b.jpg", "https://cdn.shop/p/xyz", {"articleType": "Watches"}),
        UrlRow("15970-2.jpg", "https://cdn.shop/p/15970/back.jpg", {}),
    ]
    url_first = tmp_path / "urls.csv"
    url_first.write_text(
        "image,colour\nhttps://cdn.shop/p/1/front.jpg,Red\nhttps://cdn.shop/p/2.jpg,\nhttps://cdn.shop/p/1/front.jpg,Blue\n"
    )
    assert read_url_csv(url_first, "image") == [  # the repeated URL: its first row only
        UrlRow("cdn.shop/p/1/front.jpg", "https://cdn.shop/p/1/front.jpg", {"colour": "Red"}),
        UrlRow("cdn.shop/p/2.jpg", "https://cdn.shop/p/2.jpg", {}),
    ]


def test_a_feed_without_its_url_column_or_a_missing_file_is_refused(
    tmp_path: Path, services: Services
) -> None:
    feed = tmp_path / "feed.csv"
    feed.write_text("id,link\n1,https://cdn.shop/1.jpg\n")
    with pytest.raises(InputError) as exc:
        read_url_csv(feed)
    assert exc.value.code == "invalid_csv" and "link" in exc.value.detail
    feed.write_bytes(b"id,url\n1,https://cdn.shop/\xff.jpg\n")  # not UTF-8
    with pytest.raises(InputError) as binary:
        read_url_csv(feed)
    assert binary.value.code == "invalid_csv"
    with pytest.raises(InputError) as missing:
        read_url_csv(tmp_path / "none.csv")
    assert missing.value.code == "not_found"
    with pytest.raises(InputError) as workers:
        import_urls(services, [], workers=0)
    assert workers.value.code == "invalid_arguments"
