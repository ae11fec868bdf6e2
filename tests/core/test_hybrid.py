"""The word side of hybrid text search (``hybrid.py``): how words meet tags, and how ranks fuse."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fashion_search.hybrid import RRF_K, fuse, query_terms, tag_text
from fashion_search.stores.base import VectorMatch


def match(i: int, **tags: str) -> VectorMatch:
    return VectorMatch(id=f"m{i}", score=1.0 - i / 100, metadata=tags)


def matched(query: str, **tags: str) -> tuple[str, ...]:
    return fuse(query, [match(0, **tags)])[0][1]


def test_plurals_possessives_case_and_hyphens_meet_the_catalogue_spelling() -> None:
    assert matched("Women's WATCHES", gender="Women", articleType="Watches") == ("women", "watch")
    assert matched("watch", articleType="Watches") == ("watch",)
    assert matched("dress", articleType="Dresses") == matched("dresses", articleType="Dress") == ("dress",)
    assert matched("shoe", articleType="Sports Shoes") == ("shoe",)
    for query in ("t-shirt", "t shirt", "tshirts", "T Shirts"):
        assert matched(query, articleType="Tshirts") == ("tshirt",), query
    assert matched("men", gender="Women", productDisplayName="Women Red Top") == ()  # words, not substrings
    assert matched("men's", productDisplayName="Roadster Men's Jeans") == ("men",)


def test_reserved_fields_are_not_words_of_the_item() -> None:
    assert matched("black", _key="black.jpg", _sha256="black") == ()
    assert tag_text({"baseColour": "Black", "_key": "black.jpg", "gender": "Men"}) == "Black | Men"


def test_a_query_is_its_folded_words_and_its_adjacent_pairs() -> None:
    names = ("white", "t", "shirt", "men", "whitet", "tshirt", "shirtsmen")
    assert tuple(query_terms("White T-Shirts, men's").parts) == names


def test_a_pair_never_spans_two_tags() -> None:
    """ "Navy Blue" in one tag matches the pair "navyblue" as well as both words; "Navy" and "Blue"
    in two tags match only the words, so the former ranks above the latter."""
    matches = [
        match(0, baseColour="Red"),
        match(1, baseColour="Navy", usage="Blue"),
        match(2, baseColour="Navy Blue"),
    ]
    ranked = fuse("navy blue", matches)
    assert [m.id for m, _ in ranked] == ["m2", "m1", "m0"]
    assert ranked[0][1] == ranked[1][1] == ("navy", "blue")  # the pair shows as its words


def test_a_query_whose_words_match_no_tag_keeps_the_vector_order() -> None:
    matches = [match(i, baseColour="Red", articleType="Dresses") for i in range(5)]
    assert [m.id for m, words in fuse("something else entirely", matches)] == ["m0", "m1", "m2", "m3", "m4"]
    assert all(words == () for _, words in fuse("something else entirely", matches))


def test_items_carrying_the_query_words_move_up_and_report_them() -> None:
    matches = [match(i, baseColour="Red", articleType="Dresses") for i in range(10)]
    matches[7] = match(7, baseColour="Black", articleType="Handbags", productDisplayName="Black Leather Bag")
    ranked = fuse("black leather handbag", matches)
    first, words = ranked[0]
    assert first.id == "m7"
    assert words == ("black", "leather", "handbag")  # in the query's order
    assert [m.id for m, _ in ranked[1:]] == [f"m{i}" for i in range(10) if i != 7]


def test_a_word_every_candidate_shares_changes_nothing() -> None:
    matches = [match(i, gender="Men", baseColour="Blue") for i in range(10)]
    assert [m.id for m, _ in fuse("men", matches)] == [f"m{i}" for i in range(10)]


def test_a_word_that_separates_candidates_moves_them_up_and_the_rest_fall_behind() -> None:
    matches = [match(i, gender="Men", baseColour="Blue") for i in range(10)]
    matches[5] = match(5, gender="Men", baseColour="Navy Blue")
    matches[8] = match(8, gender="Women", baseColour="Blue")
    ranked = [m.id for m, _ in fuse("men navy", matches)]
    assert ranked.index("m5") < 5
    assert ranked[-1] == "m8"  # the one item without either word


def test_joined_pairs_match_but_show_only_where_their_words_did_not() -> None:
    ranked = fuse("white t shirt", [match(0, articleType="Tshirts", baseColour="White")])
    assert ranked[0][1] == ("white", "tshirt")
    ranked = fuse("black leather", [match(0, productDisplayName="Black Leather Bag")])
    assert ranked[0][1] == ("black", "leather")


def test_fusion_is_reciprocal_rank_fusion_of_the_two_orders() -> None:
    matches = [match(i, colour="Red") for i in range(8)]
    matches[3] = match(3, colour="Green")
    matches[6] = match(6, colour="Green")
    word_rank = {3: 0, 6: 1}  # equal word scores: the vector order breaks the tie

    def rrf(i: int) -> float:
        return 1 / (RRF_K + i) + (1 / (RRF_K + word_rank[i]) if i in word_rank else 0.0)

    expected = sorted(range(8), key=rrf, reverse=True)
    assert [m.id for m, _ in fuse("green", matches)] == [f"m{i}" for i in expected]
    assert expected[:3] == [3, 6, 0]


def test_function_words_are_not_terms() -> None:
    assert tuple(query_terms("a bag for her, with the straps").parts) == ("bag", "strap", "bagstrap")
    assert matched("bag for women", productDisplayName="Tote Bag for Women") == ("bag", "women")


RANK_IN_A_FRESH_PROCESS = """
import csv, json, sys
from fashion_search.hybrid import fuse
from fashion_search.stores.base import VectorMatch
with open(sys.argv[1], newline="", encoding="utf-8") as fh:
    rows = [r for r in csv.DictReader(fh) if r["articleType"] in ("Tshirts", "Shirts")][:300:6]
matches = [VectorMatch(r["id"], 0.0, {k: v for k, v in r.items() if k != "id" and v}) for r in rows]
queries = [
    "Wrangler Men Famous Filafil Blue T-Shirts",
    "men navy blue casual shirt for summer",
    "Puma Men Grey Printed T-shirt",
    "Locomotive Men Check Blue Shirt",
]
print(json.dumps([[m.id for m, _ in fuse(q, matches)] for q in queries]))
"""


def test_the_ranking_is_the_same_in_every_process(kagl_dir: Path) -> None:
    """Word scores are sums over sets, whose order follows the per-process hash seed; a plain
    float sum then rounds differently and ties break differently (3 orders in 8 seeds before
    ``math.fsum``), which would make pages from two Lambda containers disagree."""
    orders = {
        subprocess.run(
            [sys.executable, "-c", RANK_IN_A_FRESH_PROCESS, str(kagl_dir / "styles.csv")],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in range(1, 9)
    }
    assert len(orders) == 1
