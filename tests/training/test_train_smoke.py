"""A tiny real run of the training loop on 64 KAGL images: split, preprocessing, resume, export.

No mocks: the frozen MiniLM encodes the captions, the CNN trains a few steps on CPU, and the export
is loaded by the runtime's ``Encoder``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fashion_search.encoder import Encoder  # noqa: E402
from fashion_search.imaging import decode_image, prepare_pixels  # noqa: E402
from model_export.train.cli import field_weights  # noqa: E402
from model_export.train.data import (  # noqa: E402
    ARTICLE,
    COLOUR,
    IMAGE_SPEC,
    NAME,
    CaptionBank,
    Catalogue,
    is_held_out,
    load_images,
)
from model_export.train.loop import (  # noqa: E402
    Prepared,
    TrainConfig,
    attribute_loss,
    build_model,
    frozen_text_model,
    load_checkpoint,
    normalize,
    to_pixels,
    train,
)
from model_export.train.model import (  # noqa: E402
    SmallCNN,
    match_matrix,
    multi_positive_infonce,
)

pytestmark = pytest.mark.torch


def _config(kagl_dir: Path, run_dir: Path) -> TrainConfig:
    return TrainConfig(
        images=kagl_dir / "images",
        captions=kagl_dir / "styles.csv",
        run_dir=run_dir,
        epochs=1,
        batch_size=16,
        warmup_steps=2,
        checkpoint_every=2,
        max_items=64,
        dim=32,
    )


def test_split_never_trains_on_held_out_products(kagl_dir: Path) -> None:
    train, val, held = Catalogue.load(kagl_dir / "styles.csv", kagl_dir / "images").split()
    assert not any(is_held_out(i) for i in train.ids + val.ids)
    assert all(is_held_out(i) for i in held.ids)
    assert not set(train.ids) & set(val.ids)
    assert len(held.ids) == 4443


def test_training_pixels_are_the_runtime_pixels(kagl_dir: Path, kagl_sample_ids: list[str]) -> None:
    ids = [int(i) for i in kagl_sample_ids[:12]]
    ours = normalize(to_pixels(torch.from_numpy(load_images(kagl_dir / "images", ids)))).numpy()
    runtime = np.stack(
        [
            prepare_pixels(
                decode_image(
                    (kagl_dir / "images" / f"{i}.jpg").read_bytes(), max_bytes=1 << 24, max_pixels=1 << 24
                ).image,
                IMAGE_SPEC,
            )
            for i in ids
        ]
    )
    np.testing.assert_allclose(ours, runtime, atol=1e-6)


def test_captions_sharing_a_name_or_attributes_are_all_positives(kagl_dir: Path) -> None:
    cat = Catalogue.load(kagl_dir / "styles.csv", kagl_dir / "images")
    sub = cat.subset(cat.ids[:400])
    bank = CaptionBank.build(sub, per_item=4)
    items = np.arange(len(sub.ids))
    name_caps = bank.name_caption[items]
    match = match_matrix(torch.from_numpy(bank.attrs), torch.from_numpy(bank.spec[name_caps])).numpy()
    same_name = bank.attrs[:, NAME][:, None] == bank.attrs[:, NAME][None, :]
    np.testing.assert_array_equal(match, same_name)
    caps = bank.attr_captions[:, 0]
    match = match_matrix(torch.from_numpy(bank.attrs), torch.from_numpy(bank.spec[caps])).numpy()
    assert match[items, items].all()
    for j in range(0, len(items), 37):  # an image matches an attribute caption iff every pinned field agrees
        pinned = bank.spec[caps[j]] >= 0
        expected = (bank.attrs[:, pinned] == bank.spec[caps[j]][pinned]).all(axis=1)
        np.testing.assert_array_equal(match[:, j], expected)


def test_label_prompts_pin_their_value_and_leave_item_captions_alone(kagl_dir: Path) -> None:
    cat = Catalogue.load(kagl_dir / "styles.csv", kagl_dir / "images")
    sub = cat.subset(cat.ids[:400])
    plain = CaptionBank.build(sub, per_item=4)
    bank = CaptionBank.build(sub, per_item=4, prompt_fields=[COLOUR, ARTICLE])
    assert bank.texts[: len(plain.texts)] == plain.texts
    np.testing.assert_array_equal(bank.attr_captions, plain.attr_captions)
    np.testing.assert_array_equal(bank.name_caption, plain.name_caption)
    colours = sub.field("colour")
    for f, column in ((COLOUR, colours), (ARTICLE, sub.field("article"))):
        prompts = bank.class_prompts[f]
        assert len(prompts) == len(set(column))
        for i in range(0, len(sub.ids), 23):
            v = bank.attrs[i, f]
            assert bank.texts[prompts[v]] == column[i].lower()
            assert bank.spec[prompts[v]].tolist() == [v if k == f else -1 for k in range(bank.spec.shape[1])]
    assert set(bank.class_prompts) == {COLOUR, ARTICLE}


def test_attribute_loss_prefers_images_at_their_own_label(kagl_dir: Path, tmp_path: Path) -> None:
    cat = Catalogue.load(kagl_dir / "styles.csv", kagl_dir / "images")
    sub = cat.subset(cat.ids[:400])
    bank = CaptionBank.build(sub, per_item=2, prompt_fields=[COLOUR])
    cfg = TrainConfig(
        images=kagl_dir / "images",
        captions=kagl_dir / "styles.csv",
        run_dir=tmp_path,
        dim=16,
        attribute_weights={"colour": 0.5},
    )
    frozen = torch.randn(len(bank.texts), 24, generator=torch.Generator().manual_seed(0))
    model = frozen_text_model(cfg, frozen)
    data = Prepared(np.arange(400), np.arange(0), sub.ids, torch.zeros(0), bank, None, IMAGE_SPEC)
    items = np.arange(64)
    with torch.no_grad():
        labels = bank.class_prompts[COLOUR][bank.attrs[items, COLOUR]]
        own = torch.nn.functional.normalize(model.caption_tower(torch.from_numpy(labels).long()), dim=-1)
        aligned = attribute_loss(cfg, model, data, items, own)
        shuffled = attribute_loss(cfg, model, data, items, own.roll(1, 0))
        cfg.attribute_weights = {}
        assert float(attribute_loss(cfg, model, data, items, own)) == 0.0
    assert 0 < float(aligned) < float(shuffled)


def test_attribute_loss_settings_are_checked(kagl_dir: Path, tmp_path: Path) -> None:
    assert field_weights(["colour=0.3", "article=0.1"], "--x") == {"colour": 0.3, "article": 0.1}
    with pytest.raises(SystemExit, match="--attribute-loss wants FIELD=WEIGHT"):
        field_weights(["colour"], "--attribute-loss")
    with pytest.raises(ValueError, match="unknown field"):
        TrainConfig(images=tmp_path, captions=tmp_path, run_dir=tmp_path, attribute_weights={"price": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        TrainConfig(images=tmp_path, captions=tmp_path, run_dir=tmp_path, attribute_weights={"colour": -0.1})
    from model_export.train.cli import main

    with pytest.raises(SystemExit, match=r"^error: attribute loss on unknown field"):  # no traceback
        main(["--attribute-loss", "price=1", "--run-dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()  # refused before anything was written
    with pytest.raises(SystemExit, match=r"^error: name_prob is a probability"):
        main(["--name-prob", "1.5", "--run-dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("parts", "init_from", "message"),
    [
        ({"price": 0.2}, None, "image part on unknown field"),
        ({"name": 0.2}, None, "image part on unknown field"),  # 31k mostly unique values: not a label
        ({"article": 0.0}, None, "between 0 and 1"),
        ({"article": 1.0}, None, "between 0 and 1"),
        ({"article": 0.6, "colour": 0.4}, None, "sum to 1.00"),  # nothing left for text search
        ({"article": 0.3}, "some/clip", "do not apply to --init-from"),
    ],
)
def test_image_part_settings_are_checked(
    tmp_path: Path, parts: dict[str, float], init_from: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(
            images=tmp_path, captions=tmp_path, run_dir=tmp_path, image_parts=parts, init_from=init_from
        )


def test_a_bad_image_part_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    from model_export.train.cli import main

    with pytest.raises(SystemExit, match=r"^--image-part wants FIELD=WEIGHT"):
        main(["--image-part", "article", "--run-dir", str(tmp_path / "run")])
    with pytest.raises(SystemExit, match=r"^error: image part weights sum to 1.10"):
        main(["--image-part", "article=0.6", "--image-part", "colour=0.5", "--run-dir", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
    assert not (tmp_path / "run").exists()


def test_multi_positive_loss_prefers_the_true_pairing() -> None:
    emb = torch.nn.functional.normalize(
        torch.randn(8, 16, generator=torch.Generator().manual_seed(0)), dim=-1
    )
    positives = torch.eye(8, dtype=torch.bool)
    scale = torch.tensor(10.0)
    aligned = multi_positive_infonce(emb, emb, positives, scale)
    shuffled = multi_positive_infonce(emb, emb.roll(1, 0), positives, scale)
    assert float(aligned) < float(shuffled)


def test_colour_branch_only_adds_parameters() -> None:
    """Checkpoints of towers without the colour branch keep loading into ``colour_channels=0``."""
    plain = set(SmallCNN(32).state_dict())
    with_colour = set(SmallCNN(32, colour_channels=8).state_dict())
    assert plain < with_colour
    assert all(k.startswith("colour.") for k in with_colour - plain)
    out = SmallCNN(32, colour_channels=8)(torch.rand(2, 3, 80, 60))
    assert out.shape == (2, 32) and torch.isfinite(out).all()


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run_and_exports(kagl_dir: Path, tmp_path: Path) -> None:
    straight = _config(kagl_dir, tmp_path / "runs" / "straight")
    model, data, summary = train(straight)
    assert summary["step"] == summary["total_steps"] == 64 // 16
    assert not any(is_held_out(data.ids[i]) for i in data.train_idx)

    interrupted = _config(kagl_dir, tmp_path / "runs" / "interrupted")
    _, _, first = train(interrupted, stop_after=2)
    assert first["step"] == 2
    restored = build_model(interrupted, data)
    half = load_checkpoint(interrupted.run_dir / "last.pt", restored)
    assert half["step"] == 2
    saved = torch.load(interrupted.run_dir / "last.pt", weights_only=False)["model"]
    for name, tensor in restored.state_dict().items():
        assert torch.equal(saved[name], tensor), name
    _, _, second = train(interrupted)
    assert second["step"] == 4
    resumed = torch.load(interrupted.run_dir / "last.pt", weights_only=False)["model"]
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6, msg=name)

    from model_export.train.export import export_run

    manifest = export_run(straight, tmp_path / "model", precision="fp32", command="pytest", sample_images=8)
    enc = Encoder.load(tmp_path / "model")
    assert enc.dim == manifest.embedding_dim == 32
    texts = enc.embed_texts(["men black tshirt", "a red handbag for women"])
    assert texts.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_init_from_fine_tunes_a_clip_checkpoint_and_exports_it(kagl_dir: Path, tmp_path: Path) -> None:
    """The ``--init-from`` path on the tiny random CLIP (no real CLIP weights can be downloaded here)."""
    from model_export.tiny import build_tiny_checkpoint
    from model_export.train.clip_init import export_finetuned, open_clip

    source = build_tiny_checkpoint(tmp_path / "tiny-clip")
    cfg = _config(kagl_dir, tmp_path / "runs" / "clip")
    cfg.init_from, cfg.lr = str(source), 1e-4
    before = open_clip(source).model.state_dict()
    model, data, summary = train(cfg, stop_after=2)
    assert summary["step"] == 2
    assert data.spec.resize == "shortest_side_center_crop" and data.images.shape[1:] == (32, 32, 3)
    tuned = model.image_tower.model
    assert not torch.equal(before["visual_projection.weight"], tuned.state_dict()["visual_projection.weight"])
    ckpt = open_clip(source)
    ckpt.model = tuned
    manifest = export_finetuned(
        ckpt, tmp_path / "model", precision="fp32", name="tuned", kagl_dir=kagl_dir, command="pytest"
    )
    enc = Encoder.load(tmp_path / "model")
    assert enc.embed_texts(["red dress"]).shape == (1, manifest.embedding_dim)


@pytest.mark.slow
def test_image_parts_keep_text_ranking_and_learn_their_label(kagl_dir: Path, tmp_path: Path) -> None:
    """A run exported with and without label parts: text -> image scores differ by the one constant
    factor sqrt(1 - sum of weights), so text search ranks identically; images stay unit vectors;
    and the article part puts photos of one article type closer than photos of two."""
    from model_export.train.export import export_run
    from model_export.train.parts import PART_DIM

    cfg = _config(kagl_dir, tmp_path / "run")
    _, data, _ = train(cfg)
    plain = export_run(cfg, tmp_path / "plain", precision="fp32", command="pytest", sample_images=8)
    parted_cfg = TrainConfig(**{**vars(cfg), "image_parts": {"article": 0.3, "colour": 0.2}})
    with pytest.raises(ValueError, match="needs the run's training data"):
        export_run(parted_cfg, tmp_path / "no-data", precision="fp32", sample_images=8)
    parted = export_run(
        parted_cfg, tmp_path / "parted", precision="fp32", command="pytest", sample_images=8, data=data
    )
    assert parted.embedding_dim == plain.embedding_dim + 2 * PART_DIM == 32 + 128
    a, b = Encoder.load(tmp_path / "plain"), Encoder.load(tmp_path / "parted")

    pixels = normalize(to_pixels(data.images[data.train_idx])).contiguous().numpy()
    img_a, img_b = a.embed_pixels(pixels), b.embed_pixels(pixels)
    np.testing.assert_allclose(np.linalg.norm(img_b, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(img_b[:, :32], np.sqrt(0.5) * img_a, atol=1e-5)
    texts = ["men black tshirts", "a red handbag for women", "Puma Men Grey Track Pants"]
    txt_a, txt_b = a.embed_texts(texts), b.embed_texts(texts)
    assert np.all(txt_b[:, 32:] == 0.0)
    np.testing.assert_allclose(txt_b @ img_b.T, np.sqrt(0.5) * (txt_a @ img_a.T), atol=1e-5)

    # The article part: columns 32..96 (parts in sorted field order: article, colour).
    article = img_b[:, 32 : 32 + PART_DIM] / np.sqrt(0.3)
    labels = data.bank.attrs[data.train_idx, ARTICLE]
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    sims = article @ article.T
    assert sims[same & off_diagonal].mean() > sims[~same].mean() + 0.15  # 0.34 vs 0.06 here
