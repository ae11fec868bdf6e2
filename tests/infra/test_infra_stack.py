"""The synthesised stack: every resource of issue 5 and its security and sizing properties."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match

from fashion_search.config import Settings
from tests.infra.conftest import DEPLOY_CONTEXT, Synth
from tests.infra.template_walk import literals, refs

REPO_SUFFIXES = Settings.model_fields["s3_suffixes"].default


def env_of(resource: dict[str, Any]) -> dict[str, Any]:
    return resource["Properties"]["Environment"]["Variables"]


def function(synth: Synth, handler_module: str) -> tuple[str, dict[str, Any]]:
    return synth.one(
        "AWS::Lambda::Function",
        lambda _, r: handler_module in str(r["Properties"].get("ImageConfig", {}).get("Command")),
    )


@pytest.fixture(scope="module")
def queue(synth: Synth) -> tuple[str, dict[str, Any]]:
    return synth.one("AWS::SQS::Queue", lambda _, r: "RedrivePolicy" in r["Properties"])


@pytest.fixture(scope="module")
def dlq(synth: Synth) -> tuple[str, dict[str, Any]]:
    return synth.one("AWS::SQS::Queue", lambda _, r: "RedrivePolicy" not in r["Properties"])


# --- data ---------------------------------------------------------------------------------------


def test_bucket_is_private_encrypted_versioned_and_expires_old_versions(synth: Synth) -> None:
    _, bucket = synth.one("AWS::S3::Bucket")
    props = bucket["Properties"]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}  # no ACLs
    assert "AccessControl" not in props
    sse = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert sse["SSEAlgorithm"] in {"AES256", "aws:kms"}
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = props["LifecycleConfiguration"]["Rules"]
    assert any(r.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays") == 30 for r in rules)
    assert bucket["DeletionPolicy"] == "Retain"


def test_bucket_policy_denies_every_request_without_tls(synth: Synth) -> None:
    bucket_id = synth.one("AWS::S3::Bucket")[0]
    _, policy = synth.one("AWS::S3::BucketPolicy")
    assert policy["Properties"]["Bucket"] == {"Ref": bucket_id}
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    tls = [s for s in statements if s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}]
    assert len(tls) == 1 and tls[0]["Effect"] == "Deny" and tls[0]["Action"] == "s3:*"
    assert {json.dumps(r, sort_keys=True) for r in tls[0]["Resource"]} >= {
        json.dumps({"Fn::GetAtt": [bucket_id, "Arn"]}, sort_keys=True)
    }
    assert all(s["Effect"] == "Deny" for s in statements), "the bucket policy grants nothing"


def test_created_and_removed_images_notify_the_ingest_queue(synth: Synth, queue: tuple[str, Any]) -> None:
    queue_id, _ = queue
    _, bucket = synth.one("AWS::S3::Bucket")
    configs = bucket["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    expected_suffixes = {v for s in REPO_SUFFIXES for v in (s, s.upper())}
    for event in ("s3:ObjectCreated:*", "s3:ObjectRemoved:*"):
        rules = [c["Filter"]["S3Key"]["Rules"] for c in configs if c["Event"] == event]
        assert {r[0]["Value"] for r in rules if r[0]["Name"] == "suffix"} == expected_suffixes
        assert all(len(r) == 1 for r in rules), "no prefix filter with the default empty prefix"
    assert all(c["Queue"] == {"Fn::GetAtt": [queue_id, "Arn"]} for c in configs)
    # S3 checks its permission when the configuration is created: the queue policy must come first.
    policy_id, policy = synth.one(
        "AWS::SQS::QueuePolicy", lambda _, r: r["Properties"]["Queues"] == [{"Ref": queue_id}]
    )
    assert policy_id in bucket["DependsOn"]
    allow = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert len(allow) == 1
    assert (
        allow[0]["Principal"] == {"Service": "s3.amazonaws.com"} and allow[0]["Action"] == "sqs:SendMessage"
    )
    condition = allow[0]["Condition"]
    # Only this bucket (by its deterministic name) in this account.
    assert literals(condition["ArnLike"]["aws:SourceArn"]) == "arn::s3:::" + literals(
        bucket["Properties"]["BucketName"]
    )
    assert condition["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}


def test_table_is_on_demand_with_point_in_time_recovery(synth: Synth) -> None:
    synth.template.has_resource(
        "AWS::DynamoDB::Table",
        {
            "DeletionPolicy": "Retain",
            "Properties": Match.object_like(
                {
                    "BillingMode": "PAY_PER_REQUEST",
                    "KeySchema": [{"AttributeName": "image_id", "KeyType": "HASH"}],
                    "AttributeDefinitions": [{"AttributeName": "image_id", "AttributeType": "S"}],
                    "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
                    "DeletionProtectionEnabled": True,
                }
            ),
        },
    )


def test_failed_messages_reach_the_dlq_after_five_receives(synth: Synth, queue: Any, dlq: Any) -> None:
    (_, main), (dlq_id, dead) = queue, dlq
    assert main["Properties"]["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
        "maxReceiveCount": 5,
    }
    assert main["Properties"]["SqsManagedSseEnabled"] and dead["Properties"]["SqsManagedSseEnabled"]
    assert dead["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_visibility_timeout_follows_aws_guidance_for_lambda(synth: Synth, queue: Any) -> None:
    _, ingest = function(synth, "ingest_lambda")
    _, mapping = synth.one("AWS::Lambda::EventSourceMapping")
    window = mapping["Properties"]["MaximumBatchingWindowInSeconds"]
    assert queue[1]["Properties"]["VisibilityTimeout"] >= 6 * ingest["Properties"]["Timeout"] + window


# --- ingest -------------------------------------------------------------------------------------


def test_ingest_function_runs_the_ingest_handler_from_the_image(synth: Synth) -> None:
    _, ingest = function(synth, "ingest_lambda")
    props = ingest["Properties"]
    assert props["PackageType"] == "Image"
    assert props["ImageConfig"]["Command"] == ["fashion_search.handlers.ingest_lambda.handler"]
    assert (props["MemorySize"], props["Timeout"]) == (2048, 90)
    env = env_of(ingest)
    assert env["FASHION_SEARCH_BACKEND"] == "aws"
    assert env["FASHION_SEARCH_PINECONE_INDEX_HOST"] == DEPLOY_CONTEXT["pinecone_index_host"]
    assert env["FASHION_SEARCH_PINECONE_NAMESPACE"] == DEPLOY_CONTEXT["pinecone_namespace"]
    assert json.loads(env["FASHION_SEARCH_S3_SUFFIXES"]) == list(REPO_SUFFIXES)
    assert env["FASHION_SEARCH_S3_BUCKET"] == {"Ref": synth.one("AWS::S3::Bucket")[0]}
    assert env["FASHION_SEARCH_DYNAMODB_TABLE"] == {"Ref": synth.one("AWS::DynamoDB::Table")[0]}


def test_every_environment_variable_is_a_settings_field(synth: Synth) -> None:
    """A renamed Settings field must not leave the deployment setting a variable nobody reads."""
    task = synth.one("AWS::ECS::TaskDefinition")[1]["Properties"]["ContainerDefinitions"][0]
    names = {n for r in synth.of_type("AWS::Lambda::Function").values() for n in env_of(r)}
    names |= {e["Name"] for e in task["Environment"]}
    fields = {f"FASHION_SEARCH_{name.upper()}" for name in Settings.model_fields}
    assert names and names <= fields, names - fields


def test_the_queue_feeds_the_ingest_function_in_bounded_batches(synth: Synth, queue: Any) -> None:
    ingest_id, _ = function(synth, "ingest_lambda")
    synth.template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "FunctionName": {"Ref": ingest_id},
            "EventSourceArn": {"Fn::GetAtt": [queue[0], "Arn"]},
            "BatchSize": 20,
            "MaximumBatchingWindowInSeconds": 5,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "ScalingConfig": {"MaximumConcurrency": 5},
        },
    )


# --- API ----------------------------------------------------------------------------------------


def methods(synth: Synth) -> dict[tuple[str, str], dict[str, Any]]:
    """(path part, HTTP method) -> Method properties."""
    parts = {
        lid: r["Properties"]["PathPart"] for lid, r in synth.of_type("AWS::ApiGateway::Resource").items()
    }
    return {
        (parts[r["Properties"]["ResourceId"]["Ref"]], r["Properties"]["HttpMethod"]): r["Properties"]
        for r in synth.of_type("AWS::ApiGateway::Method").values()
    }


def test_every_route_needs_the_api_key_at_the_edge(synth: Synth) -> None:
    """/health too: the app's /health scans the whole table, so it must not be a public lever."""
    found = methods(synth)
    assert set(found) == {("{proxy+}", "ANY"), ("{proxy+}", "OPTIONS")}
    assert found[("{proxy+}", "ANY")]["ApiKeyRequired"] is True
    assert not found[("{proxy+}", "OPTIONS")]["ApiKeyRequired"], "browsers send preflights without keys"
    integration = found[("{proxy+}", "ANY")]["Integration"]
    assert integration["Type"] == "AWS_PROXY"
    assert refs(integration["Uri"]) == {function(synth, "api_lambda")[0]}


