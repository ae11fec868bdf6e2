"""Image records in a DynamoDB table (partition key ``image_id``, string; on-demand capacity).

The embedding is stored as Binary (little-endian float32 bytes, 2 KB at 512 dimensions), so the
vector index can be rebuilt from the table alone. S3 sequencers are hex strings of varying length;
the table keeps, beside the original, a zero-padded upper-case copy (``seq_order``) so that the
conditional write can compare them as strings inside DynamoDB, atomically.
"""

from __future__ import annotations

import logging
import random
import time
import typing
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from fashion_search.errors import TransientError
from fashion_search.records import ImageRecord, Status
from fashion_search.stores.aws_errors import error_code, translated

log = logging.getLogger(__name__)

SEQUENCER_WIDTH = 64  # S3 sequencers are ~16-20 hex digits; padding to 64 leaves ample room.
BATCH_GET_LIMIT = 100  # DynamoDB's BatchGetItem maximum
BATCH_WRITE_LIMIT = 25  # DynamoDB's BatchWriteItem maximum
# Write the record unless the stored one carries a newer sequencer (equal = redelivery: rewrite).
NEWER_OR_EQUAL = "attribute_not_exists(image_id) OR attribute_not_exists(seq_order) OR seq_order <= :seq"


def sequencer_order(sequencer: str) -> str:
    """Fixed-width form of a hex sequencer whose string order is its numeric order."""
    digits = sequencer.strip().upper().lstrip("0")
    if len(digits) > SEQUENCER_WIDTH or any(c not in "0123456789ABCDEF" for c in digits):
        raise ValueError(f"not an S3 sequencer: {sequencer!r}")
    return digits.rjust(SEQUENCER_WIDTH, "0")


def to_item(record: ImageRecord) -> dict[str, Any]:
    item: dict[str, Any] = {
        "image_id": {"S": record.image_id},
        "key": {"S": record.key},
        "status": {"S": record.status},
        "sha256": {"S": record.sha256},
        "width": {"N": str(record.width)},
        "height": {"N": str(record.height)},
        "format": {"S": record.format},
        "size_bytes": {"N": str(record.size_bytes)},
        "tags": {"M": {k: {"S": str(v)} for k, v in record.tags.items()}},
        "model_id": {"S": record.model_id},
        "created_at": {"N": repr(float(record.created_at))},
        "updated_at": {"N": repr(float(record.updated_at))},
    }
    if record.embedding is not None:
        item["embedding"] = {"B": np.asarray(record.embedding, dtype="<f4").tobytes()}
    if record.reason is not None:
        item["reason"] = {"S": record.reason}
    if record.sequencer is not None:
        item["sequencer"] = {"S": record.sequencer}
        item["seq_order"] = {"S": sequencer_order(record.sequencer)}
    return item


def from_item(item: dict[str, Any]) -> ImageRecord:
    def s(name: str, default: str = "") -> str:
        return str(item[name]["S"]) if name in item else default

    def n(name: str) -> float:
        return float(item[name]["N"]) if name in item else 0.0

    embedding = None
    if "embedding" in item:
        embedding = np.frombuffer(bytes(item["embedding"]["B"]), dtype="<f4").astype(np.float32)
    return ImageRecord(
        image_id=s("image_id"),
        key=s("key"),
        status=s("status"),  # type: ignore[arg-type]
        sha256=s("sha256"),
        width=int(n("width")),
        height=int(n("height")),
        format=s("format"),
        size_bytes=int(n("size_bytes")),
        tags={k: str(v["S"]) for k, v in item.get("tags", {}).get("M", {}).items()},
        model_id=s("model_id"),
        embedding=embedding,
        reason=item["reason"]["S"] if "reason" in item else None,
        sequencer=item["sequencer"]["S"] if "sequencer" in item else None,
        created_at=n("created_at"),
        updated_at=n("updated_at"),
    )


