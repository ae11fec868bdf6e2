"""The three things ``python -m model_export`` does: export, tiny, verify.

An export writes ``model.json`` only after the towers passed verification, so a directory with a
manifest is always a verified, complete one; a failed export leaves no manifest behind and the
runtime refuses the directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fashion_search.manifest import MANIFEST_NAME, ModelManifest, load_manifest
from model_export import onnx_io
from model_export.clip_export import (
    KNOWN_LICENSES,
    ClipCheckpoint,
    build_manifest,
    export_towers,
    open_checkpoint,
)
from model_export.clip_verify import verify_export
from model_export.model_card import render_card, tool_versions
from model_export.samples import Samples, load_samples

log = logging.getLogger(__name__)


class VerificationFailed(Exception):
    """ONNX outputs are not faithful enough to the PyTorch checkpoint (or do not belong to it)."""

    def __init__(self, message: str, report: onnx_io.ParityReport | None = None) -> None:
        super().__init__(message)
        self.report = report


def export_checkpoint(
    ckpt: ClipCheckpoint,
    out_dir: Path,
    *,
    precision: str = "fp32",
    name: str | None = None,
    samples: Samples,
    command: str,
) -> ModelManifest:
    """Export, change precision, verify, then write the card and the manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    manifest = build_manifest(ckpt, name or _default_name(ckpt.source), precision)
    export_towers(ckpt, manifest, out_dir)
    for tower in (manifest.image.file, manifest.text.file):
        onnx_io.set_precision(out_dir / tower, precision)
    report = verify_export(out_dir, manifest, ckpt, samples)
    log.info(report.summary())
    if not report.passed:
        raise VerificationFailed(report.summary(), report)
    license = KNOWN_LICENSES.get(ckpt.source, f"see the licence of `{ckpt.source}`")
    manifest = manifest.model_copy(
        update={
            "extra": {
                "license": license,
                "parity": report.as_dict(),
                "parity_samples": samples.description,
                "exporter": {"command": command, **tool_versions()},
            }
        }
    )
    card = render_card(manifest, report, license=license, command=command)
    return onnx_io.write_model_dir(out_dir, manifest, card)


def verify_dir(model_dir: Path, ckpt: ClipCheckpoint, samples: Samples) -> onnx_io.ParityReport:
    """Check an existing directory against ``ckpt``: file hashes, manifest recipe, then parity."""
    manifest = load_manifest(Path(model_dir))
    expected = build_manifest(ckpt, manifest.name, manifest.precision)
    for field in ("embedding_dim", "image", "text"):
        if getattr(manifest, field) != getattr(expected, field):
            raise VerificationFailed(
                f"{field} in {MANIFEST_NAME} does not match {ckpt.source}: "
                f"{getattr(manifest, field)!r} != {getattr(expected, field)!r}"
            )
    report = verify_export(Path(model_dir), manifest, ckpt, samples)
    if not report.passed:
        raise VerificationFailed(report.summary(), report)
    return report


def run_export(
    source: str,
    out_dir: Path,
    *,
    precision: str,
    name: str | None,
    seed: int,
    kagl_dir: Path | None,
    command: str,
) -> ModelManifest:
    with open_checkpoint(source, seed=seed) as ckpt:
        return export_checkpoint(
            ckpt, out_dir, precision=precision, name=name, samples=load_samples(kagl_dir), command=command
        )


def run_verify(model_dir: Path, source: str, *, seed: int, kagl_dir: Path | None) -> onnx_io.ParityReport:
    with open_checkpoint(source, seed=seed) as ckpt:
        return verify_dir(model_dir, ckpt, load_samples(kagl_dir))


def _default_name(source: str) -> str:
    return "tiny-clip" if source == "tiny" else Path(source.rstrip("/")).name
