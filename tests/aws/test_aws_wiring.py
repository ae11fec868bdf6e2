"""build_aws_stores and the Secrets Manager look-ups, against moto and needledb."""

from __future__ import annotations

import json
import logging

import pytest

from fashion_search.logs import configure_logging
from fashion_search.stores.aws import build_aws_stores, read_secret, resolve_secret

pytestmark = pytest.mark.aws


@pytest.fixture
def stack(aws_stack):
    return aws_stack(dim=4)


def put_secret(stack, value: str) -> str:
    return stack.client("secretsmanager").create_secret(
        Name=f"{stack.bucket}-{len(value)}", SecretString=value
    )["ARN"]


def test_secrets_are_plain_strings_or_json_api_key_fields(stack) -> None:
    settings = stack.settings()
    assert read_secret(settings, put_secret(stack, "plain-key")) == "plain-key"
    assert read_secret(settings, put_secret(stack, json.dumps({"api_key": "json-key"}))) == "json-key"
    with pytest.raises(ValueError, match="api_key"):
        read_secret(settings, put_secret(stack, json.dumps({"other": "x"})))


def test_a_directly_configured_value_wins_over_the_secret(stack) -> None:
    arn = put_secret(stack, "from-secret")
    settings = stack.settings()
    assert resolve_secret(settings, settings.pinecone_api_key, arn) == stack.pinecone_api_key
    assert resolve_secret(settings, None, arn) == "from-secret"
    assert resolve_secret(settings, None, None) is None


def test_stores_built_with_the_key_from_secrets_manager_never_log_it(stack, caplog, restore_logging) -> None:
    arn = put_secret(stack, stack.pinecone_api_key)
    settings = stack.settings(pinecone_api_key=None, pinecone_api_key_secret_arn=arn, log_level="DEBUG")
    configure_logging(settings)
    with caplog.at_level(logging.DEBUG):
        objects, metadata, vectors = build_aws_stores(settings, dim=4)
        assert vectors.count() == 0  # authenticated with the secret's key
        assert metadata.counts() == {"indexed": 0, "failed": 0, "deleted": 0}
        assert list(objects.list()) == []
    assert caplog.records  # the clients did log, just never the key
    assert stack.pinecone_api_key not in caplog.text


def test_missing_settings_are_named(stack) -> None:
    with pytest.raises(ValueError, match="FASHION_SEARCH_DYNAMODB_TABLE"):
        build_aws_stores(stack.settings(dynamodb_table=None), dim=4)
    with pytest.raises(ValueError, match="PINECONE_API_KEY"):
        build_aws_stores(stack.settings(pinecone_api_key=None), dim=4)