def test_api_is_regional_and_passes_uploads_as_binary(synth: Synth) -> None:
    _, api = synth.one("AWS::ApiGateway::RestApi")
    assert api["Properties"]["EndpointConfiguration"] == {"Types": ["REGIONAL"]}
    assert {"multipart/form-data", "image/*"} <= set(api["Properties"]["BinaryMediaTypes"])
    assert api["Properties"]["ApiKeySourceType"] == "HEADER"
    assert not synth.of_type("AWS::ApiGateway::Account"), "no account-wide CloudWatch role"


def test_api_is_throttled_per_stage_and_per_key(synth: Synth) -> None:
    stage_id, stage = synth.one("AWS::ApiGateway::Stage")
    assert stage["Properties"]["StageName"] == "v1"
    (settings,) = stage["Properties"]["MethodSettings"]
    assert (settings["HttpMethod"], settings["ResourcePath"]) == ("*", "/*")
    assert (settings["ThrottlingRateLimit"], settings["ThrottlingBurstLimit"]) == (20, 40)
    plan_id, plan = synth.one("AWS::ApiGateway::UsagePlan")
    assert plan["Properties"]["Throttle"] == {"RateLimit": 20, "BurstLimit": 40}
    assert plan["Properties"]["Quota"] == {"Limit": 50000, "Period": "DAY"}
    assert plan["Properties"]["ApiStages"][0]["Stage"] == {"Ref": stage_id}
    key_id, key = synth.one("AWS::ApiGateway::ApiKey")
    synth.template.has_resource_properties(
        "AWS::ApiGateway::UsagePlanKey", {"KeyId": {"Ref": key_id}, "UsagePlanId": {"Ref": plan_id}}
    )
    # The key's value is a deploy-time reference to the secret, never a literal.
    secret_id = synth.one("AWS::SecretsManager::Secret", lambda lid, _: "CredentialsApiKey" in lid)[0]
    assert literals(key["Properties"]["Value"]).startswith("{{resolve:secretsmanager:")
    assert refs(key["Properties"]["Value"]) == {secret_id}


