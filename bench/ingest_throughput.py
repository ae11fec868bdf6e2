"""Catalogue import throughput against model-only throughput, measured in the same run.

The ratio tells whether the import pipeline (read, hash, copy, decode, write SQLite + FAISS)
keeps the model busy: the target is >= 90% of what the image tower alone sustains.

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


def model_only_rate(encoder: Encoder, paths: list[Path], batch: int) -> tuple[float, dict[str, float]]:
    """Images/s of the image tower alone on already-prepared tensors (no I/O, no decode, no writes)."""
    spec = encoder.manifest.image
    pixels = normalise_batch(
        np.stack(
            [decode_and_prepare(p.read_bytes(), spec, max_bytes=10**8, max_pixels=10**9)[1] for p in paths]
        ),
        spec,
    )
    encoder.embed_pixels(pixels[:batch])  # warm-up
    clock, started = CpuClock(), time.perf_counter()
    for i in range(0, len(pixels), batch):
        encoder.embed_pixels(pixels[i : i + batch])
    return len(pixels) / (time.perf_counter() - started), clock.per_image(len(pixels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "kagl-minilm")
    parser.add_argument("--images", type=Path, default=KAGL / "images")
    parser.add_argument("--tags-csv", type=Path, default=KAGL / "styles.csv")
    parser.add_argument("--limit", type=int, default=None, help="default: the whole catalogue")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data" / "bench")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest_throughput.json")
    args = parser.parse_args()

    if args.data_dir.exists():
        shutil.rmtree(args.data_dir)
    settings = Settings(model_dir=args.model, data_dir=args.data_dir)
    services = build_services(settings)
    paths = list_images(args.images, args.limit)
    sample = paths[:: max(1, len(paths) // 3000)][:3000]
    model_rate, model_cpu = model_only_rate(services.encoder, sample, settings.image_batch_size)

    clock = CpuClock()
    summary = import_catalogue(services, args.images, args.tags_csv, limit=args.limit)
    import_cpu = clock.per_image(summary.ingested)
    import_rate = summary.ingested / summary.seconds
    result = {
        "model": services.encoder.model_id,
        "images": len(paths),
        "ingested": summary.ingested,
        "failed": summary.failed,
        "import_seconds": round(summary.seconds, 1),
        "import_images_per_s": round(import_rate, 1),
        "model_only_images_per_s": round(model_rate, 1),
        "ratio_import_to_model": round(import_rate / model_rate, 3),
        "import_cpu": import_cpu,
        "model_only_cpu": model_cpu,
        "batch_size": settings.image_batch_size,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
