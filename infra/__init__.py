"""The AWS deployment as a CDK app (entry point: ``infra/app.py``, run by ``cdk`` via ``cdk.json``)."""
