"""Where a backfill shard stands, so a killed job resumes instead of starting over.

A shard walks its keys in listing order (S3's lexicographic order) and commits them in batches.
After a batch and every batch before it are committed, the checkpoint records that batch's last
key; a resumed job lists with ``start_after`` that key. Batches committed after the checkpoint
but before a crash are listed again and come out ``skipped`` (same bytes, same model), so
nothing is embedded or written twice; vector ids and record keys are derived from the object key,
so even a forced re-run overwrites rather than duplicates.

A checkpoint is named by everything that makes two jobs different work (source, prefix, shard,
model, destination), so a job never resumes from another job's position; it is deleted when its
shard completes, so the next run of the same job starts from the top (and skips what is current).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass

from fashion_search.errors import InputError, NotFoundError
from fashion_search.records import image_id_for_key
from fashion_search.stores.base import ObjectStore

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "_backfill/"  # listings skip it, so checkpoints in the source bucket are never ingested
MAX_CHECKPOINT_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: a key belongs to exactly one shard, whatever the listing."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        index, sep, count = text.partition("/")
        try:
            shard = cls(int(index), int(count))
        except ValueError:
            shard = None
        if not sep or shard is None or not 0 <= shard.index < shard.count:
            raise InputError("invalid_shard", f"--shard expects i/n with 0 <= i < n, got {text!r}")
        return shard

    def owns(self, key: str) -> bool:
        """Stable across runs, machines and Python versions (a content hash, not ``hash()``)."""
        return self.count == 1 or int(image_id_for_key(key), 16) % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class JobIdentity:
    """What a checkpoint belongs to; a different value of any field is a different job."""

    source: str  # s3://bucket or dir:/path
    prefix: str
    shard: str
    model_id: str
    target: str  # where records and vectors go

    @property
    def key(self) -> str:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:20]
        index, count = self.shard.split("/")
        return f"{CHECKPOINT_PREFIX}{digest}/shard-{index}-of-{count}.json"


@dataclass(frozen=True)
class Checkpoint:
    last_key: str
    committed: int  # objects this shard has finished (any outcome), across resumes


class CheckpointStore:
    """One JSON object per shard in an ``ObjectStore`` (the source bucket, or a local directory)."""

    def __init__(self, objects: ObjectStore, identity: JobIdentity) -> None:
        self.objects = objects
        self.identity = identity
        self.key = identity.key

    def load(self) -> Checkpoint | None:
        try:
            raw = self.objects.get(self.key, max_bytes=MAX_CHECKPOINT_BYTES)
        except NotFoundError:
            return None
        try:
            body = json.loads(raw)
            if body["job"] != asdict(self.identity):
                raise ValueError("it belongs to another job")
            return Checkpoint(last_key=str(body["last_key"]), committed=int(body["committed"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(
                "bad_checkpoint", f"checkpoint {self.key} is unreadable ({exc}); delete it or pass --restart"
            ) from exc

    def save(self, checkpoint: Checkpoint) -> None:
        body = {"job": asdict(self.identity), **asdict(checkpoint), "updated_at": time.time()}
        self.objects.put(self.key, json.dumps(body, ensure_ascii=False).encode("utf-8"))

    def clear(self) -> None:
        self.objects.delete(self.key)
