"""One error shape for every failure: ``{"error": code, "detail": message}``.

Clients (the Streamlit UI, scripts) branch on ``error``; ``detail`` is for humans. FastAPI's and
Starlette's own errors (422 validation, 404 route, 405 method) are reshaped to match, and an
unexpected exception becomes a bare 500 ``internal`` whose traceback goes to the log only, never
to the client.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fashion_search.errors import InputError, TransientError

log = logging.getLogger(__name__)

MAX_DETAIL_CHARS = 1000
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": code, "detail": detail[:MAX_DETAIL_CHARS]}, status_code=status, headers=headers
    )


def describe_validation_errors(errors: Sequence[Any]) -> str:
    """``field.path: message`` per error, without echoing the (possibly huge) input back."""
    parts = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        where = ".".join(loc)
        message = str(error.get("msg", "invalid value"))
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts) or "invalid request"


async def _input_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InputError)
    log.info(
        "request rejected", extra={"path": request.url.path, "error": exc.code, "status": exc.status_code}
    )
    return error_response(exc.status_code, exc.code, exc.detail)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "malformed_json", "the request body is not valid JSON")
    return error_response(422, "invalid_request", describe_validation_errors(errors))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _transient_error(request: Request, exc: Exception) -> JSONResponse:
    log.warning("dependency unavailable", extra={"path": request.url.path, "error_type": type(exc).__name__})
    return error_response(
        503, "unavailable", "a backing service is unavailable; retry shortly", {"Retry-After": "1"}
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc, extra={"path": request.url.path, "method": request.method})
    return error_response(500, "internal", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(InputError, _input_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(TransientError, _transient_error)
    app.add_exception_handler(Exception, _unexpected_error)