def test_cors_admits_the_front_end(synth: Synth) -> None:
    service_id, _ = synth.one("AWS::ECS::ExpressGatewayService")
    preflights = [props for (_, verb), props in methods(synth).items() if verb == "OPTIONS"]
    for props in preflights:
        headers = props["Integration"]["IntegrationResponses"][0]["ResponseParameters"]
        allowed = headers["method.response.header.Access-Control-Allow-Origin"]
        assert literals(allowed).startswith("'https://") and refs(allowed) == {service_id}
        assert "x-api-key" in headers["method.response.header.Access-Control-Allow-Headers"]
    origins = env_of(function(synth, "api_lambda")[1])["FASHION_SEARCH_CORS_ORIGINS"]
    assert literals(origins).startswith('["https://') and refs(origins) == {service_id}
    assert refs(synth.outputs["FrontEndUrl"]["Value"]) == {service_id}


def test_api_function_reads_its_key_from_secrets_manager(synth: Synth) -> None:
    _, api = function(synth, "api_lambda")
    env = env_of(api)
    assert api["Properties"]["Timeout"] <= 29, "API Gateway stops waiting after 29 s"
    secret_id = synth.one("AWS::SecretsManager::Secret", lambda lid, _: "CredentialsApiKey" in lid)[0]
    assert env["FASHION_SEARCH_API_KEY_SECRET_ARN"] == {"Ref": secret_id}
    assert "FASHION_SEARCH_API_KEY" not in env


# --- secrets ------------------------------------------------------------------------------------


