"""The API key check: every route but ``/health`` and the docs needs ``x-api-key`` when a key is set.

The comparison is constant-time so the key cannot be recovered byte by byte from response times.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from fashion_search.errors import InputError

API_KEY_HEADER = "x-api-key"

api_key_header = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, description="Required when the deployment sets an API key."
)


async def require_api_key(request: Request, given: Annotated[str | None, Security(api_key_header)]) -> None:
    expected = request.app.state.services.settings.api_key
    if expected is None:
        return
    if given is None or not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise InputError("unauthorized", f"a valid {API_KEY_HEADER} header is required", status_code=401)
