"""The whole deployment as one stack: data, secrets, ingest, API, front end, backfill, alarms.

One stack rather than one per module: every piece references the bucket, table, queue or
secrets, and cross-stack exports would freeze those references (an export in use cannot change)
for no gain in a single-service deployment. Stateful resources are retained on delete unless
``retain_data`` is false. Nothing here looks anything up in an AWS account, so CI synthesises it
without credentials.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import Annotations, CfnOutput, Stack
from constructs import Construct

from infra.stacks.api import SearchApi
from infra.stacks.assets import REPO_ROOT, core_image
from infra.stacks.backfill import Backfill
from infra.stacks.config import InfraConfig
from infra.stacks.credentials import Credentials
from infra.stacks.data import ImageData
from infra.stacks.frontend import FrontEnd
from infra.stacks.ingest import Ingest
from infra.stacks.monitoring import Monitoring


class FashionSearchStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: InfraConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.warn_about_gaps(config)
        data = ImageData(self, "Data", config=config)
        credentials = Credentials(self, "Credentials", config=config)
        # One image for both functions; each runs its own handler (the image's CMD is overridden).
        lambda_image = core_image(self, "LambdaImage", config, config.lambda_dockerfile)
        ingest = Ingest(self, "Ingest", config=config, image=lambda_image, data=data, credentials=credentials)
        api = SearchApi(self, "Api", config=config, image=lambda_image, data=data, credentials=credentials)
        frontend = FrontEnd(self, "FrontEnd", config=config, api_url=api.base_url, credentials=credentials)
        api.allow_origins([frontend.url, *config.cors_origins])
        backfill = Backfill(self, "Backfill", config=config, data=data, credentials=credentials)
        Monitoring(
            self,
            "Monitoring",
            config=config,
            queue=data.queue,
            dlq=data.dlq,
            functions={"Ingest": ingest.function, "Api": api.function},
            rest_api=api.rest_api,
        )

        outputs = {
            "ApiUrl": (api.rest_api.url, "Search API base URL (send x-api-key)"),
            "FrontEndUrl": (frontend.url, "The Streamlit front end"),
            "BucketName": (data.bucket.bucket_name, "Drop images here (prefix/suffix filters apply)"),
            "TableName": (data.table.table_name, "Image records"),
            "DeadLetterQueueUrl": (data.dlq.queue_url, "Ingest messages that failed every retry"),
            "ApiKeySecretArn": (credentials.api_key.secret_arn, "The API key (get-secret-value)"),
            "PineconeApiKeySecretArn": (credentials.pinecone_api_key.secret_arn, "Put the Pinecone key here"),
            "BackfillCommand": (backfill.run_task_command(), "Index the whole bucket on a GPU instance"),
            "BackfillShardOverrides": (
                backfill.shard_overrides(config, data),
                "--overrides for shard I/N (see docs/deploy.md)",
            ),
        }
        for name, (value, description) in outputs.items():
            CfnOutput(self, name, value=value, description=description)

    def warn_about_gaps(self, config: InfraConfig) -> None:
        """Settings a deployment needs but a CI synth does not: warn rather than fail."""
        if not config.pinecone_index_host:
            Annotations.of(self).add_warning_v2(
                "fashion-search:pinecone-host",
                "pinecone_index_host is empty: pass -c pinecone_index_host=https://... when deploying",
            )
        if not (Path(REPO_ROOT) / config.model_dir / "model.json").is_file():
            Annotations.of(self).add_warning_v2(
                "fashion-search:model-dir",
                f"{config.model_dir}/model.json is missing: export the model before building the images",
            )
