"""The metadata record kept for every object, and the identifiers derived from keys.

The record stores the embedding itself so that a vector index can always be rebuilt (another
vector database, a lost local index) without re-running the model.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

Status = Literal["indexed", "failed", "deleted"]


def image_id_for_key(key: str) -> str:
    """Deterministic id for an object key, so the Lambda and the backfill produce the same ids.

    Keys may hold any unicode and be up to 1,024 bytes; ids must be short ASCII for Pinecone and
    URLs, hence a hash rather than the key itself.
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]


def now() -> float:
    return time.time()


@dataclass(frozen=True)
class ImageRecord:
    """One object's state. ``sequencer`` orders S3 events for the same key (hex, compare padded)."""

    image_id: str
    key: str
    status: Status
    sha256: str = ""
    width: int = 0
    height: int = 0
    format: str = ""
    size_bytes: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    model_id: str = ""
    embedding: np.ndarray | None = None
    reason: str | None = None
    sequencer: str | None = None
    created_at: float = field(default_factory=now)
    updated_at: float = field(default_factory=now)

    def with_(self, **changes: object) -> ImageRecord:
        return replace(self, updated_at=now(), **changes)  # type: ignore[arg-type]


def is_stale(candidate: str | None, current: str | None) -> bool:
    """True when an event's sequencer is strictly older than the stored one, so it must be ignored.

    S3 sequencers are hex strings of varying length: compared as numbers. An equal sequencer is a
    redelivery and is NOT stale, so re-applying it finishes work a crash interrupted. A missing
    sequencer (local ingest, backfill) is never stale and never makes others stale, because those
    paths act on the object as it is now rather than on an event about it.
    """
    if candidate is None or current is None:
        return False
    width = max(len(candidate), len(current))
    return candidate.upper().rjust(width, "0") < current.upper().rjust(width, "0")
