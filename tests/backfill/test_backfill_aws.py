"""The backfill job against S3 + DynamoDB (moto server) and Pinecone's API (needledb), on loopback.

500 KAGL photos are uploaded once, with their styles.csv rows as object metadata, plus a few bad
objects; each test indexes them into a fresh table and index.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fashion_search.backfill_checkpoint import CHECKPOINT_PREFIX, Checkpoint
from fashion_search.config import Settings
from fashion_search.encoder import Encoder
from fashion_search.errors import NotFoundError
from fashion_search.handlers.ingest_lambda import handle
from fashion_search.records import ImageRecord, image_id_for_key
from fashion_search.services import Services, build_services
from fashion_search.stores.s3_objects import S3ObjectStore
from tests.aws.lambda_events import s3_notification
from tests.backfill.conftest import kagl_tags, run_cli_job
from tests.plugins.aws_servers import AWS_TEST_ENV, AwsStack, MotoServer, NeedleDBServer, create_stack

pytestmark = [pytest.mark.aws, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
N_IMAGES = 500
PREFIX = "catalogue/"
MAX_IMAGE_BYTES = 100_000  # so one of the bad objects is "too large" without a huge upload


@dataclass(frozen=True)
class SourceBucket:
    bucket: str
    keys: list[str]  # the good images, under PREFIX
    bad: dict[str, str]  # key -> the failure reason code it must get
    store: S3ObjectStore


@pytest.fixture(scope="module")
def source(
    moto_server: MotoServer,
    needledb_server: NeedleDBServer,
    tiny_encoder: Encoder,
    kagl_dir: Path,
    kagl_styles: dict[str, dict[str, str]],
) -> SourceBucket:
    stack = create_stack(moto_server, needledb_server, tiny_encoder.dim)
    store = S3ObjectStore(moto_server.client("s3"), stack.bucket, 60)
    every = sorted((kagl_dir / "images").glob("*.jpg"))
    paths = every[:: len(every) // N_IMAGES][:N_IMAGES]
    # Keys with spaces and mixed case, as real catalogues have them.
    keys = {
        f"{PREFIX}{kagl_styles[p.stem]['articleType']}/{p.stem} {kagl_styles[p.stem]['baseColour']}.jpg": p
        for p in paths
    }
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda kv: store.put(kv[0], kv[1].read_bytes(), kagl_tags(kagl_styles[kv[1].stem])),
                keys.items(),
            )
        )
    photo = paths[0].read_bytes()
    bad = {
        "bad/empty.jpg": (b"", "empty_image"),
        "bad/not-an-image.jpg": (b"%PDF-1.4 not an image", "not_an_image"),
        "bad/truncated.jpg": (photo[:300], "corrupt_image"),
        "bad/too-large.jpg": ((kagl_dir / "hires" / "10008.jpg").read_bytes(), "too_large"),
    }
    for key, (data, _) in bad.items():
        store.put(key, data, {"gender": "Men"})
    store.put("bad/readme.txt", b"not an image suffix: never listed for ingest")
    return SourceBucket(stack.bucket, sorted(keys), {k: r for k, (_, r) in bad.items()}, store)


def destination(
    moto_server: MotoServer, needledb_server: NeedleDBServer, encoder: Encoder, source: SourceBucket
) -> tuple[AwsStack, Settings, Services]:
    """A fresh table and index to backfill ``source`` into; the services read them back."""
    stack = create_stack(moto_server, needledb_server, encoder.dim)
    settings = stack.settings(
        s3_bucket=source.bucket,
        model_dir=REPO / "tests" / "fixtures" / "tiny-clip",
        onnx_threads=1,
        max_image_bytes=MAX_IMAGE_BYTES,
    )
    return stack, settings, build_services(settings, encoder=encoder)


@pytest.fixture(scope="module")
def full_run(
    moto_server: MotoServer, needledb_server: NeedleDBServer, tiny_encoder: Encoder, source: SourceBucket
) -> tuple[Settings, Services, dict[str, Any]]:
    """The whole bucket (good and bad objects), decoding in a worker process."""
    _, settings, services = destination(moto_server, needledb_server, tiny_encoder, source)
    report = run_cli_job(settings, "--prefix", "", "--workers", "1", "--batch-size", "64")
    return settings, services, report


def records_by_key(services: Services) -> dict[str, ImageRecord]:
    records = list(services.metadata.iter_records())
    by_key = {r.key: r for r in records}
    assert len(by_key) == len(records)  # one record per object, never two
    return by_key


def test_full_run_indexes_every_image_exactly_once(
    full_run: tuple[Settings, Services, dict[str, Any]], source: SourceBucket
) -> None:
    _, services, report = full_run
    assert report["complete"] and report["aborted"] is None
    assert (report["indexed"], report["failed"], report["skipped"]) == (N_IMAGES, len(source.bad), 0)
    assert services.vectors.count() == N_IMAGES
    assert services.metadata.counts() == {"indexed": N_IMAGES, "failed": len(source.bad), "deleted": 0}
    records = records_by_key(services)
    assert set(records) == set(source.keys) | set(source.bad)
    record = records[source.keys[0]]
    assert record.tags == {k.lower(): v for k, v in source.store.head(source.keys[0]).metadata.items()}
    assert record.tags["articletype"] and record.width == 60
    with pytest.raises(NotFoundError):  # a finished shard leaves no checkpoint behind
        source.store.head(report["checkpoint"])
    assert report["checkpoint"].startswith(CHECKPOINT_PREFIX)


def test_bad_objects_are_reported_failed_with_their_reasons(
    full_run: tuple[Settings, Services, dict[str, Any]], source: SourceBucket
) -> None:
    _, services, report = full_run
    assert {f["key"]: f["reason"].split(":")[0] for f in report["failures"]} == source.bad
    assert report["failure_reasons"] == {reason: 1 for reason in source.bad.values()}
    for key, reason in source.bad.items():
        record = services.metadata.get(image_id_for_key(key))
        assert record is not None and record.status == "failed" and record.reason.startswith(reason)
    assert not services.vectors.fetch([image_id_for_key(k) for k in source.bad])


def test_results_are_identical_to_the_ingest_lambda_path(
    full_run: tuple[Settings, Services, dict[str, Any]],
    source: SourceBucket,
    moto_server: MotoServer,
    needledb_server: NeedleDBServer,
    tiny_encoder: Encoder,
) -> None:
    _, backfilled, _ = full_run
    _, _, lambda_services = destination(moto_server, needledb_server, tiny_encoder, source)
    keys = source.keys[::20] + sorted(source.bad)
    for start in range(0, len(keys), 10):  # direct S3 events, ten records per invocation
        records = [
            s3_notification(source.bucket, k, "created")["Records"][0] for k in keys[start : start + 10]
        ]
        assert handle({"Records": records}, lambda_services) == {"batchItemFailures": []}

    ids = [image_id_for_key(k) for k in keys]
    ours, theirs = backfilled.metadata.get_many(ids), lambda_services.metadata.get_many(ids)
    assert set(ours) == set(theirs) == set(ids)
    skip = {"created_at", "updated_at", "embedding"}
    for image_id in ids:
        a, b = ours[image_id], theirs[image_id]
        assert {f.name: getattr(a, f.name) for f in fields(a) if f.name not in skip} == {
            f.name: getattr(b, f.name) for f in fields(b) if f.name not in skip
        }
        if a.status == "indexed":
            np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-6)

    raw_ours = backfilled.vectors.index.fetch(ids=ids, namespace="").vectors  # type: ignore[attr-defined]
    raw_theirs = lambda_services.vectors.index.fetch(ids=ids, namespace="").vectors  # type: ignore[attr-defined]
    assert set(raw_ours) == set(raw_theirs) == {image_id_for_key(k) for k in source.keys[::20]}
    for vid, vec in raw_ours.items():
        np.testing.assert_allclose(vec.values, raw_theirs[vid].values, atol=1e-6)
        assert vec.metadata == raw_theirs[vid].metadata


def _checkpoint_for(store: S3ObjectStore, table: str) -> Checkpoint | None:
    for info in store.list(CHECKPOINT_PREFIX):
        body = json.loads(store.get(info.key, max_bytes=1 << 20))
        if table in body["job"]["target"]:
            return Checkpoint(body["last_key"], body["committed"])
    return None


def _job_env(settings: Settings) -> dict[str, str]:
    assert settings.pinecone_api_key is not None
    return {
        **os.environ,
        **AWS_TEST_ENV,
        "PYTHONPATH": os.pathsep.join([str(REPO / "functions"), str(REPO)]),
        "FASHION_SEARCH_BACKEND": "aws",
        "FASHION_SEARCH_AWS_ENDPOINT_URL": str(settings.aws_endpoint_url),
        "FASHION_SEARCH_S3_BUCKET": str(settings.s3_bucket),
        "FASHION_SEARCH_DYNAMODB_TABLE": str(settings.dynamodb_table),
        "FASHION_SEARCH_PINECONE_INDEX_HOST": str(settings.pinecone_index_host),
        "FASHION_SEARCH_PINECONE_API_KEY": settings.pinecone_api_key.get_secret_value(),
        "FASHION_SEARCH_MODEL_DIR": str(settings.model_dir),
        "FASHION_SEARCH_ONNX_THREADS": "1",
        "FASHION_SEARCH_LOG_LEVEL": "WARNING",
    }


def child_pids(parent: int) -> list[int]:
    """Linux: the processes whose parent is ``parent`` (field 4 of /proc/PID/stat)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(stat.parent.name))
    return found


