"""Builds the AWS stores (S3, DynamoDB, Pinecone) from ``Settings``, and reads secrets.

Called once per process by ``services.build_services`` (a Lambda container's init phase), so the
clients, their connection pools and the secret lookups are paid for once, not per event.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import boto3
from botocore.config import Config
from pinecone import Pinecone
from pydantic import SecretStr

from fashion_search.config import Settings
from fashion_search.stores.aws_errors import CLIENT_CONFIG, translated
from fashion_search.stores.dynamodb_metadata import DynamoDbMetadataStore
from fashion_search.stores.pinecone_index import PineconeVectorIndex
from fashion_search.stores.s3_objects import S3ObjectStore

log = logging.getLogger(__name__)


def boto_client(settings: Settings, service: str, session: boto3.session.Session | None = None) -> Any:
    """A client for ``service`` honouring the region and endpoint override (a moto server in tests).

    Pass one ``session`` for several clients: it caches the service models, which otherwise
    dominate client creation time (cold starts).
    """
    config = CLIENT_CONFIG
    if service == "s3":
        # Presigned URLs must be SigV4; a custom endpoint (an IP and port) only works path-style.
        addressing = "path" if settings.aws_endpoint_url else "auto"
        config = config.merge(Config(signature_version="s3v4", s3={"addressing_style": addressing}))
    return (session or boto3.session.Session()).client(
        service, region_name=settings.aws_region, endpoint_url=settings.aws_endpoint_url, config=config
    )


def read_secret(settings: Settings, secret_id: str, session: boto3.session.Session | None = None) -> str:
    """A Secrets Manager secret's value: a plain string, or the ``api_key`` field of a JSON object."""
    client = boto_client(settings, "secretsmanager", session)
    with translated(f"secret {secret_id}"):
        value = str(client.get_secret_value(SecretId=secret_id)["SecretString"]).strip()
    if value.startswith("{"):
        try:
            return str(json.loads(value)["api_key"])
        except (ValueError, KeyError) as exc:
            raise ValueError(f"secret {secret_id} is JSON without a string 'api_key' field") from exc
    return value


def resolve_secret(
    settings: Settings,
    value: SecretStr | None,
    secret_id: str | None,
    session: boto3.session.Session | None = None,
) -> str | None:
    """The directly configured value wins; otherwise the secret's; None when neither is set."""
    if value is not None and value.get_secret_value():
        return value.get_secret_value()
    if secret_id:
        return read_secret(settings, secret_id, session)
    return None


def with_resolved_api_key(settings: Settings) -> Settings:
    """Settings whose ``api_key`` holds the key itself, read from its secret when only the ARN is set.

    Every server entry point (uvicorn factory, API Lambda) calls this, so none can start open.
    """
    api_key = resolve_secret(settings, settings.api_key, settings.api_key_secret_arn)
    return settings.model_copy(update={"api_key": SecretStr(api_key) if api_key else None})


def pinecone_data_plane(settings: Settings, session: boto3.session.Session | None = None) -> Any:
    api_key = resolve_secret(
        settings, settings.pinecone_api_key, settings.pinecone_api_key_secret_arn, session
    )
    if not api_key:
        raise ValueError(
            "the aws backend needs FASHION_SEARCH_PINECONE_API_KEY or "
            "FASHION_SEARCH_PINECONE_API_KEY_SECRET_ARN"
        )
    return Pinecone(api_key=api_key).Index(host=settings.pinecone_index_host)


def build_aws_stores(
    settings: Settings, dim: int
) -> tuple[S3ObjectStore, DynamoDbMetadataStore, PineconeVectorIndex]:
    session = boto3.session.Session()
    bucket, table = settings.s3_bucket, settings.dynamodb_table
    if not (bucket and table and settings.pinecone_index_host):
        raise ValueError(
            "the aws backend needs FASHION_SEARCH_S3_BUCKET, FASHION_SEARCH_DYNAMODB_TABLE and "
            "FASHION_SEARCH_PINECONE_INDEX_HOST"
        )
    stores = (
        S3ObjectStore(boto_client(settings, "s3", session), bucket, settings.presign_ttl_s),
        DynamoDbMetadataStore(boto_client(settings, "dynamodb", session), table),
        PineconeVectorIndex(pinecone_data_plane(settings, session), dim, settings.pinecone_namespace),
    )
    log.info(
        "aws stores ready",
        extra={
            "bucket": bucket,
            "table": table,
            "pinecone_host": settings.pinecone_index_host,
            "namespace": settings.pinecone_namespace,
        },
    )
    return stores
