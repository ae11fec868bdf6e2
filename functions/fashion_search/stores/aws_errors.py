"""Shared boto3 client settings and the mapping from botocore failures to the project's errors.

botocore already retries throttling and 5xx in "standard" mode; whatever still fails after those
attempts becomes a ``TransientError`` so the ingest Lambda reports it to SQS for redelivery.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from fashion_search.errors import NotFoundError, TransientError

CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 4},
    connect_timeout=3,
    read_timeout=15,
    max_pool_connections=32,
)

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "SlowDown",
        "InternalError",
        "InternalServerError",
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
# Only a missing *object* is the caller's problem; a missing bucket or table is a deployment error
# and must stay retryable rather than turn good images into permanent failures.
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
TRANSPORT_ERRORS = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
    ResponseStreamingError,
    IncompleteReadError,
)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_transient(exc: ClientError) -> bool:
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return error_code(exc) in THROTTLING_CODES or status >= 500 or status == 429


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Run an AWS call, re-raising retryable failures as ``TransientError`` and 404s as ``NotFoundError``.

    ``what`` names the resource for the error message (a key, a table), never a credential.
    """
    try:
        yield
    except ClientError as exc:
        if error_code(exc) in NOT_FOUND_CODES:
            raise NotFoundError(f"{what} does not exist") from exc
        if is_transient(exc):
            raise TransientError(f"{what}: {error_code(exc) or 'server error'}") from exc
        raise
    except TRANSPORT_ERRORS as exc:
        raise TransientError(f"{what}: {type(exc).__name__}") from exc
