"""Least privilege, checked over every IAM policy document in the synthesised template."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from infra.stacks.frontend import EXPRESS_INFRASTRUCTURE_POLICY
from infra.stacks.permissions import CHECKPOINT_PREFIX, TABLE_GET, TABLE_SCAN, TABLE_WRITE
from tests.infra.conftest import Synth
from tests.infra.template_walk import identity_statements, literals, refs, resource_statements

REPO = Path(__file__).resolve().parents[2]
BUCKET_NAME_MARK = "-images-"  # fashion-search-<stage>-images-<account>-<region>
# Actions without resource-level permissions in IAM: "*" is the only possible resource.
NO_RESOURCE_LEVEL = {"ecr:GetAuthorizationToken", "ecs:DiscoverPollEndpoint"}
# ECS agent actions on container instances that do not exist yet: "*", narrowed by a cluster condition.
CLUSTER_CONDITIONED = {"ecs:Poll", "ecs:StartTelemetrySession"}
CONSUME = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"}
SECRET_READ = {"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"}


def targets(expression: Any) -> set[str]:
    """What a Resource expression names: logical ids, "bucket/<pattern>" for objects of the images
    bucket (its ARN is built from its deterministic name), "*" for everything."""
    if expression == "*":
        return {"*"}
    text = literals(expression)
    if BUCKET_NAME_MARK in text:
        assert text.endswith("*"), f"unexpected bucket ARN pattern {text!r}"
        return {"bucket/" + text.split("/", 1)[1]}
    return refs(expression)


def grants(synth: Synth, role: str) -> dict[str, set[str]]:
    """action -> targets, over every Allow statement attached to ``role``."""
    found: dict[str, set[str]] = defaultdict(set)
    for statement in identity_statements(synth.resources):
        if role in statement.roles and statement.allows:
            for action in statement.actions:
                for resource in statement.resources:
                    found[action] |= targets(resource)
    return dict(found)


def by_service(found: dict[str, set[str]], service: str) -> dict[str, set[str]]:
    return {a: t for a, t in found.items() if a.startswith(f"{service}:")}


def services(found: dict[str, set[str]]) -> set[str]:
    return {action.split(":")[0] for action in found}


def union(found: dict[str, set[str]]) -> set[str]:
    return set().union(*found.values()) if found else set()


@pytest.fixture(scope="module")
def ids(synth: Synth) -> dict[str, str]:
    """Logical ids of the resources and roles the assertions name."""

    def role_assumed_by(service: str, description: str) -> str:
        return synth.one(
            "AWS::IAM::Role",
            lambda _, r: (
                service in str(r["Properties"]["AssumeRolePolicyDocument"])
                and description in r["Properties"].get("Description", "")
            ),
        )[0]

    task = synth.one("AWS::ECS::TaskDefinition")[1]["Properties"]
    service = synth.one("AWS::ECS::ExpressGatewayService")[1]["Properties"]
    return {
        "bucket": synth.one("AWS::S3::Bucket")[0],
        "table": synth.one("AWS::DynamoDB::Table")[0],
        "queue": synth.one("AWS::SQS::Queue", lambda _, r: "RedrivePolicy" in r["Properties"])[0],
        "pinecone": synth.one("AWS::SecretsManager::Secret", lambda lid, _: "Pinecone" in lid)[0],
        "api_key": synth.one("AWS::SecretsManager::Secret", lambda lid, _: "CredentialsApiKey" in lid)[0],
        "ingest_logs": synth.one("AWS::Logs::LogGroup", lambda lid, _: lid.startswith("IngestFunctionLogs"))[
            0
        ],
        "api_logs": synth.one("AWS::Logs::LogGroup", lambda lid, _: lid.startswith("ApiFunctionLogs"))[0],
        "backfill_logs": synth.one("AWS::Logs::LogGroup", lambda lid, _: lid.startswith("BackfillLogs"))[0],
        "cluster": synth.one("AWS::ECS::Cluster", lambda lid, _: lid.startswith("BackfillCluster"))[0],
        "frontend_logs": synth.one("AWS::Logs::LogGroup", lambda lid, _: lid.startswith("FrontEndLogs"))[0],
        "ingest_role": role_assumed_by("lambda.amazonaws.com", "embeds images"),
        "api_role": role_assumed_by("lambda.amazonaws.com", "search API"),
        "task_role": task["TaskRoleArn"]["Fn::GetAtt"][0],
        "execution_role": task["ExecutionRoleArn"]["Fn::GetAtt"][0],
        "instance_role": role_assumed_by("ec2.amazonaws.com", "ECS agent"),
        "frontend_execution_role": service["ExecutionRoleArn"]["Fn::GetAtt"][0],
        "frontend_infrastructure_role": service["InfrastructureRoleArn"]["Fn::GetAtt"][0],
    }


def test_no_statement_allows_every_action_of_a_service(any_synth: Synth) -> None:
    allowed = [
        s
        for s in [*identity_statements(any_synth.resources), *resource_statements(any_synth.resources)]
        if s.allows
    ]
    assert allowed, "the walker found no statements at all"
    for statement in allowed:
        for action in statement.actions:
            assert action != "*" and not action.endswith(":*"), f"{statement.policy} allows {action}"


def test_star_resources_only_where_iam_has_no_resource_level_permissions(any_synth: Synth) -> None:
    for statement in identity_statements(any_synth.resources):
        if statement.allows and "*" in statement.resources:
            actions = set(statement.actions)
            if actions <= CLUSTER_CONDITIONED:
                assert "ecs:cluster" in str(statement.body.get("Condition")), statement
            else:
                assert actions <= NO_RESOURCE_LEVEL, f"{statement.policy}: {sorted(actions)} on '*'"


def test_only_the_ecs_infrastructure_role_carries_an_aws_managed_policy(any_synth: Synth) -> None:
    """Managed policies such as AWSLambdaBasicExecutionRole grant logs on every log group; the one
    exception is ECS's own role for building an Express service's load balancer and scaling."""
    for lid, role in any_synth.of_type("AWS::IAM::Role").items():
        managed = [literals(arn) for arn in role["Properties"].get("ManagedPolicyArns", [])]
        if managed:
            assert managed == [f"arn::iam::aws:policy/{EXPRESS_INFRASTRUCTURE_POLICY}"], lid
            trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
            assert [s["Principal"] for s in trust] == [{"Service": "ecs.amazonaws.com"}], lid


def test_ingest_role_reads_objects_writes_records_and_consumes_its_queue(
    synth: Synth, ids: dict[str, str]
) -> None:
    found = grants(synth, ids["ingest_role"])
    assert by_service(found, "s3") == {"s3:GetObject": {"bucket/*"}}
    assert by_service(found, "dynamodb") == {a: {ids["table"]} for a in (*TABLE_GET, *TABLE_WRITE)}
    assert union(by_service(found, "secretsmanager")) == {ids["pinecone"]}
    assert set(by_service(found, "sqs")) >= CONSUME
    assert union(by_service(found, "sqs")) == {ids["queue"]}
    assert union(by_service(found, "logs")) == {ids["ingest_logs"]}
    assert services(found) == {"s3", "dynamodb", "secretsmanager", "sqs", "logs"}


def test_api_role_only_reads(synth: Synth, ids: dict[str, str]) -> None:
    found = grants(synth, ids["api_role"])
    assert by_service(found, "s3") == {"s3:GetObject": {"bucket/*"}}, "presigned URLs need GetObject, no more"
    assert by_service(found, "dynamodb") == {a: {ids["table"]} for a in (*TABLE_GET, *TABLE_SCAN)}
    assert by_service(found, "secretsmanager") == {a: {ids["pinecone"], ids["api_key"]} for a in SECRET_READ}
    assert union(by_service(found, "logs")) == {ids["api_logs"]}
    assert services(found) == {"s3", "dynamodb", "secretsmanager", "logs"}


def test_backfill_task_role_lists_the_bucket_and_writes_records(synth: Synth, ids: dict[str, str]) -> None:
    found = grants(synth, ids["task_role"])
    checkpoints = f"bucket/{CHECKPOINT_PREFIX}*"
    assert by_service(found, "s3") == {
        "s3:ListBucket": {ids["bucket"]},
        "s3:GetObject": {"bucket/*", checkpoints},
        "s3:PutObject": {checkpoints},
        "s3:DeleteObject": {checkpoints},
    }
    assert by_service(found, "dynamodb") == {
        a: {ids["table"]} for a in (*TABLE_GET, *TABLE_SCAN, *TABLE_WRITE)
    }
    assert union(by_service(found, "secretsmanager")) == {ids["pinecone"]}
    assert services(found) == {"s3", "dynamodb", "secretsmanager"}


def test_backfill_instances_log_only_to_the_backfill_group(synth: Synth, ids: dict[str, str]) -> None:
    found = grants(synth, ids["instance_role"])
    assert union(by_service(found, "logs")) == {ids["backfill_logs"]}
    assert union(by_service(found, "ecs")) == {ids["cluster"], "*"}  # "*" only with the cluster condition
    assert not by_service(found, "s3") and not by_service(found, "dynamodb")
    assert not by_service(found, "secretsmanager")
    execution = grants(synth, ids["execution_role"])
    assert union(by_service(execution, "logs")) == {ids["backfill_logs"]}
    assert set(execution) - set(by_service(execution, "logs")) <= {
        "ecr:GetAuthorizationToken",
        "ecr:BatchCheckLayerAvailability",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchGetImage",
    }


def test_front_end_may_pull_its_image_log_and_read_the_api_key(synth: Synth, ids: dict[str, str]) -> None:
    found = grants(synth, ids["frontend_execution_role"])
    assert by_service(found, "secretsmanager") == {a: {ids["api_key"]} for a in SECRET_READ}
    assert union(by_service(found, "logs")) == {ids["frontend_logs"]}
    assert services(found) == {"ecr", "logs", "secretsmanager"}
    assert found["ecr:BatchGetImage"] != {"*"}
    assert not grants(synth, ids["frontend_infrastructure_role"]), "managed policy only"


def test_app_runner_front_end_may_read_the_api_key_and_nothing_else(variant_synth: Synth) -> None:
    service = variant_synth.one("AWS::AppRunner::Service")[1]["Properties"]
    instance_role = service["InstanceConfiguration"]["InstanceRoleArn"]["Fn::GetAtt"][0]
    access_role = service["SourceConfiguration"]["AuthenticationConfiguration"]["AccessRoleArn"][
        "Fn::GetAtt"
    ][0]
    api_key = variant_synth.one("AWS::SecretsManager::Secret")[0]
    assert grants(variant_synth, instance_role) == {a: {api_key} for a in SECRET_READ}
    access = grants(variant_synth, access_role)
    assert access and services(access) == {"ecr"}
    assert access["ecr:BatchGetImage"] != {"*"}


def test_resource_policies_never_open_anything_to_the_public(any_synth: Synth) -> None:
    statements = list(resource_statements(any_synth.resources))
    assert any(
        s.body.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false" for s in statements
    )
    for statement in statements:
        if statement.allows:
            principal = statement.body["Principal"]
            assert set(principal) == {"Service"}, f"{statement.policy} allows {principal}"
            assert "aws:SourceAccount" in str(statement.body.get("Condition")), statement
        elif statement.body.get("Principal") in ("*", {"AWS": "*"}):
            assert statement.body.get("Condition"), f"{statement.policy}: unconditional public deny"


def test_every_dynamodb_call_in_the_store_has_a_named_permission() -> None:
    """permissions.py must keep up with the boto3 calls of the DynamoDB metadata store."""
    source = (REPO / "functions/fashion_search/stores/dynamodb_metadata.py").read_text(encoding="utf-8")
    calls = set(re.findall(r"client\.(\w+)\(", source)) | set(re.findall(r'get_paginator\("(\w+)"\)', source))
    calls -= {"get_paginator", "get_waiter", "create_table"}  # create_table: tests and local servers only
    actions = {"dynamodb:" + "".join(part.title() for part in call.split("_")) for call in calls}
    assert actions, "no DynamoDB calls found: the store moved?"
    assert actions <= {*TABLE_GET, *TABLE_SCAN, *TABLE_WRITE}, actions - {
        *TABLE_GET,
        *TABLE_SCAN,
        *TABLE_WRITE,
    }


def test_checkpoint_prefix_is_the_backfills() -> None:
    from fashion_search.backfill_checkpoint import CHECKPOINT_PREFIX as RUNTIME_PREFIX

    assert CHECKPOINT_PREFIX == RUNTIME_PREFIX
