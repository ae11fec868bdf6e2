"""Retake ``docs/screenshot.png``: the real app, in Chromium, with real results.

    python -m tests.ui.screenshot --model models/kagl-minilm --text "red summer dress"
    python -m tests.ui.screenshot --model tests/fixtures/tiny-clip --photo ../shared/data/kagl/hires/2644.jpg

The catalogue (``--limit`` photos of ``--images``, tagged from styles.csv; by default the whole KAGL
catalogue, as in ``make demo``) is imported into a
temporary folder with the CLI, served by the API and the app exactly as in the browser test.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tests.ui.live_stack import REPO, chromium, running_stack, search_text, settled_card_ids, upload_photo

KAGL = (REPO / ".." / "shared" / "data" / "kagl").resolve()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=REPO / "models" / "kagl-minilm")
    # The catalogue as ``make demo`` imports it. (images224 is sharper but squashed to square,
    # which the fit-and-pad model sees as distorted: cosine ~0.90 to the same product's photo,
    # against 0.995 for a full-size 1200x1600 upload.)
    parser.add_argument("--images", type=Path, default=KAGL / "images")
    parser.add_argument("--limit", type=int, default=10**6, help="default: every photo in --images")
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--text")
    query.add_argument("--photo", type=Path)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshot.png")
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory() as work,
        running_stack(Path(work), args.model, args.images, KAGL / "styles.csv", args.limit) as stack,
        chromium() as browser,
    ):
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(stack.ui_url)
        if args.text:
            search_text(page, args.text)
        else:
            upload_photo(page, args.photo)
        settled_card_ids(page)
        page.screenshot(path=str(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
