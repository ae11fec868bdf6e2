"""The search API: the FastAPI app on Lambda (Mangum) behind an API Gateway REST API.

REST rather than HTTP API because REST has API keys and usage plans built in: the front end's key
is checked and throttled (rate, burst, daily quota) by API Gateway before a Lambda runs, with no
authoriser function to write, pay for and keep warm. The app checks the same key again (defence in
depth, and the same behaviour as local mode).

At the edge every route needs the key, ``/health`` included (only CORS preflights do not): the
app's ``/health`` counts records with a full table scan, so a public one would let anyone spend
about $0.004 of DynamoDB reads per request at 100k images. Nothing outside needs it here (the
front end's platform health-checks the Streamlit container, not the API).
"""

from __future__ import annotations

from aws_cdk import Aws, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk.aws_ecr_assets import DockerImageAsset
from constructs import Construct

from infra.stacks.config import InfraConfig
from infra.stacks.credentials import Credentials
from infra.stacks.data import ImageData
from infra.stacks.permissions import TABLE_GET, TABLE_SCAN
from infra.stacks.runtime import container_function

HANDLER = "fashion_search.handlers.api_lambda.handler"
STAGE_NAME = "v1"
# Uploads (multipart) and raw images reach the function base64-encoded instead of mangled as text.
BINARY_MEDIA_TYPES = ["multipart/form-data", "image/*", "application/octet-stream"]


class SearchApi(Construct):
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
            memory_mb=config.api_memory_mb,
            timeout_s=config.api_timeout_s,
            table_actions=[*TABLE_GET, *TABLE_SCAN],
            description="search API (FastAPI via Mangum)",
        )
        self.function.add_environment("FASHION_SEARCH_API_KEY_SECRET_ARN", credentials.api_key.secret_arn)
        credentials.api_key.grant_read(self.function)

        self.rest_api = apigw.RestApi(
            self,
            "RestApi",
            rest_api_name=f"{config.name_prefix}-api",
            description="Fashion image search",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            binary_media_types=BINARY_MEDIA_TYPES,
            api_key_source_type=apigw.ApiKeySourceType.HEADER,
            cloud_watch_role=False,  # an account-wide singleton; this stack keeps no access logs
            deploy_options=apigw.StageOptions(
                stage_name=STAGE_NAME,
                throttling_rate_limit=config.api_rate_limit,
                throttling_burst_limit=config.api_burst_limit,
            ),
        )
        self.rest_api.node.try_remove_child("Endpoint")  # the stack's ApiUrl output replaces it
        integration = apigw.LambdaIntegration(self.function, allow_test_invoke=False)
        self.proxy = self.rest_api.root.add_resource("{proxy+}")
        self.proxy.add_method("ANY", integration, api_key_required=True)

        self.api_key = apigw.ApiKey(
            self,
            "FrontEndKey",
            description=f"{config.name_prefix}: the front end's key (value from Secrets Manager)",
            enabled=True,
            # A {{resolve:secretsmanager:...}} reference: CloudFormation reads it at deploy time.
            value=credentials.api_key.secret_value.unsafe_unwrap(),
        )
        plan = self.rest_api.add_usage_plan(
            "UsagePlan",
            name=f"{config.name_prefix}-frontend",
            throttle=apigw.ThrottleSettings(
                rate_limit=config.api_rate_limit, burst_limit=config.api_burst_limit
            ),
            quota=apigw.QuotaSettings(limit=config.api_quota_per_day, period=apigw.Period.DAY),
            api_stages=[apigw.UsagePlanPerApiStage(api=self.rest_api, stage=self.rest_api.deployment_stage)],
        )
        plan.add_api_key(self.api_key)

    def allow_origins(self, origins: list[str]) -> None:
        """CORS for browser clients at ``origins``: preflights at the edge, headers from the app.

        Called once the front end exists, since its URL is one of the origins.
        """
        self.function.add_environment("FASHION_SEARCH_CORS_ORIGINS", Stack.of(self).to_json_string(origins))
        self.proxy.add_cors_preflight(
            allow_origins=origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Content-Type", "x-api-key"],
        )

    @property
    def base_url(self) -> str:
        """The stage URL built from the RestApi id alone, without a trailing slash.

        Unlike ``rest_api.url`` it does not reference the stage (which depends on every method and
        so on the function): the front end can take it while the function takes the front end's URL.
        """
        return f"https://{self.rest_api.rest_api_id}.execute-api.{Aws.REGION}.{Aws.URL_SUFFIX}/{STAGE_NAME}"
