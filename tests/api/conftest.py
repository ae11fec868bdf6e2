"""Fixtures for the API tests: a real HTTP image server on loopback, and an app over local services.

The image server is a plain ``http.server`` in a thread with misbehaving routes (redirects, slow
drips, endless bodies) so the URL fetcher is tested against real sockets, not a mocked client.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient

from fashion_search.api.app import create_app
from fashion_search.catalogue import CatalogueImporter
from fashion_search.config import Settings
from fashion_search.encoder import Encoder
from fashion_search.services import Services, build_services

DRIP_INTERVAL_S = 0.05
DRIP_MAX_S = 30.0  # a fetcher without a total deadline would sit here this long, then fail differently
ENDLESS_BYTES = 64 * 1024 * 1024
SAMPLE_SIZE = 20


@dataclass
class ImageServer:
    """State shared with the handler threads; tests read what the server saw."""

    image: bytes
    base_url: str = ""
    hosts: list[str] = field(default_factory=list)
    endless_sent: list[int] = field(default_factory=list)
    barrier: threading.Barrier | None = None
    rendezvous: list[tuple[float, float]] = field(default_factory=list)
    drips: list[str] = field(default_factory=list)  # "cut" (the client hung up) or "finished"

    def url(self, path: str) -> str:
        return self.base_url + path

    def wait_for(self, probe: Callable[[], Any], timeout_s: float = 10.0) -> Any:
        """Polls for what the server observes a moment after the client gave up."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            value = probe()
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError("the server never reported")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "image/jpeg", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _drip(self, data: bytes) -> None:
        deadline = time.monotonic() + DRIP_MAX_S
        try:
            for byte in data:
                if time.monotonic() > deadline:
                    break
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(DRIP_INTERVAL_S)
        except OSError:
            self.server.state.drips.append("cut")
            return
        self.server.state.drips.append("finished")

    def do_GET(self) -> None:
        state = self.server.state
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        state.hosts.append(self.headers.get("Host", ""))
        if path == "/image.jpg":
            self._send(200, state.image)
        elif path == "/redirect":
            self._send(int(query.get("status", "302")), b"", "text/plain", Location=query["to"])
        elif path.startswith("/chain/"):
            hops = int(path.rsplit("/", 1)[1])
            self._send(302, b"", "text/plain", Location=f"/chain/{hops - 1}") if hops else self._send(
                200, state.image
            )
        elif path == "/status":
            self._send(int(query["code"]), b"nope", "text/plain")
        elif path == "/text":
            self._send(200, b"<html><body>not an image</body></html>", "text/html")
        elif path == "/drip-body":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(state.image)))
            self.end_headers()
            self._drip(state.image)
        elif path == "/drip-headers":
            self.wfile.write(b"HTTP/1.0 200 OK\r\nX-Drip: ")
            self._drip(b"a" * 10_000)
        elif path == "/endless":
            self._endless(declared=False)
        elif path == "/declared-huge":
            self._endless(declared=True)
        elif path == "/rendezvous.jpg":
            arrived = time.monotonic()
            assert state.barrier is not None
            state.barrier.wait()  # raises BrokenBarrierError (-> no answer) unless all arrive together
            state.rendezvous.append((arrived, time.monotonic()))
            self._send(200, state.image)
        else:
            self._send(404, b"unknown route", "text/plain")

    def _endless(self, *, declared: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        if declared:
            self.send_header("Content-Length", str(ENDLESS_BYTES))
        self.end_headers()
        chunk = b"\0" * 65536
        sent = 0
        try:
            while sent < ENDLESS_BYTES:
                self.wfile.write(chunk)
                sent += len(chunk)
        except OSError:
            pass
        self.server.state.endless_sent.append(sent)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    state: ImageServer


@pytest.fixture(scope="session")
def sample_paths(kagl_dir: Path, kagl_sample_ids: list[str]) -> list[Path]:
    return [kagl_dir / "images" / f"{i}.jpg" for i in kagl_sample_ids[:SAMPLE_SIZE]]


@pytest.fixture(scope="session")
def url_server(sample_paths: list[Path]) -> Iterator[ImageServer]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = ImageServer(image=sample_paths[0].read_bytes())
    server.state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.state
    server.shutdown()
    server.server_close()


@dataclass
class TlsServer:
    base_url: str
    ca_file: Path
    server_names: list[str | None]  # SNI as the server saw it, per handshake


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None, signer: Any, *, ca: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(
            issuer.subject if issuer else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        )
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            # No IP entry: verification passes only if it checks the name, not the pinned address.
            x509.SubjectAlternativeName([x509.DNSName("localhost")]),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture(scope="session")
def tls_server(tmp_path_factory: pytest.TempPathFactory, sample_paths: list[Path]) -> Iterator[TlsServer]:
    """The image server over HTTPS with a certificate for "localhost" from a throwaway CA."""
    folder = tmp_path_factory.mktemp("tls")
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("fashion-search test CA", ca_key, None, ca_key, ca=True)
    leaf = _certificate("localhost", leaf_key, ca, ca_key, ca=False)
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (folder / "leaf.key").write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "leaf.pem", folder / "leaf.key")
    context.sni_callback = lambda _sock, name, _ctx: names.append(name)  # type: ignore[assignment,func-returns-value]
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = ImageServer(image=sample_paths[0].read_bytes())
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield TlsServer(f"https://localhost:{server.server_address[1]}", folder / "ca.pem", names)
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def api_encoder(tiny_model_dir: Path) -> Encoder:
    return Encoder.load(tiny_model_dir, threads=1)


@pytest.fixture(scope="session")
def indexed_data_dir(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model_dir: Path,
    api_encoder: Encoder,
    kagl_dir: Path,
    kagl_styles: dict[str, dict[str, str]],
    sample_paths: list[Path],
) -> Path:
    """~20 KAGL images with their styles.csv tags, imported once through the real importer."""
    data_dir = tmp_path_factory.mktemp("api-data")
    services = build_services(Settings(model_dir=tiny_model_dir, data_dir=data_dir), encoder=api_encoder)
    tags = {p.stem: {k: v for k, v in kagl_styles[p.stem].items() if k != "id" and v} for p in sample_paths}
    summary = CatalogueImporter(services, kagl_dir / "images", tags).run(sample_paths)
    assert summary.ingested == len(sample_paths), summary.as_dict()
    return data_dir


def make_services(model_dir: Path, encoder: Encoder, data_dir: Path, **overrides: Any) -> Services:
    return build_services(Settings(model_dir=model_dir, data_dir=data_dir, **overrides), encoder=encoder)


@pytest.fixture
def make_client(
    tiny_model_dir: Path, api_encoder: Encoder, indexed_data_dir: Path
) -> Iterator[Callable[..., TestClient]]:
    """A client over the indexed catalogue with the given settings overrides.

    Entered as a context manager so that all requests share one event loop, as under uvicorn.
    """
    clients: list[TestClient] = []

    def make(raise_server_exceptions: bool = True, **overrides: Any) -> TestClient:
        services = make_services(tiny_model_dir, api_encoder, indexed_data_dir, **overrides)
        client = TestClient(create_app(services), raise_server_exceptions=raise_server_exceptions)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture
def make_live_server(
    tiny_model_dir: Path, api_encoder: Encoder, indexed_data_dir: Path
) -> Iterator[Callable[..., str]]:
    """The app under a real uvicorn on loopback (for raw-socket tests); returns its base URL."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**overrides: Any) -> str:
        app = create_app(make_services(tiny_model_dir, api_encoder, indexed_data_dir, **overrides))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread))
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(timeout=10)
