"""A shopper's session in headless Debian Chromium against the real stack on loopback.

Nothing is faked: KAGL photos are imported with the ``fashion-search`` CLI (tiny test model), the
API runs under ``uvicorn``, the app under ``streamlit run``, and Playwright drives
``/usr/bin/chromium`` (``apt-get install chromium``; no Playwright browser download). The steps
share one session on purpose, the way a shopper's do, and end by stopping the API.

Screenshots of every step land in ``test-artifacts/ui/`` (git-ignored) for a human to look at.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Response, expect

from tests.ui.live_stack import (
    CARDS,
    REPO,
    Stack,
    StackError,
    chromium,
    running_stack,
    search_text,
    settled_card_ids,
    stop,
    upload_photo,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = REPO / "test-artifacts" / "ui"
CATALOGUE_SIZE = 30
STEP_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def live_stack(
    tmp_path_factory: pytest.TempPathFactory, kagl_dir: Path, tiny_model_dir: Path
) -> Iterator[Stack]:
    """30 KAGL photos imported with the CLI, the API under uvicorn and the app under streamlit."""
    work = tmp_path_factory.mktemp("ui-e2e")
    try:
        with running_stack(
            work, tiny_model_dir, kagl_dir / "images", kagl_dir / "styles.csv", CATALOGUE_SIZE
        ) as stack:
            yield stack
    except StackError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        with chromium() as browser:
            yield browser
    except StackError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def page(browser: Browser, live_stack: Stack) -> Iterator[Page]:
    """A desktop-sized page that records the status of every result-photo fetch."""
    context = browser.new_context(viewport={"width": 1280, "height": 1500})
    tab = context.new_page()
    tab.set_default_timeout(STEP_TIMEOUT_MS)
    expect.set_options(timeout=STEP_TIMEOUT_MS)  # a busy CI box starts Streamlit's page slowly

    def record(response: Response) -> None:
        if response.url.startswith(f"{live_stack.api_url}/images/"):
            live_stack.image_statuses[response.url] = response.status

    tab.on("response", record)
    yield tab
    context.close()


def _heading(page: Page, text: str) -> None:
    expect(page.get_by_role("heading", name=re.compile(re.escape(text)))).to_be_visible()


def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _chips(page: Page) -> list[list[str]]:
    return page.eval_on_selector_all(
        CARDS, "cards => cards.map(c => [...c.querySelectorAll('.fs-chip')].map(s => s.textContent))"
    )


def test_shopper_session_against_the_live_api(
    page: Page, browser: Browser, live_stack: Stack, kagl_dir: Path
) -> None:
    page.goto(live_stack.ui_url)
    expect(page.get_by_text("Start with a description, a photo or a link")).to_be_visible()
    _shot(page, "01-welcome")

    # Text search: cards appear and every photo's src was fetched from the API.
    search_text(page, "blue denim jeans")
    _heading(page, "Results for “blue denim jeans”")
    text_ids = settled_card_ids(page)
    assert len(text_ids) == 12
    srcs = page.eval_on_selector_all(f"{CARDS} img", "imgs => imgs.map(i => i.src)")
    assert all(src.startswith(f"{live_stack.api_url}/images/") for src in srcs)
    assert set(srcs) <= set(live_stack.image_statuses)
    assert set(live_stack.image_statuses.values()) == {200}
    _shot(page, "02-text-results")

    # "Show more": the next page joins the grid below the first one, with no product twice.
    page.get_by_role("button", name="Show more").click()
    page.wait_for_function("(sel) => document.querySelectorAll(sel).length > 12", arg=CARDS)
    more_ids = settled_card_ids(page)
    assert len(more_ids) == 24 and more_ids[:12] == text_ids and len(set(more_ids)) == 24
    page.get_by_role("button", name="Show more").scroll_into_view_if_needed()  # 6 more remain
    _shot(page, "02b-show-more")

    # The same search on a phone: the sidebar folds away and the grid keeps two cards a row.
    phone = browser.new_page(viewport={"width": 420, "height": 1100})
    phone.set_default_timeout(STEP_TIMEOUT_MS)
    phone.goto(live_stack.ui_url)
    search_text(phone, "blue denim jeans")
    assert settled_card_ids(phone) == text_ids
    expect(phone.locator('[data-testid="stSidebar"]')).not_to_be_in_viewport()
    tops = phone.eval_on_selector_all(
        CARDS, "cards => cards.slice(0, 3).map(c => c.getBoundingClientRect().top)"
    )
    assert tops[0] == tops[1] < tops[2]
    # Narrow cards whose tag chips wrap stay as tall as their neighbours: the "More like this"
    # buttons of a row line up.
    boxes = phone.eval_on_selector_all(
        CARDS,
        "cards => cards.map(c => [c.getBoundingClientRect().top, c.getBoundingClientRect().height,"
        " c.querySelector('.fs-chips').getBoundingClientRect().height])",
    )
    assert len({round(chips) for _, _, chips in boxes}) == 1
    rows: dict[int, set[int]] = {}
    for top, height, _ in boxes:
        rows.setdefault(round(top), set()).add(round(height))
    assert all(len(heights) == 1 for heights in rows.values())
    _shot(phone, "03-text-results-phone")
    phone.close()

    # "More like this" on the first card: similar products, without the product itself.
    first = text_ids[0]
    page.locator(f".st-key-more_{first} button").click()
    _heading(page, "More like “")
    similar_ids = settled_card_ids(page)
    assert similar_ids and first not in similar_ids
    _shot(page, "04-more-like-this")

    # A photo upload (a full-size KAGL photo, as a phone would send).
    upload_photo(page, sorted((kagl_dir / "hires").glob("*.jpg"))[0])
    _heading(page, "Products like your photo")
    assert len(settled_card_ids(page)) == 12
    _shot(page, "05-photo-results")

    # An image link: the API downloads the photo itself.
    page.get_by_role("tab", name="Image link").click()
    page.get_by_label("Link to an image").fill(f"{live_stack.api_url}/images/{first}/file")
    page.get_by_role("button", name="Find similar").click()
    _heading(page, "Products like the linked image")
    assert settled_card_ids(page)[0] == first  # the linked photo itself is the best match
    _shot(page, "06-link-results")

    # A filter from the sidebar: every card now carries the chosen tag.
    page.locator('[data-testid="stSidebar"] [data-testid="stMultiSelect"]').filter(has_text="Gender").click()
    page.get_by_role("option", name=re.compile(r"^Men \(\d+\)$")).click()
    page.keyboard.press("Escape")
    page.wait_for_function(
        """(sel) => !document.querySelector('[data-stale="true"]') && [...document.querySelectorAll(sel)]
            .every((c) => [...c.querySelectorAll('.fs-chip')].some((s) => s.textContent === 'Men'))""",
        arg=CARDS,
    )
    settled_card_ids(page)
    chips = _chips(page)
    assert chips and all("Men" in card for card in chips)
    _shot(page, "07-filtered")

    # The API goes away: the next search says so in words, and the page stays usable.
    stop(live_stack.api)
    page.get_by_role("tab", name="Describe it").click()
    search_text(page, "red dress")
    alert = page.locator('[data-testid="stAlert"]').filter(has_text="Can't reach the search service")
    expect(alert.first).to_be_visible()
    assert "Traceback" not in page.locator("body").inner_text()
    expect(page.get_by_role("button", name="Try again")).to_be_visible()
    _shot(page, "08-api-down")
