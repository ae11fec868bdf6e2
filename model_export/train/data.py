"""KAGL catalogue -> in-memory training tensors: images, the held-out split, and captions.

Everything here is deterministic and cached under a run's cache directory, because decoding 44k
JPEGs and encoding ~60k captions with the frozen text tower are the two costs worth paying once.
Images are prepared by the runtime's own ``resize_for_tower`` with the manifest's image spec
(``fit_pad`` into 80x60 on white, PIL bilinear), so the image tower never sees pixels the runtime
would not reproduce.
"""

from __future__ import annotations

import csv
import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from fashion_search.imaging import resize_for_tower, to_rgb
from fashion_search.manifest import ImageTower

HEIGHT, WIDTH = 80, 60
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
# The image half of the exported manifest: training prepares pixels with the runtime's own code.
IMAGE_SPEC = ImageTower(
    height=HEIGHT,
    width=WIDTH,
    resize="fit_pad",
    interpolation="bilinear",
    pad_color=(255, 255, 255),
    mean=MEAN,
    std=STD,
)
FIELDS = ("name", "gender", "colour", "article", "usage", "season")
NAME, GENDER, COLOUR, ARTICLE, USAGE, SEASON = range(len(FIELDS))
CSV_COLUMNS = {
    "name": "productDisplayName",
    "gender": "gender",
    "colour": "baseColour",
    "article": "articleType",
    "usage": "usage",
    "season": "season",
}


def is_held_out(product_id: int) -> bool:
    """The evaluation split: never trained or tuned on."""
    return product_id % 10 == 0


def is_validation(product_id: int) -> bool:
    """A small slice of the training ids kept out of training, to watch progress without peeking."""
    return not is_held_out(product_id) and product_id % 50 == 1


@dataclass(frozen=True)
class Catalogue:
    """The rows of a styles.csv that have an image, as parallel lists (row order = sorted by id)."""

    ids: list[int]
    rows: list[dict[str, str]]

    @classmethod
    def load(cls, captions_csv: Path, image_dir: Path) -> Catalogue:
        with captions_csv.open(newline="", encoding="utf-8") as fh:
            by_id = {int(row["id"]): row for row in csv.DictReader(fh)}
        present = {int(p.stem) for p in image_dir.glob("*.jpg") if p.stem.isdigit()}
        ids = sorted(present & set(by_id))
        return cls(ids=ids, rows=[by_id[i] for i in ids])

    def subset(self, keep: Sequence[int]) -> Catalogue:
        wanted = set(keep)
        pairs = [(i, r) for i, r in zip(self.ids, self.rows, strict=True) if i in wanted]
        return Catalogue(ids=[i for i, _ in pairs], rows=[r for _, r in pairs])

    def split(self) -> tuple[Catalogue, Catalogue, Catalogue]:
        """(train, validation, held_out)."""
        train = [i for i in self.ids if not is_held_out(i) and not is_validation(i)]
        val = [i for i in self.ids if is_validation(i)]
        held = [i for i in self.ids if is_held_out(i)]
        return self.subset(train), self.subset(val), self.subset(held)

    def field(self, name: str) -> list[str]:
        return [row.get(CSV_COLUMNS[name], "").strip() for row in self.rows]


def prepare_image(image: Image.Image, spec: ImageTower = IMAGE_SPEC) -> Image.Image:
    """Exactly the runtime's preparation (EXIF transpose, RGB, resize per ``spec``), before scaling."""
    return resize_for_tower(to_rgb(ImageOps.exif_transpose(image)), spec)


def load_images(
    image_dir: Path, ids: Sequence[int], cache: Path | None = None, spec: ImageTower = IMAGE_SPEC
) -> np.ndarray:
    """uint8 [N, H, W, 3] for ``ids`` in order; cached as .npy keyed by the id list and the recipe."""
    key = hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()[:16]
    recipe = "" if spec == IMAGE_SPEC else f"-{spec.resize}-{spec.interpolation}"

    def decode_all() -> np.ndarray:
        out = np.empty((len(ids), spec.height, spec.width, 3), dtype=np.uint8)
        for n, product_id in enumerate(ids):
            with Image.open(image_dir / f"{product_id}.jpg") as img:
                out[n] = np.asarray(prepare_image(img, spec))
        return out

    return cached_array(
        cache / f"images-{spec.height}x{spec.width}{recipe}-{key}.npy" if cache else None, decode_all
    )


