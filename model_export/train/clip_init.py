"""``train --init-from DIR``: fine-tune a Hugging Face ``CLIPModel`` instead (the FashionCLIP recipe).

Both CLIP towers train (a small learning rate, e.g. ``--lr 1e-5``, is the usual choice); captions
are tokenized once with the checkpoint's own tokenizer; images are prepared with the checkpoint's
own recipe (shortest side, centre crop, CLIP mean/std) through the runtime's code; and the result
is exported by the very path ``python -m model_export export`` uses for CLIP checkpoints. Not
exercised on the KAGL model here (no CLIP weights can be downloaded on this machine) beyond the
tests, which run it on the tiny random CLIP.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from fashion_search.manifest import ImageTower, ModelManifest
from model_export.clip_export import (
    ClipCheckpoint,
    ImageTowerModule,
    TextTowerModule,
    context_length,
    image_spec,
    load_checkpoint,
)
from model_export.train.model import DualEncoder


def open_clip(path: Path) -> ClipCheckpoint:
    return load_checkpoint(str(path), str(path))


def clip_image_spec(path: Path) -> ImageTower:
    return image_spec(open_clip(path).image_processor)


class ClipCaptionTower(nn.Module):
    """Caption id -> CLIP text embedding of the pre-tokenized caption (padding after the end-of-text
    token cannot change CLIP's causal, EOS-pooled output, so one padded table serves every batch)."""

    def __init__(self, ckpt: ClipCheckpoint, texts: Sequence[str]) -> None:
        super().__init__()
        self.text = TextTowerModule(ckpt.model)
        length = context_length(ckpt)
        ids = ckpt.tokenizer(list(texts), padding="max_length", truncation=True, max_length=length)
        self.register_buffer("token_ids", torch.tensor(ids["input_ids"], dtype=torch.long), persistent=False)

    def forward(self, caption_ids: torch.Tensor) -> torch.Tensor:
        return self.text(self.token_ids[caption_ids])


def clip_dual_encoder(path: Path, texts: Sequence[str]) -> tuple[DualEncoder, ClipCheckpoint]:
    """A dual encoder sharing one ``CLIPModel`` (returned too, for export) and its temperature."""
    ckpt = open_clip(path)
    ckpt.model.train()
    model = DualEncoder(ImageTowerModule(ckpt.model), ClipCaptionTower(ckpt, texts))
    with torch.no_grad():
        model.logit_scale.copy_(ckpt.model.logit_scale.detach())
    return model, ckpt


def export_finetuned(
    ckpt: ClipCheckpoint, out_dir: Path, *, precision: str, name: str, kagl_dir: Path, command: str
) -> ModelManifest:
    """The fine-tuned weights through ``model_export``'s CLIP export, verification included."""
    from model_export.commands import export_checkpoint
    from model_export.samples import load_samples

    ckpt.model.eval()
    return export_checkpoint(
        ckpt, out_dir, precision=precision, name=name, samples=load_samples(kagl_dir), command=command
    )
