"""Model-agnostic ONNX plumbing: export one tower, change its precision, write a model directory,
and measure how faithfully ONNX Runtime reproduces PyTorch.

Nothing here knows about CLIP: the CLIP exporter (``clip_export``) and the training code's own
dual encoder both build on these functions, so every model directory the runtime loads is written
and checked the same way.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from tokenizers import Tokenizer

from fashion_search.manifest import ModelManifest, TextTower, write_manifest
from fashion_search.tokenize import TextTokenizer

log = logging.getLogger(__name__)

OPSET = 17
CARD_NAME = "MODEL_CARD.md"
# Gather covers token-embedding tables (most of a text tower's bytes); Conv stays float because
# ConvInteger is slow on CPU and the patch embedding is a tiny share of the compute.
INT8_OP_TYPES = ("MatMul", "Gemm", "Gather")
# Where each precision must land against the fp32 PyTorch reference (minimum cosine over samples).
# int8 is dynamic quantisation: activation scales are computed per call over the whole batch, so
# the same text embeds slightly differently alone and in a batch; 0.97 leaves room for that on small
# towers (the tiny test model's 16-wide text tower is the worst case, ~0.98).
COSINE_THRESHOLDS: Mapping[str, float] = {"fp32": 0.9999, "fp16": 0.999, "int8": 0.97}
# A text's top-1 image may differ from the reference only when the reference itself scores the two
# images within this margin (a near-tie that the precision's own error can legitimately flip).
TIE_MARGINS: Mapping[str, float] = {"fp32": 1e-4, "fp16": 5e-3, "int8": 0.05}


def export_tower(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_name: str,
    path: Path,
    dynamic_axes: Mapping[str, Mapping[int, str]],
    opset: int = OPSET,
) -> Path:
    """Export ``module(*example_inputs) -> Tensor`` to a single self-contained ONNX file.

    Uses the TorchScript exporter: its ``dynamic_axes`` handle the batch (and sequence) axes of
    transformer towers reliably, and it writes one file (no external data), which the runtime's
    sha256-per-file manifest relies on. ``dynamic_axes`` maps input/output names to
    ``{axis: symbolic name}``; the output's batch axis is added if missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {name: dict(spec) for name, spec in dynamic_axes.items()}
    axes.setdefault(output_name, {0: "batch"})
    module = module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        # Tracing warns about every Python-level shape check in transformers; the verification
        # step, which runs other batch sizes and sequence lengths, is what proves the graph general.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")  # indices are >= 0
        torch.onnx.export(
            module,
            example_inputs,
            str(path),
            input_names=list(input_names),
            output_names=[output_name],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))
    log.info("exported tower", extra={"path": str(path), "bytes": path.stat().st_size})
    return path


def quantize_int8(
    src: Path,
    dst: Path,
    nodes_to_exclude: Sequence[str] = (),
    per_channel: bool = False,
    reduce_range: bool = False,
) -> Path:
    """Dynamic int8 weight quantisation (activations stay float, scaled per batch at run time).

    Dynamic rather than static quantisation because it needs no calibration set and keeps the
    fp32 input/output contract, so the runtime cannot tell the difference except by speed and size.
    ``nodes_to_exclude`` keeps the named nodes in fp32; ``per_channel`` and ``reduce_range``
    (7-bit weights, avoiding u8s8 saturation on CPUs without VNNI) trade a little size or range for
    accuracy where a tower's parity needs it (the trained KAGL text tower does).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(
        Path(src),
        dst,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=list(INT8_OP_TYPES),
        per_channel=per_channel,
        reduce_range=reduce_range,
        nodes_to_exclude=list(nodes_to_exclude),
    )
    onnx.checker.check_model(str(dst))
    return dst


def convert_fp16(src: Path, dst: Path) -> Path:
    """Cast weights and activations to float16 but keep float32 inputs and outputs.

    Keeping the I/O in float32 preserves the runtime contract; the gain is on GPUs (tensor cores,
    half the memory traffic). ONNX Runtime's CPU kernels mostly compute fp16 by upcasting, so fp16
    is not a CPU speed-up. Uses the converter shipped with ONNX Runtime (its transformer tools),
    which handles the casts around Conv that ``onnxconverter-common`` gets wrong.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    converted = OnnxModel(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True))
    converted.topological_sort()  # the input casts are appended last; ONNX requires sorted nodes
    dst = Path(dst)
    onnx.save(converted.model, str(dst))
    onnx.checker.check_model(str(dst))
    return dst


def set_precision(fp32_path: Path, precision: str) -> None:
    """Rewrite an fp32 tower in place to ``precision`` (``fp32`` leaves it alone).

    The converted model is written next to it and moved over it only when complete.
    """
    converters = {"int8": quantize_int8, "fp16": convert_fp16}
    if precision == "fp32":
        return
    if precision not in converters:
        raise ValueError(f"unknown precision {precision!r}: expected fp32, fp16 or int8")
    tmp = fp32_path.with_suffix(f".{precision}.onnx")
    try:
        converters[precision](fp32_path, tmp)
        tmp.replace(fp32_path)
    finally:
        tmp.unlink(missing_ok=True)


