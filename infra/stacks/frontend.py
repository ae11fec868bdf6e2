"""The Streamlit front end: ECS Express Mode (default) or App Runner (``frontend_host`` context).

Why two hosts. The design names App Runner, but App Runner takes no new customers since
30 April 2026 (a fresh account cannot create the service), and its load balancer has never
forwarded WebSockets, which every Streamlit page needs (``/_stcore/stream``). ECS Express Mode,
AWS's replacement for App Runner, gives the same one-resource service (Fargate behind a managed
HTTPS Application Load Balancer, which does forward WebSockets). ``frontend_host=apprunner``
keeps the App Runner service for accounts that still have it.

Either way: the image comes from ``streamlit_app/`` as a CDK asset; the API key is injected from
Secrets Manager as ``FASHION_SEARCH_API_KEY`` by the platform, and Streamlit calls the API from
the server side, so the key never reaches a browser.
"""

from __future__ import annotations

from aws_cdk import Fn
from aws_cdk import aws_apprunner as apprunner
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk.aws_ecr_assets import DockerImageAsset
from constructs import Construct

from infra.stacks.assets import frontend_image
from infra.stacks.config import InfraConfig
from infra.stacks.credentials import Credentials
from infra.stacks.runtime import log_group

HEALTH_PATH = "/_stcore/health"  # Streamlit's own health endpoint
# The one AWS managed policy in the stack: ECS's own role for creating the load balancer, target
# group, certificate and scaling policies of an Express service (a service role, not a workload's).
EXPRESS_INFRASTRUCTURE_POLICY = "service-role/AmazonECSInfrastructureRoleforExpressGatewayServices"


class FrontEnd(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: InfraConfig,
        api_url: str,
        credentials: Credentials,
    ) -> None:
        super().__init__(scope, construct_id)
        self.config, self.api_url, self.credentials = config, api_url, credentials
        image = frontend_image(self, "Image", config)
        self.url = self.app_runner(image) if config.frontend_host == "apprunner" else self.ecs_express(image)

    def ecs_express(self, image: DockerImageAsset) -> str:
        """An ECS Express Mode service in the account's default VPC; returns its https origin."""
        config = self.config
        execution_role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description=f"{config.name_prefix}: starts the front end (image, logs, API key)",
        )
        image.repository.grant_pull(execution_role)
        logs = log_group(self, "Logs", config)
        logs.grant_write(execution_role)
        self.credentials.api_key.grant_read(execution_role)
        infrastructure_role = iam.Role(
            self,
            "InfrastructureRole",
            assumed_by=iam.ServicePrincipal("ecs.amazonaws.com"),
            description=f"{config.name_prefix}: ECS creates the front end's load balancer and scaling",
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(EXPRESS_INFRASTRUCTURE_POLICY)],
        )
        cluster = ecs.CfnCluster(self, "Cluster")
        service = ecs.CfnExpressGatewayService(
            self,
            "Service",
            cluster=cluster.ref,
            infrastructure_role_arn=infrastructure_role.role_arn,
            execution_role_arn=execution_role.role_arn,
            cpu=str(int(float(config.frontend_cpu.split()[0]) * 1024)),
            memory=str(int(float(config.frontend_memory.split()[0]) * 1024)),
            health_check_path=HEALTH_PATH,
            primary_container=ecs.CfnExpressGatewayService.ExpressGatewayContainerProperty(
                image=image.image_uri,
                container_port=config.frontend_port,
                environment=[
                    ecs.CfnExpressGatewayService.KeyValuePairProperty(
                        name="FASHION_SEARCH_API_URL", value=self.api_url
                    )
                ],
                secrets=[
                    ecs.CfnExpressGatewayService.SecretProperty(
                        name="FASHION_SEARCH_API_KEY", value_from=self.credentials.api_key.secret_arn
                    )
                ],
                aws_logs_configuration=ecs.CfnExpressGatewayService.ExpressGatewayServiceAwsLogsConfigurationProperty(
                    log_group=logs.log_group_name, log_stream_prefix="frontend"
                ),
            ),
            scaling_target=ecs.CfnExpressGatewayService.ExpressGatewayScalingTargetProperty(
                min_task_count=1, max_task_count=config.frontend_max_instances
            ),
        )
        # ECS validates both roles when it creates the service: their policies must be attached first.
        service.node.add_dependency(execution_role, infrastructure_role)
        # The endpoint may or may not carry its scheme; normalise to exactly one "https://".
        return "https://" + Fn.join("", Fn.split("https://", service.attr_endpoint))

    def app_runner(self, image: DockerImageAsset) -> str:
        """An App Runner service (L1: the L2 is still an alpha module); returns its https origin."""
        config = self.config
        access_role = iam.Role(
            self,
            "AccessRole",
            assumed_by=iam.ServicePrincipal("build.apprunner.amazonaws.com"),
            description=f"{config.name_prefix}: App Runner pulls the front-end image",
        )
        image.repository.grant_pull(access_role)
        access_role.add_to_policy(
            iam.PolicyStatement(actions=["ecr:DescribeImages"], resources=[image.repository.repository_arn])
        )
        instance_role = iam.Role(
            self,
            "InstanceRole",
            assumed_by=iam.ServicePrincipal("tasks.apprunner.amazonaws.com"),
            description=f"{config.name_prefix}: the running front end",
        )
        self.credentials.api_key.grant_read(instance_role)
        scaling = apprunner.CfnAutoScalingConfiguration(
            self, "Scaling", min_size=1, max_size=config.frontend_max_instances, max_concurrency=100
        )
        service = apprunner.CfnService(
            self,
            "Service",
            source_configuration=apprunner.CfnService.SourceConfigurationProperty(
                auto_deployments_enabled=False,
                authentication_configuration=apprunner.CfnService.AuthenticationConfigurationProperty(
                    access_role_arn=access_role.role_arn
                ),
                image_repository=apprunner.CfnService.ImageRepositoryProperty(
                    image_identifier=image.image_uri,
                    image_repository_type="ECR",
                    image_configuration=apprunner.CfnService.ImageConfigurationProperty(
                        port=str(config.frontend_port),
                        runtime_environment_variables=[
                            apprunner.CfnService.KeyValuePairProperty(
                                name="FASHION_SEARCH_API_URL", value=self.api_url
                            )
                        ],
                        runtime_environment_secrets=[
                            apprunner.CfnService.KeyValuePairProperty(
                                name="FASHION_SEARCH_API_KEY", value=self.credentials.api_key.secret_arn
                            )
                        ],
                    ),
                ),
            ),
            instance_configuration=apprunner.CfnService.InstanceConfigurationProperty(
                cpu=config.frontend_cpu,
                memory=config.frontend_memory,
                instance_role_arn=instance_role.role_arn,
            ),
            health_check_configuration=apprunner.CfnService.HealthCheckConfigurationProperty(
                protocol="HTTP", path=HEALTH_PATH
            ),
            auto_scaling_configuration_arn=scaling.attr_auto_scaling_configuration_arn,
        )
        # App Runner validates both roles on create: their policies must be attached first.
        service.node.add_dependency(access_role, instance_role)
        return f"https://{service.attr_service_url}"
