"""Broken or mismatched exports are caught: non-zero exit, and no manifest from a failed export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from fashion_search.manifest import MANIFEST_NAME, ModelManifest, load_manifest, write_manifest
from model_export import onnx_io
from model_export.__main__ import main
from model_export.clip_export import TextTowerModule, load_checkpoint

pytestmark = pytest.mark.torch


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _rewrite_manifest(model_dir: Path, **changes: object) -> None:
    """Edit model.json and refresh its hashes, so only the content is wrong, not the bookkeeping."""
    manifest = load_manifest(model_dir, verify_hashes=False)
    write_manifest(model_dir, ModelManifest.model_validate({**manifest.model_dump(), **changes}))


def test_towers_of_another_model_fail_verification(export_fp32: Path, other_checkpoint: Path) -> None:
    assert main(["verify", str(export_fp32), "--from", str(other_checkpoint)]) == 1


def test_text_tower_swapped_for_another_seeds_fails(
    export_fp32: Path, other_checkpoint: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    broken = _copy(export_fp32, tmp_path / "broken")
    manifest = load_manifest(broken)
    ckpt = load_checkpoint(str(other_checkpoint), "other")
    ids = torch.tensor([[49406, 320, 49407]], dtype=torch.int64)
    name = manifest.text.input_ids_name
    onnx_io.export_tower(
        TextTowerModule(ckpt.model),
        (ids,),
        [name],
        manifest.text.output_name,
        broken / manifest.text.file,
        {name: {0: "batch", 1: "sequence"}},
    )
    _rewrite_manifest(broken)
    assert main(["verify", str(broken), "--from", str(tiny_checkpoint)]) == 1


def test_perturbed_weights_fail_verification(
    export_fp32: Path, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = _copy(export_fp32, tmp_path / "broken")
    model = onnx.load(str(broken / "image.onnx"))
    biggest = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    weights = numpy_helper.to_array(biggest)
    noisy = weights + np.random.default_rng(0).normal(0, weights.std(), weights.shape).astype(weights.dtype)
    biggest.CopyFrom(numpy_helper.from_array(noisy, biggest.name))
    onnx.save(model, str(broken / "image.onnx"))
    _rewrite_manifest(broken)
    assert main(["verify", str(broken), "--from", str(tiny_checkpoint)]) == 1
    assert "FAIL fp32" in capsys.readouterr().err


def test_files_changed_after_export_are_refused(
    export_fp32: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    broken = _copy(export_fp32, tmp_path / "broken")
    with (broken / "text.onnx").open("r+b") as fh:
        fh.seek(-64, 2)
        fh.write(b"\0" * 64)
    assert main(["verify", str(broken), "--from", str(tiny_checkpoint)]) == 2


def test_manifest_recipe_that_differs_from_the_checkpoint_fails(
    export_fp32: Path, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = _copy(export_fp32, tmp_path / "broken")
    spec = load_manifest(broken).image.model_copy(update={"interpolation": "bilinear"})
    _rewrite_manifest(broken, image=spec)
    assert main(["verify", str(broken), "--from", str(tiny_checkpoint)]) == 1
    assert "image in model.json does not match" in capsys.readouterr().err


def test_export_that_fails_verification_writes_no_manifest(
    export_fp32: Path, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _copy(export_fp32, tmp_path / "m")
    monkeypatch.setitem(onnx_io.COSINE_THRESHOLDS, "fp32", 1.5)  # unreachable: every export fails
    assert main(["export", "--from", str(tiny_checkpoint), "--out", str(out)]) == 1
    assert not (out / MANIFEST_NAME).exists()  # the previous, now overwritten export is not advertised


def test_unsupported_preprocessing_is_refused(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    odd = _copy(tiny_checkpoint, tmp_path / "odd")
    config = json.loads((odd / "preprocessor_config.json").read_text())
    config["crop_size"] = {"height": 24, "width": 24}
    (odd / "preprocessor_config.json").write_text(json.dumps(config))
    assert main(["export", "--from", str(odd), "--out", str(tmp_path / "m")]) == 2
    assert "unsupported CLIP preprocessing" in capsys.readouterr().err


def test_missing_model_directory_is_a_usage_error(tiny_checkpoint: Path, tmp_path: Path) -> None:
    assert main(["verify", str(tmp_path / "nothing"), "--from", str(tiny_checkpoint)]) == 2


def test_missing_checkpoint_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["export", "--from", str(tmp_path / "no-such-dir"), "--out", str(tmp_path / "m")]) == 2