def write_model_dir(out_dir: Path, manifest: ModelManifest, card_text: str) -> ModelManifest:
    """Finish a model directory whose towers and tokenizer are already in place.

    Writes the model card and ``model.json`` (with the sha256 of every file it names) last, so a
    directory with a manifest is always a complete one.
    """
    out_dir = Path(out_dir)
    (out_dir / CARD_NAME).write_text(card_text)
    return write_manifest(out_dir, manifest)


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU ONNX Runtime session; one intra-op thread by default so parity runs are reproducible."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_tower(sess: ort.InferenceSession, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
    """The tower's single output as float32."""
    (out,) = sess.run(None, dict(feeds))
    return np.asarray(out, dtype=np.float32)


def configure_tokenizer(tokenizer: Tokenizer, spec: TextTower) -> TextTokenizer:
    """The runtime's own tokenizer wrapper, so export-time checks tokenize exactly as serving does."""
    return TextTokenizer(tokenizer, spec)


def encode_texts(tokenizer: TextTokenizer, spec: TextTower, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """The text tower's feeds for ``texts``, built by the runtime's code path."""
    return tokenizer.feeds(texts)


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine between matching rows of two (N, D) arrays."""
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    return np.sum(unit_rows(a) * unit_rows(b), axis=1)


def top1_agreement(
    ref_queries: np.ndarray, ref_items: np.ndarray, queries: np.ndarray, items: np.ndarray, tie_margin: float
) -> tuple[float, float]:
    """(exact, beyond-ties) fraction of queries whose best item (by cosine) matches the reference.

    "Beyond ties" forgives a different pick when the reference scores it within ``tie_margin`` of
    its own best item.
    """
    ref_scores = unit_rows(ref_queries) @ unit_rows(ref_items).T
    picks = np.argmax(unit_rows(queries) @ unit_rows(items).T, axis=1)
    ref_picks = np.argmax(ref_scores, axis=1)
    rows = np.arange(len(picks))
    gap = ref_scores[rows, ref_picks] - ref_scores[rows, picks]
    return float(np.mean(picks == ref_picks)), float(np.mean((picks == ref_picks) | (gap <= tie_margin)))


@dataclass(frozen=True)
class ParityReport:
    """How closely ONNX embeddings match the PyTorch reference, and whether that is good enough."""

    precision: str
    threshold: float
    tie_margin: float
    image_cosine_min: float
    image_cosine_mean: float
    text_cosine_min: float
    text_cosine_mean: float
    top1_agreement: float
    top1_agreement_beyond_ties: float
    samples_images: int
    samples_texts: int

    @property
    def passed(self) -> bool:
        return (
            self.image_cosine_min >= self.threshold
            and self.text_cosine_min >= self.threshold
            and self.top1_agreement_beyond_ties == 1.0
        )

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "passed": self.passed}

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"{verdict} {self.precision}: image cosine min {self.image_cosine_min:.6f} "
            f"(mean {self.image_cosine_mean:.6f}), text cosine min {self.text_cosine_min:.6f} "
            f"(mean {self.text_cosine_mean:.6f}), threshold {self.threshold}; text->image top-1 "
            f"agreement {self.top1_agreement:.3f} ({self.top1_agreement_beyond_ties:.3f} beyond ties of "
            f"{self.tie_margin}) on {self.samples_texts} texts x {self.samples_images} images"
        )


def verify_towers(
    ref_image: np.ndarray,
    ref_text: np.ndarray,
    onnx_image: np.ndarray,
    onnx_text: np.ndarray,
    precision: str = "fp32",
) -> ParityReport:
    """Compare ONNX tower outputs with the PyTorch reference for the same inputs.

    Besides per-sample cosine, checks that text->image retrieval over the samples picks the same
    top-1 image with both, because that ranking is what the product serves.
    """
    image_cos = row_cosines(ref_image, onnx_image)
    text_cos = row_cosines(ref_text, onnx_text)
    tie_margin = TIE_MARGINS[precision]
    exact, beyond_ties = top1_agreement(ref_text, ref_image, onnx_text, onnx_image, tie_margin)
    return ParityReport(
        precision=precision,
        threshold=COSINE_THRESHOLDS[precision],
        tie_margin=tie_margin,
        image_cosine_min=float(image_cos.min()),
        image_cosine_mean=float(image_cos.mean()),
        text_cosine_min=float(text_cos.min()),
        text_cosine_mean=float(text_cos.mean()),
        top1_agreement=exact,
        top1_agreement_beyond_ties=beyond_ties,
        samples_images=len(ref_image),
        samples_texts=len(ref_text),
    )
