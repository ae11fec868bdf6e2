"""The backfill job over the local stores: sharding, skipping, crash/resume, stop, bad input, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest

from fashion_search import cli
from fashion_search.backfill import Backfill, main
from fashion_search.backfill_checkpoint import Checkpoint, Shard
from fashion_search.errors import InputError, TransientError
from fashion_search.ingest import IngestItem, prepare_item
from fashion_search.records import image_id_for_key
from fashion_search.services import Services
from fashion_search.stores.base import ObjectInfo, VectorIndex, VectorItem
from fashion_search.stores.local_objects import LocalObjectStore
from tests.backfill.conftest import kagl_tags

N = 60  # objects in the local catalogue fixture


class StubCrashingVectors:
    """A real vector index that fails its ``fail_on``-th upsert, as a store outage mid-job would."""

    def __init__(self, inner: VectorIndex, fail_on: int) -> None:
        self.inner = inner
        self.fail_on = fail_on
        self.calls = 0

    def upsert(self, items: Iterable[VectorItem]) -> None:
        self.calls += 1
        if self.calls == self.fail_on:
            raise TransientError("vector store unavailable (injected)")
        self.inner.upsert(items)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


class GhostListingStore(LocalObjectStore):
    """Lists one key that is gone by the time it is read (deleted between list and get)."""

    ghost = "catalogue/0-deleted-meanwhile.jpg"

    def list(self, prefix: str = "", start_after: str = "") -> Iterator[ObjectInfo]:
        yield ObjectInfo(self.ghost, 10)
        yield from super().list(prefix, start_after)


def test_shard_parse_rejects_malformed_values() -> None:
    assert Shard.parse("1/3") == Shard(1, 3)
    for bad in ["", "1", "2/2", "-1/3", "a/b", "1/0", "0/1/2"]:
        with pytest.raises(InputError) as err:
            Shard.parse(bad)
        assert err.value.code == "invalid_shard"


def test_shards_partition_keys_exactly_once_and_evenly() -> None:
    keys = [f"catalogue/{i}.jpg" for i in range(3000)]
    shards = [Shard(i, 3) for i in range(3)]
    owners = [[s for s in shards if s.owns(k)] for k in keys]
    assert all(len(o) == 1 for o in owners)
    sizes = [sum(1 for o in owners if o[0] == s) for s in shards]
    assert all(900 < size < 1100 for size in sizes), sizes
    assert all(Shard().owns(k) for k in keys)


def test_full_run_indexes_every_object_with_its_tags_then_rerun_skips(
    make_job: Callable[..., Backfill],
    local_services: Services,
    local_catalogue: tuple[Path, list[str]],
    kagl_styles: dict[str, dict[str, str]],
) -> None:
    _, keys = local_catalogue
    job = make_job()
    report = job.run()
    assert (report.complete, report.indexed, report.skipped, report.failed) == (True, N, 0, 0)
    assert local_services.vectors.count() == N
    assert local_services.metadata.counts() == {"indexed": N, "failed": 0, "deleted": 0}
    record = local_services.metadata.get(image_id_for_key(keys[0]))
    assert record is not None and record.key == keys[0]
    expected = {k.lower(): v for k, v in kagl_tags(kagl_styles[Path(keys[0]).stem]).items()}
    assert record.tags == expected  # object metadata names are lower-cased, as in S3
    assert job.checkpoints.load() is None  # a finished shard leaves no checkpoint behind
    assert set(report.as_dict()["stage_seconds"]) >= {"download", "decode", "model", "write"}

    again = make_job().run()
    assert (again.indexed, again.skipped, again.complete) == (0, N, True)
    assert local_services.vectors.count() == N


@pytest.mark.parametrize("inflight", [1, 3])
def test_a_crash_mid_run_resumes_where_it_stopped_without_duplicates(
    make_job: Callable[..., Backfill], local_services: Services, inflight: int
) -> None:
    crashing = StubCrashingVectors(local_services.vectors, fail_on=3)
    job = make_job(vectors=crashing, inflight_batches=inflight)
    first = job.run()
    assert first.aborted is not None and "injected" in first.aborted
    assert not first.complete
    # With batches in parallel the failed one may be the oldest: then nothing is checkpointed yet.
    checkpoint = job.checkpoints.load() or Checkpoint("", 0)
    if inflight == 1:  # strictly sequential: exactly the two batches before the failure are done
        assert checkpoint.committed == 32 and first.indexed == 32
    indexed_before = local_services.metadata.counts()["indexed"]
    assert indexed_before < N

    second = make_job(inflight_batches=inflight).run()
    assert second.complete and second.resumed_from == (checkpoint.last_key or None)
    assert second.indexed + indexed_before == N  # nothing embedded twice
    assert second.skipped == indexed_before - checkpoint.committed  # committed after the checkpoint
    assert local_services.vectors.count() == N
    assert local_services.metadata.counts()["indexed"] == N


def test_decoding_in_worker_processes_matches_the_in_process_path(
    make_job: Callable[..., Backfill],
    local_services: Services,
    local_catalogue: tuple[Path, list[str]],
) -> None:
    report = make_job(workers=2, batch_size=32).run()
    assert (report.indexed, report.failed) == (N, 0)
    assert report.as_dict()["stage_seconds"]["decode"] > 0
    root, keys = local_catalogue
    item = IngestItem(keys[5], (root / keys[5]).read_bytes())
    spec = local_services.encoder.manifest.image
    prepared = prepare_item(item, spec, max_bytes=10**7, max_pixels=10**8)
    expected = local_services.encoder.embed_tower_pixels(prepared.pixels[None])[0]  # type: ignore[index]
    stored = local_services.vectors.fetch([prepared.image_id])[prepared.image_id].vector
    np.testing.assert_allclose(stored, expected, atol=1e-6)


def test_a_stop_request_drains_batches_in_flight_then_resumes(
    make_job: Callable[..., Backfill], local_services: Services
) -> None:
    job = make_job(inflight_batches=2)
    save = job.checkpoints.save

    def save_then_stop(checkpoint: Checkpoint) -> None:  # SIGTERM arriving after the first commit
        save(checkpoint)
        job.stop.set()

    job.checkpoints.save = save_then_stop  # type: ignore[method-assign]
    first = job.run()
    assert first.interrupted and not first.complete and first.aborted is None
    assert first.indexed == local_services.metadata.counts()["indexed"]  # every started batch finished
    checkpoint = job.checkpoints.load()
    assert checkpoint is not None and checkpoint.committed == first.indexed

    second = make_job(inflight_batches=2).run()
    assert second.complete and first.indexed + second.indexed == N and second.skipped == 0


def test_reembed_rewrites_current_objects_in_place(
    make_job: Callable[..., Backfill], local_services: Services, local_catalogue: tuple[Path, list[str]]
) -> None:
    make_job().run()
    image_id = image_id_for_key(local_catalogue[1][0])
    before = local_services.metadata.get(image_id)
    again = make_job(reembed=True).run()
    assert (again.indexed, again.skipped) == (N, 0)
    after = local_services.metadata.get(image_id)
    assert before is not None and after is not None
    assert after.created_at == before.created_at and after.updated_at > before.updated_at
    np.testing.assert_allclose(after.embedding, before.embedding, atol=1e-6)
    assert local_services.vectors.count() == N


def test_bad_objects_are_recorded_failed_with_reasons_and_others_indexed(
    make_job: Callable[..., Backfill],
    local_services: Services,
    local_catalogue: tuple[Path, list[str]],
    kagl_dir: Path,
    tmp_path: Path,
) -> None:
    root, keys = local_catalogue
    good = (root / keys[0]).read_bytes()
    source = LocalObjectStore(tmp_path / "bucket")
    bad = {
        "catalogue/empty.jpg": b"",
        "catalogue/text.jpg": b"this is not an image",
        "catalogue/truncated.jpg": good[:300],
        "catalogue/huge.jpg": (kagl_dir / "hires" / "10008.jpg").read_bytes(),
    }
    for key, data in {**bad, "catalogue/good.jpg": good, "catalogue/notes.txt": b"ignored"}.items():
        source.put(key, data, {"gender": "Men"})
    report = make_job(source=source, settings={"max_image_bytes": 100_000}).run()
    assert (report.indexed, report.failed) == (1, 4)  # notes.txt is not an image suffix: not listed
    assert dict(report.reasons) == {
        "empty_image": 1,
        "not_an_image": 1,
        "corrupt_image": 1,
        "too_large": 1,
    }
    assert {f["key"] for f in report.failures} == set(bad)
    for key in bad:
        record = local_services.metadata.get(image_id_for_key(key))
        assert record is not None and record.status == "failed" and record.reason
    assert local_services.vectors.count() == 1
    again = make_job(source=source, settings={"max_image_bytes": 100_000}).run()
    assert (again.skipped, again.failed) == (5, 0)  # failures are permanent, not retried


def test_an_object_deleted_after_listing_is_reported_missing(
    make_job: Callable[..., Backfill], local_catalogue: tuple[Path, list[str]]
) -> None:
    report = make_job(source=GhostListingStore(local_catalogue[0])).run()
    assert (report.missing, report.indexed, report.failed) == (1, N, 0)


def test_an_unreadable_checkpoint_is_a_clear_error_and_restart_ignores_it(
    make_job: Callable[..., Backfill],
) -> None:
    job = make_job()
    job.checkpoints.objects.put(job.checkpoints.key, b"{not json")
    with pytest.raises(InputError) as err:
        job.run()
    assert err.value.code == "bad_checkpoint"
    assert make_job(restart=True).run().indexed == N


def _outcomes(report: dict[str, object]) -> dict[str, object]:
    return {k: report[k] for k in ("indexed", "skipped", "failed", "complete")}


@pytest.fixture
def argv(
    tmp_path: Path,
    tiny_model_dir: Path,
    local_catalogue: tuple[Path, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> list[str]:
    """Settings for command-line runs (the environment) and the arguments naming the catalogue."""
    monkeypatch.setenv("FASHION_SEARCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FASHION_SEARCH_MODEL_DIR", str(tiny_model_dir))
    return ["--bucket", str(local_catalogue[0]), "--prefix", "catalogue/", "--workers", "0"]


def test_cli_subcommand_and_module_entry_point(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["backfill", *argv, "--report", str(tmp_path / "r.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert _outcomes(printed) == {"indexed": N, "skipped": 0, "failed": 0, "complete": True}
    assert printed["providers"] == ["CPUExecutionProvider"]  # no GPU here: CUDA falls back
    assert json.loads((tmp_path / "r.json").read_text()) == printed

    assert main([*argv, "--cpu"]) == 0
    assert _outcomes(json.loads(capsys.readouterr().out))["skipped"] == N

    with pytest.raises(SystemExit) as exit_:
        main(["--shard", "2/2"])
    assert exit_.value.code == 2
    assert "--shard expects i/n" in capsys.readouterr().err


def test_sigterm_stops_after_the_batches_in_flight_with_status_130(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo / "functions"), str(repo)])}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fashion_search.backfill",
            *argv,
            "--batch-size",
            "2",
            "--inflight-batches",
            "1",
        ],
        env={**env, "FASHION_SEARCH_LOG_LEVEL": "INFO"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # the handlers are installed before this line is logged
        if b"backfill started" in line:
            proc.send_signal(signal.SIGTERM)
            break
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130
    first = json.loads(out)
    assert first["interrupted"] and not first["complete"] and first["indexed"] < N

    assert main(argv) == 0  # resumes in this process
    second = json.loads(capsys.readouterr().out)
    assert second["complete"] and first["indexed"] + second["indexed"] == N and second["skipped"] == 0
