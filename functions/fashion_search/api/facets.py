"""Tag values with counts for the UI's filter widgets, from the indexed records, cached briefly.

Counting walks every indexed record, so the result is cached for ``ttl_s``: the filter widgets
only need roughly current counts, and a catalogue import does not have to invalidate anything.
Tags with too many distinct values (product names, ids) make useless widgets and are left out.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable

from fashion_search.records import ImageRecord
from fashion_search.stores.base import MetadataStore

Facets = dict[str, list[tuple[str, int]]]

DEFAULT_TTL_S = 60.0
DEFAULT_MAX_VALUES = 200


def count_facets(records: Iterable[ImageRecord], max_values: int = DEFAULT_MAX_VALUES) -> Facets:
    """Tag -> [(value, count)], most frequent first, for tags worth a filter widget.

    Left out: tags with more than ``max_values`` values, and identifier-like tags whose every
    value is unique (nothing to group by), as well as reserved ``_`` tags.
    """
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for record in records:
        for tag, value in record.tags.items():
            if not tag.startswith("_"):
                counts[tag][value] += 1
    facets: Facets = {}
    for tag, values in sorted(counts.items()):
        total = sum(values.values())
        if len(values) > max_values or (total > 1 and len(values) == total):
            continue
        facets[tag] = sorted(values.items(), key=lambda item: (-item[1], item[0]))
    return facets


class FacetCache:
    """Thread-safe: concurrent requests after expiry wait for one recount instead of each counting."""

    def __init__(
        self,
        metadata: MetadataStore,
        ttl_s: float = DEFAULT_TTL_S,
        max_values: int = DEFAULT_MAX_VALUES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metadata = metadata
        self.ttl_s = ttl_s
        self.max_values = max_values
        self.clock = clock
        self._lock = threading.Lock()
        self._facets: Facets | None = None
        self._computed_at = 0.0

    def get(self) -> Facets:
        with self._lock:
            if self._facets is None or self.clock() - self._computed_at >= self.ttl_s:
                self._facets = count_facets(self.metadata.iter_records("indexed"), self.max_values)
                self._computed_at = self.clock()
            return self._facets
