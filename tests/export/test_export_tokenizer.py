"""The exported tokenizer.json, configured as the runtime configures it, gives the reference ids.

Two references: transformers' CLIPTokenizer built from the checkpoint's vocab.json/merges.txt
(what Hugging Face users of these checkpoints feed the model), and OpenAI's original Python
``SimpleTokenizer`` (what CLIP was trained with; read from the open_clip wheel without importing
open_clip). The latter cleans text with ftfy and ``html.unescape`` first, which no ``tokenizers``
normaliser reproduces, so it is compared on the strings that cleaning leaves alone -- and the
test shows that those are exactly the strings where the two differ.
"""

from __future__ import annotations

import html
import importlib.util
import random
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from tokenizers import Tokenizer
from transformers import CLIPTokenizerFast

from fashion_search.manifest import TextTower, load_manifest
from fashion_search.tokenize import TextTokenizer
from model_export import onnx_io

pytestmark = pytest.mark.torch

HANDWRITTEN = [
    "",
    " ",
    "\t\n  \r\n",
    "a",
    "A",
    "Red Dress",
    "RED DRESS",
    "rEd DrEsS",
    "red  dress",
    "  leading and trailing  ",
    "tab\tseparated\tvalues",
    "line\nbreaks\r\nhere",
    "non\u00a0breaking\u2009thin\u3000ideographic spaces",
    "zero\u200bwidth",
    "don't won't it's we're they've I'm you'll he'd",
    "DON'T IT'S",
    "'s 't 're",
    "!!!",
    "?!.,;:-_+=*&^%$#@~`|\\/<>[]{}()",
    "...and then...",
    "100% cotton, size 32/34 (slim-fit)",
    "price: $19.99 -- 50% off!!!",
    "3.14159 2,718 1e10 0x1F",
    "t-shirt t_shirt t.shirt",
    "naïve café résumé",
    "e\u0301 (decomposed é)",
    "Größe XL für Herren",
    "robe d'été à fleurs",
    "Платье красное",
    "فستان أحمر",
    "שמלה אדומה",
    "赤いドレス",
    "红色连衣裙",
    "빨간 드레스",
    "ชุดเดรสสีแดง",
    "emoji 👗👠👜",
    "skin tones 👍🏽👍🏿",
    "family 👨‍👩‍👧 zwj",
    "flags 🇮🇳🇬🇧",
    "♥ ★ ☆ ✓ ✗",
    "math ∑ ∞ ≠ ≤",
    "fullwidth ｆａｓｈｉｏｎ",
    "curly ‘quotes’ and “double”",
    "ligature ﬁne",
    "html &amp; entities &lt;b&gt;",
    "ctrl \x1c\x1d chars",
    " ".join(["long"] * 100),
    "a" * 500,
    "word " * 80,
    "Navy Blue Printed Maxi Dress with Floral Pattern, Short Sleeves, V-Neck, and a Tie-Up Waist " * 3,
    "12345678901234567890",
    "ALLCAPSWORDWITHOUTSPACES",
    "camelCaseWordsHere",
    "snake_case_words_here",
    "mixed123numbers456",
]
EMOJI = ["👗", "👠", "✨", "🔥", "🧥", "👕"]


def _strings(names: list[str], count: int = 200) -> list[str]:
    """The handwritten edge cases, then real product names, some with case, whitespace and emoji noise."""
    rng = random.Random(7)
    out = list(HANDWRITTEN)
    for name in names:
        if len(out) == count:
            break
        variant = rng.choice(("plain", "upper", "spaces", "emoji"))
        if variant == "upper":
            name = name.upper()
        elif variant == "spaces":
            name = "  ".join(name.split()) + "\t"
        elif variant == "emoji":
            name = f"{name} {rng.choice(EMOJI)}"
        out.append(name)
    assert len(out) == count
    return out


@pytest.fixture(scope="module")
def strings(kagl_styles: dict[str, dict[str, str]]) -> list[str]:
    names = [row["productDisplayName"] for pid, row in sorted(kagl_styles.items()) if int(pid) % 10]
    return _strings(random.Random(0).sample(names, 400))


@pytest.fixture
def exported(export_fp32: Path) -> tuple[TextTokenizer, TextTower, Path]:
    """The exported tokenizer configured as the runtime configures it."""
    spec = load_manifest(export_fp32).text
    tokenizer = Tokenizer.from_file(str(export_fp32 / spec.tokenizer_file))
    return onnx_io.configure_tokenizer(tokenizer, spec), spec, export_fp32 / spec.tokenizer_file


def _openai_tokenizer() -> ModuleType:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("open_clip_torch is not installed (it ships OpenAI's reference tokenizer)")
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer.py"
    module_spec = importlib.util.spec_from_file_location("openai_clip_tokenizer", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_strings_cover_the_hard_cases(strings: list[str]) -> None:
    assert len(strings) == 200 and "" in strings
    assert any(len(s.split()) > 77 for s in strings)
    assert any(not s.isascii() for s in strings) and any("👗" in s for s in strings)


@pytest.mark.parametrize("padding", ["longest", "max_length"])
def test_ids_match_transformers_clip_tokenizer(
    exported, strings: list[str], tiny_checkpoint: Path, padding: str
) -> None:
    tokenizer, spec, path = exported
    if padding != spec.padding:
        spec = spec.model_copy(update={"padding": padding})
        tokenizer = onnx_io.configure_tokenizer(Tokenizer.from_file(str(path)), spec)
    reference = CLIPTokenizerFast.from_pretrained(tiny_checkpoint)
    expected = reference(strings, padding=padding, max_length=77, truncation=True)["input_ids"]
    got = onnx_io.encode_texts(tokenizer, spec, strings)[spec.input_ids_name]
    assert got.shape[1] == (77 if padding == "max_length" else max(len(e) for e in expected))
    for text, want, have in zip(strings, expected, got.tolist(), strict=True):
        assert have == want, text


def test_ids_match_openai_reference_tokenizer_where_its_cleaning_is_a_no_op(
    exported, strings: list[str]
) -> None:
    openai = _openai_tokenizer()
    reference = openai.SimpleTokenizer()
    tokenizer, _, _ = exported
    clean, differing = 0, []
    for text in strings:
        want = [reference.sot_token_id, *reference.encode(text)[:75], reference.eot_token_id]
        have = tokenizer.encode([text])[0][0].tolist()  # one string: no padding
        cleaning_changes_it = openai.ftfy.fix_text(text) != text or html.unescape(text) != text
        if not cleaning_changes_it:
            clean += 1
            assert have == want, text
        elif have != want:
            differing.append(text)
    assert clean >= 190
    # The known divergences: fullwidth letters, curly quotes, ligatures, HTML entities, C0 controls.
    assert sorted(differing) == sorted(
        s for s in HANDWRITTEN if s.startswith(("fullwidth", "curly", "ligature", "html", "ctrl"))
    )


def test_truncation_keeps_start_and_end_tokens(exported) -> None:
    tokenizer, spec, _ = exported
    ids = onnx_io.encode_texts(tokenizer, spec, ["word " * 200, "short"])[spec.input_ids_name]
    assert ids.shape == (2, 77)
    assert ids[0, 0] == 49406 and ids[0, -1] == 49407 and np.all(ids[0, 1:-1] != 49407)
    assert (
        ids[1, 0] == 49406 and ids[1, 1] < 49406 and np.all(ids[1, 2:] == spec.pad_id)
    )  # "short": one token
