"""CLIP's byte-level BPE vocabulary, rebuilt from OpenAI's ``bpe_simple_vocab_16e6.txt.gz``.

The tiny test model needs the real vocabulary so its token ids mean what they mean for real CLIP
checkpoints. The ids follow OpenAI's ``SimpleTokenizer`` (and Hugging Face's converted
``vocab.json``): 256 byte symbols, the same with ``</w>``, one token per merge, then
``<|startoftext|>`` and ``<|endoftext|>`` -- 49408 in all.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

from transformers.convert_slow_tokenizer import bytes_to_unicode

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
# Packages on PyPI that ship the file (open_clip_torch, clip-anytorch); found without importing them.
BPE_PACKAGES = ("open_clip", "clip")
NUM_MERGES = 49152 - 256 - 2
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
VOCAB_SIZE = 2 * 256 + NUM_MERGES + 2
CONTEXT_LENGTH = 77


def find_bpe_file() -> Path:
    """Locate the vocabulary file inside an installed package, without importing it."""
    for package in BPE_PACKAGES:
        spec = importlib.util.find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec else []:
            candidate = Path(location) / BPE_FILE
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"{BPE_FILE} not found: `pip install --no-deps open_clip_torch` (it ships the file) "
        "or pass --bpe PATH"
    )


def load_bpe(path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) exactly as OpenAI's SimpleTokenizer builds them."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"{path}: expected {VOCAB_SIZE} tokens, got {len(vocab)}")
    return vocab, merges  # type: ignore[return-value]


def write_hf_tokenizer_files(out_dir: Path, bpe_path: Path | None = None) -> None:
    """Write ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json`` as in OpenAI's HF repos,
    so the tiny checkpoint loads through the same ``from_pretrained`` path as a real one."""
    vocab, merges = load_bpe(bpe_path or find_bpe_file())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out_dir / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8"
    )
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": CONTEXT_LENGTH,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
