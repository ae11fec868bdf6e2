"""Import a catalogue kept as image URLs: a CSV with one row per product photo (an id column, a
URL column, every other column a tag), the shape of a shop's product feed on a CDN.

Each URL is fetched by the client that serves "search by URL" (``url_fetch``: http(s) only, no
loopback, private or cloud-metadata addresses unless allowed, bounded time and size), stored as an
object under a key made from the row's id, and indexed by the one ingest path, so a photo gets the
same id, record and vector as if it had been dropped into the bucket. Downloads run in threads:
they wait on the network, not on the CPU.

Resumable: a row whose key is already indexed with this model is skipped without downloading, and
every failed row (unreachable, timed out, too large, not an image) is recorded as failed with its
reason and tried again by the next run. A photo replaced upstream under the same URL is therefore
not noticed: give it a new id, or delete its key first.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from fashion_search.catalogue import IMAGE_SUFFIXES, ImportSummary, open_csv
from fashion_search.errors import InputError
from fashion_search.ingest import IngestItem, PreparedItem, prepare_item
from fashion_search.records import image_id_for_key
from fashion_search.services import Services
from fashion_search.url_fetch import fetch_image_url


@dataclass(frozen=True)
class UrlRow:
    key: str
    url: str
    tags: dict[str, str]


def _key_for(product_id: str, url: str, seen: Counter[str]) -> str:
    """``<id><suffix>`` (the URL's image suffix, else ".jpg"), and ``<id>-2<suffix>``, ``-3``, ...
    for the further photos of an id that repeats (a product's back and side views), numbered in
    file order so that a re-run finds the same keys; without an id, the URL's host and path,
    which are unique per photo on any CDN."""
    parts = urlsplit(url)
    if not product_id:
        return f"{parts.hostname or 'url'}/{parts.path.strip('/') or 'index.jpg'}"
    suffix = PurePosixPath(parts.path).suffix.lower()
    seen[product_id] += 1
    number = f"-{seen[product_id]}" if seen[product_id] > 1 else ""
    return product_id + number + (suffix if suffix in IMAGE_SUFFIXES else ".jpg")


def read_url_csv(path: Path, url_column: str = "url") -> list[UrlRow]:
    """Rows with a URL, in file order. The first column, unless it is the URL column, is the id
    that names the photo (as for a folder import's CSV); rows without a URL, and a second row for
    a key already seen (the same URL twice in a feed without ids), are left out."""
    with open_csv(path) as reader:
        return _rows(reader, path, url_column)


def _rows(reader: csv.DictReader[str], path: Path, url_column: str) -> list[UrlRow]:
    columns = list(reader.fieldnames or [])
    if url_column not in columns:
        raise InputError(
            "invalid_csv", f"{path} has no column {url_column!r} (its columns: {', '.join(columns)})"
        )
    id_column = columns[0] if columns[0] != url_column else None
    rows: dict[str, UrlRow] = {}
    seen = Counter[str]()
    for line in reader:
        url = (line.get(url_column) or "").strip()
        if not url:
            continue
        product_id = (line.get(id_column) or "").strip() if id_column else ""
        tags = {
            k: v.strip()
            for k, v in line.items()
            if k and k not in (id_column, url_column) and isinstance(v, str) and v.strip()
        }
        row = UrlRow(_key_for(product_id, url, seen), url, tags)
        rows.setdefault(row.key, row)  # the first only: two rows for one photo would race
    return list(rows.values())


def _indexed_keys(services: Services, rows: Sequence[UrlRow]) -> set[str]:
    stored = services.metadata.get_many([image_id_for_key(r.key) for r in rows])
    model = services.encoder.model_id
    return {
        r.key
        for r in rows
        if (record := stored.get(image_id_for_key(r.key))) is not None
        and record.status == "indexed"
        and record.model_id == model
    }


def _fetch_and_prepare(services: Services, row: UrlRow) -> PreparedItem:
    """Download, store and decode one photo; any refusal becomes a failed item with its reason."""
    settings = services.settings
    try:
        data = fetch_image_url(row.url, settings)
        services.objects.put(row.key, data, row.tags)
    except InputError as exc:
        return PreparedItem(row.key, "", 0, row.tags, None, error=f"{exc.code}: {exc.detail}")
    return prepare_item(
        IngestItem(row.key, data, row.tags),
        services.encoder.manifest.image,
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
    )


def import_urls(
    services: Services,
    rows: Sequence[UrlRow],
    *,
    workers: int = 8,
    chunk_size: int = 64,
    on_progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Every chunk is downloaded in ``workers`` threads, then embedded and committed before the
    next starts, so Ctrl-C loses at most the chunk in flight."""
    if workers < 1:
        raise InputError("invalid_arguments", "workers must be at least 1")
    summary = ImportSummary()
    started = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch")
    try:
        for start in range(0, len(rows), chunk_size):
            chunk = rows[start : start + chunk_size]
            done = _indexed_keys(services, chunk)
            todo = [row for row in chunk if row.key not in done]
            summary.skipped += len(chunk) - len(todo)
            prepared = list(pool.map(lambda row: _fetch_and_prepare(services, row), todo))
            # force: what is left failed before or is new; a failed download has no hash, and
            # would otherwise look "current" beside the record of the last failed one.
            for outcome in services.ingestor.index_prepared(prepared, force=True):
                summary.add(outcome)
            if on_progress:
                on_progress(len(chunk))
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    summary.seconds = time.perf_counter() - started
    return summary
