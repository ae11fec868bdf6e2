"""Lambda entry points (container image CMDs): ``ingest_lambda.handler`` and ``api_lambda.handler``."""
