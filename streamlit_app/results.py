"""The product card grid.

Images are passed to ``st.image`` as absolute URLs, so the shopper's browser loads them straight
from the API (local mode) or from S3 (presigned, AWS mode) and the Streamlit server does not proxy
image bytes. The one exception is a local-mode API with a key: its ``/images/{id}/file`` wants
``x-api-key``, which an ``<img>`` cannot send, so those bytes are fetched here (and cached).
The grid is a CSS grid (style.css): as many cards per row as the window holds, at least two on
a phone.
"""

from __future__ import annotations

import html
from collections.abc import Callable

import api_client as api
import streamlit as st
from api_client import ApiConfig, ApiError, Hit

KEY_TAGS = ("gender", "articleType", "baseColour")


def card_tags(hit: Hit) -> list[str]:
    return [hit.tags[t] for t in KEY_TAGS if hit.tags.get(t)]


@st.cache_data(ttl=600, max_entries=512, show_spinner=False)
def _keyed_image(url: str, base_url: str, api_key: str) -> bytes:
    return api.image_bytes(ApiConfig(base_url, api_key), url)


def image_source(cfg: ApiConfig, url: str) -> str | bytes | None:
    """What ``st.image`` should get for a result photo; None when a keyed fetch failed."""
    if not cfg.needs_key_for(url):
        return url
    try:
        return _keyed_image(url, cfg.base_url, cfg.api_key or "")
    except ApiError:
        return None


def _score_line(hit: Hit) -> str:
    """The similarity, and the query's words found in the product's tags: why it ranks where it
    does (hybrid ranking can put it above closer-looking photos). One line, cut with an ellipsis,
    so that every card keeps the same height."""
    if not hit.matched_terms:
        return f'<div class="fs-score">match {hit.score:.2f}</div>'
    words = html.escape(", ".join(hit.matched_terms))
    return (
        f'<div class="fs-score" title="Words found in its tags: {words}">'
        f"match {hit.score:.2f} · {words}</div>"
    )


def render_grid(cfg: ApiConfig, hits: list[Hit], on_more_like: Callable[[Hit], None]) -> None:
    with st.container(key="results_grid"):
        for hit in hits:
            _render_card(image_source(cfg, hit.url), hit, on_more_like)


def _render_card(source: str | bytes | None, hit: Hit, on_more_like: Callable[[Hit], None]) -> None:
    with st.container(border=True, key=f"card_{hit.image_id}"):
        if source is None:
            st.caption("Photo unavailable")
        else:
            st.image(source, alt=hit.name, width="stretch")
        chips = "".join(
            f'<span class="fs-chip" title="{html.escape(t)}">{html.escape(t)}</span>' for t in card_tags(hit)
        )
        # Escaped inside an HTML block, so names with * or _ are shown as written, never as markdown.
        st.markdown(
            f'<div class="fs-card-body"><div class="fs-name" title="{html.escape(hit.name)}">'
            f'{html.escape(hit.name)}</div><div class="fs-chips">{chips}</div>'
            f"{_score_line(hit)}</div>",
            unsafe_allow_html=True,
        )
        st.button(
            "More like this",
            key=f"more_{hit.image_id}",
            on_click=on_more_like,
            args=(hit,),
            width="stretch",
        )
