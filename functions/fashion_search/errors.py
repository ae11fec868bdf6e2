"""Error types shared by every entry point.

``InputError`` is the client's fault and carries a stable machine-readable ``code``: the API maps
it to a 4xx JSON body, the ingest paths record it as a permanent failure (never retried). Anything
else that escapes is treated as transient by the ingest Lambda (retried by SQS) and as a 5xx by the
API.
"""

from __future__ import annotations


class FashionSearchError(Exception):
    """Base class for the project's own errors."""


class ModelError(FashionSearchError):
    """The model directory is missing or inconsistent; the message says how to produce one."""


class InputError(FashionSearchError):
    """Bad input from a client or an uploader: permanent, reported, never retried."""

    status_code = 400

    def __init__(self, code: str, detail: str, *, status_code: int | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        if status_code is not None:
            self.status_code = status_code


class NotFoundError(InputError):
    """The referenced image or object does not exist."""

    status_code = 404

    def __init__(self, detail: str) -> None:
        super().__init__("not_found", detail)


class TransientError(FashionSearchError):
    """A dependency failed in a way worth retrying (throttling, 5xx, timeouts)."""
