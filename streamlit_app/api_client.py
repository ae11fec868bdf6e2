"""Plain HTTP calls to the fashion-search API, each turning every failure into a readable ``ApiError``.

The front end is deployed on its own (App Runner) with only ``streamlit`` and ``requests``, so it
speaks to the API purely over its public HTTP contract (docs/architecture.md, "Public HTTP API")
and never imports the engine. Every call has a timeout: a hung API must cost the shopper a message,
not a frozen page.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

DEFAULT_API_URL = "http://127.0.0.1:8000"
CONNECT_TIMEOUT_S = 3.05
# A cold API Lambda loads the ONNX model before answering; searches get the longer budget.
SEARCH_TIMEOUT_S = 30.0
FACETS_TIMEOUT_S = 10.0
IMAGE_TIMEOUT_S = 10.0

Filters = Mapping[str, list[str]]


class ApiError(Exception):
    """A failed API call, with a message meant for the shopper rather than a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ApiConfig:
    """Where the API lives and the key it wants (``x-api-key``), if any."""

    base_url: str
    api_key: str | None = None

    @classmethod
    def from_sources(cls, env: Mapping[str, str], secrets: Mapping[str, Any]) -> ApiConfig:
        """Environment first (App Runner, docker run -e), then Streamlit secrets, then the local default."""

        def pick(name: str) -> str | None:
            value = str(env.get(name) or secrets.get(name) or "").strip()
            return value or None

        base_url = pick("FASHION_SEARCH_API_URL") or DEFAULT_API_URL
        return cls(base_url=base_url.rstrip("/"), api_key=pick("FASHION_SEARCH_API_KEY"))

    def needs_key_for(self, url: str) -> bool:
        """True for images behind this API's key check, which a browser ``<img>`` cannot pass."""
        return bool(self.api_key) and url.startswith(f"{self.base_url}/")

    def absolute_url(self, url: str) -> str:
        """Local mode answers ``/images/{id}/file``: the browser must fetch it from the API, not from us."""
        if url.startswith(("http://", "https://", "data:")):
            return url
        return f"{self.base_url}/{url.lstrip('/')}"


@dataclass(frozen=True)
class Hit:
    """One search result as the cards need it."""

    image_id: str
    key: str
    score: float
    url: str
    tags: dict[str, str] = field(default_factory=dict)
    matched_terms: tuple[str, ...] = ()  # the query's words found in its tags (hybrid ranking)

    @property
    def name(self) -> str:
        """Catalogue imports carry a display name; a bare upload only has its object key."""
        return self.tags.get("productDisplayName") or self.key


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    took_ms: float | None = None
    next_offset: int | None = None  # where the next page starts; None after the last one


@dataclass(frozen=True)
class Page:
    """Which slice of a ranking to ask for: ``top_k`` results from ``offset``, within ``filters``."""

    top_k: int
    filters: Filters = field(default_factory=dict)
    offset: int = 0


@dataclass(frozen=True)
class FacetValue:
    value: str
    count: int


def env_config() -> ApiConfig:
    """The config of a running app: process environment, then ``st.secrets`` when a secrets file exists."""
    import streamlit as st

    try:
        secrets: Mapping[str, Any] = dict(st.secrets)
    except (FileNotFoundError, st.errors.StreamlitSecretNotFoundError):
        secrets = {}
    return ApiConfig.from_sources(os.environ, secrets)


def search_by_text(cfg: ApiConfig, text: str, page: Page) -> SearchResult:
    return _search(cfg, "/get_image_by_text", {"text": text}, page)


def similar_to_image_id(cfg: ApiConfig, image_id: str, page: Page) -> SearchResult:
    return _search(cfg, "/get_similar_images", {"image_id": image_id}, page)


def similar_to_url(cfg: ApiConfig, url: str, page: Page) -> SearchResult:
    return _search(cfg, "/get_similar_images", {"url": url}, page)


def similar_to_photo(cfg: ApiConfig, data: bytes, page: Page) -> SearchResult:
    """JSON with base64 rather than multipart, so filters travel exactly as they do for the other searches."""
    encoded = base64.b64encode(data).decode("ascii")
    return _search(cfg, "/get_similar_images", {"image_base64": encoded}, page)