def cached_array(path: Path | None, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """``compute()``, stored at ``path`` (atomically, so a killed run never leaves half a file)."""
    if path is not None and path.is_file():
        return np.load(path)
    out = compute()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, out)
        tmp.replace(path)
    return out


# --- captions ---------------------------------------------------------------------------------

# Gender as a modifier ("men's black shirt") and after "for" ("black shirt for men").
GENDER_WORDS = {
    "Men": ["men", "men's", "male", "mens", "gents"],
    "Women": ["women", "women's", "ladies", "womens", "female"],
    "Boys": ["boys", "boy's", "kids"],
    "Girls": ["girls", "girl's", "kids"],
    "Unisex": ["unisex"],
}
FOR_GENDER_WORDS = {
    "Men": ["men", "man", "him", "guys", "gents"],
    "Women": ["women", "woman", "her", "ladies"],
    "Boys": ["boys", "a boy", "kids"],
    "Girls": ["girls", "a girl", "kids"],
    "Unisex": ["everyone", "men and women"],
}
# A few everyday synonyms for KAGL's article-type labels, so that ordinary queries land on them.
ARTICLE_WORDS = {
    "Tshirts": ["t-shirt", "tshirt", "tee", "tee shirt", "polo tee"],
    "Shirts": ["shirt"],
    "Casual Shoes": ["casual shoes", "sneakers", "casual footwear"],
    "Sports Shoes": ["sports shoes", "running shoes", "trainers", "sports footwear"],
    "Formal Shoes": ["formal shoes", "dress shoes", "formal footwear"],
    "Watches": ["watch", "wrist watch", "wristwatch"],
    "Handbags": ["handbag", "purse", "bag"],
    "Heels": ["heels", "high heels"],
    "Flip Flops": ["flip flops", "slippers"],
    "Sunglasses": ["sunglasses", "shades"],
    "Tops": ["top", "blouse"],
    "Kurtas": ["kurta"],
    "Jeans": ["jeans", "denim jeans", "denims"],
    "Trousers": ["trousers", "pants"],
    "Track Pants": ["track pants", "joggers"],
    "Sweatshirts": ["sweatshirt", "hoodie"],
    "Jackets": ["jacket"],
    "Dresses": ["dress"],
    "Backpacks": ["backpack", "rucksack"],
    "Wallets": ["wallet"],
    "Belts": ["belt"],
    "Sandals": ["sandals"],
    "Shorts": ["shorts"],
    "Socks": ["socks"],
    "Briefs": ["briefs", "underwear"],
    "Caps": ["cap", "hat"],
    "Earrings": ["earrings"],
    "Perfume and Body Mist": ["perfume", "body mist"],
}
# Everyday names for KAGL's colour labels that shoppers type instead of the label itself.
COLOUR_WORDS = {
    "Navy Blue": ["navy blue", "navy", "dark blue"],
    "Grey": ["grey", "gray"],
    "Grey Melange": ["grey melange", "heather grey"],
    "Off White": ["off white", "cream white"],
}
# (fields, phrasing) templates; the triple gender+colour+article is the most common query, so it
# gets the most phrasings.
TEMPLATES: list[tuple[tuple[int, ...], str]] = [
    ((GENDER, COLOUR, ARTICLE), "{g} {c} {a}"),
    ((GENDER, COLOUR, ARTICLE), "{c} {a} for {fg}"),
    ((GENDER, COLOUR, ARTICLE), "a {c} {a} for {fg}"),
    ((GENDER, COLOUR, ARTICLE), "{c} {a}, {g}"),
    ((GENDER, COLOUR, ARTICLE), "{a} in {c} for {fg}"),
    ((COLOUR, ARTICLE), "{c} {a}"),
    ((COLOUR, ARTICLE), "a {c} coloured {a}"),
    ((GENDER, ARTICLE), "{a} for {fg}"),
    ((ARTICLE,), "{a}"),
    ((COLOUR, USAGE, ARTICLE), "{c} {u} {a}"),
    ((GENDER, USAGE, ARTICLE), "{u} {a} for {fg}"),
    ((GENDER, COLOUR, USAGE, ARTICLE), "{g} {c} {u} {a}"),
    ((SEASON, ARTICLE), "{a} for {s}"),
    ((GENDER, COLOUR, SEASON, ARTICLE), "{g} {c} {a} for {s}"),
]


def article_words(article: str) -> list[str]:
    return [article.lower(), *ARTICLE_WORDS.get(article, [])]


def colour_words(colour: str) -> list[str]:
    return COLOUR_WORDS.get(colour, [colour.lower()])


