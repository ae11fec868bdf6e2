"""Deployment settings from CDK context, typed and validated before any resource is defined.

``cdk.json`` holds every key with its default and ``-c key=value`` overrides one; the CLI passes
overrides as strings, so values are coerced here. A bad value fails the synth with a message that
names the key, instead of surfacing minutes into a CloudFormation deployment.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import PurePosixPath
from typing import Any, get_type_hints

# The values CloudWatch Logs accepts for a log group's retention.
LOG_RETENTION_DAYS = frozenset(
    {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653}
)
FRONTEND_HOSTS = ("ecs-express", "apprunner")
# App Runner's (vCPU, memory) pairs; each is a valid Fargate size too (ECS Express Mode).
FRONTEND_SIZES = {
    "0.25 vCPU": {"0.5 GB", "1 GB"},
    "0.5 vCPU": {"1 GB"},
    "1 vCPU": {"2 GB", "3 GB", "4 GB"},
    "2 vCPU": {"4 GB", "6 GB"},
    "4 vCPU": {"8 GB", "10 GB", "12 GB"},
}
# The bucket name is "fashion-search-<stage>-images-<account>-<region>" (at most 63 characters).
STAGE_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,11}$")


class ConfigError(ValueError):
    """A CDK context value is missing or invalid; the message names the key."""


@dataclass(frozen=True)
class InfraConfig:
    """Every knob of the deployment. Field names are the CDK context keys (see cdk.json)."""

    stage: str
    # Pinecone (outside AWS): the index is created in Pinecone; its key lives in Secrets Manager.
    pinecone_index_host: str
    pinecone_namespace: str
    pinecone_api_key_secret_arn: str  # empty: the stack creates the secret and you set its value
    # What gets indexed and with which model (a directory in the repo, baked into the images).
    model_dir: str
    images_prefix: str
    images_suffixes: tuple[str, ...]
    # Ingest Lambda and its queue.
    ingest_memory_mb: int
    ingest_timeout_s: int
    ingest_batch_size: int
    ingest_batching_window_s: int
    ingest_max_concurrency: int
    max_receive_count: int
    # Search API.
    api_memory_mb: int
    api_timeout_s: int
    api_rate_limit: float
    api_burst_limit: int
    api_quota_per_day: int
    cors_origins: tuple[str, ...]
    # Container images: Dockerfiles relative to the repo root / the front end's build context.
    lambda_dockerfile: str
    backfill_dockerfile: str
    frontend_host: str  # "ecs-express" or "apprunner": see stacks/frontend.py
    frontend_dir: str
    frontend_dockerfile: str
    frontend_port: int
    frontend_cpu: str
    frontend_memory: str
    frontend_max_instances: int
    # Backfill job (ECS on EC2; GPU instances unless backfill_gpus is 0).
    backfill_instance_type: str
    backfill_gpus: int
    backfill_memory_mb: int
    backfill_max_instances: int
    backfill_batch_size: int
    backfill_volume_gb: int
    # Operations and data lifecycle.
    log_retention_days: int
    alarm_email: str
    retain_data: bool
    noncurrent_version_days: int

    @classmethod
    def from_context(cls, get: Callable[[str], Any]) -> InfraConfig:
        """Read every field with ``get(key)`` (``app.node.try_get_context``), coerce and validate."""
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for spec in fields(cls):
            raw = get(spec.name)
            if raw is None:
                raise ConfigError(f"CDK context key {spec.name!r} is missing (cdk.json sets every default)")
            values[spec.name] = coerce(spec.name, raw, hints[spec.name])
        return cls(**values)

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str, str]] = [
            (
                bool(STAGE_PATTERN.match(self.stage)),
                "stage",
                "1-12 of a-z, 0-9 and '-', starting with a letter",
            ),
            (
                not self.pinecone_index_host or self.pinecone_index_host.startswith("https://"),
                "pinecone_index_host",
                "an https:// URL (the index's host from the Pinecone console)",
            ),
            (
                not self.pinecone_api_key_secret_arn
                or (
                    self.pinecone_api_key_secret_arn.startswith("arn:")
                    and ":secretsmanager:" in self.pinecone_api_key_secret_arn
                ),
                "pinecone_api_key_secret_arn",
                "empty or a Secrets Manager secret ARN",
            ),
            (is_repo_relative(self.model_dir), "model_dir", "a directory inside the repository"),
            (not self.images_prefix.startswith("/"), "images_prefix", "an S3 key prefix (no leading '/')"),
            (
                bool(self.images_suffixes)
                and all(s.startswith(".") and len(s) > 1 for s in self.images_suffixes),
                "images_suffixes",
                "a non-empty list like ['.jpg', '.png']",
            ),
            (128 <= self.ingest_memory_mb <= 10240, "ingest_memory_mb", "128..10240"),
            (1 <= self.ingest_timeout_s <= 900, "ingest_timeout_s", "1..900"),
            (0 <= self.ingest_batching_window_s <= 300, "ingest_batching_window_s", "0..300"),
            (
                1 <= self.ingest_batch_size <= (10 if self.ingest_batching_window_s == 0 else 10000),
                "ingest_batch_size",
                "1..10000 (at most 10 without a batching window)",
            ),
            (2 <= self.ingest_max_concurrency <= 1000, "ingest_max_concurrency", "2..1000"),
            (1 <= self.max_receive_count <= 1000, "max_receive_count", "1..1000"),
            (128 <= self.api_memory_mb <= 10240, "api_memory_mb", "128..10240"),
            (1 <= self.api_timeout_s <= 29, "api_timeout_s", "1..29 (API Gateway's integration timeout)"),
            (self.api_rate_limit > 0, "api_rate_limit", "requests per second > 0"),
            (self.api_burst_limit >= 1, "api_burst_limit", ">= 1"),
            (self.api_quota_per_day >= 1, "api_quota_per_day", ">= 1"),
            (all(o.startswith("https://") for o in self.cors_origins), "cors_origins", "https:// origins"),
            (self.frontend_host in FRONTEND_HOSTS, "frontend_host", f"one of {FRONTEND_HOSTS}"),
            (is_repo_relative(self.frontend_dir), "frontend_dir", "a directory inside the repository"),
            (1 <= self.frontend_port <= 65535, "frontend_port", "a TCP port"),
            (
                self.frontend_memory in FRONTEND_SIZES.get(self.frontend_cpu, ()),
                "frontend_cpu/frontend_memory",
                f"a size pair, one of {FRONTEND_SIZES}",
            ),
            (1 <= self.frontend_max_instances <= 25, "frontend_max_instances", "1..25"),
            (
                bool(re.match(r"^[a-z0-9-]+\.[a-z0-9]+$", self.backfill_instance_type)),
                "backfill_instance_type",
                "an EC2 instance type such as g4dn.xlarge",
            ),
            (0 <= self.backfill_gpus <= 8, "backfill_gpus", "0..8"),
            (self.backfill_memory_mb >= 512, "backfill_memory_mb", ">= 512"),
            (1 <= self.backfill_max_instances <= 100, "backfill_max_instances", "1..100"),
            (self.backfill_batch_size >= 1, "backfill_batch_size", ">= 1"),
            (30 <= self.backfill_volume_gb <= 16384, "backfill_volume_gb", "30..16384"),
            (
                self.log_retention_days in LOG_RETENTION_DAYS,
                "log_retention_days",
                "a CloudWatch retention value",
            ),
            (not self.alarm_email or "@" in self.alarm_email, "alarm_email", "empty or an e-mail address"),
            (self.noncurrent_version_days >= 1, "noncurrent_version_days", ">= 1"),
        ]
        for ok, key, expected in checks:
            if not ok:
                raise ConfigError(f"CDK context {key}: expected {expected}")

    @property
    def name_prefix(self) -> str:
        return f"fashion-search-{self.stage}"

    @property
    def ingest_visibility_timeout_s(self) -> int:
        """AWS guidance for SQS event sources: at least 6 x the function timeout + the batching window,
        so a message is not redelivered while a throttled or retried invocation still holds it."""
        return 6 * self.ingest_timeout_s + self.ingest_batching_window_s

    @property
    def runtime_suffixes(self) -> tuple[str, ...]:
        """Suffixes as the runtime compares them (lower case; it ignores case)."""
        return tuple(dict.fromkeys(s.lower() for s in self.images_suffixes))

    @property
    def notification_suffixes(self) -> tuple[str, ...]:
        """S3 filters are case-sensitive: each suffix in lower and upper case (``.jpg``, ``.JPG``)."""
        return tuple(dict.fromkeys(v for s in self.runtime_suffixes for v in (s, s.upper())))


def is_repo_relative(path: str) -> bool:
    p = PurePosixPath(path)
    return bool(path) and not p.is_absolute() and ".." not in p.parts


def coerce(key: str, raw: Any, hint: Any) -> Any:
    """Context values from cdk.json keep their JSON types; ``-c key=value`` ones arrive as strings."""
    try:
        if hint is bool:
            return to_bool(raw)
        if hint is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError(raw)
            return int(raw)
        if hint is float:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return float(raw)
        if hint is str:
            if not isinstance(raw, str):
                raise ValueError(raw)
            return raw
        return to_str_tuple(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"CDK context {key}: cannot read {raw!r} as {getattr(hint, '__name__', hint)}"
        ) from exc


def to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in {"true", "false"}:
        return raw.strip().lower() == "true"
    raise ValueError(raw)


def to_str_tuple(raw: Any) -> tuple[str, ...]:
    """A JSON list, or from the command line a JSON list string or comma-separated values."""
    if isinstance(raw, str):
        text = raw.strip()
        raw = json.loads(text) if text.startswith("[") else [p.strip() for p in text.split(",") if p.strip()]
    if not isinstance(raw, list | tuple) or not all(isinstance(v, str) for v in raw):
        raise ValueError(raw)
    return tuple(raw)
