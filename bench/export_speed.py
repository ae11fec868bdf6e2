"""Image and text embeddings per second, fp32 vs int8 ONNX towers of the same CLIP, on this CPU.

No real CLIP weights can be downloaded here, so the model is a *randomly initialised* CLIP with the
real ViT-B/32 architecture (``CLIPConfig()`` defaults: 224x224, patch 32, 12+12 layers, 512-d).
Speed depends on the architecture, not the weight values, so the figures stand for
openai/clip-vit-base-patch32 and patrickjohncyh/fashion-clip; the parity figures recorded alongside
do not (random weights have no outlier features, which make int8 harder on trained models).

Both precisions are exported through ``model_export`` (verification included), then each tower is
timed alone on prepared inputs: image batches of random pixels, text batches of KAGL product names
tokenised as the runtime does (padding to the longest in the batch). Decoding and resizing are not
included (see bench/ingest_throughput.py for the whole pipeline).

    python bench/export_speed.py [--threads N] [--seconds S] [--work-dir DIR]

Writes bench/results/export_speed.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model_export import onnx_io  # noqa: E402
from model_export.clip_export import open_checkpoint  # noqa: E402
from model_export.commands import export_checkpoint  # noqa: E402
from model_export.model_card import tool_versions  # noqa: E402
from model_export.samples import load_samples  # noqa: E402
from model_export.tiny import build_random_checkpoint  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PRECISIONS = ("fp32", "int8")
BATCHES = (1, 32)


def _vit_b32_checkpoint(work_dir: Path) -> Path:
    from transformers import CLIPConfig

    ckpt = work_dir / "clip-vit-b32-random"
    if not (ckpt / "config.json").is_file():
        build_random_checkpoint(ckpt, CLIPConfig(), seed=0)
    return ckpt


def _rates(runs: dict[str, Any], batch: int, seconds: float, rounds: int = 3) -> dict[str, float]:
    """Median embeddings/s per precision; rounds alternate between precisions so that both see the
    same background load on a shared machine. Each round runs at least ``seconds`` (and twice)."""
    for run in runs.values():
        run()  # warm-up: first-call allocations and kernel selection
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            count, start = 0, time.perf_counter()
            while count < 2 or time.perf_counter() - start < seconds:
                run()
                count += 1
            rates[name].append(count * batch / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def _time_models(
    model_dirs: dict[str, Path], threads: int, seconds: float, texts: list[str]
) -> dict[str, dict[str, dict[str, float]]]:
    """{precision: {tower: {batch: embeddings/s}}}."""
    from fashion_search.manifest import load_manifest

    runs: dict[tuple[str, int], dict[str, Any]] = {}
    rng = np.random.default_rng(0)
    for precision, model_dir in model_dirs.items():
        manifest = load_manifest(model_dir)
        image = onnx_io.session(model_dir / manifest.image.file, threads=threads)
        text = onnx_io.session(model_dir / manifest.text.file, threads=threads)
        tokenizer = onnx_io.configure_tokenizer(
            Tokenizer.from_file(str(model_dir / manifest.text.tokenizer_file)), manifest.text
        )
        for batch in BATCHES:
            shape = (batch, 3, manifest.image.height, manifest.image.width)
            image_feeds = {manifest.image.input_name: rng.standard_normal(shape, dtype=np.float32)}
            text_feeds = onnx_io.encode_texts(tokenizer, manifest.text, texts[:batch])
            runs.setdefault(("image", batch), {})[precision] = lambda s=image, f=image_feeds: s.run(None, f)
            runs.setdefault(("text", batch), {})[precision] = lambda s=text, f=text_feeds: s.run(None, f)
    out: dict[str, dict[str, dict[str, float]]] = {p: {"image": {}, "text": {}} for p in model_dirs}
    for (tower, batch), by_precision in runs.items():
        for precision, rate in _rates(by_precision, batch, seconds).items():
            out[precision][tower][str(batch)] = rate
        print(tower, batch, {p: round(out[p][tower][str(batch)], 2) for p in model_dirs}, flush=True)
    return out


def _markdown(result: dict[str, Any]) -> str:
    speed = result["embeddings_per_second"]
    lines = [
        "# Export speed: fp32 vs int8 ONNX towers (CPU)",
        "",
        f"Model: {result['model']}. Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores "
        f"(load average {result['machine']['loadavg_start']} at start), {result['threads']} ONNX Runtime "
        "threads. Tower only: prepared inputs, no decoding or resizing.",
        "",
        "| tower | batch | fp32 emb/s | int8 emb/s | int8 speed-up |",
        "|---|---|---|---|---|",
    ]
    for tower in ("image", "text"):
        for batch in map(str, BATCHES):
            fp32, int8 = speed["fp32"][tower][batch], speed["int8"][tower][batch]
            lines.append(f"| {tower} | {batch} | {fp32:.1f} | {int8:.1f} | {int8 / fp32:.2f}x |")
    lines += [
        "",
        "| precision | image.onnx MB | text.onnx MB | export s | parity (min cosine image / text) |",
    ]
    lines += ["|---|---|---|---|---|"]
    for precision in PRECISIONS:
        info = result["models"][precision]
        parity = info["parity"]
        lines.append(
            f"| {precision} | {info['image_mb']:.1f} | {info['text_mb']:.1f} | "
            f"{info['export_seconds']:.0f} | "
            f"{parity['image_cosine_min']:.5f} / {parity['text_cosine_min']:.5f} |"
        )
    lines += ["", result["note"], ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum time per measurement round")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep the checkpoint and exports here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="export-speed-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        samples = load_samples()
        texts = samples.texts[: len(samples.images)] * (max(BATCHES) // len(samples.images) + 1)
        loadavg_start = os.getloadavg()
        models: dict[str, Any] = {}
        with open_checkpoint(str(_vit_b32_checkpoint(work))) as ckpt:
            ckpt.source = "random ViT-B/32 (bench)"
            for precision in PRECISIONS:
                out = work / precision
                start = time.perf_counter()
                manifest = export_checkpoint(
                    ckpt,
                    out,
                    precision=precision,
                    name="clip-vit-b32-random",
                    samples=samples,
                    command=f"bench/export_speed.py ({precision})",
                )
                models[precision] = {
                    "export_seconds": time.perf_counter() - start,
                    "image_mb": (out / "image.onnx").stat().st_size / 1e6,
                    "text_mb": (out / "text.onnx").stat().st_size / 1e6,
                    "parity": manifest.extra["parity"],
                }
        speed = _time_models({p: work / p for p in PRECISIONS}, args.threads, args.seconds, texts)

    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    result = {
        "model": "randomly initialised CLIP with the real ViT-B/32 architecture (transformers CLIPConfig())",
        "note": (
            "Random weights: the speed figures hold for any ViT-B/32 CLIP checkpoint; the int8 parity "
            "figures do not (trained CLIP has activation outliers that make int8 less accurate). The host "
            "was shared with other jobs while this ran (see load average), so absolute figures are "
            "pessimistic; the fp32/int8 ratio is the figure to read."
        ),
        "threads": args.threads,
        "machine": {
            "cpu": cpu,
            "cores": os.cpu_count(),
            "loadavg_start": [round(x, 2) for x in loadavg_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": tool_versions(),
        "text_batch_tokens": "KAGL product names, padded to the longest in the batch",
        "models": models,
        "embeddings_per_second": speed,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "export_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "export_speed.md").write_text(_markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main()