def test_secrets_are_referenced_by_arn_and_never_inlined(synth: Synth) -> None:
    secrets = synth.of_type("AWS::SecretsManager::Secret")
    assert len(secrets) == 2
    for secret in secrets.values():
        assert "SecretString" not in secret["Properties"], "a secret value in the template"
    variables = [env_of(r) for r in synth.of_type("AWS::Lambda::Function").values()]
    task = synth.one("AWS::ECS::TaskDefinition")[1]["Properties"]["ContainerDefinitions"][0]
    variables.append({e["Name"]: e["Value"] for e in task["Environment"]})
    pinecone_id = synth.one("AWS::SecretsManager::Secret", lambda lid, _: "Pinecone" in lid)[0]
    for env in variables:
        assert env["FASHION_SEARCH_PINECONE_API_KEY_SECRET_ARN"] == {"Ref": pinecone_id}
        assert "FASHION_SEARCH_PINECONE_API_KEY" not in env


# --- front end ----------------------------------------------------------------------------------


def assert_runs_with_api_url_and_key(synth: Synth, image: Any, env: Any, secrets: Any) -> None:
    """The Streamlit image, the API's stage URL and the API key secret (not its value)."""
    assert "cdk-hnb659fds-container-assets" in literals(image)
    (url,) = [e["Value"] for e in env if e["Name"] == "FASHION_SEARCH_API_URL"]
    assert refs(url) == {synth.one("AWS::ApiGateway::RestApi")[0]}
    assert literals(url).startswith("https://") and literals(url).endswith("/v1")
    secret_id = synth.one("AWS::SecretsManager::Secret", lambda lid, _: "CredentialsApiKey" in lid)[0]
    assert [(s["Name"], s.get("ValueFrom", s.get("Value"))) for s in secrets] == [
        ("FASHION_SEARCH_API_KEY", {"Ref": secret_id})
    ]


def test_front_end_is_an_ecs_express_service(synth: Synth) -> None:
    _, service = synth.one("AWS::ECS::ExpressGatewayService")
    props = service["Properties"]
    container = props["PrimaryContainer"]
    assert_runs_with_api_url_and_key(
        synth, container["Image"], container["Environment"], container["Secrets"]
    )
    assert container["ContainerPort"] == 8080 and props["HealthCheckPath"] == "/_stcore/health"
    assert (props["Cpu"], props["Memory"]) == ("1024", "2048")
    assert props["ScalingTarget"] == {"MinTaskCount": 1, "MaxTaskCount": 2}
    logs = container["AwsLogsConfiguration"]["LogGroup"]["Ref"]
    assert synth.resources[logs]["Properties"]["RetentionInDays"] == 30
    roles = {props["ExecutionRoleArn"]["Fn::GetAtt"][0], props["InfrastructureRoleArn"]["Fn::GetAtt"][0]}
    assert roles <= set(service["DependsOn"])


def test_app_runner_front_end_runs_the_same_image(variant_synth: Synth) -> None:
    _, service = variant_synth.one("AWS::AppRunner::Service")
    source = service["Properties"]["SourceConfiguration"]
    image = source["ImageRepository"]
    assert image["ImageRepositoryType"] == "ECR" and source["AutoDeploymentsEnabled"] is False
    config = image["ImageConfiguration"]
    assert_runs_with_api_url_and_key(
        variant_synth,
        image["ImageIdentifier"],
        config["RuntimeEnvironmentVariables"],
        config["RuntimeEnvironmentSecrets"],
    )
    assert config["Port"] == "8080"
    assert service["Properties"]["HealthCheckConfiguration"] == {
        "Protocol": "HTTP",
        "Path": "/_stcore/health",
    }
    access_role = source["AuthenticationConfiguration"]["AccessRoleArn"]["Fn::GetAtt"][0]
    assert "build.apprunner.amazonaws.com" in str(variant_synth.resources[access_role]["Properties"])
    instance_role = service["Properties"]["InstanceConfiguration"]["InstanceRoleArn"]["Fn::GetAtt"][0]
    assert "tasks.apprunner.amazonaws.com" in str(variant_synth.resources[instance_role]["Properties"])
    assert {access_role, instance_role} <= set(service["DependsOn"])
    assert not variant_synth.of_type("AWS::ECS::ExpressGatewayService")


# --- backfill -----------------------------------------------------------------------------------


def test_backfill_task_runs_the_backfill_module_on_a_gpu(synth: Synth) -> None:
    _, task = synth.one("AWS::ECS::TaskDefinition")
    props = task["Properties"]
    assert props["RequiresCompatibilities"] == ["EC2"] and props["Family"] == "fashion-search-dev-backfill"
    (container,) = props["ContainerDefinitions"]
    assert container["EntryPoint"] == ["python", "-m", "fashion_search.backfill"]
    assert container["Command"][:2] == ["--bucket", {"Ref": synth.one("AWS::S3::Bucket")[0]}]
    assert container["ResourceRequirements"] == [{"Type": "GPU", "Value": "1"}]
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"


