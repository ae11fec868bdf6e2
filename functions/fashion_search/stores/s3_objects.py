"""Images in an S3 bucket; uploader-supplied ``x-amz-meta-*`` headers become the image's tags.

S3 lower-cases user-metadata names, so tags read from S3 have lower-case names (``basecolour``).
Non-ASCII metadata values travel as RFC 2047 encoded-words (what the S3 console writes), so they
are encoded on ``put`` and decoded on ``head``.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator, Mapping, Sequence
from email.header import Header, decode_header, make_header
from typing import Any

from fashion_search.errors import InputError
from fashion_search.stores.aws_errors import translated
from fashion_search.stores.base import ObjectInfo


def encode_metadata_value(value: str) -> str:
    return value if value.isascii() else Header(value, "utf-8").encode()


def decode_metadata_value(value: str) -> str:
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeDecodeError):
        return value


def too_large(key: str, size: int, max_bytes: int) -> InputError:
    return InputError("too_large", f"{key} is {size} bytes; the limit is {max_bytes}", status_code=413)


class S3ObjectStore:
    """``ObjectStore`` over one bucket, through a boto3 S3 client the caller configures."""

    def __init__(self, client: Any, bucket: str, presign_ttl_s: int) -> None:
        self.client = client
        self.bucket = bucket
        self.presign_ttl_s = presign_ttl_s

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def get(self, key: str, *, max_bytes: int) -> bytes:
        """Refuses by the response's ContentLength before reading the body, so an oversized object
        costs one request and no download; the bounded read guards against a lying length."""
        with translated(self._where(key)):
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        body = response["Body"]
        try:
            size = int(response.get("ContentLength") or 0)
            if size > max_bytes:
                raise too_large(key, size, max_bytes)
            with translated(self._where(key)):
                data = body.read(max_bytes + 1)
        finally:
            body.close()
        if len(data) > max_bytes:
            raise too_large(key, len(data), max_bytes)
        return data

    def head(self, key: str) -> ObjectInfo:
        with translated(self._where(key)):
            response = self.client.head_object(Bucket=self.bucket, Key=key)
        return ObjectInfo(
            key=key,
            size=int(response.get("ContentLength") or 0),
            etag=str(response.get("ETag", "")).strip('"'),
            metadata={k: decode_metadata_value(v) for k, v in (response.get("Metadata") or {}).items()},
        )

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None:
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        with translated(self._where(key)):
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                Metadata={k: encode_metadata_value(v) for k, v in (metadata or {}).items()},
            )

    def put_many(self, items: Sequence[tuple[str, bytes, Mapping[str, str]]]) -> None:
        """S3 has no batched put; one request per object, in order, stopping at the first error."""
        for key, data, metadata in items:
            self.put(key, data, metadata)

    def delete(self, key: str) -> None:
        with translated(self._where(key)):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def list(self, prefix: str = "", start_after: str = "") -> Iterator[ObjectInfo]:
        params = {"Bucket": self.bucket, "Prefix": prefix}
        if start_after:
            params["StartAfter"] = start_after
        pages = self.client.get_paginator("list_objects_v2").paginate(**params)
        with translated(self._where(prefix)):
            for page in pages:
                for obj in page.get("Contents", []):
                    yield ObjectInfo(
                        key=obj["Key"], size=int(obj.get("Size", 0)), etag=str(obj.get("ETag", "")).strip('"')
                    )

    def url(self, key: str) -> str:
        """Presigned locally (no request); the URL stops working after ``presign_ttl_s``."""
        return str(
            self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.presign_ttl_s
            )
        )
