"""Catalogue import throughput against model-only throughput, measured in the same run.

The ratio tells whether the import pipeline (read, hash, copy, decode, write SQLite + FAISS)
keeps the model busy: the target is >= 90% of what the image tower alone sustains. The import
runs as ``fashion-search ingest`` does (the model on every core). For comparison the same import
with the model on one core, leaving the other(s) to the pipeline, is measured against the model
alone on one core: whether the pipeline keeps a model busy when it is not competing with it for
the same cores.

    python bench/ingest_throughput.py [--model models/kagl-minilm] [--limit N] [--data-dir DIR]

Writes bench/results/ingest_throughput.json; leaves the indexed data dir for bench/api_latency.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import time
from pathlib import Path

import numpy as np

from fashion_search.catalogue import import_catalogue, list_images
from fashion_search.config import Settings
from fashion_search.encoder import Encoder
from fashion_search.imaging import decode_and_prepare, normalise_batch
from fashion_search.services import build_services

ROOT = Path(__file__).resolve().parents[1]
KAGL = ROOT.parent / "shared" / "data" / "kagl"
CHUNK_SIZE = 256  # `fashion-search ingest`'s default


class CpuClock:
    """This process's CPU and wall time from construction to ``per_image``: whether the cores were
    saturated, and how much of the CPU went to the kernel (file writes)."""

    def __init__(self) -> None:
        self._usage, self._started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()

    def per_image(self, images: int) -> dict[str, float]:
        usage, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - self._started
        user, kernel = usage.ru_utime - self._usage.ru_utime, usage.ru_stime - self._usage.ru_stime
        return {
            "user_core_ms_per_image": round(user / images * 1000, 3),
            "kernel_core_ms_per_image": round(kernel / images * 1000, 3),
            "busy_cores": round((user + kernel) / wall, 2),
        }


def sample_chunks(encoder: Encoder, paths: list[Path], chunk_size: int) -> list[np.ndarray]:
    """Tower inputs for the model-only runs, prepared once (no I/O or decode is timed), in arrays
    of one import chunk each, as the import hands them to the model: one 3,000-image array sliced
    into batches ran ~5% slower than the same images in chunk-sized arrays."""
    spec = encoder.manifest.image
    pixels = normalise_batch(
        np.stack(
            [decode_and_prepare(p.read_bytes(), spec, max_bytes=10**8, max_pixels=10**9)[1] for p in paths]
        ),
        spec,
    )
    return [pixels[i : i + chunk_size].copy() for i in range(0, len(pixels), chunk_size)]


def model_only_rate(encoder: Encoder, chunks: list[np.ndarray], batch: int) -> tuple[float, dict[str, float]]:
    """Images/s of the image tower alone on already-prepared tensors (no I/O, no decode, no writes)."""
    encoder.embed_pixels(chunks[0][:batch])  # warm-up
    clock, started = CpuClock(), time.perf_counter()
    for chunk in chunks:
        for i in range(0, len(chunk), batch):
            encoder.embed_pixels(chunk[i : i + batch])
    images = sum(len(chunk) for chunk in chunks)
    return images / (time.perf_counter() - started), clock.per_image(images)


def timed_import(settings: Settings, encoder: Encoder, args: argparse.Namespace) -> dict[str, object]:
    """One whole import into a fresh ``settings.data_dir``: throughput and where the CPU went."""
    if settings.data_dir.exists():
        shutil.rmtree(settings.data_dir)
    os.sync()  # deleting 44k files leaves kernel work behind that would slow the timed import
    services = build_services(settings, encoder)
    clock = CpuClock()
    summary = import_catalogue(services, args.images, args.tags_csv, limit=args.limit, chunk_size=CHUNK_SIZE)
    return {
        "onnx_threads": settings.onnx_threads,
        "ingested": summary.ingested,
        "failed": summary.failed,
        "seconds": round(summary.seconds, 1),
        "images_per_s": round(summary.ingested / summary.seconds, 1),
        "cpu": clock.per_image(summary.ingested),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "kagl-minilm")
    parser.add_argument("--images", type=Path, default=KAGL / "images")
    parser.add_argument("--tags-csv", type=Path, default=KAGL / "styles.csv")
    parser.add_argument("--limit", type=int, default=None, help="default: the whole catalogue")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data" / "bench")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest_throughput.json")
    args = parser.parse_args()

    settings = Settings(model_dir=args.model, data_dir=args.data_dir)
    encoder = Encoder.load(args.model, threads=settings.onnx_threads)  # as `fashion-search ingest`
    one_core = Encoder.load(args.model, threads=1)
    paths = list_images(args.images, args.limit)
    chunks = sample_chunks(encoder, paths[:: max(1, len(paths) // 3072)][:3072], CHUNK_SIZE)
    batch = settings.image_batch_size

    # Model-only runs before and after the imports, averaged, so that drift of the host during
    # the imports falls on both sides of each ratio.
    encoders = {"default": encoder, "one_core": one_core}
    before = {name: model_only_rate(enc, chunks, batch) for name, enc in encoders.items()}
    # The default first, as this bench ran before the comparison existed: in every run so far the
    # second import of the two came out slower, whichever it was (page cache and file-system state).
    main_import = timed_import(settings, encoder, args)  # leaves args.data_dir for api_latency.py
    other_dir = args.data_dir.with_name(args.data_dir.name + "-one-core")
    comparison = timed_import(
        settings.model_copy(update={"onnx_threads": 1, "data_dir": other_dir}), one_core, args
    )
    after = {name: model_only_rate(enc, chunks, batch) for name, enc in encoders.items()}
    shutil.rmtree(other_dir)
    model = {name: (before[name][0] + after[name][0]) / 2 for name in before}

    rate, one_core_rate = main_import["images_per_s"], comparison["images_per_s"]
    result = {
        "model": encoder.model_id,
        "images": len(paths),
        "import": main_import,
        "import_model_on_one_core": comparison,
        "model_only_images_per_s": round(model["default"], 1),
        "model_only_one_core_images_per_s": round(model["one_core"], 1),
        "model_only_runs": {name: [round(before[name][0], 1), round(after[name][0], 1)] for name in before},
        "model_only_cpu": before["default"][1],
        "ratio_import_to_model": round(rate / model["default"], 3),
        "ratio_import_one_core_to_model_one_core": round(one_core_rate / model["one_core"], 3),
        "ratio_import_one_core_to_import": round(one_core_rate / rate, 3),
        "batch_size": batch,
        "chunk_size": CHUNK_SIZE,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
