"""The one ingest path: bytes in, a searchable image (or a failed record with its reason) out.

The catalogue import, the S3-event Lambda and the backfill job all end here, so an image gets
the same id, record and vector whichever way it arrived.

Write order matters for crash safety and for out-of-order S3 events:
- create: check staleness against the stored record, upsert the vector, then write the record.
  The record is the commit marker: a crash in between leaves the record saying "not current",
  so redelivery re-embeds and re-upserts (idempotent).
- delete: write the tombstone record, then delete the vector. A redelivered delete carries the
  same sequencer, which is not stale, so it re-runs and finishes the vector delete.
- A conditional record write that loses a race to a newer event triggers ``_reconcile``, which
  makes the vector match whatever record won.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from fashion_search.config import Settings
from fashion_search.encoder import Encoder
from fashion_search.errors import InputError, NotFoundError
from fashion_search.imaging import decode_and_prepare, normalise_batch
from fashion_search.manifest import ImageTower
from fashion_search.records import ImageRecord, image_id_for_key, is_stale
from fashion_search.stores.base import MetadataStore, ObjectStore, VectorIndex, VectorItem

log = logging.getLogger(__name__)

OutcomeStatus = Literal["indexed", "skipped", "failed", "deleted", "stale"]
KEY_FIELD = "_key"  # reserved vector-metadata field holding the object key
SHA256_FIELD = "_sha256"  # and the one holding the image's hash, so searches can collapse copies


@dataclass(frozen=True)
class IngestItem:
    key: str
    data: bytes
    tags: dict[str, str] = field(default_factory=dict)
    sequencer: str | None = None


@dataclass(frozen=True)
class IngestOutcome:
    key: str
    image_id: str
    status: OutcomeStatus
    reason: str | None = None


@dataclass(frozen=True)
class PreparedItem:
    """An item after the CPU-heavy, model-free work; ``pixels`` (uint8, see ``imaging.tower_pixels``)
    is None when it failed."""

    key: str
    sha256: str
    size_bytes: int
    tags: dict[str, str]
    sequencer: str | None
    width: int = 0
    height: int = 0
    format: str = ""
    pixels: np.ndarray | None = None
    error: str | None = None

    @property
    def image_id(self) -> str:
        return image_id_for_key(self.key)


@dataclass
class IndexPlan:
    """What ``Ingestor.plan`` decided for a batch: the outcomes already known (skipped, stale) and
    the items still to index (``todo``), of which ``good`` are the decodable ones to embed."""

    prepared: Sequence[PreparedItem]
    stored: dict[str, ImageRecord]
    outcomes: dict[int, IngestOutcome] = field(default_factory=dict)
    todo: list[int] = field(default_factory=list)
    tower_input: np.ndarray | None = None  # ``good``'s pixels normalised, if ``plan`` was asked to

    @property
    def good(self) -> list[int]:
        return [n for n in self.todo if self.prepared[n].pixels is not None]

    def good_pixels(self) -> np.ndarray:
        """``good``'s tower pixels stacked: uint8 (N, H, W, 3), N >= 1."""
        return np.stack([p for p in (self.prepared[n].pixels for n in self.good) if p is not None])


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def prepare_item(item: IngestItem, spec: ImageTower, *, max_bytes: int, max_pixels: int) -> PreparedItem:
    """Hash, decode and preprocess. Pure and picklable, so the backfill runs it in processes."""
    base = dict(
        key=item.key,
        sha256=sha256_bytes(item.data),
        size_bytes=len(item.data),
        tags=item.tags,
        sequencer=item.sequencer,
    )
    try:
        decoded, pixels = decode_and_prepare(item.data, spec, max_bytes=max_bytes, max_pixels=max_pixels)
    except InputError as exc:
        return PreparedItem(**base, error=f"{exc.code}: {exc.detail}")
    return PreparedItem(
        **base, width=decoded.width, height=decoded.height, format=decoded.format, pixels=pixels
    )


