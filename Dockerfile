# One image for both Lambda functions (container image, AWS Lambda Python base image); only CMD differs.
# Build from the repo root:
#   docker build --build-arg MODEL_DIR=models/kagl-minilm -t fashion-search-lambda .
# API function:     CMD as below (fashion_search.handlers.api_lambda.handler)
# Ingest function:  override CMD with fashion_search.handlers.ingest_lambda.handler
#                   (CDK: DockerImageCode.fromImageAsset(..., { cmd: [...] }); CLI: --image-config Command=...)
# No torch: the model runs on ONNX Runtime. Settings come from FASHION_SEARCH_* variables (see docs/aws.md).
FROM public.ecr.aws/lambda/python:3.11

ARG MODEL_DIR=models/kagl-minilm

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Dependencies first, so this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt /tmp/build/
RUN pip install --target "${LAMBDA_TASK_ROOT}" -r /tmp/build/requirements.txt

# The package itself (its dependencies are already in place).
COPY pyproject.toml /tmp/build/
COPY functions /tmp/build/functions
RUN pip install --target "${LAMBDA_TASK_ROOT}" --no-deps /tmp/build && rm -rf /tmp/build

# The model last: retraining changes only this layer.
COPY ${MODEL_DIR}/ /opt/model/
ENV FASHION_SEARCH_MODEL_DIR=/opt/model \
    FASHION_SEARCH_BACKEND=aws \
    FASHION_SEARCH_LOG_FORMAT=json

CMD ["fashion_search.handlers.api_lambda.handler"]