def wait_for(condition: Callable[[], Any], proc: subprocess.Popen[bytes], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (value := condition()) is not None:
            return value
        assert proc.poll() is None, "the job ended before it could be killed"
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint within {timeout_s} s")


def test_a_killed_job_resumes_and_indexes_every_image_exactly_once(
    source: SourceBucket,
    moto_server: MotoServer,
    needledb_server: NeedleDBServer,
    tiny_encoder: Encoder,
    tmp_path: Path,
) -> None:
    stack, settings, services = destination(moto_server, needledb_server, tiny_encoder, source)
    args = ["--prefix", PREFIX, "--batch-size", "20", "--inflight-batches", "1"]
    with (tmp_path / "stderr.log").open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fashion_search.backfill", *args, "--workers", "1"],
            env=_job_env(settings),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # its own process group, so clean-up can reach everything
        )

        def two_batches_committed() -> Checkpoint | None:
            found = _checkpoint_for(source.store, stack.table)
            return found if found is not None and found.committed >= 40 else None

        try:
            wait_for(two_batches_committed, proc, timeout_s=120)
            workers = child_pids(proc.pid)
            assert workers  # the decode process (and multiprocessing's resource tracker)
            os.kill(proc.pid, signal.SIGKILL)  # an OOM kill of the main process: no clean-up at all
            proc.wait()
            deadline = time.monotonic() + 15
            while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()], "orphaned workers"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    checkpoint = _checkpoint_for(source.store, stack.table)
    assert checkpoint is not None and checkpoint.committed < N_IMAGES, (tmp_path / "stderr.log").read_text()
    indexed_before = services.metadata.counts()["indexed"]

    resumed = run_cli_job(settings, *args, "--workers", "0")
    assert resumed["complete"] and resumed["resumed_from"] == checkpoint.last_key
    assert resumed["indexed"] + indexed_before == N_IMAGES  # nothing embedded twice
    assert resumed["skipped"] == indexed_before - checkpoint.committed  # committed after the checkpoint
    assert services.vectors.count() == N_IMAGES
    assert set(records_by_key(services)) == set(source.keys)
    assert _checkpoint_for(source.store, stack.table) is None


def test_two_shards_cover_the_bucket_exactly_once(
    source: SourceBucket, moto_server: MotoServer, needledb_server: NeedleDBServer, tiny_encoder: Encoder
) -> None:
    _, settings, services = destination(moto_server, needledb_server, tiny_encoder, source)
    reports = [
        run_cli_job(settings, "--prefix", PREFIX, "--shard", shard, "--workers", "0")
        for shard in ("0/2", "1/2")
    ]
    assert [r["skipped"] for r in reports] == [0, 0]  # an overlap would show up as skips
    assert sum(r["indexed"] for r in reports) == N_IMAGES
    assert all(r["indexed"] > N_IMAGES // 4 for r in reports)
    assert services.vectors.count() == N_IMAGES
    assert set(records_by_key(services)) == set(source.keys)
