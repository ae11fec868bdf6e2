"""Secrets Manager secrets: the Pinecone API key and the search API's key.

Neither value ever appears in the template or in an environment variable: functions and tasks
get the secret's ARN (``FASHION_SEARCH_*_SECRET_ARN``) and read permission on that secret alone.
Both secrets hold a plain string, the form ``fashion_search.stores.aws.read_secret`` expects.
"""

from __future__ import annotations

from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.stacks.config import InfraConfig


class Credentials(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: InfraConfig) -> None:
        super().__init__(scope, construct_id)
        if config.pinecone_api_key_secret_arn:
            # Created beforehand (docs/deploy.md): its lifetime is not tied to the stack's.
            self.pinecone_api_key: secretsmanager.ISecret = secretsmanager.Secret.from_secret_complete_arn(
                self, "PineconeApiKey", config.pinecone_api_key_secret_arn
            )
        else:
            # A random placeholder until `aws secretsmanager put-secret-value` stores the real key.
            self.pinecone_api_key = secretsmanager.Secret(
                self,
                "PineconeApiKey",
                description=f"{config.name_prefix}: Pinecone API key (set the value after deploying)",
            )
        # The front end's key for the REST API; API Gateway's API key takes its value at deploy time.
        self.api_key = secretsmanager.Secret(
            self,
            "ApiKey",
            description=f"{config.name_prefix}: key for the search API (x-api-key)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=40, exclude_punctuation=True, include_space=False
            ),
        )