def test_backfill_capacity_scales_from_zero_and_protects_running_tasks(synth: Synth) -> None:
    asg_id, asg = synth.one("AWS::AutoScaling::AutoScalingGroup")
    assert asg["Properties"]["MinSize"] == "0" and asg["Properties"]["NewInstancesProtectedFromScaleIn"]
    synth.template.has_resource_properties(
        "AWS::ECS::CapacityProvider",
        {
            "AutoScalingGroupProvider": {
                "AutoScalingGroupArn": {"Ref": asg_id},
                "ManagedScaling": Match.object_like({"Status": "ENABLED"}),
                "ManagedTerminationProtection": "ENABLED",
            }
        },
    )
    _, template = synth.one("AWS::EC2::LaunchTemplate")
    data = template["Properties"]["LaunchTemplateData"]
    assert data["InstanceType"] == "g4dn.xlarge"
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
    # The GPU AMI comes from the public SSM parameter at deploy time: no lookup at synth.
    (parameter,) = refs(data["ImageId"])
    assert "gpu" in parameter.lower()
    _, group = synth.one("AWS::EC2::SecurityGroup")
    assert "SecurityGroupIngress" not in group["Properties"]
    assert not synth.of_type("AWS::EC2::NatGateway")


def test_backfill_is_one_documented_command(synth: Synth) -> None:
    command = synth.outputs["BackfillCommand"]["Value"]
    text = literals(command)
    assert text.startswith("aws ecs run-task ")
    assert "--task-definition fashion-search-dev-backfill" in text and "--capacity-provider-strategy" in text
    cluster = synth.one("AWS::ECS::Cluster", lambda lid, _: lid.startswith("BackfillCluster"))[0]
    assert refs(command) == {cluster, synth.one("AWS::ECS::CapacityProvider")[0]}
    overrides = literals(synth.outputs["BackfillShardOverrides"]["Value"])
    assert '"--shard","I/N"' in overrides and '"name":"backfill"' in overrides


# --- operations ---------------------------------------------------------------------------------


def alarms_on(synth: Synth, metric: str, dimension: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        r["Properties"]
        for r in synth.of_type("AWS::CloudWatch::Alarm").values()
        if r["Properties"]["MetricName"] == metric and dimension in r["Properties"]["Dimensions"]
    ]


def test_alarms_watch_the_dlq_and_both_functions(synth: Synth, dlq: Any) -> None:
    dlq_dimension = {"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq[0], "QueueName"]}}
    (dlq_alarm,) = alarms_on(synth, "ApproximateNumberOfMessagesVisible", dlq_dimension)
    assert dlq_alarm["Threshold"] == 1 and dlq_alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    for handler in ("ingest_lambda", "api_lambda"):
        dimension = {"Name": "FunctionName", "Value": {"Ref": function(synth, handler)[0]}}
        for metric in ("Errors", "Throttles"):
            assert len(alarms_on(synth, metric, dimension)) == 1, (handler, metric)
    topic_id, _ = synth.one("AWS::SNS::Topic")
    for alarm in synth.of_type("AWS::CloudWatch::Alarm").values():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": topic_id}]
    synth.template.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": DEPLOY_CONTEXT["alarm_email"]}
    )


def test_every_log_group_has_a_retention(synth: Synth) -> None:
    groups = synth.of_type("AWS::Logs::LogGroup")
    assert len(groups) == 4  # ingest, API, backfill, front end
    assert {g["Properties"].get("RetentionInDays") for g in groups.values()} == {30}
    for fn in synth.of_type("AWS::Lambda::Function").values():
        assert refs(fn["Properties"]["LoggingConfig"]["LogGroup"]) <= set(groups)


def test_outputs_name_the_entry_points(synth: Synth) -> None:
    assert {"ApiUrl", "FrontEndUrl", "BucketName", "BackfillCommand"} <= set(synth.outputs)
    assert synth.outputs["BucketName"]["Value"] == {"Ref": synth.one("AWS::S3::Bucket")[0]}
    assert literals(synth.outputs["FrontEndUrl"]["Value"]).startswith("https://")


def test_synth_warns_only_about_what_a_deployment_still_needs(synth: Synth) -> None:
    assert not [w for w in synth.warnings if "pinecone_index_host" in w]
    assert all("fashion-search:" in w for w in synth.warnings), synth.warnings
