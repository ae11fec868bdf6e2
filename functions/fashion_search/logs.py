"""Structured logging for every entry point.

On Lambda each log line becomes one CloudWatch event, so ``log_format='json'`` emits one JSON
object per line, carrying whatever was passed in ``extra=`` (image key, timings, counts) as top-level
fields that Logs Insights can query. Two things must never reach a log: secrets and image bytes.
The formatter enforces both rather than trusting every call site: fields whose names look like
credentials are redacted, and bytes values are replaced by their length.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from fashion_search.config import Settings

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_SECRET_NAME = re.compile(r"(api_?key|secret|password|passwd|token|authorization|credential)", re.I)
REDACTED = "[redacted]"


def scrub(name: str, value: Any) -> Any:
    """The value as it may appear in a log line."""
    if _SECRET_NAME.search(name):
        return REDACTED
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {str(k): scrub(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(name, v) for v in value]
    return value


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: scrub(k, v) for k, v in vars(record).items() if k not in _STANDARD_ATTRS}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the ``extra=`` fields."""

    converter = time.gmtime  # UTC, matching the trailing "Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(extra_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal, with the ``extra=`` fields appended as ``k=v``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = extra_fields(record)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return line


def configure_logging(settings: Settings) -> None:
    """Format every root handler as configured, adding a stderr handler if there is none.

    Lambda's runtime installs its own root handler (the one that reaches CloudWatch); it is kept
    and given our formatter rather than duplicated. Safe to call more than once.
    """
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    formatter = JsonFormatter() if settings.log_format == "json" else TextFormatter()
    for handler in root.handlers:
        handler.setFormatter(formatter)
    root.setLevel(settings.log_level.upper())
    # Client libraries log request and response bodies at DEBUG (a Secrets Manager response holds
    # the secret), so they stay at WARNING whatever the application's level.
    for noisy in ("botocore", "boto3", "urllib3", "httpx", "httpcore", "pinecone"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