def facets(cfg: ApiConfig) -> dict[str, list[FacetValue]]:
    """Tag -> values with counts, the raw material for the sidebar filters."""
    body = _call(cfg, "GET", "/facets", None, FACETS_TIMEOUT_S)
    if not isinstance(body, dict):
        raise ApiError("The search service sent filters in a shape this page does not understand.")
    try:
        return {
            str(tag): [FacetValue(str(v["value"]), int(v["count"])) for v in values]
            for tag, values in body.items()
        }
    except (TypeError, KeyError, ValueError) as exc:
        raise ApiError("The search service sent filters in a shape this page does not understand.") from exc


def image_bytes(cfg: ApiConfig, url: str) -> bytes:
    """A result photo served by a keyed API: the browser cannot send ``x-api-key``, so we fetch it."""
    return _send(cfg, "GET", url, None, IMAGE_TIMEOUT_S).content


def _search(cfg: ApiConfig, path: str, query: dict[str, Any], page: Page) -> SearchResult:
    payload = {**query, "top_k": page.top_k}
    if page.offset:
        payload["offset"] = page.offset
    wanted = {tag: list(values) for tag, values in page.filters.items() if values}
    if wanted:
        payload["filters"] = wanted
    body = _call(cfg, "POST", path, payload, SEARCH_TIMEOUT_S)
    try:
        hits = [
            Hit(
                image_id=str(r["image_id"]),
                key=str(r["key"]),
                score=float(r["score"]),
                url=cfg.absolute_url(str(r["url"])),
                tags={str(k): str(v) for k, v in (r.get("tags") or {}).items()},
                matched_terms=tuple(str(t) for t in (r.get("matched_terms") or ())),
            )
            for r in body["results"]
        ]
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise ApiError("The search service sent results in a shape this page does not understand.") from exc
    took, following = body.get("took_ms"), body.get("next_offset")
    return SearchResult(
        hits=hits,
        took_ms=float(took) if isinstance(took, int | float) else None,
        next_offset=following if isinstance(following, int) and following > page.offset else None,
    )


def _call(cfg: ApiConfig, method: str, path: str, payload: dict[str, Any] | None, read_s: float) -> Any:
    response = _send(cfg, method, f"{cfg.base_url}{path}", payload, read_s)
    try:
        return response.json()
    except ValueError as exc:
        raise ApiError("The search service sent an answer this page could not read.") from exc


def _send(
    cfg: ApiConfig, method: str, url: str, payload: dict[str, Any] | None, read_s: float
) -> requests.Response:
    """One request with the key and both timeouts; a non-2xx answer or no answer raises ``ApiError``."""
    headers = {"accept": "application/json"}
    if cfg.api_key:
        headers["x-api-key"] = cfg.api_key
    try:
        response = requests.request(
            method, url, json=payload, headers=headers, timeout=(CONNECT_TIMEOUT_S, read_s)
        )
    except requests.Timeout as exc:
        raise ApiError(
            f"The search service did not answer within {read_s:.0f} seconds. Please try again."
        ) from exc
    except requests.RequestException as exc:
        raise ApiError(
            f"Can't reach the search service at {cfg.base_url}. It may be down or restarting; "
            "please try again in a moment."
        ) from exc
    if not response.ok:
        raise _error_for(response)
    return response


def _error_for(response: requests.Response) -> ApiError:
    """The API's 4xx body says what was wrong with the query; pass its detail on, never the raw body."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    # Only a plain sentence is worth showing (a framework's own 422 detail is a list of dicts).
    detail = body.get("detail") if isinstance(body, dict) and isinstance(body.get("detail"), str) else ""
    if status in (401, 403):
        return ApiError("The search service refused this page's API key. Check FASHION_SEARCH_API_KEY.")
    if status >= 500:
        return ApiError(f"The search service had a problem (HTTP {status}). Please try again shortly.")
    return ApiError(detail or f"The search service refused the request (HTTP {status}).")
