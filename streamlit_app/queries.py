"""What the shopper asked for, kept in session state so filters and top-k can re-run it.

A query is remembered rather than fired once: changing a filter or the number of results asks the
same question again, which is how a shop's search page behaves, and "Show more" asks it for the
next page.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import api_client as api
from api_client import ApiConfig, Page, SearchResult
from PIL import Image, ImageOps, UnidentifiedImageError

QueryKind = Literal["text", "photo", "url", "similar"]

# Phone photos are several MB; base64 in JSON adds a third and API Gateway + Lambda cap a request
# near 6 MB. The model looks at ~224 px, so anything bigger is shrunk before it leaves the page.
UPLOAD_SHRINK_ABOVE_BYTES = 1_000_000
UPLOAD_MAX_SIDE = 1024


@dataclass(frozen=True)
class Query:
    """``value`` is the text, the URL, the image id, or the photo's bytes; ``title`` heads the results."""

    kind: QueryKind
    value: str | bytes
    title: str
    nonce: int
    preview: str | bytes | None = None


def run_query(cfg: ApiConfig, query: Query, page: Page) -> SearchResult:
    """Raises ``api_client.ApiError`` with a readable message on any failure."""
    if query.kind == "photo":
        assert isinstance(query.value, bytes)
        return api.similar_to_photo(cfg, query.value, page)
    assert isinstance(query.value, str)
    if query.kind == "text":
        return api.search_by_text(cfg, query.value, page)
    if query.kind == "url":
        return api.similar_to_url(cfg, query.value, page)
    return api.similar_to_image_id(cfg, query.value, page)


def shrink_for_upload(data: bytes) -> bytes:
    """Downscale big photos to a JPEG; small or undecodable files go as they are (the API judges them)."""
    if len(data) <= UPLOAD_SHRINK_ABOVE_BYTES:
        return data
    try:
        with Image.open(io.BytesIO(data)) as img:
            # Re-encoding drops EXIF, so bake the orientation in first.
            upright = ImageOps.exif_transpose(img)
            upright.thumbnail((UPLOAD_MAX_SIDE, UPLOAD_MAX_SIDE))
            out = io.BytesIO()
            upright.convert("RGB").save(out, format="JPEG", quality=90)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        return data
    return out.getvalue()
