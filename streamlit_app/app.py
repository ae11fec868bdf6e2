"""Fashion Search: a shop-style search page over the fashion-search HTTP API.

Run locally with ``streamlit run streamlit_app/app.py`` next to ``uvicorn`` serving the API;
``FASHION_SEARCH_API_URL`` / ``FASHION_SEARCH_API_KEY`` (environment or ``st.secrets``) say where
the API is. Every API failure becomes a message on the page: the app itself never needs the API
to be up to render.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import api_client as api
import streamlit as st
from api_client import ApiConfig, ApiError, FacetValue, Filters, Hit, Page
from filters import clear_filters, render_filters
from queries import Query, QueryKind, run_query, shrink_for_upload
from results import image_source, render_grid

EXAMPLES = ("blue denim jeans", "black leather handbag", "white sports shoes", "floral summer dress")
TOP_K_DEFAULT = 12
TOP_K_MAX = 48
UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp"]
STYLE = (Path(__file__).parent / "style.css").read_text(encoding="utf-8")


# --- state changes (widget callbacks: they run before the page is drawn again) -----------------


def _next_nonce() -> int:
    st.session_state.nonce = st.session_state.get("nonce", 0) + 1
    return st.session_state.nonce


def _ask(kind: QueryKind, value: str | bytes, title: str, preview: str | bytes | None = None) -> None:
    st.session_state.query = Query(kind, value, title, _next_nonce(), preview)


def _submit_text() -> None:
    text = st.session_state.get("text_query", "").strip()
    if not text:
        st.session_state.notice = "Type a few words describing what you are looking for."
        return
    _ask("text", text, f"Results for “{text}”")


def _submit_example(text: str) -> None:
    st.session_state.text_query = text
    _submit_text()


def _submit_photo() -> None:
    photo = st.session_state.get("photo")
    if photo is None:
        return
    data = photo.getvalue()
    _ask("photo", shrink_for_upload(data), "Products like your photo", preview=data)


def _submit_url() -> None:
    url = st.session_state.get("url_query", "").strip()
    if not url.startswith(("http://", "https://")):
        st.session_state.notice = "Paste a link to an image, starting with http:// or https://."
        return
    _ask("url", url, "Products like the linked image", preview=url)


def _more_like(hit: Hit) -> None:
    _ask("similar", hit.image_id, f"More like “{hit.name}”", preview=hit.url)


def _retry() -> None:
    st.session_state.query = dataclasses.replace(st.session_state.query, nonce=_next_nonce())


def _new_search() -> None:
    st.session_state.query = None


def _show_more() -> None:
    st.session_state.show_more = True


# --- talking to the API ------------------------------------------------------------------------


def _facets(cfg: ApiConfig) -> dict[str, list[FacetValue]] | ApiError:
    """Fetched once per session; a failure is not remembered, so the next interaction retries."""
    if "facets" not in st.session_state:
        try:
            st.session_state.facets = api.facets(cfg)
        except ApiError as exc:
            return exc
    return st.session_state.facets


@dataclasses.dataclass
class Answer:
    """The pages of one question fetched so far, joined into one grid. "Show more" appends the
    next page (the API's pages are slices of one fixed ranking, so they join up); a page that
    fails leaves the products already shown in place."""

    signature: tuple[object, ...]
    hits: list[Hit] = dataclasses.field(default_factory=list)
    pages: int = 0
    took_ms: float | None = None
    next_offset: int | None = 0  # where the next page starts; None after the last
    error: ApiError | None = None  # the last fetch's failure


def _answer(cfg: ApiConfig, query: Query, top_k: int, filters: Filters) -> Answer:
    """Ask only when the question changed or the shopper wants more: clicking around the page
    must not re-run the search. Changing the filters or the page size starts again at the top."""
    signature = (query.nonce, top_k, tuple(sorted((t, tuple(v)) for t, v in filters.items())))
    answer: Answer | None = st.session_state.get("answer")
    if answer is None or answer.signature != signature:
        answer = st.session_state.answer = Answer(signature)
    first_page = answer.pages == 0 and answer.error is None  # a failed first page waits for "Try again"
    wants_more = st.session_state.pop("show_more", False) and answer.pages > 0
    if answer.next_offset is None or not (first_page or wants_more):
        return answer
    try:
        with st.spinner("Searching the catalogue…"):
            result = run_query(cfg, query, Page(top_k, filters, answer.next_offset))
    except ApiError as exc:
        answer.error = exc
        return answer
    shown = {hit.image_id for hit in answer.hits}
    answer.hits.extend(hit for hit in result.hits if hit.image_id not in shown)
    if answer.pages == 0:
        answer.took_ms = result.took_ms
    answer.pages, answer.next_offset, answer.error = answer.pages + 1, result.next_offset, None
    return answer


# --- page parts --------------------------------------------------------------------------------


def _header() -> None:
    st.markdown(
        '<div class="fs-header"><div class="fs-brand">fashion<b>search</b></div>'
        '<div class="fs-tagline">Find products by describing them, or by showing a photo.</div></div>',
        unsafe_allow_html=True,
    )


def _sidebar(cfg: ApiConfig) -> tuple[dict[str, list[str]], int]:
    st.markdown("### Refine")
    top_k = st.slider("Results per page", 1, TOP_K_MAX, TOP_K_DEFAULT, key="top_k")
    facets = _facets(cfg)
    chosen: dict[str, list[str]] = {}
    if isinstance(facets, ApiError):
        st.warning(f"Filters are unavailable: {facets.message}")
    elif not facets:
        st.caption("The catalogue has no tags to filter by yet.")
    else:
        chosen = render_filters(facets)
        st.button("Clear filters", on_click=clear_filters, disabled=not chosen, width="stretch")
    st.caption(f"Search service: {cfg.base_url}")
    return chosen, top_k


def _search_bar() -> None:
    text_tab, photo_tab, url_tab = st.tabs(["Describe it", "Upload a photo", "Image link"])
    with text_tab, st.form("text_search", border=False):
        field, go = st.columns([6, 1], vertical_alignment="bottom")
        field.text_input(
            "What are you looking for?",
            key="text_query",
            placeholder="e.g. red summer dress, men's running shoes",
            max_chars=300,
        )
        go.form_submit_button("Search", type="primary", on_click=_submit_text, width="stretch")
    with photo_tab:
        st.file_uploader(
            "Upload a product photo to find similar items",
            type=UPLOAD_TYPES,
            key="photo",
            on_change=_submit_photo,
            max_upload_size=10,
        )
    with url_tab, st.form("url_search", border=False):
        field, go = st.columns([6, 1], vertical_alignment="bottom")
        field.text_input("Link to an image", key="url_query", placeholder="https://…/photo.jpg")
        go.form_submit_button("Find similar", type="primary", on_click=_submit_url, width="stretch")


def _welcome() -> None:
    st.markdown("#### Start with a description, a photo or a link")
    st.caption("Or try one of these:")
    with st.container(horizontal=True):
        for text in EXAMPLES:
            st.button(text, key=f"example_{text}", on_click=_submit_example, args=(text,))


def _results(cfg: ApiConfig, query: Query, top_k: int, filters: dict[str, list[str]]) -> None:
    with st.container(horizontal=True, vertical_alignment="center"):
        preview = image_source(cfg, query.preview) if isinstance(query.preview, str) else query.preview
        if preview:
            st.image(preview, width=56)
        st.markdown(f"#### {query.title}")
        st.button("New search", on_click=_new_search, type="tertiary")
    answer = _answer(cfg, query, top_k, filters)
    if not answer.hits:
        if answer.error is not None:
            st.error(answer.error.message)
            st.button("Try again", on_click=_retry)
        else:
            hint = "Try removing some filters." if filters else "Try other words or another photo."
            st.info(f"No products match this search. {hint}")
        return
    took = f" · {answer.took_ms:.0f} ms" if answer.took_ms is not None else ""
    st.caption(f"{len(answer.hits)} products{took}")
    render_grid(cfg, answer.hits, _more_like)
    if answer.error is not None:  # a later page failed: say so below what is already shown
        st.error(answer.error.message)
    if answer.next_offset is not None:
        st.button("Show more", key="next_page", on_click=_show_more, width="stretch")


def main() -> None:
    st.set_page_config(page_title="Fashion Search", page_icon="🛍️", layout="wide")
    st.markdown(f"<style>{STYLE}</style>", unsafe_allow_html=True)
    cfg = api.env_config()
    _header()
    with st.sidebar:
        filters, top_k = _sidebar(cfg)
    _search_bar()
    notice = st.session_state.pop("notice", None)
    if notice:
        st.warning(notice)
    query: Query | None = st.session_state.get("query")
    if query is None:
        _welcome()
    else:
        _results(cfg, query, top_k, filters)


main()
