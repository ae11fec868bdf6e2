"""Request and response models of the public HTTP API, with the examples shown at ``/docs``.

Types are strict (no ``"3"`` for 3, no ``true`` for 1, no numbers for tag values) so that a client
bug shows up as a 422 naming the field instead of a silently different query. Value ranges that
depend on the deployment (``top_k`` up to ``max_top_k``, text length, empty text) are checked by
the ``Searcher`` so that every entry point (API, CLI) rejects the same inputs with the same codes.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)

FilterValue = StrictStr | list[StrictStr]
Filters = dict[StrictStr, FilterValue]

FILTERS_FIELD = Field(
    None,
    description="Only images whose tags match `{tag: value}` or `{tag: [any, of, these]}`, every tag.",
    examples=[{"gender": "Women", "baseColour": ["Black", "Navy Blue"]}],
)
MIN_SCORE_FIELD = Field(
    None,
    allow_inf_nan=False,
    description="Drop results whose cosine similarity is below this (scores lie in [-1, 1]).",
    examples=[0.2],
)
TOP_K_DESCRIPTION = "How many results, from 1 to the deployment's `max_top_k` (100 by default)."
OFFSET_FIELD = Field(
    0,
    description=(
        "Skip this many results: the next page starts at the previous response's `next_offset`."
        " Pages come from one fixed ranking, so they join up; `offset + top_k` is at most 1000."
    ),
    json_schema_extra={"minimum": 0},
)
COLLAPSE_FIELD = Field(
    True,
    description=(
        "Show a photo stored under several keys (byte-identical files) once, as its best-ranked key;"
        " a search by `image_id` also leaves out the copies of that photo. `false` returns every key."
    ),
)

HYBRID_TEXT_FIELD = Field(
    True,
    description=(
        "Re-rank the best vector matches (`hybrid_candidates`, 50 by default) by the query's words"
        " found in their tags (reciprocal rank fusion); `score` stays the cosine similarity."
        " `false` ranks by the vector alone."
    ),
)
HYBRID_SIMILAR_FIELD = Field(
    True,
    description=(
        "For an `image_id` query: re-rank the best vector matches by the words they share with that"
        " image's tags (type, colour, brand...), as for text. An uploaded photo or a URL carries no"
        " words, so it ranks by the vector whatever this says. `false` ranks by the vector alone."
    ),
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextSearchRequest(_Strict):
    text: StrictStr = Field(description="What to look for, in words.", examples=["red summer dress"])
    top_k: StrictInt = Field(1, description=TOP_K_DESCRIPTION, json_schema_extra={"minimum": 1})
    offset: StrictInt = OFFSET_FIELD
    filters: Filters | None = FILTERS_FIELD
    min_score: StrictFloat | None = MIN_SCORE_FIELD
    collapse_duplicates: StrictBool = COLLAPSE_FIELD
    hybrid: StrictBool = HYBRID_TEXT_FIELD

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"text": "red summer dress", "top_k": 5},
                {"text": "leather handbag", "top_k": 3, "filters": {"gender": "Women"}, "min_score": 0.2},
            ]
        }
    )


class SimilarOptions(_Strict):
    """The search options of an image query; in multipart uploads they come as form fields."""

    top_k: StrictInt = Field(3, description=TOP_K_DESCRIPTION, json_schema_extra={"minimum": 1})
    offset: StrictInt = OFFSET_FIELD
    filters: Filters | None = FILTERS_FIELD
    min_score: StrictFloat | None = MIN_SCORE_FIELD
    collapse_duplicates: StrictBool = COLLAPSE_FIELD
    hybrid: StrictBool = HYBRID_SIMILAR_FIELD


class SimilarSearchRequest(SimilarOptions):
    """Exactly one of ``url``, ``image_base64`` or ``image_id``."""

    url: StrictStr | None = Field(
        None,
        description="An http(s) image URL the server downloads (public addresses only).",
        examples=["https://example.com/shirt.jpg"],
    )
    image_base64: StrictStr | None = Field(
        None, description="The image file, base64-encoded (a `data:image/...;base64,` prefix is accepted)."
    )
    image_id: StrictStr | None = Field(
        None,
        description="An indexed image (more like this): uses its stored vector and leaves it out.",
        examples=["3f1c2b9a0d4e5f6a7b8c9d0e"],
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"url": "https://example.com/shirt.jpg", "top_k": 3},
                {"image_id": "3f1c2b9a0d4e5f6a7b8c9d0e", "top_k": 5, "filters": {"gender": "Men"}},
                {"image_base64": "iVBORw0KGgoAAAANSUhEUgAA...", "top_k": 3},
            ]
        }
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> SimilarSearchRequest:
        given = [name for name in ("url", "image_base64", "image_id") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of url, image_base64 or image_id"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class SearchResult(BaseModel):
    image_id: str = Field(examples=["3f1c2b9a0d4e5f6a7b8c9d0e"])
    key: str = Field(description="The object key (file name in the catalogue).", examples=["15970.jpg"])
    score: float = Field(description="Cosine similarity to the query.", examples=[0.31])
    url: str = Field(description="Where the image can be fetched (presigned on AWS).")
    tags: dict[str, str] = Field(
        examples=[{"gender": "Men", "articleType": "Shirts", "baseColour": "Navy Blue"}]
    )
    matched_terms: list[str] = Field(
        default_factory=list,
        description=(
            "Words of a hybrid query found in this image's tags, in the query's order"
            " (lower-cased, plurals folded)."
        ),
        examples=[["navy", "shirt"]],
    )


class SearchResponse(BaseModel):
    results: list[SearchResult] = Field(
        description="Best match first (by cosine score, or by the fused rank of a hybrid text search)."
    )
    next_offset: int | None = Field(
        description="The `offset` of the next page, or null when this page was not full (no more results).",
        examples=[10],
    )
    took_ms: float = Field(description="Server-side time for the whole request.", examples=[12.5])


class ImageInfo(BaseModel):
    """An image's metadata record (without its embedding) and where to fetch it."""

    image_id: str
    key: str
    status: str = Field(description="indexed, failed (see reason) or deleted.")
    url: str
    tags: dict[str, str]
    sha256: str
    width: int
    height: int
    format: str
    size_bytes: int
    model_id: str
    reason: str | None = None
    created_at: float
    updated_at: float


class HealthResponse(BaseModel):
    status: str = Field(examples=["ok"])
    model_id: str
    dim: int = Field(description="Embedding dimension.")
    backend: str = Field(examples=["local"])
    records: dict[str, int] | None = Field(
        description="Metadata records per status (omitted where counting is a table scan).",
        examples=[{"indexed": 44000}],
    )
    vectors: int = Field(description="Vectors in the index.")


class FacetValue(BaseModel):
    value: str
    count: Annotated[int, Field(ge=0)]


class FacetsResponse(RootModel[dict[str, list[FacetValue]]]):
    """Tag -> its values with counts (most frequent first), for tags with few enough values."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"gender": [{"value": "Men", "count": 22147}, {"value": "Women", "count": 18631}]}]
        }
    )


class ErrorResponse(BaseModel):
    error: str = Field(description="A stable machine-readable code.", examples=["invalid_request"])
    detail: str = Field(description="What was wrong, for humans.")
