"""Load test of the API on the AWS backend, entirely on loopback.

moto (S3, DynamoDB, SQS) and needledb (Pinecone's API) are started locally, a catalogue sample is
uploaded to the bucket and ingested through the ingest Lambda handler (S3 -> SQS -> handler), then
the API runs under uvicorn exactly as configured for AWS (FASHION_SEARCH_BACKEND=aws) and N
concurrent clients hammer it for a fixed time with a mix of text, upload and "more like this"
searches:

    python bench/load_api.py [--model models/kagl-minilm] [--images 500] [--clients 20] [--seconds 30]

Writes bench/results/load_api.json and bench/results/load_api.md (p50/p99 per route, errors).
The numbers are not asserted anywhere; they depend on the machine (recorded alongside).
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "functions")]

from fashion_search.encoder import Encoder  # noqa: E402
from fashion_search.records import image_id_for_key  # noqa: E402
from tests.aws.catalogue import build_catalogue  # noqa: E402
from tests.plugins.aws_servers import AWS_TEST_ENV, MotoServer, NeedleDBServer, free_port  # noqa: E402

KAGL = ROOT.parent / "shared" / "data" / "kagl"
RESULTS = ROOT / "bench" / "results"
QUERIES = ["black leather jacket", "red dress", "white sneakers", "blue jeans", "gold watch", "floral top"]


@dataclass
class Samples:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    error_examples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, route: str, seconds: float, error: str | None) -> None:
        with self.lock:
            if error is None:
                self.latencies.setdefault(route, []).append(seconds)
            else:
                self.errors[route] = self.errors.get(route, 0) + 1
                if len(self.error_examples) < 5:
                    self.error_examples.append(f"{route}: {error}")


def sample_ids(count: int, styles: dict[str, dict[str, str]]) -> list[str]:
    ids = sorted(p.stem for p in (KAGL / "images").glob("*.jpg") if p.stem in styles)
    return ids[:: max(1, len(ids) // count)][:count]


def read_styles() -> dict[str, dict[str, str]]:
    with (KAGL / "styles.csv").open(newline="", encoding="utf-8") as fh:
        return {row["id"]: row for row in csv.DictReader(fh)}


def client_loop(
    base: str, stop_at: float, samples: Samples, photos: list[bytes], image_ids: list[str], seed: int
) -> None:
    rng = random.Random(seed)
    session = requests.Session()
    while time.monotonic() < stop_at:
        kind = rng.random()
        if kind < 0.5:
            route, body = "/get_image_by_text", {"text": rng.choice(QUERIES), "top_k": 5}
        elif kind < 0.75:
            route, body = (
                "/get_similar_images#upload",
                {"image_base64": base64.b64encode(rng.choice(photos)).decode()},
            )
        else:
            route, body = "/get_similar_images#image_id", {"image_id": rng.choice(image_ids)}
        started = time.perf_counter()
        error = None
        try:
            response = session.post(base + route.split("#")[0], json=body, timeout=30)
            if response.status_code != 200:
                error = f"HTTP {response.status_code} {response.text[:200]}"
            elif not response.json()["results"]:
                error = "no results"
        except requests.RequestException as exc:
            error = type(exc).__name__
        samples.add(route, time.perf_counter() - started, error)


def summarize(values: list[float]) -> dict[str, float]:
    ms = np.asarray(values) * 1000.0
    return {
        "count": len(values),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p90_ms": round(float(np.percentile(ms, 90)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "max_ms": round(float(ms.max()), 1),
    }


def start_api(settings_env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "uvicorn", "--factory", "fashion_search.api.app:create_app_from_env"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    env = {**os.environ, **AWS_TEST_ENV, **settings_env, "PYTHONPATH": str(ROOT / "functions")}
    return subprocess.Popen(command, env=env)


def wait_searchable(base: str, proc: subprocess.Popen[bytes], timeout_s: float = 180.0) -> None:
    """Ready = answers a search. Not /health: on the AWS backend it scans the whole table, which a
    short client timeout turns into a pile of abandoned scans."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with {proc.returncode}")
        try:
            response = requests.post(f"{base}/get_image_by_text", json={"text": "shirt"}, timeout=60)
            if response.status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError("the API did not become ready")


