"""Wiring: one place that turns ``Settings`` into the object graph every entry point uses.

Built once per process (Lambda container, API worker, CLI run) because loading the model and
opening stores is the expensive part of a cold start.
"""

from __future__ import annotations

from dataclasses import dataclass

from fashion_search.config import Settings
from fashion_search.encoder import Encoder
from fashion_search.ingest import Ingestor
from fashion_search.search import Searcher
from fashion_search.stores.base import MetadataStore, ObjectStore, VectorIndex


@dataclass
class Services:
    settings: Settings
    encoder: Encoder
    objects: ObjectStore
    metadata: MetadataStore
    vectors: VectorIndex
    ingestor: Ingestor
    searcher: Searcher


def build_stores(settings: Settings, dim: int) -> tuple[ObjectStore, MetadataStore, VectorIndex]:
    if settings.backend == "aws":
        from fashion_search.stores.aws import build_aws_stores  # boto3/pinecone only when used

        return build_aws_stores(settings, dim)
    from fashion_search.stores.faiss_index import FaissVectorIndex
    from fashion_search.stores.local_objects import LocalObjectStore
    from fashion_search.stores.sqlite_metadata import SqliteMetadataStore

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return (
        LocalObjectStore(settings.objects_dir, public_base_url=settings.public_base_url),
        SqliteMetadataStore(settings.sqlite_path),
        FaissVectorIndex(settings.vectors_path, dim, threads=settings.faiss_threads),
    )


def build_services(settings: Settings, encoder: Encoder | None = None) -> Services:
    """``encoder`` may be passed in so tests and benchmarks share one loaded model."""
    encoder = encoder or Encoder.load(settings.model_dir, threads=settings.onnx_threads)
    objects, metadata, vectors = build_stores(settings, encoder.dim)
    return Services(
        settings=settings,
        encoder=encoder,
        objects=objects,
        metadata=metadata,
        vectors=vectors,
        ingestor=Ingestor(encoder, metadata, vectors, settings),
        searcher=Searcher(encoder, metadata, vectors, objects, settings),
    )
