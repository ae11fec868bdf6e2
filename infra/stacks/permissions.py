"""IAM building blocks: action sets named for what the code does, and service grants.

The action sets mirror the boto3 calls in ``fashion_search/stores/``; ``tests/infra`` re-derives
the calls from that code and fails when one is missing here.
"""

from __future__ import annotations

from aws_cdk import Aws
from aws_cdk import aws_iam as iam

# DynamoDbMetadataStore: get / get_many.
TABLE_GET = ("dynamodb:GetItem", "dynamodb:BatchGetItem")
# DynamoDbMetadataStore: iter_records / counts (the API's /facets and /health).
TABLE_SCAN = ("dynamodb:Scan",)
# DynamoDbMetadataStore: put (conditional on the S3 sequencer) / put_many.
TABLE_WRITE = ("dynamodb:PutItem", "dynamodb:BatchWriteItem")
# The backfill keeps one checkpoint object per shard under this prefix of the images bucket
# (fashion_search.backfill_checkpoint.CHECKPOINT_PREFIX): it reads, writes and deletes them.
CHECKPOINT_PREFIX = "_backfill/"
CHECKPOINT_ACCESS = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject")


def service_may(sid: str, service: str, action: str, resource: str, source_arn: str) -> iam.PolicyStatement:
    """A resource-policy statement letting an AWS service act on ``resource`` only on behalf of
    ``source_arn`` in this account (the confused-deputy guard)."""
    return iam.PolicyStatement(
        sid=sid,
        principals=[iam.ServicePrincipal(service)],
        actions=[action],
        resources=[resource],
        conditions={
            "ArnLike": {"aws:SourceArn": source_arn},
            "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
        },
    )
