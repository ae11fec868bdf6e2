"""Stateful resources: the images bucket, the metadata table, the ingest queue and its DLQ.

The bucket's S3 -> SQS notifications are declared on the bucket itself (CloudFormation's
``NotificationConfiguration``) rather than through CDK's notifications custom resource, which
would add a Lambda whose role may call ``s3:PutBucketNotification`` on every bucket. S3 checks
that it may publish when the configuration is created, so the queue policy must exist first and
must not reference the bucket resource: the bucket therefore gets a deterministic name built from
the stage, account and region, and the policy's ``aws:SourceArn`` condition uses that name.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.stacks.config import InfraConfig
from infra.stacks.permissions import service_may

# Event types that change what is searchable (``:*`` covers Put/Post/Copy/multipart, and both
# permanent deletes and delete markers in a versioned bucket).
NOTIFIED_EVENTS = ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")


class ImageData(Construct):
    """Bucket, table and queues; the other constructs read their names and ARNs from here."""

    def __init__(self, scope: Construct, construct_id: str, *, config: InfraConfig) -> None:
        super().__init__(scope, construct_id)
        removal = RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY
        self.bucket_name = f"{config.name_prefix}-images-{Aws.ACCOUNT_ID}-{Aws.REGION}"
        self.bucket_arn = f"arn:{Aws.PARTITION}:s3:::{self.bucket_name}"

        self.dlq = sqs.Queue(
            self,
            "IngestDlq",
            retention_period=Duration.days(14),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        self.queue = sqs.Queue(
            self,
            "IngestQueue",
            visibility_timeout=Duration.seconds(config.ingest_visibility_timeout_s),
            retention_period=Duration.days(4),
            # SSE-SQS, not KMS: S3 cannot publish to a queue encrypted with the aws/sqs managed key.
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dlq, max_receive_count=config.max_receive_count),
        )
        send_policy = self.allow_bucket_to_send()

        self.bucket = s3.Bucket(
            self,
            "Images",
            bucket_name=self.bucket_name,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,  # ACLs disabled
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-noncurrent-versions",
                    noncurrent_version_expiration=Duration.days(config.noncurrent_version_days),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                ),
                s3.LifecycleRule(id="remove-expired-delete-markers", expired_object_delete_marker=True),
            ],
            removal_policy=removal,  # with retain_data false: empty the bucket first (docs/deploy.md)
        )
        cfn_bucket = self.bucket.node.default_child
        assert isinstance(cfn_bucket, s3.CfnBucket)
        cfn_bucket.notification_configuration = s3.CfnBucket.NotificationConfigurationProperty(
            queue_configurations=self.queue_notifications(config)
        )
        cfn_bucket.node.add_dependency(send_policy)

        self.table = dynamodb.Table(
            self,
            "Metadata",
            partition_key=dynamodb.Attribute(name="image_id", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            deletion_protection=config.retain_data,
            removal_policy=removal,
        )

    def objects_arn(self, prefix: str) -> str:
        """ARN pattern for the objects under ``prefix`` (all objects when it is empty)."""
        return f"{self.bucket_arn}/{prefix}*"

    def queue_notifications(self, config: InfraConfig) -> list[s3.CfnBucket.QueueConfigurationProperty]:
        """One rule per event type and suffix: an S3 rule holds a single prefix and a single suffix."""
        return [
            s3.CfnBucket.QueueConfigurationProperty(
                event=event,
                queue=self.queue.queue_arn,
                filter=s3.CfnBucket.NotificationFilterProperty(
                    s3_key=s3.CfnBucket.S3KeyFilterProperty(rules=key_filter(config.images_prefix, suffix))
                ),
            )
            for event in NOTIFIED_EVENTS
            for suffix in config.notification_suffixes
        ]

    def allow_bucket_to_send(self) -> sqs.CfnQueuePolicy:
        """Let S3 (this bucket, in this account) send to the queue; returns the policy resource."""
        self.queue.add_to_resource_policy(
            service_may(
                "AllowImagesBucketNotifications",
                "s3.amazonaws.com",
                "sqs:SendMessage",
                self.queue.queue_arn,
                self.bucket_arn,
            )
        )
        policy = self.queue.node.find_child("Policy").node.default_child
        assert isinstance(policy, sqs.CfnQueuePolicy)
        return policy


def key_filter(prefix: str, suffix: str) -> list[s3.CfnBucket.FilterRuleProperty]:
    rules = [s3.CfnBucket.FilterRuleProperty(name="suffix", value=suffix)]
    if prefix:
        rules.insert(0, s3.CfnBucket.FilterRuleProperty(name="prefix", value=prefix))
    return rules
