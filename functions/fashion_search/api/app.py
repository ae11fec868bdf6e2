"""The FastAPI application: the same app behind uvicorn (local) and Mangum (API Lambda).

``create_app`` takes ready-made ``Services`` so the model is loaded once per process and tests
can share one; ``create_app_from_env`` is the factory for servers::

    uvicorn --factory fashion_search.api.app:create_app_from_env
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from fashion_search import __version__
from fashion_search.api.auth import API_KEY_HEADER
from fashion_search.api.body_limit import BodyLimitMiddleware
from fashion_search.api.errors import install_error_handlers
from fashion_search.api.facets import FacetCache
from fashion_search.api.routes import protected, public
from fashion_search.config import Settings
from fashion_search.logs import configure_logging
from fashion_search.services import Services, build_services

DESCRIPTION = """
Search a fashion catalogue by text (`/get_image_by_text`) or by image (`/get_similar_images`).

Errors are JSON `{"error": code, "detail": message}` with a 4xx status for bad input.
When the deployment sets an API key, send it as the `x-api-key` header (not needed for `/health`).
"""


def create_app(services: Services) -> FastAPI:
    settings = services.settings
    if settings.api_key_secret_arn and settings.api_key is None:
        # Failing open here would publish a private API: the caller must resolve the secret first.
        raise ValueError("api_key_secret_arn is set but the key was not resolved into settings.api_key")
    app = FastAPI(title="Fashion search API", version=__version__, description=DESCRIPTION)
    app.state.services = services
    app.state.facets = FacetCache(services.metadata)
    install_error_handlers(app)
    app.include_router(public)
    app.include_router(protected)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    if settings.cors_origins:
        # Added last so it is outermost: even a 401 or 413 carries the CORS headers the browser
        # needs to show the error to the front end.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["content-type", API_KEY_HEADER],
            max_age=600,
        )
    return app


def create_app_from_env() -> FastAPI:
    settings = Settings()
    configure_logging(settings)
    if settings.api_key_secret_arn and settings.api_key is None:
        from fashion_search.stores.aws import with_resolved_api_key  # boto3 only when needed

        settings = with_resolved_api_key(settings)
    # A server runs requests side by side, so each gets few threads (see ``serve_onnx_threads``);
    # the API Lambda serves one request per container and keeps ``onnx_threads``.
    serving = settings.model_copy(update={"onnx_threads": settings.serve_onnx_threads})
    return create_app(build_services(serving))
