"""The ingest Lambda: S3 event notifications arrive through SQS and are embedded in batches.

Sizing (cdk.json, docs/deploy.md): the in-domain model's image tower embeds ~1,100 images/s at
batch 64 on two cores, so a batch of 20 costs tens of milliseconds of inference; the time goes to
S3 downloads, decoding and the DynamoDB / Pinecone writes. 2,048 MB buys just over one vCPU and
room to decode a few large photos at once. The 90 s timeout leaves 4x headroom over the worst
batch (20 images at the 20 MB size limit) and drives the queue's visibility timeout (6 x timeout +
batching window). ``max_concurrency`` caps parallel batches, and therefore Pinecone's write rate.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk.aws_ecr_assets import DockerImageAsset
from constructs import Construct

from infra.stacks.config import InfraConfig
from infra.stacks.credentials import Credentials
from infra.stacks.data import ImageData
from infra.stacks.permissions import TABLE_GET, TABLE_WRITE
from infra.stacks.runtime import container_function

HANDLER = "fashion_search.handlers.ingest_lambda.handler"


class Ingest(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: InfraConfig,
        image: DockerImageAsset,
        data: ImageData,
        credentials: Credentials,
    ) -> None:
        super().__init__(scope, construct_id)
        self.function = container_function(
            self,
            "Function",
            config=config,
            data=data,
            credentials=credentials,
            image=image,
            handler=HANDLER,
            memory_mb=config.ingest_memory_mb,
            timeout_s=config.ingest_timeout_s,
            table_actions=[*TABLE_GET, *TABLE_WRITE],
            description="embeds images from S3 event notifications",
        )
        # Grants the role ReceiveMessage/DeleteMessage/ChangeMessageVisibility on this queue only.
        self.function.add_event_source(
            event_sources.SqsEventSource(
                data.queue,
                batch_size=config.ingest_batch_size,
                max_batching_window=Duration.seconds(config.ingest_batching_window_s),
                report_batch_item_failures=True,
                max_concurrency=config.ingest_max_concurrency,
            )
        )
