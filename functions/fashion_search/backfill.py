"""Backfill: index a whole bucket (or a prefix of it) in bulk, resumably, on a GPU when there is one.

``python -m fashion_search.backfill --bucket B --prefix P [--shard i/n] [--batch-size N] [--reembed]``

The pipeline keeps every resource busy at once, with a bounded amount of work in flight:

    list (paginated, this shard's keys) -> batches of N keys, at most ``--inflight-batches`` at a time
      -> download (thread pool: head for tags + get, like the Lambda) and sha256
      -> skip what is already indexed with these bytes and this model (one batched metadata read)
      -> decode + preprocess (process pool running ``ingest.prepare_item``)
      -> ``Ingestor.index_prepared``: one model call per ``--batch-size`` images, one batched vector
         upsert, batched record writes; two commit threads, so one batch's writes overlap the next
         batch's model call (a gate keeps model calls one at a time)
      -> checkpoint (see ``backfill_checkpoint``)

Records and vectors are written by the same ``Ingestor`` the ingest Lambda uses, from the same
inputs (the object's bytes and its user metadata as tags), so they are identical to what the
Lambda would produce; only the S3 event ``sequencer`` is absent (the backfill reads objects as
they are now, not an event about them).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from fashion_search.backfill_checkpoint import (
    CHECKPOINT_PREFIX,
    Checkpoint,
    CheckpointStore,
    JobIdentity,
    Shard,
)
from fashion_search.backfill_report import MISSING_REASON, BackfillReport, Progress, StageClock
from fashion_search.config import Settings
from fashion_search.encoder import Encoder
from fashion_search.errors import FashionSearchError, InputError, NotFoundError
from fashion_search.imaging import normalise_batch
from fashion_search.ingest import (
    IngestItem,
    Ingestor,
    IngestOutcome,
    PreparedItem,
    fetch_object,
    prepare_item,
    sha256_bytes,
)
from fashion_search.logs import configure_logging
from fashion_search.manifest import ImageTower
from fashion_search.records import image_id_for_key
from fashion_search.stores.base import ObjectInfo, ObjectStore

log = logging.getLogger("fashion_search.backfill")  # not "__main__" under python -m

GPU_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")  # Encoder keeps the available ones
SKIPPED_REASON = "already indexed with these bytes"


@dataclass(frozen=True)
class BackfillOptions:
    prefix: str = ""
    shard: Shard = field(default_factory=Shard)
    batch_size: int = 256
    reembed: bool = False
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # decode processes; 0 = in threads
    download_threads: int = 16
    inflight_batches: int = 3  # bounds memory: batches downloaded, decoded or committing at once
    commit_threads: int = 2
    progress_every_s: float = 10.0
    restart: bool = False  # ignore (and overwrite) an existing checkpoint


class GatedEncoder:
    """The encoder as the Ingestor sees it: one model call at a time, and each one timed.

    Two commit threads overlap one batch's writes with the next one's model call; two model calls
    at once would only fight over the same cores (CPU) or queue anyway (GPU).
    """

    def __init__(self, encoder: Encoder, clock: StageClock) -> None:
        self.encoder = encoder
        self.manifest = encoder.manifest
        self.model_id = encoder.model_id
        self.dim = encoder.dim
        self.clock = clock
        self._gate = threading.Lock()

    def embed_tower_pixels(self, batch: np.ndarray) -> np.ndarray:
        pixels = normalise_batch(batch, self.manifest.image)  # outside the gate: it is not model time
        asked = time.perf_counter()
        with self._gate:
            got = time.perf_counter()
            self.clock.add("model_wait", got - asked)
            try:
                return self.encoder.embed_pixels(pixels)
            finally:
                self.clock.add("model", time.perf_counter() - got)


def prepare_timed(
    item: IngestItem, *, spec: ImageTower, max_bytes: int, max_pixels: int
) -> tuple[PreparedItem, float]:
    """``prepare_item`` plus the seconds it took, measured where it ran (a worker process)."""
    started = time.perf_counter()
    prepared = prepare_item(item, spec, max_bytes=max_bytes, max_pixels=max_pixels)
    return prepared, time.perf_counter() - started


def _init_worker(parent_pid: int) -> None:
    """Ctrl-C reaches the whole process group, but only the parent decides how to stop; and a
    worker whose parent was killed (SIGKILL, OOM) exits instead of lingering as an orphan."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()


