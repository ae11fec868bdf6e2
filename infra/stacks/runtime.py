"""What every workload shares: its ``FASHION_SEARCH_*`` environment, log groups, Lambda roles.

Settings reach the code only as environment variables read by ``fashion_search.config.Settings``;
this module is the one place that maps the stack's resources onto those names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk.aws_ecr_assets import DockerImageAsset
from constructs import Construct

from infra.stacks.config import InfraConfig
from infra.stacks.credentials import Credentials
from infra.stacks.data import ImageData


def runtime_environment(config: InfraConfig, data: ImageData, credentials: Credentials) -> dict[str, str]:
    """Settings for the AWS backend; empty values are left out so Settings' defaults apply."""
    env = {
        "FASHION_SEARCH_BACKEND": "aws",
        "FASHION_SEARCH_AWS_REGION": Aws.REGION,
        "FASHION_SEARCH_S3_BUCKET": data.bucket.bucket_name,
        "FASHION_SEARCH_S3_PREFIX": config.images_prefix,
        "FASHION_SEARCH_S3_SUFFIXES": json.dumps(list(config.runtime_suffixes)),
        "FASHION_SEARCH_DYNAMODB_TABLE": data.table.table_name,
        "FASHION_SEARCH_PINECONE_INDEX_HOST": config.pinecone_index_host,
        "FASHION_SEARCH_PINECONE_NAMESPACE": config.pinecone_namespace,
        "FASHION_SEARCH_PINECONE_API_KEY_SECRET_ARN": credentials.pinecone_api_key.secret_arn,
        "FASHION_SEARCH_LOG_FORMAT": "json",
    }
    return {name: value for name, value in env.items() if value}


def grant_workload_access(
    grantee: iam.IGrantable,
    *,
    config: InfraConfig,
    data: ImageData,
    credentials: Credentials,
    table_actions: Sequence[str],
) -> None:
    """What every workload of the core image needs: read the images (to embed them, or to sign
    result URLs with its own credentials), ``table_actions`` on the table, the Pinecone key."""
    iam.Grant.add_to_principal(
        grantee=grantee, actions=["s3:GetObject"], resource_arns=[data.objects_arn(config.images_prefix)]
    )
    iam.Grant.add_to_principal(
        grantee=grantee, actions=list(table_actions), resource_arns=[data.table.table_arn]
    )
    credentials.pinecone_api_key.grant_read(grantee)


def log_group(scope: Construct, construct_id: str, config: InfraConfig) -> logs.LogGroup:
    """A log group with the configured retention, deleted with the stack."""
    group = logs.LogGroup(scope, construct_id, removal_policy=RemovalPolicy.DESTROY)
    cfn_group = group.node.default_child
    assert isinstance(cfn_group, logs.CfnLogGroup)
    cfn_group.retention_in_days = config.log_retention_days  # RetentionDays has no int constructor
    return group


def container_function(
    scope: Construct,
    construct_id: str,
    *,
    config: InfraConfig,
    data: ImageData,
    credentials: Credentials,
    image: DockerImageAsset,
    handler: str,
    memory_mb: int,
    timeout_s: int,
    table_actions: Sequence[str],
    description: str,
) -> lambda_.DockerImageFunction:
    """A function running ``handler`` from the shared core image, with the AWS backend's settings.

    Its role starts empty (no AWSLambdaBasicExecutionRole, whose log permissions cover every log
    group): it may write to its own log group, plus ``grant_workload_access``; callers add the rest.
    """
    logs_group = log_group(scope, f"{construct_id}Logs", config)
    role = iam.Role(
        scope,
        f"{construct_id}Role",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=f"{config.name_prefix}: {description}",
    )
    logs_group.grant_write(role)
    function = lambda_.DockerImageFunction(
        scope,
        construct_id,
        code=lambda_.DockerImageCode.from_ecr(image.repository, tag_or_digest=image.image_tag, cmd=[handler]),
        architecture=lambda_.Architecture.X86_64,
        memory_size=memory_mb,
        timeout=Duration.seconds(timeout_s),
        environment=runtime_environment(config, data, credentials),
        role=role,
        log_group=logs_group,
        description=f"{config.name_prefix}: {description}",
    )
    grant_workload_access(
        function, config=config, data=data, credentials=credentials, table_actions=table_actions
    )
    return function
