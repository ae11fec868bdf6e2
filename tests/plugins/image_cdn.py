"""A shop's image CDN for URL imports: a real HTTP server on loopback serving KAGL photos."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest


class _Server(http.server.ThreadingHTTPServer):
    """A real HTTP server (a shop's image CDN, for URL imports) that remembers what was asked."""

    daemon_threads = True
    paths: list[str]


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


ImageCdn = tuple[str, list[str], _Server]


@pytest.fixture
def image_cdn(tmp_path: Path, kagl_dir: Path, kagl_sample_ids: list[str]) -> Iterator[ImageCdn]:
    """Six KAGL photos and a text file, served over HTTP on loopback: (base URL, their ids, the
    server, whose ``paths`` lists every GET it answered)."""
    root = tmp_path / "cdn"
    (root / "img").mkdir(parents=True)
    ids = kagl_sample_ids[:6]
    for pid in ids:
        (root / "img" / f"{pid}.jpg").write_bytes((kagl_dir / "images" / f"{pid}.jpg").read_bytes())
    (root / "img" / "readme.txt").write_text("not a photo")
    server = _Server(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    server.paths = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", ids, server
    server.shutdown()
    server.server_close()