def attribute_captions(
    attrs: dict[int, str], rng: random.Random, count: int
) -> list[tuple[str, tuple[int, ...]]]:
    """``count`` (caption, fields it pins) pairs for one item; fields with a blank value are skipped."""
    usable = [t for t in TEMPLATES if all(attrs.get(f) for f in t[0])]
    out = []
    for _ in range(count):
        fields, template = rng.choice(usable)
        gender = attrs.get(GENDER, "")
        text = template.format(
            g=rng.choice(GENDER_WORDS.get(gender, [gender.lower()])),
            fg=rng.choice(FOR_GENDER_WORDS.get(gender, [gender.lower()])),
            c=rng.choice(colour_words(attrs[COLOUR])) if COLOUR in fields else "",
            a=rng.choice(article_words(attrs[ARTICLE])),
            u=attrs[USAGE].lower() if USAGE in fields else "",
            s=attrs[SEASON].lower() if SEASON in fields else "",
        )
        out.append((" ".join(text.split()), fields))
    return out


@dataclass
class CaptionBank:
    """Distinct caption strings, what each pins, and which captions each item may be shown with.

    ``spec[c, f]`` is the value id caption ``c`` requires of field ``f`` (-1 = any), and
    ``attrs[i, f]`` is item ``i``'s value id; an image matches a caption when every pinned field
    agrees. That relation is the multi-positive target: every product with the same name, and every
    black men's t-shirt for "men black tshirts", is a positive.
    """

    texts: list[str]
    spec: np.ndarray  # int32 [C, F]
    attrs: np.ndarray  # int32 [N, F]
    name_caption: np.ndarray  # int32 [N], -1 when the item has no name
    attr_captions: np.ndarray  # int32 [N, K]
    # field -> int32 [V]: the caption id of each value's bare label ("navy blue"), -1 for a blank
    # value; only for the fields asked for, and never sampled as an item's caption.
    class_prompts: dict[int, np.ndarray] = field(default_factory=dict)

    @classmethod
    def build(
        cls, catalogue: Catalogue, per_item: int = 8, seed: int = 0, prompt_fields: Sequence[int] = ()
    ) -> CaptionBank:
        values: list[dict[str, int]] = [{} for _ in FIELDS]
        columns = [catalogue.field(f) for f in FIELDS]
        attrs = np.array(
            [
                [values[f].setdefault(col[i], len(values[f])) for f, col in enumerate(columns)]
                for i in range(len(catalogue.ids))
            ],
            dtype=np.int32,
        ).reshape(len(catalogue.ids), len(FIELDS))
        index: dict[tuple[str, tuple[int, ...]], int] = {}
        texts: list[str] = []
        specs: list[list[int]] = []

        def intern(text: str, pinned: dict[int, int]) -> int:
            key = (text, tuple(sorted(pinned.items())))
            if key not in index:
                index[key] = len(texts)
                texts.append(text)
                specs.append([pinned.get(f, -1) for f in range(len(FIELDS))])
            return index[key]

        rng = random.Random(seed)
        names = np.full(len(catalogue.ids), -1, dtype=np.int32)
        attr_caps = np.zeros((len(catalogue.ids), per_item), dtype=np.int32)
        for i in range(len(catalogue.ids)):
            row = {f: columns[f][i] for f in range(len(FIELDS))}
            if row[NAME]:
                names[i] = intern(row[NAME], {NAME: int(attrs[i, NAME])})
            for k, (text, fields) in enumerate(attribute_captions(row, rng, per_item)):
                attr_caps[i, k] = intern(text, {f: int(attrs[i, f]) for f in fields})
        # Appended after every item caption, so that asking for prompts leaves the others' ids alone.
        prompts = {}
        for f in prompt_fields:
            prompts[f] = np.full(len(values[f]), -1, dtype=np.int32)
            for value, v in values[f].items():
                if value:
                    prompts[f][v] = intern(value.lower(), {f: v})
        return cls(texts, np.array(specs, dtype=np.int32), attrs, names, attr_caps, prompts)

    def sample(self, items: np.ndarray, rng: np.random.Generator, name_prob: float = 0.5) -> np.ndarray:
        """One caption id per item: its product name with ``name_prob``, else an attribute caption."""
        pick = self.attr_captions[items, rng.integers(0, self.attr_captions.shape[1], len(items))]
        use_name = (rng.random(len(items)) < name_prob) & (self.name_caption[items] >= 0)
        return np.where(use_name, self.name_caption[items], pick)
