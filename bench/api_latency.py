"""Search latency over HTTP on loopback, concurrency scaling, and the API process's peak RSS.

Runs against a data dir that already holds the indexed catalogue (bench/ingest_throughput.py
leaves one at data/bench):

    python bench/api_latency.py [--data-dir data/bench] [--model models/kagl-minilm]

Targets (issue 2): /get_image_by_text p99 < 50 ms with all 44k indexed and one client; four
concurrent clients get more than 1.5x the throughput of one (the event loop is not blocked).
Writes bench/results/api_latency.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
KAGL = ROOT.parent / "shared" / "data" / "kagl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"API exited with {proc.returncode}")
        try:
            return requests.get(f"{base}/health", timeout=2).json()
        except requests.RequestException:
            time.sleep(0.5)
    raise TimeoutError("API did not become ready")


def percentiles(samples: list[float]) -> dict[str, float]:
    arr = np.asarray(samples) * 1000
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 2),
        "p99_ms": round(float(np.percentile(arr, 99)), 2),
    }


def timed(*calls: Callable[[], requests.Response], n: int) -> list[list[float]]:
    """``n`` latencies of each call, the calls taking turns: the host's speed drifts, and turns
    spread that drift over all of them instead of putting it between them."""
    out: list[list[float]] = [[] for _ in calls]
    for _ in range(n):
        for call, samples in zip(calls, out, strict=True):
            started = time.perf_counter()
            response = call()
            samples.append(time.perf_counter() - started)
            response.raise_for_status()
    return out


def throughput(
    make_call: Callable[[int], Callable[[], requests.Response]], clients: int, seconds: float
) -> float:
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def run(i: int) -> None:
        call = make_call(i)
        while time.monotonic() < stop:
            call().raise_for_status()
            counts[i] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / seconds


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data" / "bench")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "kagl-minilm")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=10.0, help="per throughput measurement, all rounds")
    parser.add_argument("--rounds", type=int, default=5, help="alternating 1- and 4-client phases")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "api_latency.json")
    args = parser.parse_args()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "FASHION_SEARCH_DATA_DIR": str(args.data_dir),
        "FASHION_SEARCH_MODEL_DIR": str(args.model),
    }
    cli = [sys.executable, "-m", "fashion_search.cli", "serve", "--port", str(port)]
    proc = subprocess.Popen(cli, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        health = wait_ready(base, proc)
        with (KAGL / "styles.csv").open(newline="", encoding="utf-8") as fh:
            names = [r["productDisplayName"] for r in csv.DictReader(fh) if r["productDisplayName"]][::97]
        photo = (KAGL / "images" / "15970.jpg").read_bytes()
        session = requests.Session()
        one = session.post(f"{base}/get_image_by_text", json={"text": names[0], "top_k": 10}).json()
        image_id = one["results"][0]["image_id"]
        n = iter(range(10**9))

        def text_call(s: requests.Session = session, hybrid: bool = True) -> requests.Response:
            body = {"text": names[next(n) % len(names)], "top_k": 10, "hybrid": hybrid}
            return s.post(f"{base}/get_image_by_text", json=body)

        def similar_call(body: dict[str, object]) -> Callable[[], requests.Response]:
            return lambda: session.post(f"{base}/get_similar_images", json=body)

        def upload_call() -> requests.Response:
            files = {"file": ("q.jpg", photo, "image/jpeg")}
            return session.post(f"{base}/get_similar_images", files=files)

        timed(text_call, n=20)  # warm-up
        text, text_vector = timed(text_call, lambda: text_call(hybrid=False), n=args.requests)
        by_id, by_id_vector = timed(
            similar_call({"image_id": image_id}),
            similar_call({"image_id": image_id, "hybrid": False}),
            n=args.requests,
        )
        (upload,) = timed(upload_call, n=args.requests)
        result = {
            "health": health,
            "text_search": percentiles(text),
            "text_search_vector_only": percentiles(text_vector),
            "similar_by_id": percentiles(by_id),
            "similar_by_id_vector_only": percentiles(by_id_vector),
            "similar_by_upload": percentiles(upload),
        }

        # One and four clients take turns, hybrid and vector-only alike, in short alternating
        # phases: the host's speed drifts over a minute, and back-to-back long phases would put
        # that drift into the ratio.
        rates: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.rounds):
            for suffix, hybrid in (("", True), ("_vector_only", False)):

                def client(_: int, hybrid: bool = hybrid) -> Callable[[], requests.Response]:
                    s = requests.Session()
                    return lambda: text_call(s, hybrid)

                for clients in (1, 4):
                    phase = throughput(client, clients, args.seconds / args.rounds)
                    rates.setdefault((suffix, clients), []).append(phase)
        for suffix in ("", "_vector_only"):
            one, four = rates[(suffix, 1)], rates[(suffix, 4)]
            result[f"text_search{suffix}_rps_1_client"] = round(float(np.mean(one)), 1)
            result[f"text_search{suffix}_rps_4_clients"] = round(float(np.mean(four)), 1)
            result[f"concurrency_speedup{suffix}_4_vs_1"] = round(float(np.mean(four) / np.mean(one)), 2)
            result[f"concurrency_speedup{suffix}_4_vs_1_by_round"] = [
                round(f / o, 2) for o, f in zip(one, four, strict=True)
            ]
        result["api_peak_rss_mb"] = peak_rss_mb(proc.pid)
        result["cores"] = os.cpu_count()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
