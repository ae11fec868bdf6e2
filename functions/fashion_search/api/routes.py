"""The HTTP routes: thin adapters from requests to the ``Searcher`` and the stores.

Everything CPU-bound or blocking (decoding, embedding, vector search, URL downloads, store reads)
runs in the threadpool: plain ``def`` endpoints are run there by FastAPI, and the one ``async``
endpoint (which must read the raw body to accept both JSON and multipart) hands its work to
``run_in_threadpool``. The event loop only parses requests and writes responses, so concurrent
requests are served concurrently.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from fashion_search.api.auth import require_api_key
from fashion_search.api.facets import FacetCache
from fashion_search.api.schemas import (
    ErrorResponse,
    FacetsResponse,
    FacetValue,
    HealthResponse,
    ImageInfo,
    SearchResponse,
    SearchResult,
    SimilarOptions,
    SimilarSearchRequest,
    TextSearchRequest,
)
from fashion_search.errors import InputError, NotFoundError
from fashion_search.search import QueryOptions, SearchHit, next_offset
from fashion_search.services import Services
from fashion_search.url_fetch import fetch_image_url

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (400, "Bad input (the `error` code says which)"),
        (401, "Missing or wrong `x-api-key`"),
        (404, "Unknown image id"),
        (413, "Image or request body over the size limit"),
        (422, "Request does not match the schema (`invalid_request`)"),
    )
}
DATA_URL_PREFIX = re.compile(r"^data:[\w.+/-]*(;[\w=.+-]*)*;base64,", re.IGNORECASE)
WHITESPACE = re.compile(rb"\s+")
MULTIPART_MAX_FIELDS = 10

public = APIRouter()
protected = APIRouter(dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES)


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_facet_cache(request: Request) -> FacetCache:
    cache: FacetCache = request.app.state.facets
    return cache


def search_response(hits: list[SearchHit], started: float, offset: int, top_k: int) -> SearchResponse:
    return SearchResponse(
        results=[
            SearchResult(
                image_id=h.image_id,
                key=h.key,
                score=h.score,
                url=h.url,
                tags=h.tags,
                matched_terms=list(h.matched_terms),
            )
            for h in hits
        ],
        next_offset=next_offset(offset, top_k, len(hits)),
        took_ms=round((time.perf_counter() - started) * 1000.0, 2),
    )


def validate(model: type[BaseModel], data: Any) -> Any:
    """Validate outside FastAPI's own body parsing, failing the same way it does (-> 422)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None


