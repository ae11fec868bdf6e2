"""The short ``MODEL_CARD.md`` written next to every exported model.

Kept generic (manifest + parity report in, markdown out) so exported checkpoints and trained
models describe themselves the same way.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping

import onnxruntime
import torch

from fashion_search.manifest import ModelManifest
from model_export.onnx_io import ParityReport


def tool_versions() -> dict[str, str]:
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def render_card(
    manifest: ModelManifest,
    report: ParityReport,
    *,
    license: str,
    command: str,
    notes: Mapping[str, str] | None = None,
) -> str:
    image, text = manifest.image, manifest.text
    lines = [
        f"# {manifest.name}",
        "",
        "| | |",
        "|---|---|",
        f"| source | `{manifest.source}` |",
        f"| licence | {license} |",
        f"| precision | {manifest.precision} |",
        f"| embedding dim | {manifest.embedding_dim} |",
        f"| image input | {image.height}x{image.width}, {image.resize}, {image.interpolation}, "
        f"mean {list(image.mean)}, std {list(image.std)} |",
        f"| text input | max {text.max_length} tokens, padding {text.padding} with `{text.pad_token}` "
        f"({text.pad_id}), attention mask: {'yes' if text.attention_mask_name else 'no'} |",
        f"| regenerate | `{command}` |",
        "",
        "## Parity (ONNX Runtime vs PyTorch fp32)",
        "",
        "| check | value |",
        "|---|---|",
        f"| image cosine min / mean | {report.image_cosine_min:.6f} / {report.image_cosine_mean:.6f} |",
        f"| text cosine min / mean | {report.text_cosine_min:.6f} / {report.text_cosine_mean:.6f} |",
        f"| threshold (min cosine) | {report.threshold} |",
        f"| text->image top-1 agreement (beyond ties of {report.tie_margin}) | "
        f"{report.top1_agreement:.3f} ({report.top1_agreement_beyond_ties:.3f}) |",
        f"| samples | {report.samples_images} images, {report.samples_texts} text embeddings |",
        f"| verdict | {'pass' if report.passed else 'FAIL'} |",
        "",
    ]
    for title, body in (notes or {}).items():
        lines += [f"## {title}", "", body, ""]
    versions = ", ".join(f"{k} {v}" for k, v in tool_versions().items())
    lines += [f"Exported with {versions}.", ""]
    return "\n".join(lines)