def _exit_with_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)


@dataclass(frozen=True)
class BatchDone:
    last_key: str
    outcomes: list[IngestOutcome]


class Backfill:
    """One shard of one bulk job. ``run`` may be called again after a crash: it resumes."""

    def __init__(
        self,
        source: ObjectStore,
        ingestor: Ingestor,
        settings: Settings,
        checkpoints: CheckpointStore,
        options: BackfillOptions,
        clock: StageClock | None = None,
        job_fields: dict[str, Any] | None = None,
    ) -> None:
        self.source = source
        self.ingestor = ingestor
        self.settings = settings
        self.checkpoints = checkpoints
        self.options = options
        self.clock = clock or StageClock()
        self.job_fields = job_fields or {}
        self.stop = threading.Event()  # set by SIGTERM/SIGINT: finish what is in flight, then stop
        self._suffixes = tuple(s.lower() for s in settings.s3_suffixes)
        self._commit_slots = threading.Semaphore(options.commit_threads)
        self._downloads: Executor | None = None
        self._processes: Executor | None = None

    # -- listing ------------------------------------------------------------------------------
    def wanted(self, key: str) -> bool:
        return (
            not key.startswith(CHECKPOINT_PREFIX)
            and (not self._suffixes or key.lower().endswith(self._suffixes))
            and self.options.shard.owns(key)
        )

    def keys(self, start_after: str) -> Iterator[ObjectInfo]:
        listing = self.source.list(self.options.prefix, start_after=start_after)
        while True:
            with self.clock.timed("list"):
                info = next(listing, None)
            if info is None:
                return
            if self.wanted(info.key):
                yield info

    def _count(self, start_after: str, progress: Progress) -> None:
        """A second, cheap listing pass, only to give progress lines an ETA."""
        try:
            progress.total = sum(
                1 for info in self.source.list(self.options.prefix, start_after) if self.wanted(info.key)
            )
        except Exception:
            log.warning("could not count the keys; progress has no ETA", exc_info=True)

    # -- one batch, start to finish (runs in a batch thread) ------------------------------------
    def _fetch(self, key: str) -> IngestItem | PreparedItem | None:
        with self.clock.timed("download"):
            try:
                return fetch_object(self.source, key, self.settings.max_image_bytes)
            except NotFoundError:
                return None

    def _prepare(self, items: Sequence[IngestItem]) -> list[PreparedItem]:
        if not items:
            return []
        fn = partial(
            prepare_timed,
            spec=self.ingestor.encoder.manifest.image,
            max_bytes=self.settings.max_image_bytes,
            max_pixels=self.settings.max_image_pixels,
        )
        if self._processes is None:
            results = [fn(item) for item in items]
        else:
            chunk = max(1, len(items) // (4 * self.options.workers))
            results = list(self._processes.map(fn, items, chunksize=chunk))
        for _, seconds in results:
            self.clock.add("decode", seconds)
        return [prepared for prepared, _ in results]

    def _run_batch(self, infos: Sequence[ObjectInfo]) -> BatchDone:
        assert self._downloads is not None
        keys = [info.key for info in infos]
        outcomes: list[IngestOutcome] = []
        items: list[IngestItem] = []
        ready: list[PreparedItem] = []  # failed before decoding (too large)
        for key, got in zip(keys, self._downloads.map(self._fetch, keys), strict=True):
            if got is None:
                outcomes.append(IngestOutcome(key, image_id_for_key(key), "skipped", MISSING_REASON))
            elif isinstance(got, PreparedItem):
                ready.append(got)
            else:
                items.append(got)
        if items and not self.options.reembed:
            with self.clock.timed("skip_check"):
                current = self.ingestor.current_ids([(i.key, sha256_bytes(i.data)) for i in items])
            outcomes += [
                IngestOutcome(i.key, image_id_for_key(i.key), "skipped", SKIPPED_REASON)
                for i in items
                if i.key in current
            ]
            items = [i for i in items if i.key not in current]
        ready += self._prepare(items)
        if ready:
            with self._commit_slots, self.clock.timed("commit"):
                outcomes += self.ingestor.index_prepared(ready, force=self.options.reembed)
        return BatchDone(keys[-1], outcomes)

    # -- the job ------------------------------------------------------------------------------
    def _batches(self, start_after: str) -> Iterator[list[ObjectInfo]]:
        keys = self.keys(start_after)
        while batch := list(islice(keys, self.options.batch_size)):
            yield batch

    def _pools(self, stack: ExitStack) -> ThreadPoolExecutor:
        opts = self.options
        self._downloads = stack.enter_context(
            ThreadPoolExecutor(opts.download_threads, thread_name_prefix="backfill-download")
        )
        self._processes = None
        if opts.workers > 0:
            self._processes = stack.enter_context(
                ProcessPoolExecutor(
                    opts.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker,
                    initargs=(os.getpid(),),
                )
            )
        return stack.enter_context(
            ThreadPoolExecutor(opts.inflight_batches, thread_name_prefix="backfill-batch")
        )

    def run(self) -> BackfillReport:
        checkpoint = None if self.options.restart else self.checkpoints.load()
        start_after = checkpoint.last_key if checkpoint else ""
        committed = checkpoint.committed if checkpoint else 0
        report = BackfillReport(
            job={**self.job_fields, "checkpoint": self.checkpoints.key}, resumed_from=start_after or None
        )
        progress = Progress(self.options.progress_every_s, already_done=committed)
        threading.Thread(target=self._count, args=(start_after, progress), daemon=True).start()
        log.info("backfill started", extra={**report.job, "resumed_from": report.resumed_from})
        started = time.perf_counter()
        pending: deque[Future[BatchDone]] = deque()

        def finish_oldest() -> None:
            nonlocal committed
            done = pending.popleft().result()
            for outcome in done.outcomes:
                report.add(outcome)
            committed += len(done.outcomes)
            self.checkpoints.save(Checkpoint(done.last_key, committed))
            progress.update(len(done.outcomes))

        with ExitStack() as stack:
            batches = self._pools(stack)
            try:
                listed_all = True
                for batch in self._batches(start_after):
                    if self.stop.is_set():
                        listed_all = False
                        break
                    while len(pending) >= self.options.inflight_batches:
                        finish_oldest()
                    pending.append(batches.submit(self._run_batch, batch))
                while pending:
                    finish_oldest()
                report.complete = listed_all
                report.interrupted = not listed_all
            except Exception as exc:
                # Batches after the failed one may have committed; the checkpoint stays before
                # them, and a re-run finds them current. Nothing is lost, nothing is doubled.
                log.exception("backfill aborted")
                report.aborted = f"{type(exc).__name__}: {exc}"
                for future in pending:
                    future.cancel()
        if report.complete:
            self.checkpoints.clear()
        report.seconds = time.perf_counter() - started
        report.stage_seconds = self.clock.as_dict()
        progress.update(0, force=True)
        log.info("backfill finished", extra={k: v for k, v in report.as_dict().items() if k != "failures"})
        return report


# -- wiring and command line ---------------------------------------------------------------------
def _shard_arg(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(exc.detail) from None


def _batch_size_arg(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 1024:
        raise argparse.ArgumentTypeError("--batch-size must be between 1 and 1024")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Shared by ``python -m fashion_search.backfill`` and ``fashion-search backfill``."""
    parser.add_argument(
        "--bucket",
        help="aws backend: the S3 bucket (default FASHION_SEARCH_S3_BUCKET); local backend: a directory "
        "used as the object store (default: the local product's objects directory)",
    )
    parser.add_argument("--prefix", help="only keys under this prefix (default FASHION_SEARCH_S3_PREFIX)")
    parser.add_argument(
        "--shard", type=_shard_arg, default=Shard(), help="i/n: this task's share of the keys"
    )
    parser.add_argument(
        "--batch-size", type=_batch_size_arg, default=256, help="images per model call and per commit"
    )
    parser.add_argument("--reembed", action="store_true", help="re-embed objects that are already current")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="decode processes (0: decode in threads)"
    )
    parser.add_argument("--download-threads", type=int, default=16)
    parser.add_argument(
        "--inflight-batches", type=int, default=3, help="bounds memory (see docs/backfill.md)"
    )
    parser.add_argument("--cpu", action="store_true", help="do not try the CUDA provider")
    parser.add_argument(
        "--restart", action="store_true", help="ignore this job's checkpoint, start from the top"
    )
    parser.add_argument("--progress-every", type=float, default=10.0, metavar="SECONDS")
    parser.add_argument("--report", type=Path, help="also write the final JSON report to this file")


def options_from_args(args: argparse.Namespace, settings: Settings) -> BackfillOptions:
    return BackfillOptions(
        prefix=settings.s3_prefix if args.prefix is None else args.prefix,
        shard=args.shard,
        batch_size=args.batch_size,
        reembed=args.reembed,
        workers=max(0, args.workers),
        download_threads=max(1, args.download_threads),
        inflight_batches=max(1, args.inflight_batches),
        progress_every_s=args.progress_every,
        restart=args.restart,
    )


def build_backfill(settings: Settings, args: argparse.Namespace) -> Backfill:
    """Stores from ``Settings`` as every entry point builds them; the model on the GPU if present."""
    from fashion_search.services import build_services
    from fashion_search.stores.local_objects import LocalObjectStore

    options = options_from_args(args, settings)
    settings = settings.model_copy(update={"image_batch_size": options.batch_size})
    providers = ["CPUExecutionProvider"] if args.cpu else list(GPU_PROVIDERS)
    encoder = Encoder.load(settings.model_dir, threads=settings.onnx_threads, providers=providers)
    if settings.backend == "aws":
        settings = settings.model_copy(update={"s3_bucket": args.bucket or settings.s3_bucket})
        services = build_services(settings, encoder=encoder)
        source = checkpoint_objects = services.objects
        source_name = f"s3://{settings.s3_bucket}"
        target = f"dynamodb:{settings.dynamodb_table} pinecone:{settings.pinecone_index_host}"
        target += f"#{settings.pinecone_namespace}"
    else:
        services = build_services(settings, encoder=encoder)
        source = LocalObjectStore(Path(args.bucket)) if args.bucket else services.objects
        root = Path(args.bucket) if args.bucket else settings.objects_dir
        checkpoint_objects = LocalObjectStore(settings.data_dir / "backfill")
        source_name, target = f"dir:{root.resolve()}", f"local:{settings.data_dir.resolve()}"
    identity = JobIdentity(source_name, options.prefix, str(options.shard), encoder.model_id, target)
    clock = StageClock()
    ingestor = Ingestor(GatedEncoder(encoder, clock), services.metadata, services.vectors, settings)  # type: ignore[arg-type]
    job_fields = {
        "source": source_name,
        "prefix": options.prefix,
        "shard": str(options.shard),
        "model_id": encoder.model_id,
        "providers": encoder.providers,
        "batch_size": options.batch_size,
        "workers": options.workers,
        "reembed": options.reembed,
    }
    return Backfill(
        source, ingestor, settings, CheckpointStore(checkpoint_objects, identity), options, clock, job_fields
    )


@contextmanager
def stop_on_signals(job: Backfill) -> Iterator[None]:
    """SIGTERM (ECS or SageMaker stopping the task) or Ctrl-C: finish the batches in flight,
    checkpoint, report. Stopping harder (SIGKILL) is safe too: the job resumes from its checkpoint."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: Any) -> None:
        log.warning("stopping after the batches in flight", extra={"signal": signal.Signals(signum).name})
        job.stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_backfill(settings: Settings, args: argparse.Namespace) -> int:
    """Exit status: 0 done (failed objects are reported, not fatal), 1 aborted, 130 interrupted."""
    job = build_backfill(settings, args)
    with stop_on_signals(job):
        report = job.run()
    payload = report.as_dict()
    text = json.dumps(payload, indent=2, ensure_ascii=False)
    if args.report:
        args.report.write_text(text + "\n", encoding="utf-8")
    print(text)
    if report.aborted:
        return 1
    return 130 if report.interrupted else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fashion_search.backfill", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings)
    try:
        return run_backfill(settings, args)
    except InputError as exc:
        print(json.dumps({"error": exc.code, "detail": exc.detail}), file=sys.stderr)
        return 2
    except (FashionSearchError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
