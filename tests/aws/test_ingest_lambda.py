"""The ingest Lambda end to end: S3 upload -> S3 notification -> SQS -> handler -> DynamoDB + Pinecone."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from fashion_search.handlers import ingest_lambda
from fashion_search.handlers.ingest_lambda import handle
from fashion_search.records import image_id_for_key
from fashion_search.services import build_services
from tests.aws.catalogue import PREFIX, SAMPLE_SIZE, Catalogue
from tests.aws.lambda_events import discard, drain, receive, s3_notification, send, settle, sqs_event

pytestmark = pytest.mark.aws


def record(cat: Catalogue, key: str):
    return cat.services.metadata.get(image_id_for_key(key))


def in_index(cat: Catalogue, key: str) -> bool:
    return image_id_for_key(key) in cat.services.vectors.fetch([image_id_for_key(key)])


def test_uploaded_catalogue_is_indexed_with_metadata_as_tags(catalogue: Catalogue) -> None:
    cat = catalogue
    assert all(r["batchItemFailures"] == [] for r in cat.responses)
    assert len(cat.delivered) >= SAMPLE_SIZE // 10  # drained in batches of at most 10
    assert cat.services.metadata.counts()["indexed"] == SAMPLE_SIZE
    assert cat.services.vectors.count() == SAMPLE_SIZE
    product_id, key = next(iter(cat.keys.items()))
    rec = record(cat, key)
    row = cat.rows[product_id]
    assert rec.status == "indexed" and rec.key == key  # '+', spaces and 'ë' decoded from the event
    assert rec.tags["gender"] == row["gender"] and rec.tags["basecolour"] == row["baseColour"]
    assert rec.tags["productdisplayname"] == row["productDisplayName"]
    assert rec.embedding is not None and rec.embedding.shape == (cat.services.encoder.dim,)
    assert rec.width == 60 and rec.height == 80


def test_redelivered_batch_changes_nothing(catalogue: Catalogue) -> None:
    cat = catalogue
    before = {r.image_id: r.updated_at for r in cat.services.metadata.iter_records()}
    batch = next(e for e in cat.delivered if len(e["Records"]) == 10)
    assert handle(batch, cat.services) == {"batchItemFailures": []}
    assert cat.services.vectors.count() == SAMPLE_SIZE
    assert {r.image_id: r.updated_at for r in cat.services.metadata.iter_records()} == before


def test_keys_outside_the_prefix_or_suffixes_are_ignored(catalogue: Catalogue) -> None:
    cat = catalogue
    photo = next(iter(cat.photos.values()))
    cat.services.objects.put("elsewhere/shirt.jpg", photo)
    cat.services.objects.put("products/notes.txt", b"not for us")
    assert [r["batchItemFailures"] for r in cat.drain()] == [[]]
    assert record(cat, "elsewhere/shirt.jpg") is None and record(cat, "products/notes.txt") is None


def bad_objects() -> dict[str, tuple[bytes, str]]:
    """key -> (bytes, the error code its failed record must carry)."""
    bomb = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(bomb, format="PNG")  # 100 Mpx in a few kB
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(jpeg, format="JPEG")
    return {
        "products/bad/not-an-image.jpg": (b"this is not an image", "not_an_image"),
        "products/bad/truncated.jpg": (jpeg.getvalue()[:200], "corrupt_image"),
        "products/bad/bomb.png": (bomb.getvalue(), "too_many_pixels"),
        "products/bad/empty.jpg": (b"", "empty_image"),
    }


def test_bad_objects_are_recorded_failed_and_not_retried(catalogue: Catalogue) -> None:
    cat = catalogue
    bad = bad_objects()
    for key, (data, _) in bad.items():
        cat.services.objects.put(key, data)
    responses = cat.drain()
    assert all(r["batchItemFailures"] == [] for r in responses)
    assert receive(cat.stack.queue) == []  # the messages were consumed, not left for retry
    for key, (_, code) in bad.items():
        rec = record(cat, key)
        assert rec is not None and rec.status == "failed", key
        assert rec.reason.startswith(f"{code}: "), (key, rec.reason)
        assert not in_index(cat, key)
    assert cat.services.vectors.count() == SAMPLE_SIZE  # the good ones are untouched


def test_objects_over_the_size_limit_fail_without_download(catalogue: Catalogue) -> None:
    cat = catalogue
    settings = cat.services.settings.model_copy(update={"max_image_bytes": 1000})
    services = build_services(settings, encoder=cat.services.encoder)
    key = "products/bad/large.jpg"
    cat.services.objects.put(key, next(iter(cat.photos.values())) + b"\0" * 1000)
    assert [r["batchItemFailures"] for r in drain(cat.stack.queue, lambda e: handle(e, services))] == [[]]
    rec = record(cat, key)
    assert rec.status == "failed" and rec.reason.startswith("too_large: ")
    assert not in_index(cat, key)


def test_deleted_objects_leave_the_index(catalogue: Catalogue) -> None:
    cat = catalogue
    key = cat.keys[list(cat.keys)[1]]
    cat.services.objects.delete(key)
    assert [r["batchItemFailures"] for r in cat.drain()] == [[]]
    assert record(cat, key).status == "deleted"
    assert not in_index(cat, key)
    assert cat.services.vectors.count() == SAMPLE_SIZE - 1
    cat.upload(list(cat.keys)[1])  # put it back for the other tests
    cat.drain()
    assert in_index(cat, key)


def test_pinecone_outage_reports_the_batch_and_redelivery_recovers(
    catalogue: Catalogue, needledb_server
) -> None:
    cat = catalogue
    spare = list(cat.keys)[SAMPLE_SIZE : SAMPLE_SIZE + 4]
    for product_id in spare[:2]:
        cat.upload(product_id)
    first = cat.drain()  # the service is healthy for the first batch ...
    assert [r["batchItemFailures"] for r in first] == [[]]
    for product_id in spare[2:]:
        cat.upload(product_id)
    messages = receive(cat.stack.queue)
    assert len(messages) == 2
    needledb_server.stop()  # ... and goes down before the next one
    try:
        response = handle(sqs_event(messages), cat.services)
        failed = settle(cat.stack.queue, messages, response)
        assert failed == sorted(m["MessageId"] for m in messages)
        assert all(record(cat, cat.keys[p]) is None for p in spare[2:])
    finally:
        needledb_server.start()
    assert [r["batchItemFailures"] for r in cat.drain()] == [[]]  # redelivered
    for product_id in spare:
        assert record(cat, cat.keys[product_id]).status == "indexed"
        assert in_index(cat, cat.keys[product_id])


def test_out_of_order_events_end_in_the_latest_state(catalogue: Catalogue) -> None:
    """S3 sequencers (hex, varying length) order events per key; delivery order must not matter."""
    cat = catalogue
    photo = next(iter(cat.photos.values()))
    revived, gone = "products/seq/revived.jpg", "products/seq/gone.jpg"
    cat.services.objects.put(revived, photo)  # its history: put, delete, put again
    assert discard(cat.stack.queue) == 1  # the put's own event: moto's events carry no sequencer
    b = cat.stack.bucket
    deliveries = [
        [s3_notification(b, revived, "created", "0055AED6DCD90281E7")],  # the final put, first
        [
            s3_notification(b, revived, "removed", "0055AED6DCD90281E6"),
            s3_notification(b, gone, "removed", "A1"),
        ],
        [s3_notification(b, revived, "created", "55AED6DCD90281E5")],  # oldest, shorter string
        [s3_notification(b, gone, "created", "9F")],  # stale create of a deleted object
    ]
    for notifications in deliveries:
        for notification in notifications:
            send(cat.stack.queue, notification)
        assert [r["batchItemFailures"] for r in cat.drain()] == [[]]
    rec = record(cat, revived)
    assert rec.status == "indexed" and rec.sequencer == "0055AED6DCD90281E7"
    assert in_index(cat, revived)
    assert record(cat, gone).status == "deleted" and not in_index(cat, gone)


def test_stale_create_with_the_object_still_present_does_not_resurrect(catalogue: Catalogue) -> None:
    cat = catalogue
    key = "products/seq/late-create.jpg"
    cat.services.objects.put(key, next(iter(cat.photos.values())))
    discard(cat.stack.queue)
    b = cat.stack.bucket
    event = sqs_event(
        [
            {
                "MessageId": "m1",
                "ReceiptHandle": "r1",
                "Body": json.dumps(s3_notification(b, key, "removed", "0B")),
            },
            {
                "MessageId": "m2",
                "ReceiptHandle": "r2",
                "Body": json.dumps(s3_notification(b, key, "created", "0A")),
            },
        ]
    )
    assert handle(event, cat.services) == {"batchItemFailures": []}
    assert record(cat, key).status == "deleted" and not in_index(cat, key)


def test_malformed_messages_go_to_the_dlq_via_retries(catalogue: Catalogue) -> None:
    bodies = [
        "not json",
        "[1, 2]",
        '{"Records": [{"eventSource": "aws:sns"}]}',
        '{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}]}',
    ]
    event = sqs_event(
        [{"MessageId": f"junk{n}", "ReceiptHandle": "r", "Body": b} for n, b in enumerate(bodies)]
    )
    failures = handle(event, catalogue.services)["batchItemFailures"]
    assert failures == [{"itemIdentifier": f"junk{n}"} for n in range(len(bodies))]
    test_event = sqs_event([{"MessageId": "t", "ReceiptHandle": "r", "Body": '{"Event": "s3:TestEvent"}'}])
    assert handle(test_event, catalogue.services) == {"batchItemFailures": []}


def test_direct_s3_invocation_is_handled_too(catalogue: Catalogue) -> None:
    cat = catalogue
    key = "products/direct/one.jpg"
    cat.services.objects.put(key, next(iter(cat.photos.values())))
    discard(cat.stack.queue)
    assert handle(s3_notification(cat.stack.bucket, key, "created"), cat.services) == {
        "batchItemFailures": []
    }
    assert record(cat, key).status == "indexed"


def test_module_handler_builds_services_once_per_container(
    catalogue: Catalogue, tiny_model_dir, monkeypatch, restore_logging
) -> None:
    cat = catalogue
    for name, value in cat.stack.env(tiny_model_dir, S3_PREFIX=PREFIX, LOG_FORMAT="json").items():
        monkeypatch.setenv(name, value)
    ingest_lambda.container_services.cache_clear()
    try:
        key = "products/direct/two.jpg"
        cat.services.objects.put(key, next(iter(cat.photos.values())))
        for _ in range(2):
            messages = receive(cat.stack.queue)
            settle(cat.stack.queue, messages, ingest_lambda.handler(sqs_event(messages), None))
        assert ingest_lambda.container_services.cache_info().misses == 1
        assert record(cat, key).status == "indexed"
    finally:
        ingest_lambda.container_services.cache_clear()
