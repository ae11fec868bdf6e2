"""The model-agnostic pieces other exporters (the training code) build on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model_export import onnx_io

pytestmark = pytest.mark.torch


class _Tower(torch.nn.Module):
    """A small non-CLIP tower: mean-pooled embedding bag + projection (int64 ids -> float)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(1000, 64)
        self.proj = torch.nn.Linear(64, 16)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.proj(self.embed(ids).mean(dim=1))


@pytest.fixture(scope="module")
def tower_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tower") / "t.onnx"
    ids = torch.zeros((2, 5), dtype=torch.int64)
    return onnx_io.export_tower(_Tower(), (ids,), ["ids"], "emb", path, {"ids": {0: "batch", 1: "seq"}})


def test_exported_tower_accepts_any_batch_and_length(tower_onnx: Path) -> None:
    session = onnx_io.session(tower_onnx)
    for shape in ((1, 3), (7, 11)):
        ids = np.random.default_rng(1).integers(0, 1000, size=shape)
        out = onnx_io.run_tower(session, {"ids": ids})
        with torch.no_grad():
            ref = _Tower()(torch.from_numpy(ids)).numpy()
        assert out.shape == (shape[0], 16)
        np.testing.assert_allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_precision_changes_keep_float32_io_and_stay_close(
    tower_onnx: Path, tmp_path: Path, precision: str
) -> None:
    path = tmp_path / "t.onnx"
    path.write_bytes(tower_onnx.read_bytes())
    onnx_io.set_precision(path, precision)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.onnx"]
    ids = np.random.default_rng(2).integers(0, 1000, size=(4, 6))
    ref = onnx_io.run_tower(onnx_io.session(tower_onnx), {"ids": ids})
    out = onnx_io.run_tower(onnx_io.session(path), {"ids": ids})
    assert out.dtype == np.float32
    assert onnx_io.row_cosines(ref, out).min() >= onnx_io.COSINE_THRESHOLDS[precision]
    if precision == "int8":
        assert path.stat().st_size < 0.5 * tower_onnx.stat().st_size


def test_unknown_precision_is_refused_and_leaves_the_tower(tower_onnx: Path, tmp_path: Path) -> None:
    path = tmp_path / "t.onnx"
    path.write_bytes(tower_onnx.read_bytes())
    with pytest.raises(ValueError, match="unknown precision"):
        onnx_io.set_precision(path, "int4")
    assert path.read_bytes() == tower_onnx.read_bytes()


def test_top1_agreement_forgives_only_near_ties() -> None:
    items = np.eye(3)
    ref_queries = np.array([[1.0, 0.99, 0.0], [0.0, 0.0, 1.0]])
    flipped = np.array([[0.99, 1.0, 0.0], [0.0, 1.0, 0.0]])  # near-tie flip, then a real one
    exact, beyond = onnx_io.top1_agreement(ref_queries, items, flipped, items, tie_margin=0.05)
    assert (exact, beyond) == (0.0, 0.5)


def test_parity_report_fails_on_cosine_or_ranking() -> None:
    rng = np.random.default_rng(0)
    image, text = rng.standard_normal((4, 8)), rng.standard_normal((6, 8))
    assert onnx_io.verify_towers(image, text, image, text).passed
    assert not onnx_io.verify_towers(image, text, image, text + 0.05 * rng.standard_normal(text.shape)).passed
    with pytest.raises(ValueError, match="shape mismatch"):
        onnx_io.verify_towers(image, text, image[:3], text)
