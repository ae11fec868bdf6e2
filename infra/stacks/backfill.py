"""The bulk backfill as an ECS task on GPU instances that exist only while a task runs.

Why ECS on EC2 rather than a SageMaker Processing job: a Processing job is not a standing
CloudFormation resource, so the stack could only print a long ``create-processing-job`` call; an
ECS task definition plus a capacity provider is declared here, tested, and started with one
``aws ecs run-task`` (stack output ``BackfillCommand``). The Auto Scaling group sits at zero
instances; ECS managed scaling starts one when a task is waiting and stops it after, and managed
termination protection keeps scale-in from killing an instance with a running task.

Network: a VPC with public subnets only and S3/DynamoDB gateway endpoints. No NAT gateway (about
$32 a month each) because the instances reach ECR and Pinecone through the internet gateway; the
security group admits no inbound traffic, and IMDSv2 is required.
"""

from __future__ import annotations

from aws_cdk import Aws, Stack
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.stacks.assets import core_image
from infra.stacks.config import InfraConfig
from infra.stacks.credentials import Credentials
from infra.stacks.data import ImageData
from infra.stacks.permissions import CHECKPOINT_ACCESS, CHECKPOINT_PREFIX, TABLE_GET, TABLE_SCAN, TABLE_WRITE
from infra.stacks.runtime import grant_workload_access, log_group, runtime_environment

CONTAINER = "backfill"
ENTRY_POINT = ["python", "-m", "fashion_search.backfill"]
AGENT_LOG_ACTIONS = {"logs:CreateLogStream", "logs:PutLogEvents"}


class Backfill(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: InfraConfig,
        data: ImageData,
        credentials: Credentials,
    ) -> None:
        super().__init__(scope, construct_id)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr("10.42.0.0/16"),
            max_azs=2,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24)
            ],
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
                "DynamoDB": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.DYNAMODB),
            },
        )
        self.cluster = ecs.Cluster(self, "Cluster", vpc=self.vpc)
        self.capacity_provider = self.gpu_capacity(config)
        self.cluster.add_asg_capacity_provider(self.capacity_provider)
        self.logs = log_group(self, "Logs", config)
        self.narrow_agent_log_permissions()
        self.task_definition = self.task(config, data, credentials)

    def gpu_capacity(self, config: InfraConfig) -> ecs.AsgCapacityProvider:
        security_group = ec2.SecurityGroup(
            self,
            "InstanceSecurityGroup",
            vpc=self.vpc,
            description=f"{config.name_prefix} backfill instances: no inbound traffic",
            allow_all_outbound=True,
        )
        self.instance_role = iam.Role(
            self,
            "InstanceRole",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description=f"{config.name_prefix}: ECS agent on backfill instances",
        )
        hardware = ecs.AmiHardwareType.GPU if config.backfill_gpus else ecs.AmiHardwareType.STANDARD
        launch_template = ec2.LaunchTemplate(
            self,
            "LaunchTemplate",
            instance_type=ec2.InstanceType(config.backfill_instance_type),
            # Resolved from the public SSM parameter at deploy time: no lookup when synthesising.
            machine_image=ecs.EcsOptimizedImage.amazon_linux2023(hardware),
            user_data=ec2.UserData.for_linux(),
            role=self.instance_role,
            security_group=security_group,
            require_imdsv2=True,
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/xvda",
                    volume=ec2.BlockDeviceVolume.ebs(
                        config.backfill_volume_gb, volume_type=ec2.EbsDeviceVolumeType.GP3, encrypted=True
                    ),
                )
            ],
        )
        group = autoscaling.AutoScalingGroup(
            self,
            "Instances",
            vpc=self.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            launch_template=launch_template,
            min_capacity=0,
            max_capacity=config.backfill_max_instances,
        )
        return ecs.AsgCapacityProvider(
            self,
            "CapacityProvider",
            auto_scaling_group=group,
            enable_managed_scaling=True,
            enable_managed_termination_protection=True,
            target_capacity_percent=100,
        )

    def narrow_agent_log_permissions(self) -> None:
        """Scope the ECS agent's log permissions to the backfill log group.

        ``add_asg_capacity_provider`` gives the instance role ``logs:CreateLogStream`` and
        ``logs:PutLogEvents`` on every log group (beside ``ecs:DiscoverPollEndpoint`` and
        ``ecr:GetAuthorizationToken``, which have no resource-level permissions). The only logs
        these instances ship are the task's, so that statement keeps its two ECS/ECR actions and
        the log actions get a statement of their own on the one group.
        """
        policy = self.instance_role.node.find_child("DefaultPolicy")
        assert isinstance(policy, iam.Policy)
        statements = Stack.of(self).resolve(policy.document)["Statement"]
        for index, statement in enumerate(statements):
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            if statement.get("Resource") == "*" and AGENT_LOG_ACTIONS & set(actions):
                remaining = [a for a in actions if a not in AGENT_LOG_ACTIONS]
                cfn_policy = policy.node.default_child
                assert isinstance(cfn_policy, iam.CfnPolicy)
                cfn_policy.add_property_override(f"PolicyDocument.Statement.{index}.Action", remaining)
        self.logs.grant_write(self.instance_role)

    def task(self, config: InfraConfig, data: ImageData, credentials: Credentials) -> ecs.Ec2TaskDefinition:
        task_definition = ecs.Ec2TaskDefinition(
            self, "Task", family=f"{config.name_prefix}-backfill", network_mode=ecs.NetworkMode.BRIDGE
        )
        image = core_image(self, "Image", config, config.backfill_dockerfile)
        environment = runtime_environment(config, data, credentials)
        task_definition.add_container(
            CONTAINER,
            image=ecs.ContainerImage.from_docker_image_asset(image),
            entry_point=ENTRY_POINT,
            command=self.default_command(config, data),
            environment=environment,
            gpu_count=config.backfill_gpus or None,
            memory_reservation_mib=config.backfill_memory_mb,
            logging=ecs.LogDriver.aws_logs(stream_prefix=CONTAINER, log_group=self.logs),
        )
        role = task_definition.task_role
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["s3:ListBucket"], resources=[data.bucket.bucket_arn])
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=list(CHECKPOINT_ACCESS), resources=[data.objects_arn(CHECKPOINT_PREFIX)]
            )
        )
        grant_workload_access(
            role,
            config=config,
            data=data,
            credentials=credentials,
            table_actions=[*TABLE_GET, *TABLE_SCAN, *TABLE_WRITE],
        )
        return task_definition

    @staticmethod
    def default_command(config: InfraConfig, data: ImageData) -> list[str]:
        command = ["--bucket", data.bucket.bucket_name, "--batch-size", str(config.backfill_batch_size)]
        if config.images_prefix:
            command[2:2] = ["--prefix", config.images_prefix]
        return command

    def run_task_command(self) -> str:
        """The one command that indexes the whole bucket (``--overrides`` adds --shard / --reembed)."""
        return " ".join(
            [
                "aws ecs run-task",
                f"--region {Aws.REGION}",
                f"--cluster {self.cluster.cluster_name}",
                f"--task-definition {self.task_definition.family}",
                "--capacity-provider-strategy",
                f"capacityProvider={self.capacity_provider.capacity_provider_name}",
                "--count 1",
            ]
        )

    def shard_overrides(self, config: InfraConfig, data: ImageData) -> str:
        """``--overrides`` JSON for shard ``I/N`` (placeholders replaced by docs/deploy.md's loop)."""
        command = [*self.default_command(config, data), "--shard", "I/N"]
        return Stack.of(self).to_json_string(
            {"containerOverrides": [{"name": CONTAINER, "command": command}]}
        )
