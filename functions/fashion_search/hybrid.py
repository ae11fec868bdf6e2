"""Hybrid ranking: the words of a text query (or of the tags of the image a "more like this" search
starts from) matched against each candidate's tags, fused with the vector ranking by reciprocal
rank fusion (RRF).

Why: a small in-domain model blurs attributes that a catalogue already states exactly (navy blue vs
blue, casual vs sports shoes, men vs women), and a catalogue's tags (its CSV columns, the product
name) carry them as words. The words re-rank the vector search's own candidates, so hybrid search
works the same on every backend (FAISS, Pinecone) with no second index to keep in step; the price
is that a product outside those candidates cannot be found by its words alone.

Word weights are inverse document frequencies over the candidates, not the catalogue: a word every
candidate shares ("men" when all of them are men's) separates none of them and weighs almost
nothing, while a rare one ("navy") weighs most. RRF then needs no score calibration between a
cosine and a word count.
"""

from __future__ import annotations

import math
import operator
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

from fashion_search.stores.base import VectorMatch

# The usual RRF constant (Cormack et al. 2009): how much the first few ranks outweigh the rest.
RRF_K = 60
_POSSESSIVE = re.compile(r"['’]s\b")
# Punctuation that splits words ("T-Shirt", "men's"); "|" stands between two tag values, and no
# pair spans it. Plain str methods: a regex tokeniser cost twice as much per candidate.
_PUNCTUATION = "-'’‘,./&()+:;!?\"“”"
_SEPARATOR = "|"
_ES_ENDINGS = ("sses", "xes", "zes", "ches", "shes")
# Function words are not terms: weighted by how rare they are among the candidates, a "for" or an
# "of" that happens to stand in a few product names ("United Colors of Benetton") would count as
# much as a colour. They are dropped before pairs are formed. (On training products, id % 10 == 1:
# paraphrased P@10 0.842 -> 0.846, every other figure within 0.001.)
_STOPWORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "any",
        "are",
        "at",
        "by",
        "for",
        "from",
        "her",
        "hers",
        "him",
        "his",
        "i",
        "in",
        "is",
        "it",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "some",
        "that",
        "the",
        "their",
        "them",
        "to",
        "with",
        "your",
    }
)


def _tokens(text: str) -> list[str]:
    for mark in _PUNCTUATION:
        if mark in text:
            text = text.replace(mark, " ")
    return text.split()


def _fold(word: str) -> str:
    """A crude plural fold of a query word: "watches" -> "watch", "shoes" -> "shoe", but "dress"."""
    if word.endswith(_ES_ENDINGS):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


@dataclass(frozen=True)
class QueryTerms:
    """What to look for in a candidate's tags: the query's folded words, and each two adjacent words
    joined ("t shirt" -> "tshirt"). Each term is looked up by its surface forms (the stem, +s,
    +es), as one token or as two adjacent ones ("tshirts", "t-shirt" and "T Shirt" all hold
    "tshirt"). Tags are only split into tokens, never folded: product names are mostly unique, and
    folding each of their words in Python was most of the cost of a hybrid search."""

    parts: dict[str, frozenset[str]]  # every term: a pair's two words; a word's own name
    forms: dict[str, str]  # surface form -> term

    def found_in(self, text: str) -> set[str]:
        """The terms that occur in ``text`` (casefolded ``tag_text``). Set operations and ``map``
        keep the per-token work in C; no term's form contains the "|" between two tag values, so
        no pair spans two of them."""
        tokens = _tokens(text)
        seen = set(tokens)
        seen.update(map(operator.add, tokens, tokens[1:]))
        return {self.forms[form] for form in self.forms.keys() & seen}


def query_terms(text: str) -> QueryTerms:
    text = text.casefold()
    if "'" in text or "’" in text:
        text = _POSSESSIVE.sub("", text)
    tokens = _tokens(text)
    tokens = [t for t in tokens if t not in _STOPWORDS]
    words = {_fold(t): frozenset([_fold(t)]) for t in tokens if t != _SEPARATOR}
    pairs = {
        a + _fold(b): frozenset([_fold(a), _fold(b)])
        for a, b in pairwise(tokens)
        if _SEPARATOR not in (a, b) and a + _fold(b) not in words
    }
    parts = words | pairs
    forms = {form: name for name in parts for form in (name, name + "s", name + "es")}
    return QueryTerms(parts, forms)


def tag_text(tags: Mapping[str, str]) -> str:
    """An item's tag values as one text, " | " between two ("more like this" ranks by the words it
    shares; candidates are searched in it). Reserved fields (``_key``, ``_sha256``) are not words."""
    return f" {_SEPARATOR} ".join([v for k, v in tags.items() if k[:1] != "_" and isinstance(v, str)])


def fuse(
    text: str, matches: Sequence[VectorMatch], limit: int | None = None
) -> list[tuple[VectorMatch, tuple[str, ...]]]:
    """``matches`` (best vector match first) re-ordered by RRF of the vector rank and the word rank,
    the first ``limit`` of them, each with the query terms found in its tags. Items that match no
    term keep only their vector term, so a query whose words match no tag keeps the vector order."""
    wanted = query_terms(text)
    found = [wanted.found_in(tag_text(m.metadata).casefold()) for m in matches]
    frequency = Counter(term for item in found for term in item)
    weight = {term: math.log((len(matches) + 1) / (n + 0.5)) for term, n in frequency.items()}
    # fsum: exactly rounded whatever the order, and a set's order changes with the hash seed, so
    # equal word scores stay equal and ties go to the vector order in every process.
    word_score = [math.fsum(weight[term] for term in item) for item in found]
    by_words = sorted(range(len(matches)), key=lambda i: -word_score[i])  # stable: ties keep vector order
    word_rank = {i: rank for rank, i in enumerate(by_words)}

    def fused(i: int) -> float:
        words = 1.0 / (RRF_K + word_rank[i]) if word_score[i] > 0 else 0.0
        return 1.0 / (RRF_K + i) + words

    order = sorted(range(len(matches)), key=fused, reverse=True)[:limit]
    return [(matches[i], _shown(found[i], wanted.parts)) for i in order]


def _shown(found: set[str], parts: dict[str, frozenset[str]]) -> tuple[str, ...]:
    """The matched terms to show, in the query's order (its words, then its pairs): a joined pair
    only where its words did not both match by themselves ("tshirt" for "t shirt", but not
    "blackleather" beside "black" and "leather")."""
    return tuple(t for t in parts if t in found and (parts[t] == {t} or not parts[t] <= found))
