"""Parity of an exported CLIP directory against the PyTorch checkpoint it came from.

The reference side uses the checkpoint's own Hugging Face preprocessors (image processor,
tokenizer padded to the full context); the ONNX side uses the exported ``tokenizer.json`` with the
manifest's padding, as the runtime does. Every text is embedded by ONNX twice -- in a padded batch
and alone -- so a tower that leaks padding into the embedding fails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from fashion_search.manifest import ModelManifest
from model_export import onnx_io
from model_export.clip_export import ClipCheckpoint, ImageTowerModule, TextTowerModule, context_length
from model_export.samples import Samples


def reference_embeddings(ckpt: ClipCheckpoint, samples: Samples) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pixel_values, image embeddings, text embeddings) from PyTorch in fp32."""
    pixels = ckpt.image_processor(images=samples.images, return_tensors="pt")["pixel_values"]
    length = context_length(ckpt)
    ids = ckpt.tokenizer(
        samples.texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt"
    )["input_ids"]
    with torch.no_grad():
        image = ImageTowerModule(ckpt.model)(pixels.float())
        text = TextTowerModule(ckpt.model)(ids)
    return pixels.numpy().astype(np.float32), image.numpy(), text.numpy()


def onnx_embeddings(
    model_dir: Path, manifest: ModelManifest, pixels: np.ndarray, texts: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(image embeddings, text embeddings) from ONNX Runtime; texts batched, then one by one."""
    image = onnx_io.run_tower(
        onnx_io.session(model_dir / manifest.image.file), {manifest.image.input_name: pixels}
    )
    tokenizer = onnx_io.configure_tokenizer(
        Tokenizer.from_file(str(model_dir / manifest.text.tokenizer_file)), manifest.text
    )
    text_session = onnx_io.session(model_dir / manifest.text.file)
    batched = onnx_io.run_tower(text_session, onnx_io.encode_texts(tokenizer, manifest.text, texts))
    alone = [
        onnx_io.run_tower(text_session, onnx_io.encode_texts(tokenizer, manifest.text, [t])) for t in texts
    ]
    return image, np.concatenate([batched, *alone])


def verify_export(
    model_dir: Path, manifest: ModelManifest, ckpt: ClipCheckpoint, samples: Samples
) -> onnx_io.ParityReport:
    pixels, ref_image, ref_text = reference_embeddings(ckpt, samples)
    image, text = onnx_embeddings(Path(model_dir), manifest, pixels, samples.texts)
    return onnx_io.verify_towers(
        ref_image, np.concatenate([ref_text, ref_text]), image, text, precision=manifest.precision
    )
