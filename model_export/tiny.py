"""A tiny, randomly initialised Hugging Face CLIP checkpoint for tests.

It uses the real CLIP classes, real vocabulary (49408 ids) and the token-id conventions of
OpenAI's published configs (``eos_token_id`` 2, which makes the text tower pool at the highest
token id), so exporting it exercises every code path a real checkpoint does; only the sizes are
small. Deterministic for a given seed and library versions.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

from model_export.clip_vocab import CONTEXT_LENGTH, VOCAB_SIZE, write_hf_tokenizer_files

TINY_SOURCE = "tiny"
IMAGE_SIZE = 32
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def tiny_config() -> CLIPConfig:
    # The text width stays small because the 49408-row token table dominates the file size.
    text = {
        "vocab_size": VOCAB_SIZE,
        "hidden_size": 16,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": CONTEXT_LENGTH,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
    }
    vision = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": IMAGE_SIZE,
        "patch_size": 8,
    }
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)


def build_tiny_checkpoint(out_dir: Path, seed: int = 0, bpe_path: Path | None = None) -> Path:
    """Write the tiny model as a loadable ``from_pretrained`` directory."""
    return build_random_checkpoint(out_dir, tiny_config(), seed=seed, bpe_path=bpe_path)


def build_random_checkpoint(
    out_dir: Path, config: CLIPConfig, seed: int = 0, bpe_path: Path | None = None
) -> Path:
    """A randomly initialised ``CLIPModel`` of any size with CLIP's tokenizer files and image
    processor, e.g. the real ViT-B/32 shape (``CLIPConfig()``) for speed benchmarks."""
    out_dir = Path(out_dir)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    finally:
        torch.random.set_rng_state(generator_state)
    model.save_pretrained(out_dir)
    write_hf_tokenizer_files(out_dir, bpe_path)
    size = config.vision_config.image_size
    CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    ).save_pretrained(out_dir)
    return out_dir
