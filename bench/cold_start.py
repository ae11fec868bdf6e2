"""Cold start of the API Lambda's code, on the AWS backend, entirely on loopback.

A fresh Python process per run does what a new Lambda container does: import the handler module,
build the app, the model and the AWS clients on the first event, answer it, then answer a second
(warm) event. moto (S3, DynamoDB) and needledb (Pinecone's API) are started here and a small
catalogue sample is ingested first, so the searches return real results:

    python bench/cold_start.py [--model models/kagl-minilm] [--runs 5]

Not included, because it happens outside the function's code: pulling the container image and
starting the runtime (AWS documents these separately), and real network round trips to the AWS
services. Writes bench/results/cold_start.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "functions")]

from bench.load_api import KAGL, RESULTS, read_styles, sample_ids  # noqa: E402
from fashion_search.encoder import Encoder  # noqa: E402
from tests.aws.catalogue import build_catalogue  # noqa: E402
from tests.aws.lambda_events import http_api_event  # noqa: E402
from tests.plugins.aws_servers import AWS_TEST_ENV, MotoServer, NeedleDBServer  # noqa: E402

# Runs in the fresh process: each phase timed on its own clock.
CHILD = """
import json, sys, time
t0 = time.perf_counter()
from fashion_search.handlers import api_lambda
t1 = time.perf_counter()
api_lambda.container_handler()
t2 = time.perf_counter()
event = json.loads(sys.argv[1])
first = api_lambda.handler(event, None)
t3 = time.perf_counter()
warm = api_lambda.handler(event, None)
t4 = time.perf_counter()
results = [len(json.loads(r["body"])["results"]) for r in (first, warm)]
print(json.dumps({"import_s": t1 - t0, "init_s": t2 - t1, "first_request_s": t3 - t2,
                  "warm_request_s": t4 - t3, "statuses": [first["statusCode"], warm["statusCode"]],
                  "results": results}))
"""
PHASES = ("process_s", "import_s", "init_s", "first_request_s", "warm_request_s")


def cold_run(env: dict[str, str], event: dict[str, object]) -> dict[str, float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(event)], env=env, capture_output=True, text=True, timeout=300
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"the cold process failed:\n{done.stderr[-3000:]}")
    run = json.loads(done.stdout.strip().splitlines()[-1])
    if run.pop("statuses") != [200, 200] or 0 in run.pop("results"):
        raise RuntimeError(f"the searches did not succeed: {done.stdout[-2000:]}")
    # Interpreter start-up and exit: the whole process less what the child timed itself.
    run["process_s"] = wall - sum(run[p] for p in PHASES[1:])
    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "kagl-minilm")
    parser.add_argument("--images", type=int, default=100, help="catalogue sample ingested first")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    os.environ.update(AWS_TEST_ENV)

    moto = MotoServer()
    moto.start()
    with tempfile.TemporaryDirectory() as needle_dir:
        needle = NeedleDBServer(Path(needle_dir))
        needle.start()
        try:
            styles = read_styles()
            encoder = Encoder.load(args.model)
            cat = build_catalogue(moto, needle, encoder, KAGL, styles, sample_ids(args.images, styles))
            for product_id in cat.keys:
                cat.upload(product_id)
            cat.drain()
            env = {
                **os.environ,
                **cat.stack.env(args.model, LOG_LEVEL="WARNING"),
                "PYTHONPATH": str(ROOT / "functions"),
            }
            event = http_api_event(
                "POST",
                "/get_image_by_text",
                json.dumps({"text": "black leather handbag for women", "top_k": 5}),
                {"content-type": "application/json"},
            )
            runs = [cold_run(env, event) for _ in range(args.runs)]
        finally:
            needle.stop()
            moto.stop()

    median = {p: round(statistics.median(r[p] for r in runs), 3) for p in PHASES}
    result = {
        "model": encoder.model_id,
        "runs": len(runs),
        "median_s": median,
        "max_s": {p: round(max(r[p] for r in runs), 3) for p in PHASES},
        "cold_total_median_s": round(sum(median[p] for p in PHASES[:4]), 3),
        "each_run": [{p: round(r[p], 3) for p in PHASES} for r in runs],
        "cores": os.cpu_count(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cold_start.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
