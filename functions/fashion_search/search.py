"""The search path: a text, an image or an indexed image id in, ranked catalogue hits out.

Validation lives here rather than in the HTTP layer so that the CLI, the API and any future
caller reject the same inputs with the same error codes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypedDict, Unpack

import numpy as np

from fashion_search.config import Settings
from fashion_search.encoder import Encoder
from fashion_search.errors import InputError, NotFoundError
from fashion_search.hybrid import fuse, tag_text
from fashion_search.imaging import decode_and_prepare
from fashion_search.ingest import KEY_FIELD, SHA256_FIELD
from fashion_search.records import ImageRecord
from fashion_search.stores.base import Filters, MetadataStore, ObjectStore, VectorIndex, VectorMatch

RawFilters = Mapping[str, str | Sequence[str]]
# Most candidates one query asks the vector index for (Pinecone returns metadata for at most 1,000
# matches), hence also the deepest a page may reach: offset + top_k.
MAX_CANDIDATES = 1000


@dataclass(frozen=True)
class SearchHit:
    image_id: str
    key: str
    score: float
    url: str
    tags: dict[str, str] = field(default_factory=dict)
    matched_terms: tuple[str, ...] = ()


def normalize_filters(filters: RawFilters | None) -> Filters | None:
    """``{tag: value | [values]}`` -> ``{tag: [values]}``; anything else is an ``invalid_filters`` error."""
    if not filters:
        return None
    if not isinstance(filters, Mapping):
        raise InputError("invalid_filters", "filters must be an object of {tag: value or [values]}")
    out: dict[str, list[str]] = {}
    for tag, value in filters.items():
        if not isinstance(tag, str) or not tag or tag.startswith("_"):
            raise InputError("invalid_filters", f"invalid tag name {tag!r}")
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list | tuple) or not values or not all(isinstance(v, str) for v in values):
            raise InputError(
                "invalid_filters", f"filter {tag!r} must be a string or a non-empty list of strings"
            )
        out[tag] = list(values)
    return out


def next_offset(offset: int, top_k: int, returned: int) -> int | None:
    """Where the next page starts: only after a full page, and only if a page of the same size
    there would still pass the paging limit checked in ``Searcher._ranking``."""
    following = offset + top_k
    return following if returned == top_k and following + top_k <= MAX_CANDIDATES else None


class QueryOptions(TypedDict, total=False):
    """How results are ranked and paged, the same for every kind of query (the API's request
    fields of the same names); ``hybrid`` changes only a query that has words: a text, or an
    indexed image's tags."""

    top_k: int
    offset: int
    filters: RawFilters | None
    min_score: float | None
    collapse_duplicates: bool
    hybrid: bool


@dataclass(frozen=True)
class _Ranking:
    """``QueryOptions`` checked, with the defaults filled in."""

    top_k: int
    offset: int
    filters: Filters | None
    min_score: float | None
    collapse: bool
    hybrid: bool


