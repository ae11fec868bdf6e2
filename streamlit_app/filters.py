"""Sidebar filters built from the catalogue's own tags (``GET /facets``).

Nothing here knows the catalogue in advance: any tag the API reports becomes a filter, the
well-known KAGL/shop tags just get friendlier labels and come first. Free-text tags (product
names) are useless as checkboxes and are left out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import streamlit as st
from api_client import FacetValue

# Shown first, in this order, under these names; any other tag follows alphabetically.
LABELS = {
    "gender": "Gender",
    "masterCategory": "Category",
    "subCategory": "Sub-category",
    "articleType": "Product type",
    "baseColour": "Colour",
    "season": "Season",
    "usage": "Occasion",
    "year": "Year",
}
FREE_TEXT_TAGS = frozenset({"productDisplayName"})
# More distinct values than this and a tag is an identifier or free text, not a filter.
MAX_OPTIONS = 200
KEY_PREFIX = "filter_"


def filterable_tags(facets: Mapping[str, list[FacetValue]]) -> list[str]:
    """Tags worth a filter, well-known ones first; ``_``-prefixed tags are the API's own bookkeeping."""
    usable = [
        tag
        for tag, values in facets.items()
        if values and len(values) <= MAX_OPTIONS and tag not in FREE_TEXT_TAGS and not tag.startswith("_")
    ]
    order = list(LABELS)
    return sorted(usable, key=lambda t: (order.index(t) if t in order else len(order), t.lower()))


def label_for(tag: str) -> str:
    """``baseColour`` -> ``Colour``; unknown camelCase or snake_case tags -> ``Sleeve length``."""
    if tag in LABELS:
        return LABELS[tag]
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", tag).replace("_", " ").split()
    return " ".join(words).capitalize()


def render_filters(facets: Mapping[str, list[FacetValue]]) -> dict[str, list[str]]:
    """One multiselect per tag, most common values first; returns only the tags with a choice."""
    chosen: dict[str, list[str]] = {}
    for tag in filterable_tags(facets):
        values = sorted(facets[tag], key=lambda v: (-v.count, v.value))
        counts = {v.value: v.count for v in values}
        picked = st.multiselect(
            label_for(tag),
            options=[v.value for v in values],
            format_func=lambda value, counts=counts: f"{value} ({counts.get(value, 0)})",
            key=f"{KEY_PREFIX}{tag}",
            placeholder="Any",
        )
        if picked:
            chosen[tag] = list(picked)
    return chosen


def clear_filters() -> None:
    """Button callback: forget every filter choice (runs before the widgets are drawn again)."""
    for key in [k for k in st.session_state if str(k).startswith(KEY_PREFIX)]:
        st.session_state[key] = []
