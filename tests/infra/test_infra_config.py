"""CDK context -> InfraConfig: cdk.json's defaults, CLI strings, and clear errors (no synth needed)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fashion_search.config import Settings
from infra.app import REPO_ROOT, default_context
from infra.stacks.config import ConfigError, InfraConfig


def config_with(**overrides: Any) -> InfraConfig:
    return InfraConfig.from_context({**default_context(), **overrides}.get)


def test_cdk_json_holds_every_key_and_valid_defaults() -> None:
    config = config_with()
    assert config.stage == "dev" and config.retain_data is True
    assert config.ingest_visibility_timeout_s == 6 * 90 + 5


def test_default_suffixes_are_the_runtimes() -> None:
    """The bucket notifies for exactly what the ingest handler accepts."""
    assert config_with().runtime_suffixes == Settings.model_fields["s3_suffixes"].default


def test_notifications_cover_both_cases_because_s3_filters_are_case_sensitive() -> None:
    config = config_with(images_suffixes=[".jpg", ".JPEG", ".png"])
    assert config.runtime_suffixes == (".jpg", ".jpeg", ".png")
    assert config.notification_suffixes == (".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG")


def test_command_line_strings_are_coerced() -> None:
    config = config_with(
        ingest_memory_mb="4096",
        api_rate_limit="12.5",
        retain_data="false",
        images_suffixes='[".jpg", ".png"]',
        cors_origins="https://a.example.com, https://b.example.com",
    )
    assert config.ingest_memory_mb == 4096 and config.api_rate_limit == 12.5
    assert config.retain_data is False
    assert config.images_suffixes == (".jpg", ".png")
    assert config.cors_origins == ("https://a.example.com", "https://b.example.com")


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"stage": "Prod_1"}, "stage"),
        ({"stage": "a-very-long-stage-name"}, "stage"),
        ({"pinecone_index_host": "http://insecure.pinecone.io"}, "pinecone_index_host"),
        ({"pinecone_api_key_secret_arn": "pinecone-key"}, "pinecone_api_key_secret_arn"),
        ({"model_dir": "../elsewhere"}, "model_dir"),
        ({"model_dir": "/abs/model"}, "model_dir"),
        ({"images_prefix": "/images"}, "images_prefix"),
        ({"images_suffixes": ["jpg"]}, "images_suffixes"),
        ({"images_suffixes": []}, "images_suffixes"),
        ({"ingest_memory_mb": 64}, "ingest_memory_mb"),
        ({"ingest_batching_window_s": 0, "ingest_batch_size": 20}, "ingest_batch_size"),
        ({"ingest_max_concurrency": 1}, "ingest_max_concurrency"),
        ({"ingest_timeout_s": 901}, "ingest_timeout_s"),
        ({"api_timeout_s": 60}, "api_timeout_s"),
        ({"cors_origins": ["http://localhost:8501"]}, "cors_origins"),
        ({"frontend_cpu": "1 vCPU", "frontend_memory": "1 GB"}, "frontend_cpu/frontend_memory"),
        ({"backfill_instance_type": "a big GPU"}, "backfill_instance_type"),
        ({"frontend_host": "lightsail"}, "frontend_host"),
        ({"log_retention_days": 31}, "log_retention_days"),
        ({"alarm_email": "ops"}, "alarm_email"),
        ({"ingest_memory_mb": "lots"}, "ingest_memory_mb"),
        ({"ingest_memory_mb": True}, "ingest_memory_mb"),
        ({"retain_data": "maybe"}, "retain_data"),
        ({"stage": 7}, "stage"),
        ({"images_suffixes": '[".jpg", 1]'}, "images_suffixes"),
    ],
)
def test_bad_values_fail_the_synth_naming_the_key(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=f"CDK context {named}"):
        config_with(**overrides)


def test_a_missing_key_is_named() -> None:
    context = default_context()
    del context["api_quota_per_day"]
    with pytest.raises(ConfigError, match="'api_quota_per_day' is missing"):
        InfraConfig.from_context(context.get)


@pytest.mark.slow
def test_cdk_json_app_command_runs_as_a_script_and_takes_cli_context(tmp_path: Path) -> None:
    """What `cdk synth` runs: the script resolves its imports, and -c values beat cdk.json's."""
    command = shlex.split(json.loads((REPO_ROOT / "cdk.json").read_text(encoding="utf-8"))["app"])
    assert command[1:] == ["infra/app.py"]
    env = {**os.environ, "CDK_OUTDIR": str(tmp_path), "CDK_CONTEXT_JSON": json.dumps({"stage": "Bad Stage"})}
    result = subprocess.run(
        [sys.executable, *command[1:]], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert "ConfigError: CDK context stage" in result.stderr
