"""The shared ingest path over local stores: idempotent, ordered by sequencers, restart-safe."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fashion_search.errors import InputError, NotFoundError
from fashion_search.ingest import IngestItem, prepare_item
from fashion_search.records import image_id_for_key
from fashion_search.services import Services


def kagl_item(kagl_dir: Path, styles: dict[str, dict[str, str]], pid: str, **kw: object) -> IngestItem:
    row = styles[pid]
    tags = {k: v for k, v in row.items() if k != "id" and v}
    return IngestItem(
        key=f"{pid}.jpg", data=(kagl_dir / "images" / f"{pid}.jpg").read_bytes(), tags=tags, **kw
    )


@pytest.fixture
def items(kagl_dir: Path, kagl_styles, kagl_sample_ids) -> list[IngestItem]:
    return [kagl_item(kagl_dir, kagl_styles, pid) for pid in kagl_sample_ids[:24]]


def test_ingest_indexes_records_and_vectors(services: Services, items: list[IngestItem]) -> None:
    outcomes = services.ingestor.ingest_batch(items)
    assert [o.status for o in outcomes] == ["indexed"] * len(items)
    assert services.vectors.count() == len(items)
    record = services.metadata.get(image_id_for_key(items[0].key))
    assert record is not None and record.status == "indexed"
    assert record.model_id == services.encoder.model_id
    assert (record.width, record.height, record.format) == (60, 80, "JPEG")
    assert record.tags["articleType"] == items[0].tags["articleType"]
    assert record.embedding is not None and record.embedding.shape == (services.encoder.dim,)
    stored = services.vectors.fetch([record.image_id])[record.image_id]
    np.testing.assert_allclose(stored.vector, record.embedding, atol=1e-6)
    assert stored.metadata["_sha256"] == record.sha256 and stored.metadata["_key"] == record.key


def test_ingest_is_idempotent(services: Services, items: list[IngestItem]) -> None:
    services.ingestor.ingest_batch(items)
    again = services.ingestor.ingest_batch(items)
    assert {o.status for o in again} == {"skipped"}
    assert services.vectors.count() == len(items)
    assert services.metadata.counts() == {"indexed": len(items), "failed": 0, "deleted": 0}


def test_new_bytes_under_the_same_key_replace_the_vector(services: Services, items: list[IngestItem]) -> None:
    first, other = items[0], items[1]
    services.ingestor.ingest(first)
    before = services.vectors.fetch([image_id_for_key(first.key)])
    outcome = services.ingestor.ingest(IngestItem(first.key, other.data, other.tags))
    assert outcome.status == "indexed"
    after = services.vectors.fetch([image_id_for_key(first.key)])
    assert not np.allclose(before[outcome.image_id].vector, after[outcome.image_id].vector)
    assert services.vectors.count() == 1


def test_a_plan_normalised_off_the_model_thread_embeds_identically(
    services: Services, items: list[IngestItem]
) -> None:
    """The folder import normalises in its worker threads (``plan(normalise=True)``); its vectors
    must be the ones the one-call path computes, batch boundaries included (a 24-item plan over
    batches of 10), and a corrupt item in the middle must keep the order."""
    spec, ingestor = services.encoder.manifest.image, services.ingestor
    corrupt = IngestItem("broken.jpg", items[3].data[:200])
    prepared = [
        prepare_item(i, spec, max_bytes=10**7, max_pixels=10**8) for i in [*items[:5], corrupt, *items[5:]]
    ]
    ingestor.settings = ingestor.settings.model_copy(update={"image_batch_size": 10})
    plain, normalised = ingestor.plan(prepared), ingestor.plan(prepared, normalise=True)
    assert plain.tower_input is None and normalised.tower_input is not None
    assert normalised.good == plain.good and 5 not in plain.good and len(plain.good) == 24
    np.testing.assert_array_equal(ingestor.embed(normalised), ingestor.embed(plain))
    outcomes = ingestor.commit(normalised, ingestor.embed(normalised))
    assert [o.status for o in outcomes] == ["indexed"] * 5 + ["failed"] + ["indexed"] * 19
    image_id = image_id_for_key(items[7].key)  # prepared[8], after the corrupt one
    alone = services.encoder.embed_tower_pixels(prepared[8].pixels[None])[0]  # type: ignore[index]
    np.testing.assert_allclose(services.vectors.fetch([image_id])[image_id].vector, alone, atol=1e-5)


def test_corrupt_object_is_recorded_failed_and_not_searchable(
    services: Services, items: list[IngestItem]
) -> None:
    services.ingestor.ingest(items[0])
    # The object at the same key is overwritten with garbage: it must stop matching searches.
    bad = IngestItem(items[0].key, items[0].data[:400], {})  # truncated JPEG
    outcomes = services.ingestor.ingest_batch([bad, items[1]])
    assert outcomes[0].status == "failed" and outcomes[0].reason.startswith("corrupt_image")
    assert outcomes[1].status == "indexed"  # one bad item does not spoil its batch
    record = services.metadata.get(outcomes[0].image_id)
    assert record.status == "failed" and record.reason.startswith("corrupt_image")
    assert outcomes[0].image_id not in services.vectors.fetch([outcomes[0].image_id])
    assert services.vectors.count() == 1
    # Re-submitting the same bad bytes does not retry the work.
    assert services.ingestor.ingest(bad).status == "skipped"


def test_delete_removes_from_search_and_marks_the_record(services: Services, items: list[IngestItem]) -> None:
    services.ingestor.ingest_batch(items[:5])
    gone = items[0]
    outcome = services.ingestor.delete(gone.key)
    assert outcome.status == "deleted"
    assert services.metadata.get(outcome.image_id).status == "deleted"
    hits = services.searcher.by_image_bytes(gone.data, top_k=10)
    assert outcome.image_id not in {h.image_id for h in hits}
    with pytest.raises(NotFoundError):
        services.searcher.by_image_id(outcome.image_id)


def test_out_of_order_events_end_in_the_right_state(services: Services, items: list[IngestItem]) -> None:
    item = items[0]
    ing = services.ingestor
    # Delete (sequencer 0B) is processed before the create (0A) it follows.
    assert ing.delete(item.key, sequencer="0B").status == "deleted"
    late_create = IngestItem(item.key, item.data, item.tags, sequencer="0A")
    assert ing.ingest(late_create).status == "stale"
    assert services.vectors.count() == 0
    # A newer create (sequencers grow in length too) wins; a late older delete cannot undo it.
    assert ing.ingest(IngestItem(item.key, item.data, item.tags, sequencer="0100")).status == "indexed"
    assert ing.delete(item.key, sequencer="0C").status == "stale"
    assert services.vectors.count() == 1
    # Redelivering the same event is harmless.
    assert ing.ingest(IngestItem(item.key, item.data, item.tags, sequencer="0100")).status == "skipped"


def test_same_bytes_with_newer_sequencer_updates_ordering(
    services: Services, items: list[IngestItem]
) -> None:
    item, ing = items[0], services.ingestor
    ing.ingest(IngestItem(item.key, item.data, item.tags, sequencer="10"))
    ing.ingest(IngestItem(item.key, item.data, item.tags, sequencer="30"))  # re-upload, same bytes
    assert ing.delete(item.key, sequencer="20").status == "stale"  # older than the re-upload
    assert services.vectors.count() == 1


def test_state_survives_a_restart(make_services: Callable[..., Services], items: list[IngestItem]) -> None:
    first = make_services()
    first.ingestor.ingest_batch(items)
    query = items[3].data
    expected = [(h.image_id, round(h.score, 5)) for h in first.searcher.by_image_bytes(query, top_k=5)]
    restarted = make_services()
    assert restarted.vectors.count() == len(items)
    assert [
        (h.image_id, round(h.score, 5)) for h in restarted.searcher.by_image_bytes(query, top_k=5)
    ] == expected
    assert all(o.status == "skipped" for o in restarted.ingestor.ingest_batch(items))


def test_self_retrieval(services: Services, kagl_dir: Path, kagl_styles, kagl_sample_ids) -> None:
    """Every ingested image, queried by its own bytes, comes back first with score > 0.99 (or a
    byte-identical twin does: KAGL has 653 groups of identical photos)."""
    items = [kagl_item(kagl_dir, kagl_styles, pid) for pid in kagl_sample_ids]
    services.ingestor.ingest_batch(items)
    by_sha = {}
    for item in items:
        by_sha.setdefault(services.metadata.get(image_id_for_key(item.key)).sha256, set()).add(
            image_id_for_key(item.key)
        )
    for item in items:
        top = services.searcher.by_image_bytes(item.data, top_k=1)[0]
        sha = services.metadata.get(image_id_for_key(item.key)).sha256
        assert top.image_id in by_sha[sha], item.key
        assert top.score > 0.99
        assert top.key == item.key or top.image_id != image_id_for_key(item.key)


def test_search_hits_carry_key_url_and_tags(services: Services, items: list[IngestItem]) -> None:
    services.ingestor.ingest_batch(items)
    hits = services.searcher.by_text("red shirt for men", top_k=5, hybrid=False)
    assert len(hits) == 5
    assert hits == sorted(hits, key=lambda h: -h.score)
    for hit in hits:
        assert hit.url.endswith(f"/images/{hit.image_id}/file")
        assert hit.key.endswith(".jpg") and "_key" not in hit.tags and hit.tags["gender"]


def test_filters_and_min_score(services: Services, items: list[IngestItem]) -> None:
    services.ingestor.ingest_batch(items)
    gender = items[0].tags["gender"]
    hits = services.searcher.by_text("shoes", top_k=50, filters={"gender": gender})
    assert hits and all(h.tags["gender"] == gender for h in hits)
    assert len(hits) == sum(1 for i in items if i.tags["gender"] == gender)
    either = services.searcher.by_text("shoes", top_k=50, filters={"gender": ["Men", "Women"]})
    assert {h.tags["gender"] for h in either} <= {"Men", "Women"}
    everything = services.searcher.by_text("shoes", top_k=50)
    cut = everything[len(everything) // 2].score
    assert all(h.score >= cut for h in services.searcher.by_text("shoes", top_k=50, min_score=cut))


def test_more_like_this_excludes_itself(services: Services, items: list[IngestItem]) -> None:
    services.ingestor.ingest_batch(items)
    source = image_id_for_key(items[2].key)
    hits = services.searcher.by_image_id(source, top_k=3)
    assert len(hits) == 3 and source not in {h.image_id for h in hits}


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda s: s.by_text("   "), "empty_text"),
        (lambda s: s.by_text("a" * 5000), "text_too_long"),
        (lambda s: s.by_text("shirt", top_k=0), "invalid_top_k"),
        (lambda s: s.by_text("shirt", top_k=101), "invalid_top_k"),
        (lambda s: s.by_text("shirt", filters={"gender": {"$ne": "Men"}}), "invalid_filters"),
        (lambda s: s.by_text("shirt", filters={"gender": []}), "invalid_filters"),
        (lambda s: s.by_text("shirt", filters={"_key": "x"}), "invalid_filters"),
        (lambda s: s.by_image_bytes(b"not an image"), "not_an_image"),
        (lambda s: s.by_image_id("nope"), "not_found"),
    ],
)
def test_bad_queries_raise_input_errors(services: Services, call, code: str) -> None:
    with pytest.raises(InputError) as info:
        call(services.searcher)
    assert info.value.code == code
