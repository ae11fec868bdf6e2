"""A URL feed imported into the AWS backend: photos land in S3 (moto server), records in DynamoDB,
vectors in Pinecone (needledb), and a re-run downloads nothing that is already indexed."""

from __future__ import annotations

from pathlib import Path

from fashion_search.encoder import Encoder
from fashion_search.records import image_id_for_key
from fashion_search.services import build_services
from fashion_search.url_import import import_urls, read_url_csv
from tests.plugins.aws_servers import MotoServer, NeedleDBServer, create_stack
from tests.plugins.image_cdn import ImageCdn


def test_a_url_feed_fills_s3_dynamodb_and_pinecone(
    moto_server: MotoServer,
    needledb_server: NeedleDBServer,
    encoder: Encoder,
    image_cdn: ImageCdn,
    kagl_dir: Path,
    tmp_path: Path,
) -> None:
    base, ids, server = image_cdn
    stack = create_stack(moto_server, needledb_server, encoder.dim)
    services = build_services(stack.settings(url_allow_private=True), encoder=encoder)
    feed = tmp_path / "feed.csv"
    lines = [f"{i},{base}/img/{i}.jpg,Men" for i in ids[:4]] + [f"gone,{base}/img/missing.jpg,Women"]
    feed.write_text("sku,url,gender\n" + "\n".join(lines) + "\n")

    summary = import_urls(services, read_url_csv(feed), workers=4)

    assert (summary.ingested, summary.failed) == (4, 1)
    key = f"{ids[0]}.jpg"
    photo = services.objects.get(key, max_bytes=10**6)
    assert photo == (kagl_dir / "images" / key).read_bytes()
    assert services.objects.head(key).metadata == {"gender": "Men"}
    record = services.metadata.get(image_id_for_key(key))
    assert record is not None and record.status == "indexed" and record.tags == {"gender": "Men"}
    assert services.searcher.by_image_bytes(photo, top_k=1)[0].key == key
    failed = services.metadata.get(image_id_for_key("gone.jpg"))
    assert failed is not None and failed.status == "failed"

    server.paths.clear()
    again = import_urls(services, read_url_csv(feed))
    assert (again.skipped, again.failed) == (4, 1) and server.paths == ["/img/missing.jpg"]
