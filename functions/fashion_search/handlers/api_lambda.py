"""The API Lambda: the same FastAPI app as local mode, behind Mangum (API Gateway REST and HTTP APIs).

Lambda refuses synchronous invocations whose event is over 6 MB (6,291,456 bytes), before this
code runs; API Gateway then answers on its own. The app is therefore built with its body limit at
most that, so every upload that does reach the function and is over it gets the app's JSON 413
naming the limit (with CORS headers, so the front end can show it). Binary bodies travel base64
in the event, so in practice uploads over ~4.5 MB should be sent by URL.
"""

from __future__ import annotations

import functools
from typing import Any

from mangum import Mangum

from fashion_search.api.app import create_app
from fashion_search.config import Settings
from fashion_search.logs import configure_logging
from fashion_search.services import Services, build_services
from fashion_search.stores.aws import with_resolved_api_key

LAMBDA_MAX_REQUEST_BYTES = 6 * 1024 * 1024  # Lambda's synchronous invocation payload limit


def lambda_settings(settings: Settings) -> Settings:
    """The settings as the function runs them: body limit capped, API key read from its secret."""
    return with_resolved_api_key(settings).model_copy(
        update={"max_request_bytes": min(settings.max_request_bytes, LAMBDA_MAX_REQUEST_BYTES)}
    )


def make_handler(services: Services) -> Mangum:
    # lifespan "off": the app has no startup work, and "auto" would run it on every invocation.
    return Mangum(create_app(services), lifespan="off")


@functools.cache
def container_handler() -> Mangum:
    """App, model and clients, created once per container and reused by every invocation."""
    settings = lambda_settings(Settings())
    configure_logging(settings)
    return make_handler(build_services(settings))


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    response: dict[str, Any] = container_handler()(event, context)
    return response