def write_markdown(result: dict) -> None:
    lines = [
        "# API load test (AWS backend on loopback)",
        "",
        f"{result['clients']} concurrent clients for {result['seconds']} s against one uvicorn worker "
        f"(`FASHION_SEARCH_BACKEND=aws`: moto S3/DynamoDB + needledb via the official Pinecone client), "
        f"{result['indexed']} images indexed through the ingest Lambda handler, "
        f"model `{result['model_id']}`.",
        "",
        f"Machine: {result['machine']['cpus']} CPUs, load average {result['machine']['loadavg_before']} "
        f"before and {result['machine']['loadavg_after']} after the run. The load generator, moto, needledb "
        "and the API share these CPUs with other jobs, so latency here is dominated by CPU contention: "
        "compare runs only at similar load.",
        "",
        "| route | requests | p50 ms | p90 ms | p99 ms | max ms | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for route, stats in result["routes"].items():
        lines.append(
            f"| `{route}` | {stats['count']} | {stats['p50_ms']} | {stats['p90_ms']} | {stats['p99_ms']} | "
            f"{stats['max_ms']} | {result['errors'].get(route, 0)} |"
        )
    overall = result["overall"]
    lines += [
        f"| **all** | {overall['count']} | {overall['p50_ms']} | {overall['p90_ms']} | {overall['p99_ms']} | "
        f"{overall['max_ms']} | {result['error_count']} |",
        "",
        f"Throughput: {result['requests_per_s']} requests/s. Errors: {result['error_count']}. "
        f"CPU time of the API process per request: {result['api_cpu_ms_per_request']} ms "
        "(independent of the machine's load, unlike the latencies).",
        "",
        f"Set-up: {result['ingest']['images']} images uploaded in {result['ingest']['upload_s']} s, then "
        f"ingested through the handler in {result['ingest']['ingest_s']} s "
        f"(records: {result['ingest']['records']}; batch failures: {result['ingest']['batch_failures']}).",
        "",
        "Reproduce: `python bench/load_api.py` (see its docstring for options).",
        "",
    ]
    (RESULTS / "load_api.md").write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "kagl-minilm")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    model_dir = (
        args.model if (args.model / "model.json").is_file() else ROOT / "tests" / "fixtures" / "tiny-clip"
    )
    if model_dir != args.model:
        print(f"{args.model} has no model.json; using the test model {model_dir}", file=sys.stderr)
    os.environ.update(AWS_TEST_ENV)
    loadavg_before = os.getloadavg()

    moto = MotoServer()
    moto.start()
    with tempfile.TemporaryDirectory() as needle_dir:
        needle = NeedleDBServer(Path(needle_dir))
        needle.start()
        api = None
        try:
            styles = read_styles()
            ids = sample_ids(args.images, styles)
            encoder = Encoder.load(model_dir)
            cat = build_catalogue(moto, needle, encoder, KAGL, styles, ids)
            started = time.perf_counter()
            for product_id in ids:
                cat.upload(product_id)
            upload_s = time.perf_counter() - started
            started = time.perf_counter()
            cat.drain()
            ingest_s = time.perf_counter() - started
            failures = sum(len(r["batchItemFailures"]) for r in cat.responses)
            records = cat.services.metadata.counts()
            indexed = cat.services.vectors.count()
            print(f"indexed {indexed} images in {ingest_s:.1f} s ({records})", file=sys.stderr)

            settings_env = cat.stack.env(model_dir, LOG_LEVEL="WARNING")
            port = free_port()
            api = start_api(settings_env, port)
            base = f"http://127.0.0.1:{port}"
            wait_searchable(base, api)

            photos = list(cat.photos.values())[:50]
            stored = cat.services.metadata.get_many([image_id_for_key(k) for k in cat.keys.values()])
            image_ids = [i for i, record in stored.items() if record.status == "indexed"]
            samples = Samples()
            stop_at = time.monotonic() + args.seconds
            threads = [
                threading.Thread(target=client_loop, args=(base, stop_at, samples, photos, image_ids, n))
                for n in range(args.clients)
            ]
            api_process = psutil.Process(api.pid)
            cpu_before = api_process.cpu_times()
            run_started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - run_started
            loadavg_after = os.getloadavg()
            cpu_after = api_process.cpu_times()
            api_cpu_s = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
        finally:
            if api is not None:
                api.terminate()
                api.wait(timeout=30)
            needle.stop()
            moto.stop()

    all_latencies = [v for values in samples.latencies.values() for v in values]
    error_count = sum(samples.errors.values())
    result = {
        "clients": args.clients,
        "seconds": args.seconds,
        "model_id": encoder.model_id,
        "indexed": indexed,
        "ingest": {
            "images": len(ids),
            "upload_s": round(upload_s, 1),
            "ingest_s": round(ingest_s, 1),
            "records": records,
            "batch_failures": failures,
        },
        "routes": {route: summarize(values) for route, values in sorted(samples.latencies.items())},
        "overall": summarize(all_latencies),
        "errors": samples.errors,
        "error_count": error_count,
        "error_examples": samples.error_examples,
        "requests_per_s": round((len(all_latencies) + error_count) / elapsed, 1),
        # CPU the API process spent per request: unlike latency, barely affected by other jobs.
        "api_cpu_ms_per_request": round(1000.0 * api_cpu_s / max(1, len(all_latencies) + error_count), 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": [round(x, 2) for x in loadavg_before],
            "loadavg_after": [round(x, 2) for x in loadavg_after],
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "load_api.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    write_markdown(result)
    summary = ("overall", "error_count", "requests_per_s", "api_cpu_ms_per_request")
    print(json.dumps({k: result[k] for k in summary}, indent=2))


if __name__ == "__main__":
    main()