class Searcher:
    def __init__(
        self,
        encoder: Encoder,
        metadata: MetadataStore,
        vectors: VectorIndex,
        objects: ObjectStore,
        settings: Settings,
    ) -> None:
        self.encoder = encoder
        self.metadata = metadata
        self.vectors = vectors
        self.objects = objects
        self.settings = settings

    def _ranking(self, options: QueryOptions, default_top_k: int) -> _Ranking:
        """Checked before any embedding or download, so a bad option costs nothing."""
        top_k = options.get("top_k", default_top_k)
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= self.settings.max_top_k:
            raise InputError("invalid_top_k", f"top_k must be an integer from 1 to {self.settings.max_top_k}")
        offset = options.get("offset", 0)
        if (
            not isinstance(offset, int)
            or isinstance(offset, bool)
            or not 0 <= offset <= MAX_CANDIDATES - top_k
        ):
            raise InputError(
                "invalid_offset",
                f"offset must be an integer from 0 to {MAX_CANDIDATES - top_k} "
                f"(offset + top_k at most {MAX_CANDIDATES})",
            )
        return _Ranking(
            top_k=top_k,
            offset=offset,
            filters=normalize_filters(options.get("filters")),
            min_score=options.get("min_score"),
            collapse=options.get("collapse_duplicates", True),
            hybrid=options.get("hybrid", True),
        )

    def _query(
        self,
        vector: np.ndarray,
        ranking: _Ranking,
        exclude_ids: Sequence[str] = (),
        *,
        exclude_sha256: str | None = None,
        keywords: str | None = None,
    ) -> list[SearchHit]:
        """Results ``offset`` to ``offset + top_k`` of one fixed ranking, so that pages join up.

        With ``collapse``, byte-identical copies of one photo under several keys (catalogues have
        them: 1,433 of KAGL's 44k files) count once, as their best-ranked key, and
        ``exclude_sha256`` (the query photo's own hash) leaves out copies of the query. Copies are
        dropped after the index ranks them, so it is asked for more candidates, doubling until
        enough remain or the candidates run out. With ``keywords`` (hybrid ranking) the first
        ``hybrid_candidates`` distinct matches are re-ranked by the words of ``keywords`` found in
        their tags (``hybrid.fuse``) and the rest follow in vector order: the re-ranked head is the
        same whatever page is asked for."""
        r = ranking
        pool = self.settings.hybrid_candidates if keywords is not None else 0
        needed = max(r.offset + r.top_k, pool)
        asked = min(needed * 2 if r.collapse else needed, MAX_CANDIDATES)
        while True:
            matches = self.vectors.query(vector, asked, r.filters, exclude_ids)
            kept = self._keep(matches, r.min_score, r.collapse, exclude_sha256)
            ran_out = len(matches) < asked or asked >= MAX_CANDIDATES
            below_min = r.min_score is not None and bool(matches) and matches[-1].score < r.min_score
            if len(kept) >= needed or ran_out or below_min:
                break
            asked = min(asked * 2, MAX_CANDIDATES)
        page = slice(r.offset, r.offset + r.top_k)
        if keywords is None:
            return [self._hit(m) for m in kept[page]]
        ranked = fuse(keywords, kept[:pool], r.offset + r.top_k) + [(m, ()) for m in kept[pool:]]
        return [self._hit(m, words) for m, words in ranked[page]]

    @staticmethod
    def _keep(
        matches: Sequence[VectorMatch], min_score: float | None, collapse: bool, exclude_sha256: str | None
    ) -> list[VectorMatch]:
        seen = {exclude_sha256} if exclude_sha256 else set()
        kept = []
        for m in matches:
            if min_score is not None and m.score < min_score:
                continue
            sha = m.metadata.get(SHA256_FIELD) if collapse else None
            if sha:  # vectors written before hashes were stored have none: never collapsed
                if sha in seen:
                    continue
                seen.add(sha)
            kept.append(m)
        return kept

    def _hit(self, m: VectorMatch, matched_terms: tuple[str, ...] = ()) -> SearchHit:
        tags = {k: v for k, v in m.metadata.items() if not k.startswith("_")}
        key = m.metadata.get(KEY_FIELD, "")
        return SearchHit(m.id, key, float(m.score), self.objects.url(key), tags, matched_terms)

    def by_text(self, text: str, **options: Unpack[QueryOptions]) -> list[SearchHit]:
        """One result by default. With ``hybrid``, the words of ``text`` found in the candidates'
        tags re-rank them (``hybrid.py``); ``score`` stays the cosine similarity, so results may
        then be out of score order, and ``min_score`` still drops results by that cosine."""
        if not isinstance(text, str) or not text.strip():
            raise InputError("empty_text", "text must be a non-empty string")
        if len(text) > self.settings.max_text_chars:
            raise InputError(
                "text_too_long",
                f"text is {len(text)} characters; the limit is {self.settings.max_text_chars}",
            )
        ranking = self._ranking(options, default_top_k=1)
        text = text.strip()
        vector = self.encoder.embed_texts([text])[0]
        return self._query(vector, ranking, keywords=text if ranking.hybrid else None)

    def by_image_bytes(self, data: bytes, **options: Unpack[QueryOptions]) -> list[SearchHit]:
        """Three results by default. A photo carries no words: ``hybrid`` changes nothing."""
        ranking = self._ranking(options, default_top_k=3)
        _, pixels = decode_and_prepare(
            data,
            self.encoder.manifest.image,
            max_bytes=self.settings.max_image_bytes,
            max_pixels=self.settings.max_image_pixels,
        )
        vector = self.encoder.embed_tower_pixels(pixels[None])[0]
        return self._query(vector, ranking)

    def by_image_id(self, image_id: str, **options: Unpack[QueryOptions]) -> list[SearchHit]:
        """'More like this', three results by default: reuse the stored vector (no re-embedding) and
        leave the item itself out, and (when collapsing) its byte-identical copies, which would
        otherwise come first. With ``hybrid``, the item's own tag values are the words: candidates
        sharing its type, colour, brand... move up, as a shop's "similar products" would."""
        ranking = self._ranking(options, default_top_k=3)
        item = self.vectors.fetch([image_id]).get(image_id)
        if item is None:
            raise NotFoundError(f"no indexed image with id {image_id!r}")
        return self._query(
            item.vector,
            ranking,
            exclude_ids=[image_id],
            exclude_sha256=item.metadata.get(SHA256_FIELD),
            keywords=tag_text(item.metadata) if ranking.hybrid else None,
        )

    def get(self, image_id: str) -> tuple[ImageRecord, str]:
        record = self.metadata.get(image_id)
        if record is None:
            raise NotFoundError(f"no image with id {image_id!r}")
        return record, self.objects.url(record.key)
