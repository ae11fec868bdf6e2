"""One typed settings object, read from the environment (prefix ``FASHION_SEARCH_``).

Every entry point (CLI, local API, ingest Lambda, API Lambda, backfill job) builds exactly one
``Settings`` and passes it down; nothing else reads the environment, so a test can construct a
``Settings`` by hand and know it controls everything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

Backend = Literal["local", "aws"]


class Settings(BaseSettings):
    """Deployment configuration. Field docs double as the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="FASHION_SEARCH_", extra="ignore")

    # --- model -------------------------------------------------------------------------------
    model_dir: Path = Field(
        Path("models/kagl-minilm"),
        description="Directory with model.json, image.onnx, text.onnx and tokenizer.json.",
    )
    onnx_threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads; 0 = all cores.")
    serve_onnx_threads: int = Field(
        1,
        ge=0,
        description="ONNX Runtime threads per request in the local API server (`serve`), which runs "
        "requests side by side; 1 measured lower latency and more throughput than all cores (0).",
    )
    image_batch_size: int = Field(64, ge=1, le=1024, description="Images per ONNX call during ingest.")
    faiss_threads: int = Field(
        1, ge=1, description="Local index: threads per query (1 is fastest when requests run concurrently)."
    )

    # --- search ---------------------------------------------------------------------------------
    hybrid_candidates: int = Field(
        50,
        ge=1,
        le=1000,
        description="Hybrid text search: vector matches re-ranked by the query's words in their tags.",
    )

    # --- where state lives -----------------------------------------------------------------------
    backend: Backend = Field("local", description="'local' (directory, SQLite, FAISS) or 'aws'.")
    data_dir: Path = Field(Path("data"), description="Local mode: objects, SQLite and index live here.")

    # --- input limits (bad input gets a 4xx, never a crash) -------------------------------------
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1, description="Largest accepted image file.")
    max_image_pixels: int = Field(
        50_000_000, ge=1, description="Decompression-bomb guard: largest width*height decoded."
    )
    max_text_chars: int = Field(1000, ge=1, description="Longest accepted text query.")
    max_top_k: int = Field(100, ge=1, description="Largest top_k a request may ask for.")
    max_request_bytes: int = Field(
        25 * 1024 * 1024, ge=1, description="Largest request body the API reads before answering 413."
    )

    # --- fetching images by URL ----------------------------------------------------------------
    url_connect_timeout_s: float = Field(3.0, gt=0, description="Connect timeout for image URLs.")
    url_read_timeout_s: float = Field(10.0, gt=0, description="Total time budget for one URL download.")
    url_max_redirects: int = Field(3, ge=0, description="Redirects followed (each hop re-checked).")
    url_allow_private: bool = Field(
        False,
        description="Allow URLs that resolve to loopback/private addresses (tests, labs, or an "
        "`ingest-urls` feed on an internal CDN); cloud metadata addresses stay blocked.",
    )

    # --- AWS backend ---------------------------------------------------------------------------
    aws_region: str = Field("us-east-1", description="Region of the AWS services.")
    aws_endpoint_url: str | None = Field(
        None, description="Override for S3/DynamoDB/SQS/Secrets Manager (e.g. a moto server)."
    )
    s3_bucket: str | None = Field(None, description="Images bucket.")
    s3_prefix: str = Field("", description="Only keys under this prefix are ingested.")
    s3_suffixes: tuple[str, ...] = Field(
        (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"),
        description="Only keys with these suffixes are ingested (case-insensitive).",
    )
    presign_ttl_s: int = Field(900, ge=1, description="Lifetime of presigned result URLs.")
    dynamodb_table: str | None = Field(None, description="Metadata table.")
    pinecone_index_host: str | None = Field(None, description="Pinecone index host (https://...).")
    pinecone_namespace: str = Field("", description="Pinecone namespace for this catalogue.")
    pinecone_api_key: SecretStr | None = Field(None, description="Pinecone API key (or use the secret).")
    pinecone_api_key_secret_arn: str | None = Field(
        None, description="Secrets Manager secret holding the Pinecone API key."
    )

    # --- API -----------------------------------------------------------------------------------
    api_key: SecretStr | None = Field(None, description="If set, every route but /health needs x-api-key.")
    api_key_secret_arn: str | None = Field(None, description="Secrets Manager secret holding the API key.")
    cors_origins: tuple[str, ...] = Field((), description="Origins allowed by CORS (the front end).")
    public_base_url: str = Field(
        "", description="Local mode: prefix for result URLs (empty = relative '/images/{id}/file')."
    )

    # --- logging -------------------------------------------------------------------------------
    log_format: Literal["json", "text"] = Field("text", description="'json' on Lambda.")
    log_level: str = Field("INFO", description="Root log level.")

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "metadata.sqlite3"

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / "objects"

    @property
    def vectors_path(self) -> Path:
        return self.data_dir / "vectors.sqlite3"
