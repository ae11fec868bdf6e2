"""Backfill throughput: the whole job end to end against the image tower alone, in the same run.

The source is a directory object store (``LocalObjectStore``) seeded with the KAGL photos and
their styles.csv rows as metadata; the destination is the local SQLite + FAISS stores. So the
numbers measure the pipeline (listing, reading, hashing, decoding in worker processes, the model,
the writes) without network latency; against S3 the download stage has far more latency, which
the download thread pool hides as long as ``threads / per-object latency`` exceeds the model's rate.

    python bench/backfill_throughput.py [--model DIR] [--limit N] [--workers N] [--batch-size N]

Writes bench/results/backfill_throughput.json and .md. Seeding the object store is not timed and
is reused by later runs (``--work-dir``). On a GPU machine run the same command there (after
``pip install onnxruntime-gpu`` in place of onnxruntime) and add ``--batch-size 512`` or more: the
job picks the CUDA provider itself, and the report names the providers it used.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any

from ingest_throughput import model_only_rate

from fashion_search.backfill import add_arguments, build_backfill
from fashion_search.config import Settings
from fashion_search.stores.local_objects import LocalObjectStore

ROOT = Path(__file__).resolve().parents[1]
KAGL = ROOT.parent / "shared" / "data" / "kagl"
PREFIX = "kagl/"


def default_model() -> Path:
    trained = ROOT / "models" / "kagl-minilm"
    return trained if (trained / "model.json").is_file() else ROOT / "tests" / "fixtures" / "tiny-clip"


def seed(bucket: Path, limit: int | None) -> list[Path]:
    """The KAGL photos as objects ``kagl/<id>.jpg`` with their styles.csv row as user metadata."""
    paths = sorted((KAGL / "images").glob("*.jpg"))[:limit]
    marker = bucket / f".seeded-{len(paths)}"
    if marker.exists():
        return paths
    shutil.rmtree(bucket, ignore_errors=True)
    with (KAGL / "styles.csv").open(newline="", encoding="utf-8") as fh:
        rows = {row["id"]: row for row in csv.DictReader(fh)}
    store = LocalObjectStore(bucket)
    for path in paths:
        tags = {k: v for k, v in rows.get(path.stem, {}).items() if k != "id" and v}
        store.put(f"{PREFIX}{path.name}", path.read_bytes(), tags)
    marker.touch()
    return paths


def markdown(runs: list[dict[str, Any]]) -> str:
    lines = [
        "# Backfill throughput",
        "",
        "Written by `bench/backfill_throughput.py` (see its docstring and docs/backfill.md). Source: "
        "a directory object store seeded with KAGL photos + styles.csv metadata; destination: "
        "SQLite + FAISS. Stage times are busy seconds summed over that stage's workers, so they "
        "can exceed the wall time; `write` is commit time outside the model. *Tower alone* is measured "
        "after the job, on 2,000 prepared images, with the cores to itself; *model busy* is the share "
        "of the job's wall time the model was running (near 100%: the job is model-bound).",
        "",
        "| run | model | providers | images | batch | decode procs | end to end img/s "
        "| tower alone img/s | ratio | model busy | wall s | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['label']} | `{r['model_id']}` | {', '.join(r['providers'])} | {r['images']} "
            f"| {r['batch_size']} | {r['workers']} | {r['end_to_end_images_per_s']} "
            f"| {r['model_only_images_per_s']} | {r['ratio_end_to_end_to_model']} "
            f"| {r['stage_seconds']['model'] / r['seconds']:.0%} | {r['seconds']:.0f} "
            f"| {r['load_before']} -> {r['load_after']} |"
        )
    stages = list(runs[0]["stage_seconds"]) if runs else []
    lines += ["", "Where the time goes (busy seconds):", "", "| run | " + " | ".join(stages) + " |"]
    lines.append("|---|" + "---|" * len(stages))
    for r in runs:
        lines.append(f"| {r['label']} | " + " | ".join(f"{r['stage_seconds'][s]:.1f}" for s in stages) + " |")
    lines += [""] + [f"- {r['label']}: {r['note']}" for r in runs if r["note"]] + [""]
    return "\n".join(lines)


def save(out: Path, result: dict[str, Any]) -> list[dict[str, Any]]:
    """Keep one entry per label, so several configurations share one results file."""
    runs = json.loads(out.read_text())["runs"] if out.is_file() else []
    runs = [r for r in runs if r["label"] != result["label"]] + [result]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(runs))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=default_model())
    parser.add_argument("--limit", type=int, default=None, help="default: the whole catalogue")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "data" / "bench-backfill")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "backfill_throughput.json")
    parser.add_argument("--label", default="default", help="names this configuration in the results")
    parser.add_argument("--note", default="", help="a sentence for the markdown (conditions, caveats)")
    job_args = argparse.ArgumentParser(add_help=False)
    add_arguments(job_args)
    args, rest = parser.parse_known_args()

    bucket, data = args.work_dir / "bucket", args.work_dir / "data"
    paths = seed(bucket, args.limit)
    shutil.rmtree(data, ignore_errors=True)  # a fresh destination: every image is indexed
    settings = Settings(model_dir=args.model, data_dir=data)
    job_options = job_args.parse_args(
        ["--bucket", str(bucket), "--prefix", PREFIX, "--progress-every", "30", *rest]
    )
    load_before = round(os.getloadavg()[0], 1)
    job = build_backfill(settings, job_options)
    report = job.run().as_dict()
    sample = paths[:: max(1, len(paths) // 2000)][:2000]
    model_rate, _ = model_only_rate(job.ingestor.encoder.encoder, sample, job_options.batch_size)  # type: ignore[attr-defined]
    end_to_end = report["indexed"] / report["seconds"]
    result = {
        "label": args.label,
        "model_id": report["model_id"],
        "model_dir": str(args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model),
        "providers": report["providers"],
        "source_kind": "local directory object store (LocalObjectStore) -> SQLite + FAISS",
        "images": len(paths),
        "indexed": report["indexed"],
        "failed": report["failed"],
        "seconds": report["seconds"],
        "end_to_end_images_per_s": round(end_to_end, 1),
        "model_only_images_per_s": round(model_rate, 1),
        "model_only_images_per_s_inside_job": report["model_only_images_per_s"],
        "ratio_end_to_end_to_model": round(end_to_end / model_rate, 3),
        "stage_seconds": report["stage_seconds"],
        "batch_size": job_options.batch_size,
        "workers": job_options.workers,
        "download_threads": job_options.download_threads,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_before": load_before,
        "load_after": round(os.getloadavg()[0], 1),
        "note": args.note,
    }
    save(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
