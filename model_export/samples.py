"""The images and texts verification embeds with both PyTorch and ONNX Runtime.

Real catalogue photos and their product names when the KAGL data set is at hand (so the
retrieval check is a meaningful one for real checkpoints), otherwise seeded synthetic images.
The texts always include the awkward cases: empty, longer than the context, unicode and emoji.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_KAGL_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "kagl"
HARD_TEXTS = (
    "",
    "   Red   SUMMER dress\tfor women\n",
    "Röd klänning für Damen — été 👗✨ 夏のドレス",
    "men's slim-fit jeans (32/34), 100% cotton!!!",
    " ".join(["a long description of a navy blue floral print cotton maxi dress"] * 8),
)
SYNTHETIC_TEXTS = ("navy blue t-shirt", "black leather shoes", "white sneakers", "green handbag")


@dataclass(frozen=True)
class Samples:
    images: list[Image.Image]
    texts: list[str]
    description: str


def load_samples(kagl_dir: Path | None = None, count: int = 8) -> Samples:
    """``count`` products of different article types from KAGL, or synthetic ones without it.

    Held-out products (id % 10 == 0) are skipped even though nothing is trained here.
    """
    kagl_dir = DEFAULT_KAGL_DIR if kagl_dir is None else Path(kagl_dir)
    if (kagl_dir / "styles.csv").is_file():
        return _kagl_samples(kagl_dir.resolve(), count)
    return _synthetic_samples(count)


def _kagl_samples(kagl_dir: Path, count: int) -> Samples:
    with (kagl_dir / "styles.csv").open(newline="", encoding="utf-8") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: int(r["id"]))
    images: list[Image.Image] = []
    texts: list[str] = []
    seen: set[str] = set()
    for row in rows:
        path = kagl_dir / "images" / f"{row['id']}.jpg"
        if int(row["id"]) % 10 == 0 or row["articleType"] in seen or not path.is_file():
            continue
        seen.add(row["articleType"])
        with Image.open(path) as img:
            images.append(img.convert("RGB"))
        texts.append(row["productDisplayName"])
        if len(images) == count:
            break
    return Samples(
        images, texts + list(HARD_TEXTS), f"{len(images)} KAGL products + {len(HARD_TEXTS)} edge-case texts"
    )


def _synthetic_samples(count: int) -> Samples:
    rng = np.random.default_rng(0)
    images = []
    for i in range(count):
        h, w = (80, 60) if i % 2 else (200, 300)
        base = rng.integers(0, 256, size=3)
        ramp = np.linspace(0, 1, w)[None, :, None] * rng.integers(-120, 120, size=3)
        noise = rng.normal(0, 20, size=(h, w, 3))
        images.append(Image.fromarray(np.clip(base + ramp + noise, 0, 255).astype(np.uint8)))
    return Samples(images, list(SYNTHETIC_TEXTS) + list(HARD_TEXTS), f"{count} synthetic images")
