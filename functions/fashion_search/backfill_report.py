"""What a backfill did and where its time went: live progress lines and the final JSON report.

Stage times are busy time summed over the workers of that stage (thread-seconds for downloads,
process-seconds for decoding), so comparing them with the wall time shows which stage bounds the
job: a stage whose busy time divided by its parallelism is close to the wall time is the
bottleneck. ``model`` is time inside ONNX Runtime; ``write`` is the rest of the commit (metadata
reads, vector upserts, record writes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fashion_search.ingest import IngestOutcome

log = logging.getLogger(__name__)

STAGES = ("list", "download", "skip_check", "decode", "model", "model_wait", "write")
MAX_FAILURES_LISTED = 1000
MISSING_REASON = "object no longer exists"  # the ingest Lambda's wording for the same case


class StageClock:
    """Thread-safe accumulators of busy seconds per stage."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds: Counter[str] = Counter()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._seconds[stage] += seconds

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - started)

    def seconds(self, stage: str) -> float:
        with self._lock:
            return self._seconds[stage]

    def as_dict(self) -> dict[str, float]:
        """Per stage; ``write`` is commit time not spent in (or waiting for) the model."""
        with self._lock:
            seconds = Counter(self._seconds)
        seconds["write"] = max(0.0, seconds["commit"] - seconds["model"] - seconds["model_wait"])
        return {stage: round(seconds[stage], 3) for stage in STAGES}


@dataclass
class BackfillReport:
    job: dict[str, Any]
    resumed_from: str | None = None
    indexed: int = 0
    skipped: int = 0
    failed: int = 0
    stale: int = 0
    missing: int = 0  # listed, then deleted before it could be read
    reasons: Counter[str] = field(default_factory=Counter)
    failures: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    complete: bool = False
    interrupted: bool = False
    aborted: str | None = None

    @property
    def processed(self) -> int:
        return self.indexed + self.skipped + self.failed + self.stale + self.missing

    def add(self, outcome: IngestOutcome) -> None:
        if outcome.status == "indexed":
            self.indexed += 1
        elif outcome.status == "failed":
            self.failed += 1
            reason = outcome.reason or "unknown"
            self.reasons[reason.split(":")[0]] += 1
            if len(self.failures) < MAX_FAILURES_LISTED:
                self.failures.append({"key": outcome.key, "reason": reason})
        elif outcome.status == "stale":
            self.stale += 1
        elif outcome.reason == MISSING_REASON:
            self.missing += 1
        else:
            self.skipped += 1

    def as_dict(self) -> dict[str, Any]:
        rate = self.processed / self.seconds if self.seconds else 0.0
        model_s = self.stage_seconds.get("model", 0.0)
        return {
            **self.job,
            "resumed_from": self.resumed_from,
            "complete": self.complete,
            "interrupted": self.interrupted,
            "aborted": self.aborted,
            "indexed": self.indexed,
            "skipped": self.skipped,
            "failed": self.failed,
            "stale": self.stale,
            "missing": self.missing,
            "failure_reasons": dict(self.reasons),
            "failures": self.failures,
            "seconds": round(self.seconds, 3),
            "items_per_s": round(rate, 1),
            "indexed_per_s": round(self.indexed / self.seconds, 1) if self.seconds else 0.0,
            "model_only_images_per_s": round(self.indexed / model_s, 1) if model_s else None,
            "stage_seconds": self.stage_seconds,
        }


class Progress:
    """Logs items/s and an ETA every ``every_s`` seconds; the total arrives when counting ends."""

    def __init__(self, every_s: float, already_done: int = 0) -> None:
        self.every_s = every_s
        self.started = time.monotonic()
        self._last_log = self.started
        self.done = 0
        self.already_done = already_done
        self.total: int | None = None  # keys left to do when the job started (None: still counting)

    def update(self, n: int, *, force: bool = False) -> None:
        self.done += n
        now = time.monotonic()
        if force or now - self._last_log >= self.every_s:
            self._last_log = now
            log.info("backfill progress", extra=self.snapshot(now))

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        elapsed = max(1e-9, (now or time.monotonic()) - self.started)
        rate = self.done / elapsed
        eta = None
        if self.total is not None and rate > 0:
            eta = round(max(0, self.total - self.done) / rate, 1)
        return {
            "done": self.done,
            "done_including_earlier_runs": self.done + self.already_done,
            "total": self.total,
            "items_per_s": round(rate, 1),
            "eta_s": eta,
        }
