"""Alarms that mean "a person should look": work stuck or lost, functions failing or throttled.

Transient ingest failures are reported per message (``batchItemFailures``) and retried by SQS, so
they are not Lambda errors; a Lambda error means a crash or a timeout. Every alarm notifies one SNS
topic (subscribe an address with the ``alarm_email`` context key).
"""

from __future__ import annotations

from aws_cdk import Aws, Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.stacks.config import InfraConfig
from infra.stacks.permissions import service_may

PERIOD = Duration.minutes(5)
# Messages older than this mean ingest is stuck or far behind (the queue keeps them 4 days).
MAX_QUEUE_AGE_S = 3600
# A few 5xx (a cold start past the integration timeout) are noise; this many in 5 minutes is not.
API_5XX_PER_PERIOD = 5


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: InfraConfig,
        queue: sqs.IQueue,
        dlq: sqs.IQueue,
        functions: dict[str, lambda_.IFunction],
        rest_api: apigw.RestApi,
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(self, "Alarms", display_name=f"{config.name_prefix} alarms", enforce_ssl=True)
        # enforce_ssl replaces the topic's default policy: CloudWatch (this account's alarms) needs a grant.
        self.topic.add_to_resource_policy(
            service_may(
                "AllowThisAccountsAlarms",
                "cloudwatch.amazonaws.com",
                "sns:Publish",
                self.topic.topic_arn,
                f"arn:{Aws.PARTITION}:cloudwatch:{Aws.REGION}:{Aws.ACCOUNT_ID}:alarm:*",
            )
        )
        if config.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
        self.alarm(
            "DlqNotEmpty",
            dlq.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum"),
            threshold=1,
            description="Ingest messages failed max_receive_count times and wait in the DLQ.",
        )
        self.alarm(
            "QueueBacklogOld",
            queue.metric_approximate_age_of_oldest_message(period=PERIOD, statistic="Maximum"),
            threshold=MAX_QUEUE_AGE_S,
            description="The oldest ingest message has waited over an hour: ingest is stuck or starved.",
        )
        self.alarm(
            "Api5xx",
            rest_api.metric_server_error(period=PERIOD, statistic="Sum"),
            threshold=API_5XX_PER_PERIOD,
            description="The search API answered 5xx repeatedly (the app maps bad input to 4xx).",
        )
        for name, function in functions.items():
            self.alarm(
                f"{name}Errors",
                function.metric_errors(period=PERIOD, statistic="Sum"),
                threshold=1,
                description=f"The {name} function crashed or timed out.",
            )
            self.alarm(
                f"{name}Throttles",
                function.metric_throttles(period=PERIOD, statistic="Sum"),
                threshold=1,
                description=f"The {name} function was throttled (account or reserved concurrency).",
            )

    def alarm(
        self, construct_id: str, metric: cloudwatch.IMetric, *, threshold: float, description: str
    ) -> None:
        alarm = cloudwatch.Alarm(
            self,
            construct_id,
            metric=metric,
            threshold=threshold,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=description,
        )
        alarm.add_alarm_action(actions.SnsAction(self.topic))
