"""Vectors in a Pinecone index (or anything speaking its data-plane API, such as needledb).

Retries: the official client already retries 408/429/5xx and connection failures with jittered
exponential backoff (4 attempts, under a per-host retry budget). What still fails after that is
raised here as ``TransientError``, so the ingest Lambda hands the message back to SQS, whose
redelivery is the outer, slower retry loop.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from pinecone import (
    PineconeConnectionError,
    PineconeTimeoutError,
    RateLimitError,
    ServiceError,
)

from fashion_search.errors import ModelError, TransientError
from fashion_search.stores.base import Filters, VectorItem, VectorMatch

MAX_VECTORS_PER_UPSERT = 1000  # Pinecone's per-request limits
MAX_UPSERT_BYTES = 2 * 1024 * 1024
ENVELOPE_BYTES = 1024  # room for the request's own JSON around the vectors
MAX_IDS_PER_REQUEST = 1000
MAX_FETCH_IDS = 100  # fetch sends ids in the query string; keep URLs short
MAX_TOP_K = 10_000


@contextmanager
def translated(what: str) -> Iterator[None]:
    try:
        yield
    except (RateLimitError, ServiceError, PineconeTimeoutError, PineconeConnectionError) as exc:
        raise TransientError(f"pinecone {what}: {type(exc).__name__}") from exc


def pinecone_filter(filters: Filters) -> dict[str, Any]:
    """``{tag: [values]}`` -> Pinecone's grammar: ``$in`` per tag, all tags AND-ed."""
    clauses = [
        {tag: {"$in": [values] if isinstance(values, str) else list(values)}}
        for tag, values in filters.items()
    ]
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def upsert_batches(vectors: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Group vectors into requests within both of Pinecone's limits (count and encoded size)."""
    batch: list[dict[str, Any]] = []
    size = ENVELOPE_BYTES
    for vector in vectors:
        vector_size = len(json.dumps(vector)) + 1
        if batch and (len(batch) == MAX_VECTORS_PER_UPSERT or size + vector_size > MAX_UPSERT_BYTES):
            yield batch
            batch, size = [], ENVELOPE_BYTES
        batch.append(vector)
        size += vector_size
    if batch:
        yield batch


def chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class PineconeVectorIndex:
    """``VectorIndex`` over one namespace of a Pinecone index (an ``pinecone.Index`` data-plane client)."""

    def __init__(self, index: Any, dim: int, namespace: str = "") -> None:
        self.index = index
        self.dim = dim
        self.namespace = namespace

    def _values(self, vector: np.ndarray) -> list[float]:
        values = np.asarray(vector, dtype=np.float32).reshape(-1)
        if values.shape[0] != self.dim:
            raise ModelError(
                f"a {values.shape[0]}-dimensional vector for a {self.dim}-dimensional model: "
                "the Pinecone index must be created with the model's dimension"
            )
        return values.tolist()

    def upsert(self, items: Iterable[VectorItem]) -> None:
        vectors = (
            {
                "id": item.id,
                "values": self._values(item.vector),
                "metadata": {k: str(v) for k, v in item.metadata.items()},
            }
            for item in items
        )
        for batch in upsert_batches(vectors):
            with translated("upsert"):
                self.index.upsert(vectors=batch, namespace=self.namespace)

    def delete(self, ids: Sequence[str]) -> None:
        for chunk in chunks(list(dict.fromkeys(ids)), MAX_IDS_PER_REQUEST):
            with translated("delete"):
                self.index.delete(ids=chunk, namespace=self.namespace)

    def query(
        self, vector: np.ndarray, top_k: int, filters: Filters | None = None, exclude_ids: Sequence[str] = ()
    ) -> list[VectorMatch]:
        """Pinecone has no "not these ids" clause cheap enough for a hot path, so the query asks for
        ``len(exclude_ids)`` extra matches and drops them afterwards."""
        if top_k <= 0 or (filters and any(len(v) == 0 for v in filters.values())):
            return []
        excluded = set(exclude_ids)
        with translated("query"):
            response = self.index.query(
                vector=self._values(vector),
                top_k=min(MAX_TOP_K, top_k + len(excluded)),
                namespace=self.namespace,
                filter=pinecone_filter(filters) if filters else None,
                include_metadata=True,
            )
        matches = [
            VectorMatch(
                id=m.id,
                score=float(m.score),
                metadata={k: str(v) for k, v in (m.metadata or {}).items()},
            )
            for m in response.matches
            if m.id not in excluded
        ]
        return matches[:top_k]

    def fetch(self, ids: Sequence[str]) -> dict[str, VectorItem]:
        found: dict[str, VectorItem] = {}
        for chunk in chunks(list(dict.fromkeys(ids)), MAX_FETCH_IDS):
            with translated("fetch"):
                response = self.index.fetch(ids=chunk, namespace=self.namespace)
            for vid, vec in response.vectors.items():
                metadata = {k: str(v) for k, v in (vec.metadata or {}).items()}
                found[vid] = VectorItem(vid, np.asarray(vec.values, dtype=np.float32), metadata)
        return found

    def count(self) -> int:
        with translated("describe_index_stats"):
            stats = self.index.describe_index_stats()
        namespaces = stats.namespaces or {}
        names = (self.namespace,) if self.namespace else ("", "__default__")
        return sum(int(namespaces[n].vector_count) for n in names if n in namespaces)
