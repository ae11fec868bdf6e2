"""Import a folder of product photos (plus an optional CSV of attributes) into the local product.

Resumable by construction: every chunk is committed before the next starts, and re-running asks
the metadata store which (key, sha256, model) triples are already done, so after Ctrl-C or a
crash only the interrupted chunk is redone.

Photos removed from the folder stay searchable unless the import is told that the folder is the
whole catalogue (``prune``): then, after a complete pass, every image whose key the folder no longer
holds is deleted the way ``fashion-search delete`` deletes one. That is the local counterpart of
S3's ``ObjectRemoved`` events, for a shop that keeps its catalogue as a folder.

Throughput: a pipeline (see ``CatalogueImporter.run``). Reading, hashing, copying and decoding of
chunk i+1 run in worker threads and the writes of chunk i-1 in a writer thread while the model
embeds chunk i (Pillow, SQLite and ONNX Runtime release the GIL), so the model is rarely left
waiting.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fashion_search.errors import InputError
from fashion_search.ingest import IndexPlan, IngestItem, IngestOutcome, prepare_item, sha256_bytes
from fashion_search.services import Services

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})


@dataclass
class ImportSummary:
    ingested: int = 0
    skipped: int = 0
    failed: int = 0
    stale: int = 0
    removed: int = 0  # with ``prune``: images deleted because their file left the folder
    reasons: Counter[str] = field(default_factory=Counter)
    failed_keys: list[str] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def total(self) -> int:
        return self.ingested + self.skipped + self.failed + self.stale

    def add(self, outcome: IngestOutcome) -> None:
        if outcome.status == "indexed":
            self.ingested += 1
        elif outcome.status == "skipped":
            self.skipped += 1
        elif outcome.status == "failed":
            self.failed += 1
            self.reasons[(outcome.reason or "unknown").split(":")[0]] += 1
            if len(self.failed_keys) < 100:
                self.failed_keys.append(outcome.key)
        else:
            self.stale += 1

    def as_dict(self) -> dict[str, object]:
        rate = self.ingested / self.seconds if self.seconds else 0.0
        return {
            "ingested": self.ingested,
            "skipped": self.skipped,
            "failed": self.failed,
            "removed": self.removed,
            "failure_reasons": dict(self.reasons),
            "failed_keys_sample": self.failed_keys[:10],
            "seconds": round(self.seconds, 2),
            "images_per_s": round(rate, 1),
            "interrupted": self.interrupted,
        }


@contextmanager
def open_csv(path: Path) -> Iterator[csv.DictReader[str]]:
    """A UTF-8 CSV file (a BOM is fine: spreadsheets write one) as dict rows; a missing or
    undecodable file becomes an ``InputError`` rather than a traceback, also while reading."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            yield csv.DictReader(fh)
    except (FileNotFoundError, IsADirectoryError):
        raise InputError("not_found", f"{path} is not a file") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError("invalid_csv", f"{path} is not a UTF-8 CSV file ({exc})") from None


def read_tags_csv(path: Path) -> dict[str, dict[str, str]]:
    """First column joins to the image file's stem; every other non-empty column becomes a tag."""
    with open_csv(path) as reader:
        if not reader.fieldnames:
            return {}
        id_column = reader.fieldnames[0]
        return {
            row[id_column].strip(): {
                k: v.strip() for k, v in row.items() if k and k != id_column and v and v.strip()
            }
            for row in reader
            if row.get(id_column)
        }


def list_images(folder: Path, limit: int | None = None) -> list[Path]:
    """Image files under ``folder`` in path order. ``os.walk`` and a string sort: on a 44k-file
    catalogue, ``rglob`` plus a stat per file and sorting ``Path`` objects took most of a second."""
    names = sorted(
        os.path.join(root, name)
        for root, _dirs, files in os.walk(folder)
        for name in files
        if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES
    )
    return [Path(n) for n in (names[:limit] if limit is not None else names)]


