"""The real stack on loopback: a catalogue imported with the CLI, the API, the app, and Chromium.

Shared by the browser test and ``tests/ui/screenshot.py`` (the README picture), so both see the
app exactly as a shopper would: nothing here is faked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

from fashion_search.catalogue import list_images
from tests.plugins.aws_servers import free_port, wait_http_ok

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STARTUP_S = 120
CARDS = '[class*="st-key-card_"]'


class StackError(RuntimeError):
    """A part of the stack did not come up; the message carries the tail of its log."""


@dataclass
class Stack:
    api_url: str
    ui_url: str
    api: subprocess.Popen[bytes]
    image_statuses: dict[str, int] = field(default_factory=dict)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _server(command: list[str], env: dict[str, str], log: Path, health_url: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http_ok(health_url, STARTUP_S, proc)
    except RuntimeError as exc:
        stop(proc)
        raise StackError(f"{command[2]} did not start:\n{log.read_text(errors='replace')[-3000:]}") from exc
    return proc


@contextmanager
def running_stack(work: Path, model_dir: Path, images: Path, tags_csv: Path, limit: int) -> Iterator[Stack]:
    """``limit`` photos from ``images`` imported into ``work``, then ``uvicorn`` and ``streamlit run``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASHION_SEARCH_")}
    env |= {
        "PYTHONPATH": os.pathsep.join([str(REPO / "functions"), env.get("PYTHONPATH", "")]),
        "FASHION_SEARCH_MODEL_DIR": str(model_dir),
        "FASHION_SEARCH_DATA_DIR": str(work / "data"),
        "FASHION_SEARCH_ONNX_THREADS": "1",
        # Lets the "image link" search point the API at its own loopback address.
        "FASHION_SEARCH_URL_ALLOW_PRIVATE": "true",
    }
    ingest = [sys.executable, "-m", "fashion_search.cli", "ingest", str(images), "--tags-csv", str(tags_csv)]
    ingest += ["--limit", str(limit), "--quiet"]
    done = subprocess.run(ingest, cwd=REPO, env=env, capture_output=True, text=True, timeout=STARTUP_S * 5)
    expected = min(limit, len(list_images(images)))  # a limit above the folder's size takes it all
    if done.returncode != 0 or f'"ingested": {expected}' not in done.stdout:
        raise StackError(f"import failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")

    api_port, ui_port = free_port(), free_port()
    api_url, ui_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{ui_port}"
    api = _server(
        [
            *(sys.executable, "-m", "uvicorn", "--factory", "fashion_search.api.app:create_app_from_env"),
            *("--host", "127.0.0.1", "--port", str(api_port)),
        ],
        env,
        work / "api.log",
        f"{api_url}/health",
    )
    try:
        ui = _server(
            [
                *(sys.executable, "-m", "streamlit", "run", str(REPO / "streamlit_app" / "app.py")),
                *(
                    "--server.headless",
                    "true",
                    "--server.port",
                    str(ui_port),
                    "--server.address",
                    "127.0.0.1",
                ),
            ],
            env | {"FASHION_SEARCH_API_URL": api_url},
            work / "ui.log",
            f"{ui_url}/_stcore/health",
        )
    except StackError:
        stop(api)
        raise
    try:
        yield Stack(api_url=api_url, ui_url=ui_url, api=api)
    finally:
        stop(ui)
        stop(api)


@contextmanager
def chromium() -> Iterator[Browser]:
    if not Path(CHROMIUM).is_file():
        raise StackError(f"{CHROMIUM} missing: install Debian's browser with `apt-get install -y chromium`")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def search_text(page: Page, text: str) -> None:
    page.get_by_label("What are you looking for?").fill(text)
    page.get_by_role("button", name="Search", exact=True).click()


def upload_photo(page: Page, photo: Path) -> None:
    page.get_by_role("tab", name="Upload a photo").click()
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(photo))


def settled_card_ids(page: Page) -> list[str]:
    """Waits for the rerun to finish and every card photo to load; returns the cards' image ids.

    Raises ``AssertionError`` when a photo did not load (``naturalWidth`` 0: its ``src`` failed).
    """
    page.wait_for_function(
        """(sel) => {
            if (document.querySelector('[data-stale="true"]')) return false;
            const imgs = [...document.querySelectorAll(sel + ' img')];
            return imgs.length > 0 && imgs.every((img) => img.complete);
        }""",
        arg=CARDS,
    )
    widths = page.eval_on_selector_all(f"{CARDS} img", "imgs => imgs.map(i => i.naturalWidth)")
    assert widths and all(w > 0 for w in widths), f"some result photos did not load: {widths}"
    classes = page.eval_on_selector_all(CARDS, "cards => cards.map(c => c.className)")
    return [c.split("st-key-card_", 1)[1].split()[0] for c in classes]
