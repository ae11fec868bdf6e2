"""Real AWS and Pinecone protocols on loopback, for any test area (and the load benchmark).

- ``moto_server``: moto in server mode (S3, SQS, DynamoDB, Secrets Manager) on a free loopback port,
  in a thread of the test process. S3 -> SQS event notifications work as in AWS, except that
  moto's events carry no ``sequencer`` (tests that need ordering send their own events).
- ``needledb_server``: a needledb process serving Pinecone's data-plane API, so the official
  ``pinecone`` client talks HTTP to it unchanged; ``stop()``/``start()`` simulate an outage and
  keep the data (needledb persists to SQLite).
- ``aws_stack``: a factory for a fresh, uniquely named bucket (notifying a fresh queue), table
  and Pinecone index, plus the ``Settings`` pointing at them.

Register with ``pytest_plugins = ["tests.plugins.aws_servers"]`` in the root conftest.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from fashion_search.config import Settings
from fashion_search.stores.dynamodb_metadata import create_table

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http_ok(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


class MotoServer:
    """moto's ThreadedMotoServer bound to loopback on a free port."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
        self.endpoint_url = ""
        # One session for every client: it caches the service models (seconds per client otherwise).
        self.session = boto3.session.Session()
        self._clients: dict[str, Any] = {}
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one INFO line per request

    def start(self) -> None:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"

    def stop(self) -> None:
        self._server.stop()

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.session.client(
                service, region_name=REGION, endpoint_url=self.endpoint_url
            )
        return self._clients[service]


class NeedleDBServer:
    """A needledb process; the port stays fixed across restarts so index hosts stay valid."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.api_key = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "needledb", "serve", "--data", str(self.data_dir)]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        env = {**os.environ, "NEEDLEDB_API_KEY": self.api_key}  # not on the command line (ps)
        self._proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http_ok(f"{self.url}/health", timeout_s=60, proc=self._proc)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def create_index(self, name: str, dim: int) -> str:
        """Create an index (dot product: the vectors are unit-norm) and return its data-plane host."""
        body = json.dumps({"name": name, "dimension": dim, "metric": "dotproduct", "index_type": "flat"})
        request = urllib.request.Request(
            f"{self.url}/indexes",
            data=body.encode(),
            headers={"Api-Key": self.api_key, "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status not in (200, 201):
                raise RuntimeError(f"creating index {name}: HTTP {response.status}")
        return f"{self.url}/indexes/{name}"


@dataclass(frozen=True)
class Queue:
    """An SQS queue and a client for it (what an SQS poller needs)."""

    sqs: Any
    url: str
    name: str


@dataclass(frozen=True)
class AwsStack:
    """One isolated set of resources on the shared servers."""

    moto: MotoServer
    bucket: str
    queue_url: str
    table: str
    pinecone_host: str
    pinecone_api_key: str
    namespace: str = ""

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = dict(
            backend="aws",
            aws_region=REGION,
            aws_endpoint_url=self.moto.endpoint_url,
            s3_bucket=self.bucket,
            dynamodb_table=self.table,
            pinecone_index_host=self.pinecone_host,
            pinecone_api_key=self.pinecone_api_key,
            pinecone_namespace=self.namespace,
        )
        values.update(overrides)
        return Settings(**values)

    @property
    def queue(self) -> Queue:
        """The queue the bucket notifies (named like the bucket)."""
        return Queue(self.client("sqs"), self.queue_url, self.bucket)

    def env(self, model_dir: Path, **extra: str) -> dict[str, str]:
        """The ``FASHION_SEARCH_*`` variables a deployed function (or a uvicorn process) would get."""
        settings = self.settings()
        values = {
            "MODEL_DIR": str(model_dir),
            "BACKEND": "aws",
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": self.moto.endpoint_url,
            "S3_BUCKET": self.bucket,
            "DYNAMODB_TABLE": self.table,
            "PINECONE_INDEX_HOST": self.pinecone_host,
            "PINECONE_API_KEY": self.pinecone_api_key,
            "PINECONE_NAMESPACE": settings.pinecone_namespace,
            **extra,
        }
        return {f"FASHION_SEARCH_{name}": value for name, value in values.items()}

    def client(self, service: str) -> Any:
        """A plain client on the shared session (for test set-up and inspection)."""
        return self.moto.client(service)


def create_stack(moto: MotoServer, needle: NeedleDBServer, dim: int, namespace: str = "") -> AwsStack:
    """A bucket whose ObjectCreated/ObjectRemoved events go to a new SQS queue (as the CDK stack
    wires it), a DynamoDB table and a Pinecone index, all named uniquely."""
    name = f"fs-{uuid.uuid4().hex[:12]}"
    sqs, s3 = moto.client("sqs"), moto.client("s3")
    queue_url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    s3.create_bucket(Bucket=name)
    s3.put_bucket_notification_configuration(
        Bucket=name,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}",
                    "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                }
            ]
        },
    )
    create_table(moto.client("dynamodb"), name)
    host = needle.create_index(name, dim)
    return AwsStack(moto, name, queue_url, name, host, needle.api_key, namespace)


@pytest.fixture(scope="session")
def aws_test_env() -> Iterator[None]:
    """Fake credentials, so no test can reach a real account whatever the machine's config."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            mp.delenv(name, raising=False)
        for name, value in AWS_TEST_ENV.items():
            mp.setenv(name, value)
        yield


@pytest.fixture(scope="session")
def moto_server(aws_test_env: None) -> Iterator[MotoServer]:
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def needledb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NeedleDBServer]:
    server = NeedleDBServer(tmp_path_factory.mktemp("needledb"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def aws_stack(moto_server: MotoServer, needledb_server: NeedleDBServer) -> Iterator[Callable[..., AwsStack]]:
    """``aws_stack(dim, namespace="")`` -> a fresh ``AwsStack``; restarts needledb if a test left it down."""

    def make(dim: int, namespace: str = "") -> AwsStack:
        return create_stack(moto_server, needledb_server, dim, namespace)

    yield make
    if not needledb_server.running:
        needledb_server.start()
