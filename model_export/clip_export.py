"""Hugging Face ``CLIPModel`` checkpoints -> the runtime's model directory.

A checkpoint is anything ``CLIPModel.from_pretrained`` accepts: a hub id (downloaded, needs
internet), a local ``save_pretrained`` directory, or ``tiny`` (a seeded random test model built on
the fly). The towers return CLIP's *projected* embeddings; the runtime normalises them.

Why the text tower takes no attention mask: CLIP's text transformer is causal and pools the hidden
state at the first end-of-text token, so tokens after it (padding) cannot influence the result.
Padding with ``<|endoftext|>`` also keeps the older ``argmax(input_ids)`` pooling of OpenAI's
configs correct (argmax returns the first maximum). Verification embeds every text both padded in
a batch and alone to prove it, which is also what lets the manifest use ``padding: longest``.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

from fashion_search.manifest import ImageTower, ModelManifest, TextTower
from model_export import onnx_io
from model_export.tiny import TINY_SOURCE, build_tiny_checkpoint

log = logging.getLogger(__name__)

DEFAULT_SOURCE = "openai/clip-vit-base-patch32"
# Licences of the checkpoints this project documents; anything else says "see source".
KNOWN_LICENSES = {
    "openai/clip-vit-base-patch32": "MIT (OpenAI CLIP)",
    "openai/clip-vit-base-patch16": "MIT (OpenAI CLIP)",
    "openai/clip-vit-large-patch14": "MIT (OpenAI CLIP)",
    "patrickjohncyh/fashion-clip": "MIT (FashionCLIP, fine-tuned from OpenAI CLIP)",
    TINY_SOURCE: "MIT (random weights, no training data; vocabulary from OpenAI CLIP, MIT)",
}
_RESAMPLE_NAMES = {2: "bilinear", 3: "bicubic"}


@dataclass
class ClipCheckpoint:
    """A loaded checkpoint: the model and the two preprocessors it was published with."""

    source: str
    model: CLIPModel
    tokenizer: CLIPTokenizerFast
    image_processor: CLIPImageProcessor


class ImageTowerModule(torch.nn.Module):
    """pixel_values [N, 3, H, W] -> projected image embedding [N, D]."""

    def __init__(self, model: CLIPModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=pixel_values))


class TextTowerModule(torch.nn.Module):
    """input_ids [N, L] -> projected text embedding [N, D] (pooled at the first end-of-text)."""

    def __init__(self, model: CLIPModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_text_features(input_ids=input_ids))


def _features(out: object) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output is the projection; 4.x a tensor.
    return out if isinstance(out, torch.Tensor) else out.pooler_output  # type: ignore[attr-defined]


@contextmanager
def open_checkpoint(source: str, seed: int = 0) -> Iterator[ClipCheckpoint]:
    """Load ``source``; ``tiny`` builds the seeded test checkpoint in a temporary directory first,
    so it then goes through exactly the ``from_pretrained`` path of a downloaded one."""
    if source == TINY_SOURCE:
        with tempfile.TemporaryDirectory(prefix="tiny-clip-") as tmp:
            yield load_checkpoint(str(build_tiny_checkpoint(Path(tmp), seed=seed)), TINY_SOURCE)
    else:
        yield load_checkpoint(source, source)


def load_checkpoint(path_or_id: str, source: str) -> ClipCheckpoint:
    """``from_pretrained`` for the model, fast tokenizer and image processor (hub id or local dir)."""
    # float(): transformers 5 loads in the stored dtype by default; the reference must be fp32.
    model = CLIPModel.from_pretrained(path_or_id).float().eval()
    tokenizer = CLIPTokenizerFast.from_pretrained(path_or_id)
    if tokenizer.pad_token is None:  # pad with end-of-text, as OpenAI's CLIP tokenizers do
        tokenizer.pad_token = tokenizer.eos_token
    image_processor = CLIPImageProcessor.from_pretrained(path_or_id)
    return ClipCheckpoint(source, model, tokenizer, image_processor)


def image_spec(processor: CLIPImageProcessor) -> ImageTower:
    """The manifest's image recipe, read from the checkpoint's own preprocessor config.

    Only CLIP's usual recipe (shortest edge -> S, centre crop S x S) is expressible; anything else
    is refused rather than silently approximated.
    """
    size = processor.size.get("shortest_edge") if processor.do_resize else None
    crop = processor.crop_size if processor.do_center_crop else None
    if size is None or crop is None or crop["height"] != size or crop["width"] != size:
        raise ValueError(
            f"unsupported CLIP preprocessing (size={processor.size}, crop_size={processor.crop_size}, "
            f"do_resize={processor.do_resize}, do_center_crop={processor.do_center_crop}): the manifest "
            "expresses 'shortest edge to S then centre crop S x S' only"
        )
    if not (
        processor.do_rescale and abs(processor.rescale_factor - 1 / 255) < 1e-12 and processor.do_normalize
    ):
        raise ValueError(
            "unsupported CLIP preprocessing: expected rescale by 1/255 and mean/std normalisation"
        )
    resample = int(processor.resample)
    if resample not in _RESAMPLE_NAMES:
        raise ValueError(f"unsupported resample filter {resample}: expected bicubic (3) or bilinear (2)")
    return ImageTower(
        height=size,
        width=size,
        resize="shortest_side_center_crop",
        interpolation=_RESAMPLE_NAMES[resample],
        mean=tuple(processor.image_mean),
        std=tuple(processor.image_std),
    )


def text_spec(tokenizer: CLIPTokenizerFast, max_length: int) -> TextTower:
    # The fast tokenizer lowercases in its normaliser, so the runtime need not.
    return TextTower(
        attention_mask_name=None,
        max_length=max_length,
        padding="longest",
        pad_id=tokenizer.pad_token_id,
        pad_token=tokenizer.pad_token,
        lowercase=False,
    )


def context_length(ckpt: ClipCheckpoint) -> int:
    return min(ckpt.model.config.text_config.max_position_embeddings, ckpt.tokenizer.model_max_length)


def build_manifest(ckpt: ClipCheckpoint, name: str, precision: str) -> ModelManifest:
    return ModelManifest(
        name=name,
        source=ckpt.source,
        embedding_dim=ckpt.model.config.projection_dim,
        precision=precision,
        image=image_spec(ckpt.image_processor),
        text=text_spec(ckpt.tokenizer, context_length(ckpt)),
    )


def write_tokenizer(ckpt: ClipCheckpoint, spec: TextTower, path: Path) -> None:
    """The checkpoint's fast tokenizer, with truncation and padding set as the manifest says
    (the runtime re-applies them; they are stored too for anyone using the file directly)."""
    tokenizer = Tokenizer.from_str(ckpt.tokenizer.backend_tokenizer.to_str())
    onnx_io.configure_tokenizer(tokenizer, spec)
    tokenizer.save(str(path), pretty=False)


def export_towers(ckpt: ClipCheckpoint, manifest: ModelManifest, out_dir: Path) -> None:
    """Write both fp32 towers and the tokenizer into ``out_dir``."""
    size = (manifest.image.height, manifest.image.width)
    pixels = torch.zeros((2, 3, *size), dtype=torch.float32)
    onnx_io.export_tower(
        ImageTowerModule(ckpt.model),
        (pixels,),
        [manifest.image.input_name],
        manifest.image.output_name,
        out_dir / manifest.image.file,
        {manifest.image.input_name: {0: "batch"}},
    )
    ids = ckpt.tokenizer(
        ["a photo of a red dress", "shoes"], padding="max_length", max_length=manifest.text.max_length
    )["input_ids"]
    onnx_io.export_tower(
        TextTowerModule(ckpt.model),
        (torch.tensor(ids, dtype=torch.int64),),
        [manifest.text.input_ids_name],
        manifest.text.output_name,
        out_dir / manifest.text.file,
        {manifest.text.input_ids_name: {0: "batch", 1: "sequence"}},
    )
    write_tokenizer(ckpt, manifest.text, out_dir / manifest.text.tokenizer_file)
