"""An uploaded catalogue sample, ingested through the Lambda handler (tests and the load benchmark)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fashion_search.encoder import Encoder
from fashion_search.handlers.ingest_lambda import handle
from fashion_search.services import Services, build_services
from tests.aws.lambda_events import drain
from tests.plugins.aws_servers import AwsStack, MotoServer, NeedleDBServer, create_stack

SAMPLE_SIZE = 30
PREFIX = "products/"


def product_key(product_id: str, row: dict[str, str]) -> str:
    # Spaces, '+' and non-ASCII exercise the URL-decoding of keys in S3 events.
    return f"{PREFIX}{row['articleType']}/{product_id} {row['baseColour']}+ë.jpg"


@dataclass
class Catalogue:
    stack: AwsStack
    services: Services
    keys: dict[str, str]  # product id -> object key
    photos: dict[str, bytes]  # product id -> file bytes
    rows: dict[str, dict[str, str]]
    delivered: list[dict[str, Any]] = field(default_factory=list)  # every SQS event handled
    responses: list[dict[str, Any]] = field(default_factory=list)

    def handler(self, event: dict[str, Any]) -> dict[str, Any]:
        self.delivered.append(event)
        return handle(event, self.services)

    def drain(self) -> list[dict[str, Any]]:
        responses = drain(self.stack.queue, self.handler)
        self.responses.extend(responses)
        return responses

    def upload(self, product_id: str) -> str:
        row = self.rows[product_id]
        tags = {k: v for k, v in row.items() if k != "id" and v}
        self.services.objects.put(self.keys[product_id], self.photos[product_id], tags)
        return self.keys[product_id]


def build_catalogue(
    moto: MotoServer,
    needle: NeedleDBServer,
    encoder: Encoder,
    kagl_dir: Path,
    styles: dict[str, dict[str, str]],
    ids: list[str],
    **settings: Any,
) -> Catalogue:
    stack = create_stack(moto, needle, encoder.dim)
    services = build_services(
        stack.settings(s3_prefix=PREFIX, presign_ttl_s=300, **settings), encoder=encoder
    )
    return Catalogue(
        stack=stack,
        services=services,
        keys={i: product_key(i, styles[i]) for i in ids},
        photos={i: (kagl_dir / "images" / f"{i}.jpg").read_bytes() for i in ids},
        rows={i: styles[i] for i in ids},
    )
