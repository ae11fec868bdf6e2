"""The ingest Lambda: S3 ObjectCreated/ObjectRemoved notifications (through SQS, or direct) -> Ingestor.

Failure policy, which is what makes SQS redelivery safe:
- a bad object (not an image, a bomb, too large) becomes a ``failed`` record with its reason and
  its message is *not* reported, so it is never retried;
- anything else that goes wrong (throttling, 5xx, timeouts, Pinecone or DynamoDB down) reports the
  message in ``batchItemFailures``; SQS redelivers only those, and after ``maxReceiveCount`` moves
  them to the DLQ;
- replaying a message changes nothing: the Ingestor skips bytes it already indexed, vector
  upserts are by id, and S3's ``sequencer`` stops a late, stale event from overwriting newer state.

The creates of one invocation share one model call and one vector upsert (Lambda delivers up to
10 messages per batch by default), so a transient failure there reports all of them.
Requires ``ReportBatchItemFailures`` on the event source mapping.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote_plus

from fashion_search.config import Settings
from fashion_search.errors import NotFoundError
from fashion_search.ingest import IngestOutcome, PreparedItem, fetch_object, prepare_item
from fashion_search.logs import configure_logging
from fashion_search.records import image_id_for_key
from fashion_search.services import Services, build_services

log = logging.getLogger(__name__)

Action = Literal["created", "removed"]
ACTIONS: dict[str, Action] = {"ObjectCreated": "created", "ObjectRemoved": "removed"}


@dataclass(frozen=True)
class ObjectEvent:
    """One S3 event record, reduced to what ingest needs. ``message_id`` is None for direct S3 events."""

    message_id: str | None
    action: Action
    bucket: str
    key: str
    sequencer: str | None = None


@dataclass
class BatchResult:
    failed_messages: list[str] = field(default_factory=list)
    direct_failed: bool = False
    outcomes: list[IngestOutcome] = field(default_factory=list)

    def fail(self, message_id: str | None) -> None:
        if message_id is None:
            self.direct_failed = True
        elif message_id not in self.failed_messages:
            self.failed_messages.append(message_id)


class MalformedMessage(ValueError):
    """An SQS message that is not an S3 notification: reported, so it ends in the DLQ for a human."""


def s3_records(notification: Mapping[str, Any], message_id: str | None) -> Iterator[ObjectEvent]:
    if notification.get("Event") == "s3:TestEvent":  # sent once when the notification is configured
        return
    records = notification.get("Records")
    if not isinstance(records, list):
        raise MalformedMessage("no Records list")
    for record in records:
        if record.get("eventSource") != "aws:s3":
            raise MalformedMessage(f"unexpected event source {record.get('eventSource')!r}")
        name = str(record.get("eventName", ""))
        action = ACTIONS.get(name.split(":", 1)[0])  # "ObjectCreated:Put" -> "created"
        if action is None:
            log.info("event ignored", extra={"event_name": name})
            continue
        s3 = record["s3"]
        yield ObjectEvent(
            message_id=message_id,
            action=action,
            bucket=s3["bucket"]["name"],
            key=unquote_plus(s3["object"]["key"]),  # keys arrive URL-encoded, spaces as '+'
            sequencer=s3["object"].get("sequencer"),
        )


def parse_event(event: Mapping[str, Any], result: BatchResult) -> list[ObjectEvent]:
    """SQS batches (bodies are S3 notifications) and direct S3 invocations, in delivery order."""
    records = event.get("Records") or []
    if not records or records[0].get("eventSource") != "aws:sqs":
        return list(s3_records(event, None))
    events: list[ObjectEvent] = []
    for message in records:
        message_id = message["messageId"]
        try:
            events.extend(s3_records(json.loads(message["body"]), message_id))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # incl. MalformedMessage
            log.error("malformed message", extra={"message_id": message_id, "error": str(exc)})
            result.fail(message_id)
    return events


def wanted(settings: Settings, event: ObjectEvent) -> bool:
    if event.bucket != settings.s3_bucket:
        log.warning("event for another bucket ignored", extra={"bucket": event.bucket, "key": event.key})
        return False
    suffixes = tuple(s.lower() for s in settings.s3_suffixes)
    return event.key.startswith(settings.s3_prefix) and (not suffixes or event.key.lower().endswith(suffixes))


@dataclass(frozen=True)
class Fetched:
    event: ObjectEvent
    prepared: PreparedItem
    fetch_ms: float


class IngestBatch:
    """Applies one invocation's events in order, batching consecutive creates."""

    def __init__(self, services: Services, result: BatchResult) -> None:
        self.services = services
        self.settings = services.settings
        self.result = result
        self.pending: list[Fetched] = []

    def run(self, events: list[ObjectEvent]) -> None:
        for event in events:
            if event.message_id is not None and event.message_id in self.result.failed_messages:
                continue  # an earlier record of this message failed: the whole message is retried
            if event.action == "removed" or any(f.event.key == event.key for f in self.pending):
                self.flush()  # keep each key's events in delivery order
            if event.action == "removed":
                self.remove(event)
            else:
                self.fetch(event)
        self.flush()

    def fetch(self, event: ObjectEvent) -> None:
        started = time.perf_counter()
        try:
            prepared = self.prepare(event)
        except NotFoundError:
            # Deleted (or replaced) since the event was sent; its ObjectRemoved event follows.
            image_id = image_id_for_key(event.key)
            self.report(IngestOutcome(event.key, image_id, "skipped", "object no longer exists"), started)
            return
        except Exception:
            log.exception("fetch failed", extra={"key": event.key})
            self.result.fail(event.message_id)
            return
        self.pending.append(Fetched(event, prepared, ms_since(started)))

    def prepare(self, event: ObjectEvent) -> PreparedItem:
        """Download and decode; a too-large object is recorded as failed without downloading it."""
        max_bytes = self.settings.max_image_bytes
        item = fetch_object(self.services.objects, event.key, max_bytes, event.sequencer)
        if isinstance(item, PreparedItem):
            return item
        spec = self.services.encoder.manifest.image
        return prepare_item(item, spec, max_bytes=max_bytes, max_pixels=self.settings.max_image_pixels)

    def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        started = time.perf_counter()
        try:
            outcomes = self.services.ingestor.index_prepared([f.prepared for f in batch])
        except Exception:
            log.exception("index failed", extra={"keys": [f.event.key for f in batch]})
            for fetched in batch:
                self.result.fail(fetched.event.message_id)
            return
        for fetched, outcome in zip(batch, outcomes, strict=True):
            self.report(outcome, started, fetch_ms=fetched.fetch_ms, batch_size=len(batch))

    def remove(self, event: ObjectEvent) -> None:
        started = time.perf_counter()
        try:
            outcome = self.services.ingestor.delete(event.key, event.sequencer)
        except Exception:
            log.exception("delete failed", extra={"key": event.key})
            self.result.fail(event.message_id)
            return
        self.report(outcome, started)

    def report(self, outcome: IngestOutcome, started: float, **timings: float) -> None:
        """One line per object; ``ms`` is the write step (shared by a batch), ``fetch_ms`` the download."""
        self.result.outcomes.append(outcome)
        log.info(
            "ingest outcome",
            extra={
                "key": outcome.key,
                "image_id": outcome.image_id,
                "status": outcome.status,
                "reason": outcome.reason,
                "ms": ms_since(started),
                **timings,
            },
        )


def ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 1)


def handle(event: Mapping[str, Any], services: Services) -> dict[str, Any]:
    """Process one invocation; returns the partial batch response (empty list: all done)."""
    started = time.perf_counter()
    result = BatchResult()
    events = [e for e in parse_event(event, result) if wanted(services.settings, e)]
    IngestBatch(services, result).run(events)
    statuses: dict[str, int] = {}
    for outcome in result.outcomes:
        statuses[outcome.status] = statuses.get(outcome.status, 0) + 1
    log.info(
        "batch done",
        extra={
            "events": len(events),
            "outcomes": statuses,
            "failed_messages": len(result.failed_messages),
            "ms": ms_since(started),
        },
    )
    if result.direct_failed:
        # A direct S3 invocation has no partial response: failing it makes Lambda retry it whole
        # (safe, as replays are idempotent) and then route it to the on-failure destination.
        raise RuntimeError("some events failed; see the log lines above")
    return {"batchItemFailures": [{"itemIdentifier": m} for m in result.failed_messages]}


@functools.cache
def container_services() -> Services:
    """Model and clients, created once per container and reused by every invocation."""
    settings = Settings()
    configure_logging(settings)
    return build_services(settings)


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, container_services())