def decode_base64_image(text: str) -> bytes:
    payload = DATA_URL_PREFIX.sub("", text.strip(), count=1)
    try:
        return base64.b64decode(WHITESPACE.sub(b"", payload.encode("ascii")), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise InputError("invalid_base64", "image_base64 is not valid base64") from None


def query_options(request: TextSearchRequest | SimilarOptions) -> QueryOptions:
    """A request's ranking and paging fields, as every ``Searcher.by_*`` takes them."""
    return cast(QueryOptions, {name: getattr(request, name) for name in QueryOptions.__optional_keys__})


def similar_from_json(body: bytes, services: Services) -> tuple[list[SearchHit], SimilarOptions]:
    """Parse, validate and search, all in the threadpool: a 20 MB base64 body takes a while to parse."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise InputError("malformed_json", "the request body is not valid JSON") from None
    req: SimilarSearchRequest = validate(SimilarSearchRequest, payload)
    searcher, options = services.searcher, query_options(req)
    if req.image_id is not None:
        return searcher.by_image_id(req.image_id, **options), req
    if req.url is not None:
        data = fetch_image_url(req.url, services.settings)
    else:
        data = decode_base64_image(req.image_base64 or "")
    return searcher.by_image_bytes(data, **options), req


def form_value(value: str) -> Any:
    """Form fields carry JSON values (``5``, ``0.2``, ``{"gender": "Men"}``); bare text stays text."""
    try:
        return json.loads(value)
    except ValueError:
        return value


async def read_multipart(request: Request) -> tuple[SimilarOptions, bytes]:
    async with request.form(max_files=1, max_fields=MULTIPART_MAX_FIELDS) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InputError(
                "invalid_request", "multipart field 'file' (the image file) is required", status_code=422
            )
        # max_files=1 and that file is `file`: every other field is plain text.
        fields = {k: form_value(v) for k, v in form.multi_items() if isinstance(v, str)}
        options = validate(SimilarOptions, fields)
        return options, await upload.read()


@public.get("/health", response_model=HealthResponse, tags=["service"])
def health(services: ServicesDep) -> HealthResponse:
    """Liveness and what is loaded. Needs no API key (load balancers and uptime checks call it)."""
    return HealthResponse(
        status="ok",
        model_id=services.encoder.model_id,
        dim=services.encoder.dim,
        backend=services.settings.backend,
        # Only stores that count cheaply answer here: an unauthenticated health check must not
        # trigger a paid full-table scan. The vector count (Pinecone stats) is always cheap.
        records=services.metadata.counts() if services.metadata.counts_are_cheap else None,
        vectors=services.vectors.count(),
    )


@protected.post("/get_image_by_text", response_model=SearchResponse, tags=["search"])
def get_image_by_text(req: TextSearchRequest, services: ServicesDep) -> SearchResponse:
    """The catalogue images that best match a text description."""
    started = time.perf_counter()
    hits = services.searcher.by_text(req.text, **query_options(req))
    return search_response(hits, started, req.offset, req.top_k)


SIMILAR_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": SimilarSearchRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "The image file."},
                        "top_k": {"type": "integer", "default": 3, "minimum": 1},
                        "offset": {"type": "integer", "default": 0, "minimum": 0},
                        "filters": {
                            "type": "string",
                            "description": 'JSON object, e.g. {"gender": "Women"}',
                        },
                        "min_score": {"type": "number"},
                        "collapse_duplicates": {"type": "boolean", "default": True},
                    },
                }
            },
        },
    }
}


@protected.post(
    "/get_similar_images", response_model=SearchResponse, tags=["search"], openapi_extra=SIMILAR_REQUEST_BODY
)
async def get_similar_images(request: Request, services: ServicesDep) -> SearchResponse:
    """Catalogue images that look like the given one: a URL, base64 bytes, an indexed image id, or
    a multipart upload (field `file`, options as form fields)."""
    started = time.perf_counter()
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type == "multipart/form-data":
        options, data = await read_multipart(request)
        hits = await run_in_threadpool(services.searcher.by_image_bytes, data, **query_options(options))
    elif content_type == "application/json" or content_type.endswith("+json"):
        hits, options = await run_in_threadpool(similar_from_json, await request.body(), services)
    else:
        raise InputError(
            "unsupported_media_type",
            "send application/json or multipart/form-data",
            status_code=415,
        )
    return search_response(hits, started, options.offset, options.top_k)


@protected.get("/images/{image_id}", response_model=ImageInfo, tags=["images"])
def get_image(image_id: str, services: ServicesDep) -> ImageInfo:
    """An image's record (tags, size, status) and where to fetch the file."""
    record, url = services.searcher.get(image_id)
    return ImageInfo(
        image_id=record.image_id,
        key=record.key,
        status=record.status,
        url=url,
        tags=record.tags,
        sha256=record.sha256,
        width=record.width,
        height=record.height,
        format=record.format,
        size_bytes=record.size_bytes,
        model_id=record.model_id,
        reason=record.reason,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


@protected.get(
    "/images/{image_id}/file",
    response_class=Response,
    tags=["images"],
    responses={200: {"content": {"image/*": {}}, "description": "The image file."}},
)
def get_image_file(image_id: str, services: ServicesDep) -> Response:
    """The image file itself (local mode; on AWS result URLs point at S3 directly)."""
    if services.settings.backend != "local":
        raise NotFoundError("image files are served from the object store's URLs in this deployment")
    record, _ = services.searcher.get(image_id)
    if record.status != "indexed":
        raise NotFoundError(f"image {image_id!r} is {record.status}")
    data = services.objects.get(record.key, max_bytes=services.settings.max_image_bytes)
    return Response(
        content=data,
        media_type=Image.MIME.get(record.format.upper(), "application/octet-stream"),
        headers={
            "ETag": f'"{record.sha256}"',
            "Cache-Control": "private, max-age=300",
            "X-Content-Type-Options": "nosniff",
        },
    )


@protected.get("/facets", response_model=FacetsResponse, tags=["images"])
def facets(cache: Annotated[FacetCache, Depends(get_facet_cache)]) -> FacetsResponse:
    """Tag -> values with counts over the indexed catalogue, for filter widgets (cached ~1 min)."""
    return FacetsResponse(
        {tag: [FacetValue(value=v, count=n) for v, n in values] for tag, values in cache.get().items()}
    )
