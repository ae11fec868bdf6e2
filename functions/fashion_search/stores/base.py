"""The three storage interfaces. Each has a local and an AWS implementation.

They are shaped after the AWS services' semantics (batched writes, deletes by id, metadata
filters) rather than after the local libraries, so that the AWS implementations slot in without
the services above noticing. Implementations raise ``TransientError`` for retryable failures.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from fashion_search.records import ImageRecord, Status

# Equality and any-of filters on tags: {"gender": ["Women"], "baseColour": ["Black", "Blue"]}.
Filters = Mapping[str, Sequence[str]]


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VectorItem:
    id: str
    vector: np.ndarray
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VectorMatch:
    id: str
    score: float
    metadata: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class ObjectStore(Protocol):
    """Where the image files live (a directory, an S3 bucket)."""

    def get(self, key: str, *, max_bytes: int) -> bytes:
        """The object's bytes; ``InputError('too_large')`` past ``max_bytes``, ``NotFoundError`` if absent."""

    def head(self, key: str) -> ObjectInfo:
        """Size, etag and user metadata (S3 ``x-amz-meta-*``); ``NotFoundError`` if absent."""

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None: ...

    def put_many(self, items: Sequence[tuple[str, bytes, Mapping[str, str]]]) -> None:
        """(key, bytes, metadata) in order, as cheaply as the store allows (catalogue import);
        stops at the first refused object, keeping the ones before it."""

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str = "", start_after: str = "") -> Iterator[ObjectInfo]:
        """Keys in lexicographic order (paginated underneath); ``start_after`` resumes a listing."""

    def url(self, key: str) -> str:
        """A URL a browser can fetch the image from (presigned for S3)."""


@runtime_checkable
class MetadataStore(Protocol):
    """One ``ImageRecord`` per image id (SQLite, DynamoDB)."""

    # Whether ``counts()`` is cheap enough for an unauthenticated health check (a DynamoDB count
    # is a paid full-table scan; a SQLite count is not).
    counts_are_cheap: bool

    def get(self, image_id: str) -> ImageRecord | None: ...

    def get_many(self, image_ids: Sequence[str]) -> dict[str, ImageRecord]: ...

    def put(self, record: ImageRecord) -> bool:
        """Write unless ``records.is_stale(record.sequencer, stored.sequencer)``; True if written.

        Atomic (a conditional write), so two concurrent events for one key cannot both win.
        """

    def put_many(self, records: Sequence[ImageRecord]) -> None:
        """Unconditional batched write (catalogue import, backfill)."""

    def iter_records(self, status: Status | None = None) -> Iterator[ImageRecord]: ...

    def counts(self) -> dict[str, int]:
        """Number of records per status; every status is present, zero included."""


@runtime_checkable
class VectorIndex(Protocol):
    """Nearest-neighbour search by inner product over L2-normalised vectors (FAISS, Pinecone)."""

    def upsert(self, items: Iterable[VectorItem]) -> None: ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def query(
        self, vector: np.ndarray, top_k: int, filters: Filters | None = None, exclude_ids: Sequence[str] = ()
    ) -> list[VectorMatch]:
        """Best ``top_k`` matches, best first; only items whose tags match every filter key."""

    def fetch(self, ids: Sequence[str]) -> dict[str, VectorItem]:
        """The stored items (vector and metadata) among ``ids``; absent ones are left out."""

    def count(self) -> int: ...
