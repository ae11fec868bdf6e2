"""Exported towers reproduce the PyTorch checkpoint (fp32 and int8), also through the runtime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashion_search.encoder import Encoder
from fashion_search.manifest import load_manifest
from model_export import onnx_io
from model_export.__main__ import main
from model_export.clip_export import load_checkpoint
from model_export.clip_verify import reference_embeddings
from model_export.samples import load_samples

pytestmark = pytest.mark.torch


def test_fp32_export_meets_the_fp32_threshold(export_fp32: Path) -> None:
    parity = load_manifest(export_fp32).extra["parity"]
    assert parity["precision"] == "fp32" and parity["passed"] is True
    assert parity["image_cosine_min"] >= 0.9999 and parity["text_cosine_min"] >= 0.9999
    assert parity["top1_agreement"] == 1.0
    assert parity["samples_texts"] == 2 * len(load_samples().texts)  # each text batched and alone


def test_int8_export_is_smaller_and_within_its_threshold(export_fp32: Path, export_int8: Path) -> None:
    manifest = load_manifest(export_int8)
    parity = manifest.extra["parity"]
    assert manifest.precision == "int8" and parity["passed"] is True
    assert parity["threshold"] == onnx_io.COSINE_THRESHOLDS["int8"]
    assert min(parity["image_cosine_min"], parity["text_cosine_min"]) >= parity["threshold"]
    assert parity["top1_agreement_beyond_ties"] == 1.0
    for tower in ("image.onnx", "text.onnx"):
        assert (export_int8 / tower).stat().st_size < 0.6 * (export_fp32 / tower).stat().st_size


@pytest.mark.parametrize("which", ["export_fp32", "export_int8"])
def test_verify_command_passes_on_a_faithful_export(
    which: str, tiny_checkpoint: Path, request: pytest.FixtureRequest
) -> None:
    assert main(["verify", str(request.getfixturevalue(which)), "--from", str(tiny_checkpoint)]) == 0


def test_fp16_export_passes_its_threshold(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "fp16"
    assert main(["export", "--from", str(tiny_checkpoint), "--out", str(out), "--precision", "fp16"]) == 0
    parity = load_manifest(out).extra["parity"]
    assert parity["precision"] == "fp16" and parity["passed"] is True


def test_runtime_encoder_matches_pytorch_end_to_end(export_fp32: Path, tiny_checkpoint: Path) -> None:
    """The runtime's own tokenisation, preprocessing and sessions, driven only by model.json,
    give the checkpoint's embeddings: the manifest describes the checkpoint's recipe correctly."""
    samples = load_samples()
    ckpt = load_checkpoint(str(tiny_checkpoint), "tiny")
    _, ref_image, ref_text = reference_embeddings(ckpt, samples)
    encoder = Encoder.load(export_fp32)
    assert encoder.dim == ref_text.shape[1]
    np.testing.assert_array_less(0.9999, onnx_io.row_cosines(ref_text, encoder.embed_texts(samples.texts)))
    np.testing.assert_array_less(0.9999, onnx_io.row_cosines(ref_image, encoder.embed_images(samples.images)))


def test_runtime_preprocessing_matches_the_checkpoint_on_odd_shapes(
    export_fp32: Path, tiny_checkpoint: Path
) -> None:
    """Wide, tall, tiny and greyscale images: the manifest's crop recipe equals CLIPImageProcessor's."""
    rng = np.random.default_rng(3)
    images = [
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
        for h, w in ((40, 300), (301, 45), (7, 9))
    ] + [Image.fromarray(rng.integers(0, 256, size=(64, 50), dtype=np.uint8)).convert("RGB")]
    ckpt = load_checkpoint(str(tiny_checkpoint), "tiny")
    pixels = ckpt.image_processor(images=images, return_tensors="np")["pixel_values"]
    encoder = Encoder.load(export_fp32)
    reference = onnx_io.run_tower(onnx_io.session(export_fp32 / "image.onnx"), {"pixel_values": pixels})
    np.testing.assert_array_less(0.9999, onnx_io.row_cosines(reference, encoder.embed_images(images)))


def test_padding_does_not_change_text_embeddings(export_fp32: Path) -> None:
    """No attention mask: a text must embed the same alone, in a batch, and padded to the context."""
    manifest = load_manifest(export_fp32)
    encoder = Encoder.load(export_fp32)
    texts = ["red dress", "a much longer description of a pair of blue denim jeans for men", ""]
    batched = encoder.embed_texts(texts)
    for i, text in enumerate(texts):
        np.testing.assert_allclose(encoder.embed_texts([text])[0], batched[i], atol=1e-5)
    spec = manifest.text.model_copy(update={"padding": "max_length"})
    full = json.loads((export_fp32 / "model.json").read_text())
    full["text"] = spec.model_dump(mode="json")
    padded_dir = export_fp32.parent / "padded-to-context"
    shutil.copytree(export_fp32, padded_dir, dirs_exist_ok=True)
    (padded_dir / "model.json").write_text(json.dumps(full))
    np.testing.assert_allclose(Encoder.load(padded_dir).embed_texts(texts), batched, atol=1e-5)
