"""The optional paths: a key prefix, an existing Pinecone secret, a CPU backfill, disposable data."""

from __future__ import annotations

from typing import Any

from tests.infra.conftest import VARIANT_CONTEXT, Synth
from tests.infra.template_walk import identity_statements, literals, refs

PINECONE_ARN = VARIANT_CONTEXT["pinecone_api_key_secret_arn"]


def functions(synth: Synth) -> list[dict[str, Any]]:
    return list(synth.of_type("AWS::Lambda::Function").values())


def test_prefix_filters_notifications_permissions_and_the_backfill(variant_synth: Synth) -> None:
    _, bucket = variant_synth.one("AWS::S3::Bucket")
    for config in bucket["Properties"]["NotificationConfiguration"]["QueueConfigurations"]:
        assert config["Filter"]["S3Key"]["Rules"][0] == {"Name": "prefix", "Value": "catalogue/"}
    object_arns = [
        literals(resource)
        for statement in identity_statements(variant_synth.resources)
        if "s3:GetObject" in statement.actions
        for resource in statement.resources
        if "/_backfill/" not in literals(resource)  # the backfill's checkpoints
    ]
    assert len(object_arns) == 3  # ingest, API, backfill
    assert all(arn.endswith(":s3:::fashion-search-prod-images--/catalogue/*") for arn in object_arns)
    for fn in functions(variant_synth):
        assert fn["Properties"]["Environment"]["Variables"]["FASHION_SEARCH_S3_PREFIX"] == "catalogue/"
    container = variant_synth.one("AWS::ECS::TaskDefinition")[1]["Properties"]["ContainerDefinitions"][0]
    assert container["Command"][2:4] == ["--prefix", "catalogue/"]


def test_an_existing_pinecone_secret_is_referenced_not_created(variant_synth: Synth) -> None:
    secrets = variant_synth.of_type("AWS::SecretsManager::Secret")
    assert len(secrets) == 1 and "Pinecone" not in next(iter(secrets))
    for fn in functions(variant_synth):
        assert (
            fn["Properties"]["Environment"]["Variables"]["FASHION_SEARCH_PINECONE_API_KEY_SECRET_ARN"]
            == PINECONE_ARN
        )
    readers = [
        s
        for s in identity_statements(variant_synth.resources)
        if "secretsmanager:GetSecretValue" in s.actions
    ]
    assert sum(PINECONE_ARN in s.resources for s in readers) == 3  # ingest, API, backfill task
    assert variant_synth.outputs["PineconeApiKeySecretArn"]["Value"] == PINECONE_ARN


def test_a_cpu_backfill_asks_for_no_gpu(variant_synth: Synth) -> None:
    container = variant_synth.one("AWS::ECS::TaskDefinition")[1]["Properties"]["ContainerDefinitions"][0]
    assert "ResourceRequirements" not in container
    data = variant_synth.one("AWS::EC2::LaunchTemplate")[1]["Properties"]["LaunchTemplateData"]
    assert data["InstanceType"] == "c7i.4xlarge"
    (parameter,) = refs(data["ImageId"])
    assert "gpu" not in parameter.lower()


def test_disposable_data_is_deleted_with_the_stack(variant_synth: Synth) -> None:
    _, bucket = variant_synth.one("AWS::S3::Bucket")
    _, table = variant_synth.one("AWS::DynamoDB::Table")
    assert bucket["DeletionPolicy"] == "Delete" and table["DeletionPolicy"] == "Delete"
    assert table["Properties"]["DeletionProtectionEnabled"] is False
    # Still no custom resources (CDK's auto-delete would add a Lambda with broad S3 rights).
    assert len(functions(variant_synth)) == 2
    assert not [r for r in variant_synth.resources.values() if r["Type"].startswith("Custom::")]


def test_extra_cors_origins_join_the_front_end(variant_synth: Synth) -> None:
    service_id = variant_synth.one("AWS::AppRunner::Service")[0]
    api = next(fn for fn in functions(variant_synth) if "api_lambda" in str(fn["Properties"]["ImageConfig"]))
    origins = api["Properties"]["Environment"]["Variables"]["FASHION_SEARCH_CORS_ORIGINS"]
    assert "https://shop.example.com" in literals(origins) and refs(origins) == {service_id}
    preflights = [
        m["Properties"]["Integration"]
        for m in variant_synth.of_type("AWS::ApiGateway::Method").values()
        if m["Properties"]["HttpMethod"] == "OPTIONS"
    ]
    assert preflights and all("https://shop.example.com" in str(p) for p in preflights)


def test_stage_names_every_named_resource(variant_synth: Synth) -> None:
    assert literals(variant_synth.one("AWS::S3::Bucket")[1]["Properties"]["BucketName"]).startswith(
        "fashion-search-prod-images-"
    )
    assert (
        variant_synth.one("AWS::ECS::TaskDefinition")[1]["Properties"]["Family"]
        == "fashion-search-prod-backfill"
    )