def _chunks(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class CatalogueImporter:
    def __init__(self, services: Services, folder: Path, tags: dict[str, dict[str, str]]) -> None:
        self.services = services
        self.folder = folder
        self.tags = tags

    def _prepare_chunk(self, paths: Sequence[Path]) -> tuple[IndexPlan, int]:
        """Worker-thread stage: read, hash, skip finished ones, store the object, decode, plan."""
        s = self.services
        items = []
        for path in paths:
            data = path.read_bytes()
            key = path.relative_to(self.folder).as_posix()
            items.append(IngestItem(key=key, data=data, tags=self.tags.get(path.stem, {})))
        done = s.ingestor.current_ids([(i.key, sha256_bytes(i.data)) for i in items])
        todo = [item for item in items if item.key not in done]
        s.objects.put_many([(item.key, item.data, item.tags) for item in todo])
        prepared = [
            prepare_item(
                item,
                s.encoder.manifest.image,
                max_bytes=s.settings.max_image_bytes,
                max_pixels=s.settings.max_image_pixels,
            )
            for item in todo
        ]
        return s.ingestor.plan(prepared, normalise=True), len(items) - len(prepared)

    def run(
        self, paths: Sequence[Path], chunk_size: int = 256, on_progress: Callable[[int], None] | None = None
    ) -> ImportSummary:
        """Three stages, each chunk passing through them in order: two worker threads prepare,
        this thread runs the model (nothing else), one writer thread commits. At most two or
        three chunks wait at each hand-over, which bounds memory. Ctrl-C drops the chunks not yet
        embedded and lets the writer finish those that were: their model work is done, and each
        commit is complete or absent."""
        summary = ImportSummary()
        started = time.perf_counter()
        prepared: deque[Future[tuple[IndexPlan, int]]] = deque()
        committed: deque[tuple[Future[list[IngestOutcome]], int]] = deque()

        def tally() -> None:
            future, skipped = committed[0]
            outcomes = future.result()  # Ctrl-C while waiting here leaves it queued, to be counted
            committed.popleft()
            summary.skipped += skipped
            for outcome in outcomes:
                summary.add(outcome)
            if on_progress and not summary.interrupted:  # a stopped import's bar is closed
                on_progress(len(outcomes) + skipped)

        def embed_oldest() -> None:
            plan, skipped = prepared.popleft().result()
            embeddings = self.services.ingestor.embed(plan)
            plan.tower_input = None  # float copies are large (CLIP: 0.6 MB a photo); commits need none
            committed.append((writer.submit(self.services.ingestor.commit, plan, embeddings), skipped))
            if len(committed) > 2:
                tally()

        with (
            ThreadPoolExecutor(max_workers=2, thread_name_prefix="import") as workers,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="import-commit") as writer,
        ):
            try:
                for chunk in _chunks(paths, chunk_size):
                    prepared.append(workers.submit(self._prepare_chunk, chunk))
                    if len(prepared) > 1:
                        embed_oldest()
                while prepared:
                    embed_oldest()
            except KeyboardInterrupt:
                summary.interrupted = True
                for future in prepared:
                    future.cancel()
            while committed:
                tally()
        summary.seconds = time.perf_counter() - started
        return summary


def prune_missing(services: Services, keep: set[str]) -> int:
    """Delete every indexed or failed image whose key is not in ``keep``: its record becomes a
    tombstone, its vector and its stored object go. Returns how many were deleted."""
    gone = [r.key for r in services.metadata.iter_records() if r.status != "deleted" and r.key not in keep]
    for key in gone:
        services.ingestor.delete(key)
        services.objects.delete(key)
    if gone:
        log.info("pruned images whose files left the folder", extra={"removed": len(gone)})
    return len(gone)


def import_catalogue(
    services: Services,
    folder: Path,
    tags_csv: Path | None = None,
    limit: int | None = None,
    chunk_size: int = 256,
    on_progress: Callable[[int], None] | None = None,
    prune: bool = False,
) -> ImportSummary:
    """``prune``: the folder is the whole catalogue; after a complete import, images whose files
    left it are deleted. Not after an interrupted one (Ctrl-C means stop; the next run prunes),
    and refused with ``limit``, which would make every file past the limit look removed."""
    if prune and limit is not None:
        raise InputError("invalid_arguments", "pruning needs the whole folder, so it cannot take a limit")
    tags = read_tags_csv(tags_csv) if tags_csv else {}
    paths = list_images(folder, limit)
    summary = CatalogueImporter(services, folder, tags).run(paths, chunk_size, on_progress)
    if prune and not summary.interrupted:
        summary.removed = prune_missing(services, {path.relative_to(folder).as_posix() for path in paths})
    return summary
