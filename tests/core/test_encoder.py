"""The ONNX encoder: unit vectors, batch == single, and clear errors for broken model dirs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashion_search.encoder import Encoder
from fashion_search.errors import ModelError
from fashion_search.imaging import decode_image

TEXTS = ["black leather handbag for women", "Men Blue Jeans", "", "é 👗 ümlaut", "x " * 200]


def kagl_images(kagl_dir: Path, n: int = 6) -> list[Image.Image]:
    paths = sorted((kagl_dir / "images").glob("*.jpg"))[:n]
    return [decode_image(p.read_bytes(), max_bytes=10**7, max_pixels=10**8).image for p in paths]


def test_embeddings_are_unit_float32(tiny_encoder: Encoder, kagl_dir: Path) -> None:
    for emb in (tiny_encoder.embed_texts(TEXTS), tiny_encoder.embed_images(kagl_images(kagl_dir))):
        assert emb.dtype == np.float32
        assert emb.shape[1] == tiny_encoder.dim
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_batch_equals_one_by_one(tiny_encoder: Encoder, kagl_dir: Path) -> None:
    images = kagl_images(kagl_dir)
    batch = tiny_encoder.embed_images(images)
    single = np.concatenate([tiny_encoder.embed_images([im]) for im in images])
    np.testing.assert_allclose(batch, single, atol=1e-5)
    texts = tiny_encoder.embed_texts(TEXTS)
    single_texts = np.concatenate([tiny_encoder.embed_texts([t]) for t in TEXTS])
    np.testing.assert_allclose(texts, single_texts, atol=1e-5)


def test_different_inputs_give_different_embeddings(tiny_encoder: Encoder, kagl_dir: Path) -> None:
    emb = tiny_encoder.embed_images(kagl_images(kagl_dir))
    assert np.abs(emb[0] - emb[1]).max() > 1e-3
    text = tiny_encoder.embed_texts(TEXTS[:2])
    assert np.abs(text[0] - text[1]).max() > 1e-3


def test_empty_batches(tiny_encoder: Encoder) -> None:
    assert tiny_encoder.embed_texts([]).shape == (0, tiny_encoder.dim)
    assert tiny_encoder.embed_images([]).shape == (0, tiny_encoder.dim)


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_model_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model_export"):
        Encoder.load(tmp_path / "nowhere")


def test_missing_tower_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = copy_model(tiny_model_dir, tmp_path / "m")
    (model / "text.onnx").unlink()
    with pytest.raises(ModelError, match=r"text\.onnx is missing"):
        Encoder.load(model)


def test_tampered_file_fails_the_hash_check(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = copy_model(tiny_model_dir, tmp_path / "m")
    with (model / "image.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelError, match="sha256"):
        Encoder.load(model)


def test_manifest_that_disagrees_with_the_graph(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = copy_model(tiny_model_dir, tmp_path / "m")
    manifest = json.loads((model / "model.json").read_text())
    manifest["image"]["input_name"] = "not_the_input"
    (model / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="not_the_input"):
        Encoder.load(model)


def test_invalid_manifest(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = copy_model(tiny_model_dir, tmp_path / "m")
    (model / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="invalid"):
        Encoder.load(model)


def test_special_tokens_in_user_text_stay_text(tiny_encoder: Encoder) -> None:
    """A query cannot cut itself short by typing the end-of-text token."""
    plain, injected = tiny_encoder.embed_texts(["red dress", "red dress <|endoftext|> blue jeans"])
    truncated = tiny_encoder.embed_texts(["red dress"])[0]
    assert np.abs(injected - truncated).max() > 1e-3
    np.testing.assert_allclose(plain, truncated, atol=1e-6)