def fetch_object(
    objects: ObjectStore, key: str, max_bytes: int, sequencer: str | None = None
) -> IngestItem | PreparedItem:
    """Read an object as every bucket-driven path does: user metadata as tags, then the bytes.

    An object over the size limit is not downloaded; it becomes a failed item. ``NotFoundError``
    (deleted since it was listed or announced) propagates for the caller to decide.
    """
    info = objects.head(key)
    tags = dict(info.metadata)
    try:
        data = objects.get(key, max_bytes=max_bytes)
    except NotFoundError:
        raise
    except InputError as exc:
        # Never downloaded, so there is no hash.
        return PreparedItem(key, "", info.size, tags, sequencer, error=f"{exc.code}: {exc.detail}")
    return IngestItem(key, data, tags, sequencer)


def vector_metadata(key: str, tags: dict[str, str], sha256: str) -> dict[str, str]:
    return {**tags, KEY_FIELD: key, SHA256_FIELD: sha256}


class Ingestor:
    def __init__(
        self, encoder: Encoder, metadata: MetadataStore, vectors: VectorIndex, settings: Settings
    ) -> None:
        self.encoder = encoder
        self.metadata = metadata
        self.vectors = vectors
        self.settings = settings

    # -- queries ------------------------------------------------------------------------------
    def _is_current(self, record: ImageRecord | None, sha256: str) -> bool:
        return (
            record is not None
            and record.status in ("indexed", "failed")
            and record.sha256 == sha256
            and record.model_id == self.encoder.model_id
        )

    def is_current(self, key: str, sha256: str) -> bool:
        """Already handled with these exact bytes and this model (so re-running skips it)."""
        return self._is_current(self.metadata.get(image_id_for_key(key)), sha256)

    def current_ids(self, keys_and_hashes: Sequence[tuple[str, str]]) -> set[str]:
        """Batched ``is_current``: the keys in the list that need no work."""
        ids = [image_id_for_key(k) for k, _ in keys_and_hashes]
        stored = self.metadata.get_many(ids)
        return {
            k
            for (k, sha), i in zip(keys_and_hashes, ids, strict=True)
            if self._is_current(stored.get(i), sha)
        }

    # -- writes -------------------------------------------------------------------------------
    def ingest(self, item: IngestItem) -> IngestOutcome:
        return self.ingest_batch([item])[0]

    def ingest_batch(self, items: Sequence[IngestItem]) -> list[IngestOutcome]:
        """Prepare and index a batch with one model call; outcomes in input order."""
        spec = self.encoder.manifest.image
        prepared = [
            prepare_item(
                i, spec, max_bytes=self.settings.max_image_bytes, max_pixels=self.settings.max_image_pixels
            )
            for i in items
        ]
        return self.index_prepared(prepared)

    def index_prepared(self, prepared: Sequence[PreparedItem], *, force: bool = False) -> list[IngestOutcome]:
        """Embed the good items, record the bad ones; skip current (unless ``force``) and stale ones."""
        plan = self.plan(prepared, force=force)
        return self.commit(plan, self.embed(plan))

    # ``index_prepared`` in its three steps, for a bulk import that pipelines them: only ``embed``
    # uses the model; ``plan`` and ``commit`` are store I/O that can overlap another batch's model call.
    def plan(
        self, prepared: Sequence[PreparedItem], *, force: bool = False, normalise: bool = False
    ) -> IndexPlan:
        """Read the stored records and decide, per item: skip (current), stale, or index.
        ``normalise``: also prepare the model's float input here, so that a pipeline running this
        in a worker thread leaves the model's thread nothing but the model."""
        stored = self.metadata.get_many([p.image_id for p in prepared])
        plan = IndexPlan(prepared, stored)
        for n, p in enumerate(prepared):
            record = stored.get(p.image_id)
            if record is not None and is_stale(p.sequencer, record.sequencer):
                plan.outcomes[n] = IngestOutcome(
                    p.key, p.image_id, "stale", "a newer event for this key was applied"
                )
            elif not force and self._is_current(record, p.sha256) and p.sequencer in (None, record.sequencer):
                # A same-bytes event with a newer sequencer is NOT skipped: the record must carry
                # that sequencer, or a late delete sequenced in between would wrongly win.
                plan.outcomes[n] = IngestOutcome(
                    p.key, p.image_id, "skipped", "already indexed with these bytes"
                )
            else:
                plan.todo.append(n)
        if normalise and plan.good:
            plan.tower_input = normalise_batch(plan.good_pixels(), self.encoder.manifest.image)
        return plan

    def embed(self, plan: IndexPlan) -> np.ndarray:
        """The model call for the plan's decodable items, in ``plan.good`` order."""
        if not plan.good:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        if plan.tower_input is not None:
            inputs, embed = plan.tower_input, self.encoder.embed_pixels
        else:
            inputs, embed = plan.good_pixels(), self.encoder.embed_tower_pixels
        size = self.settings.image_batch_size
        return np.concatenate([embed(inputs[i : i + size]) for i in range(0, len(inputs), size)])

    def commit(self, plan: IndexPlan, embeddings: np.ndarray) -> list[IngestOutcome]:
        """Vectors first, then the records (the commit marker); outcomes in input order."""
        prepared, stored, todo, good = plan.prepared, plan.stored, plan.todo, plan.good
        outcomes = plan.outcomes
        vectors = [
            VectorItem(p.image_id, emb, vector_metadata(p.key, p.tags, p.sha256))
            for p, emb in zip((prepared[n] for n in good), embeddings, strict=True)
        ]
        if vectors:
            self.vectors.upsert(vectors)
        failed_ids = [prepared[n].image_id for n in todo if prepared[n].pixels is None]
        if failed_ids:
            # The object at this key is now unusable: it must stop matching searches.
            self.vectors.delete(failed_ids)

        emb_by_index = dict(zip(good, embeddings, strict=True))
        records = [
            self._record(prepared[n], stored.get(prepared[n].image_id), emb_by_index.get(n)) for n in todo
        ]
        if all(prepared[n].sequencer is None for n in todo):
            self.metadata.put_many(records)
            written = [True] * len(records)
        else:
            written = [self.metadata.put(r) for r in records]
        for n, record, ok in zip(todo, records, written, strict=True):
            if not ok:
                self._reconcile(record.image_id)
                outcomes[n] = IngestOutcome(
                    record.key, record.image_id, "stale", "lost a race to a newer event"
                )
            elif record.status == "failed":
                outcomes[n] = IngestOutcome(record.key, record.image_id, "failed", record.reason)
                log.warning("ingest failed", extra={"key": record.key, "reason": record.reason})
            else:
                outcomes[n] = IngestOutcome(record.key, record.image_id, "indexed")
        return [outcomes[n] for n in range(len(prepared))]

    def _record(
        self, p: PreparedItem, previous: ImageRecord | None, embedding: np.ndarray | None
    ) -> ImageRecord:
        common = dict(
            image_id=p.image_id,
            key=p.key,
            sha256=p.sha256,
            size_bytes=p.size_bytes,
            tags=p.tags,
            model_id=self.encoder.model_id,
            sequencer=p.sequencer,
        )
        if p.pixels is None:
            record = ImageRecord(status="failed", reason=p.error, **common)
        else:
            record = ImageRecord(
                status="indexed",
                width=p.width,
                height=p.height,
                format=p.format,
                embedding=embedding,
                **common,
            )
        if previous is not None:
            record = record.with_(created_at=previous.created_at)
        return record

    def delete(self, key: str, sequencer: str | None = None) -> IngestOutcome:
        """Tombstone the record (so a late create cannot resurrect it), then drop the vector."""
        image_id = image_id_for_key(key)
        previous = self.metadata.get(image_id)
        if previous is not None and is_stale(sequencer, previous.sequencer):
            return IngestOutcome(key, image_id, "stale", "a newer event for this key was applied")
        tags = previous.tags if previous else {}
        tombstone = ImageRecord(
            image_id=image_id,
            key=key,
            status="deleted",
            tags=tags,
            sequencer=sequencer,
            sha256=previous.sha256 if previous else "",
        )
        if previous is not None:
            tombstone = tombstone.with_(created_at=previous.created_at)
        if not self.metadata.put(tombstone):
            self._reconcile(image_id)
            return IngestOutcome(key, image_id, "stale", "lost a race to a newer event")
        self.vectors.delete([image_id])
        return IngestOutcome(key, image_id, "deleted")

    def _reconcile(self, image_id: str) -> None:
        """Make the vector index agree with the record that won a race."""
        record = self.metadata.get(image_id)
        if record is not None and record.status == "indexed" and record.embedding is not None:
            self.vectors.upsert(
                [
                    VectorItem(
                        image_id, record.embedding, vector_metadata(record.key, record.tags, record.sha256)
                    )
                ]
            )
        else:
            self.vectors.delete([image_id])