def create_table(client: Any, table: str) -> None:
    """Create the table as the stack defines it (for tests and local AWS-protocol servers)."""
    client.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "image_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "image_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 30})


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class DynamoDbMetadataStore:
    """``MetadataStore`` over one table through a boto3 DynamoDB client.

    Batch calls may return part of their work as unprocessed (throttling, size); those parts are
    re-sent with jittered exponential backoff, and a ``TransientError`` is raised if they are still
    unprocessed after ``max_attempts`` so that the caller (SQS) retries the whole message later.
    """

    counts_are_cheap = False  # counting by status is a full-table Scan

    def __init__(
        self,
        client: Any,
        table: str,
        *,
        max_attempts: int = 8,
        base_delay_s: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.table = table
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.sleep = sleep

    def _until_processed(
        self, call: Callable[..., dict[str, Any]], request: dict[str, Any], unprocessed: str
    ) -> Iterator[dict[str, Any]]:
        """Each response of a batch call, re-sending its unprocessed part with jittered backoff."""
        for attempt in range(self.max_attempts):
            with translated(f"table {self.table}"):
                response = call(RequestItems=request)
            yield response
            request = response.get(unprocessed) or {}
            if not request:
                return
            self.sleep(random.uniform(0, min(2.0, self.base_delay_s * 2**attempt)))
        raise TransientError(f"table {self.table}: {unprocessed} left after {self.max_attempts} tries")

    def get(self, image_id: str) -> ImageRecord | None:
        with translated(f"table {self.table}"):
            response = self.client.get_item(
                TableName=self.table, Key={"image_id": {"S": image_id}}, ConsistentRead=True
            )
        return from_item(response["Item"]) if "Item" in response else None

    def get_many(self, image_ids: Sequence[str]) -> dict[str, ImageRecord]:
        found: dict[str, ImageRecord] = {}
        for chunk in chunks(list(dict.fromkeys(image_ids)), BATCH_GET_LIMIT):
            request: dict[str, Any] = {
                self.table: {"Keys": [{"image_id": {"S": i}} for i in chunk], "ConsistentRead": True}
            }
            for response in self._until_processed(self.client.batch_get_item, request, "UnprocessedKeys"):
                for item in response.get("Responses", {}).get(self.table, []):
                    record = from_item(item)
                    found[record.image_id] = record
        return found

    def put(self, record: ImageRecord) -> bool:
        item = to_item(record)
        params: dict[str, Any] = {"TableName": self.table, "Item": item}
        if record.sequencer is not None:
            params["ConditionExpression"] = NEWER_OR_EQUAL
            params["ExpressionAttributeValues"] = {":seq": item["seq_order"]}
        try:
            with translated(f"table {self.table}"):
                self.client.put_item(**params)
        except self.client.exceptions.ConditionalCheckFailedException as exc:
            log.info(
                "stale write refused",
                extra={"image_id": record.image_id, "sequencer": record.sequencer, "code": error_code(exc)},
            )
            return False
        return True

    def put_many(self, records: Sequence[ImageRecord]) -> None:
        # One request may not name a key twice; the last record for an id wins, as with put().
        latest = {r.image_id: r for r in records}
        for chunk in chunks(list(latest.values()), BATCH_WRITE_LIMIT):
            request: dict[str, Any] = {self.table: [{"PutRequest": {"Item": to_item(r)}} for r in chunk]}
            for _ in self._until_processed(self.client.batch_write_item, request, "UnprocessedItems"):
                pass

    def _scan(self, **params: Any) -> Iterator[dict[str, Any]]:
        pages = self.client.get_paginator("scan").paginate(TableName=self.table, **params)
        with translated(f"table {self.table}"):
            for page in pages:
                yield from page.get("Items", [])

    def iter_records(self, status: Status | None = None) -> Iterator[ImageRecord]:
        params: dict[str, Any] = {}
        if status is not None:
            params = {
                "FilterExpression": "#s = :s",
                "ExpressionAttributeNames": {"#s": "status"},
                "ExpressionAttributeValues": {":s": {"S": status}},
            }
        for item in self._scan(**params):
            yield from_item(item)

    def counts(self) -> dict[str, int]:
        """A projected full scan (reads the whole table): fine at catalogue scale, not for hot paths."""
        items = self._scan(ProjectionExpression="#s", ExpressionAttributeNames={"#s": "status"})
        found = Counter(item["status"]["S"] for item in items)
        return {status: found.get(status, 0) for status in typing.get_args(Status)}
