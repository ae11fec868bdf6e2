"""What an export writes: manifest fields, hashes, card; and the committed test model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest

from fashion_search.manifest import MANIFEST_NAME, load_manifest, sha256_file
from model_export.__main__ import main
from model_export.clip_vocab import VOCAB_SIZE
from model_export.onnx_io import CARD_NAME
from model_export.tiny import CLIP_MEAN, CLIP_STD, IMAGE_SIZE, tiny_config

pytestmark = pytest.mark.torch


def test_manifest_describes_the_checkpoint(export_fp32: Path) -> None:
    manifest = load_manifest(export_fp32)
    assert manifest.name == "tiny-test"
    assert manifest.embedding_dim == tiny_config().projection_dim
    image, text = manifest.image, manifest.text
    assert (image.height, image.width) == (IMAGE_SIZE, IMAGE_SIZE)
    assert (image.resize, image.interpolation) == ("shortest_side_center_crop", "bicubic")
    assert image.mean == pytest.approx(CLIP_MEAN) and image.std == pytest.approx(CLIP_STD)
    assert text.attention_mask_name is None
    assert (text.max_length, text.padding, text.pad_token, text.pad_id) == (
        77,
        "longest",
        "<|endoftext|>",
        49407,
    )
    assert text.lowercase is False  # the tokenizer's own normaliser lowercases


def test_manifest_hashes_every_file_it_names(export_fp32: Path) -> None:
    manifest = load_manifest(export_fp32)
    assert set(manifest.files) == {"image.onnx", "text.onnx", "tokenizer.json"}
    for name, digest in manifest.files.items():
        assert sha256_file(export_fp32 / name) == digest


def test_towers_have_the_declared_io_and_dynamic_axes(export_fp32: Path) -> None:
    manifest = load_manifest(export_fp32)
    for spec_in, spec_out, path, dynamic in (
        ([manifest.image.input_name], manifest.image.output_name, manifest.image.file, {0}),
        ([manifest.text.input_ids_name], manifest.text.output_name, manifest.text.file, {0, 1}),
    ):
        graph = onnx.load(str(export_fp32 / path)).graph
        assert [i.name for i in graph.input] == spec_in
        assert [o.name for o in graph.output] == [spec_out]
        dims = graph.input[0].type.tensor_type.shape.dim
        assert {i for i, d in enumerate(dims) if d.dim_param} == dynamic
        assert graph.output[0].type.tensor_type.shape.dim[1].dim_value == manifest.embedding_dim


def test_card_and_extra_record_source_licence_and_parity(export_fp32: Path) -> None:
    manifest = load_manifest(export_fp32)
    card = (export_fp32 / CARD_NAME).read_text()
    assert manifest.extra["license"].startswith("see the licence of")  # a local dir: unknown licence
    assert str(manifest.source) in card and "| precision | fp32 |" in card
    assert f"{manifest.extra['parity']['text_cosine_min']:.6f}" in card
    assert manifest.extra["exporter"]["command"].startswith("python -m model_export export")


def test_tokenizer_json_carries_the_manifest_settings(export_fp32: Path) -> None:
    data = json.loads((export_fp32 / "tokenizer.json").read_text())
    assert data["truncation"]["max_length"] == 77
    assert data["padding"]["pad_id"] == 49407 and data["padding"]["strategy"] == "BatchLongest"
    assert len(data["model"]["vocab"]) == VOCAB_SIZE


def test_committed_fixture_loads_with_matching_hashes(tiny_model_dir: Path) -> None:
    manifest = load_manifest(tiny_model_dir, verify_hashes=True)
    assert manifest.name == "tiny-clip" and manifest.source == "tiny" and manifest.precision == "fp32"
    assert manifest.extra["parity"]["passed"] is True
    assert (tiny_model_dir / CARD_NAME).is_file()
    size = sum(p.stat().st_size for p in tiny_model_dir.iterdir())
    assert size < 6_000_000


def test_committed_fixture_is_the_seeded_tiny_model(tiny_model_dir: Path) -> None:
    """The fixture still is what `python -m model_export tiny` produces (parity against a rebuild)."""
    assert main(["verify", str(tiny_model_dir), "--from", "tiny"]) == 0


def test_a_new_export_replaces_a_previous_one_in_place(
    export_fp32: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "m"
    shutil.copytree(export_fp32, out)
    first = load_manifest(out).model_id
    assert main(["export", "--from", str(tiny_checkpoint), "--out", str(out), "--precision", "int8"]) == 0
    second = load_manifest(out)
    assert second.precision == "int8" and second.model_id != first
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [CARD_NAME, MANIFEST_NAME, "image.onnx", "text.onnx", "tokenizer.json"]
    )
