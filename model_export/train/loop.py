"""The training loop: seeded, resumable, checkpointed, logged.

Every random draw of step ``s`` (caption choice, augmentation) comes from a generator seeded by
``(seed, s)`` and every epoch's order from ``(seed, epoch)``, so a run stopped at any checkpoint and
resumed reproduces the uninterrupted run instead of drifting from it.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from fashion_search.manifest import ImageTower
from model_export.train.data import FIELDS, IMAGE_SPEC, CaptionBank, Catalogue, load_images
from model_export.train.model import (
    CachedCaptionTower,
    DualEncoder,
    SmallCNN,
    match_matrix,
    multi_positive_infonce,
)
from model_export.train.parts import check_weights
from model_export.train.text import cached_caption_embeddings, minilm_dir

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that determines a run; saved in every checkpoint and in the model card."""

    images: Path
    captions: Path
    run_dir: Path
    epochs: float = 20.0
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 300
    seed: int = 0
    dim: int = 256
    name_prob: float = 0.5
    captions_per_item: int = 8
    checkpoint_every: int = 200
    max_items: int | None = None
    max_minutes: float | None = None
    threads: int = 1
    device: str = "auto"
    init_from: str | None = None
    # field name ("colour", "article", "gender", ...) -> weight of its prompt-classification loss
    attribute_weights: dict[str, float] = field(default_factory=dict)
    # field -> weight of its label part in the exported image embedding (parts.py); fitted after
    # training, at export, so a finished run can be exported with or without them
    image_parts: dict[str, float] = field(default_factory=dict)
    cnn: dict = field(
        default_factory=lambda: {
            "stem": [24],
            "widths": [32, 64, 128, 256],
            "depths": [1, 1, 1, 1],
            "strides": [2, 2, 2, 1],
            "colour_channels": 32,
        }
    )

    def __post_init__(self) -> None:
        unknown = set(self.attribute_weights) - set(FIELDS[1:])
        if unknown:
            raise ValueError(
                f"attribute loss on unknown field(s) {sorted(unknown)}; choose from {list(FIELDS[1:])}"
            )
        if any(w < 0 for w in self.attribute_weights.values()):
            raise ValueError("attribute loss weights must be >= 0 (a negative one pushes images off labels)")
        check_weights(self.image_parts)
        if self.image_parts and self.init_from:
            raise ValueError(
                "image parts read the trained CNN tower's features; they do not apply to --init-from"
            )
        if not 0.0 <= self.name_prob <= 1.0:
            raise ValueError(f"name_prob is a probability, from 0 to 1 (got {self.name_prob})")

    def to_json(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


@dataclass
class Prepared:
    """The in-memory training set: images, captions and their frozen embeddings."""

    train_idx: np.ndarray
    val_idx: np.ndarray
    ids: list[int]
    images: torch.Tensor  # uint8 [N, H, W, 3]
    bank: CaptionBank
    caption_embeddings: torch.Tensor | None  # frozen-encoder embeddings; None when fine-tuning CLIP
    spec: ImageTower


def prepare(cfg: TrainConfig) -> Prepared:
    """Load the training split (never ``id % 10 == 0``) and the caption bank, from cache if present."""
    cache = cfg.run_dir.parent / "cache"
    train, val, _held_out = Catalogue.load(cfg.captions, cfg.images).split()
    if cfg.max_items is not None:
        train = train.subset(train.ids[: cfg.max_items])
        val = val.subset(val.ids[: max(8, cfg.max_items // 8)])
    both = Catalogue(ids=train.ids + val.ids, rows=train.rows + val.rows)
    bank = CaptionBank.build(
        both,
        per_item=cfg.captions_per_item,
        seed=cfg.seed,
        prompt_fields=[FIELDS.index(name) for name in cfg.attribute_weights],
    )
    if cfg.init_from:
        from model_export.train.clip_init import clip_image_spec

        spec, emb = clip_image_spec(Path(cfg.init_from)), None
    else:
        spec, emb = IMAGE_SPEC, torch.from_numpy(cached_caption_embeddings(bank.texts, minilm_dir(), cache))
    images = load_images(cfg.images, both.ids, cache, spec)
    n_train = len(train.ids)
    return Prepared(
        train_idx=np.arange(n_train),
        val_idx=np.arange(n_train, len(both.ids)),
        ids=both.ids,
        images=torch.from_numpy(images),
        bank=bank,
        caption_embeddings=emb,
        spec=spec,
    )


def build_model(cfg: TrainConfig, data: Prepared) -> DualEncoder:
    """The CNN + frozen-MiniLM dual encoder, or with ``init_from`` a CLIP checkpoint to fine-tune."""
    torch.manual_seed(cfg.seed)
    if cfg.init_from:
        from model_export.train.clip_init import clip_dual_encoder

        return clip_dual_encoder(Path(cfg.init_from), data.bank.texts)[0]
    if data.caption_embeddings is None:
        raise ValueError("the frozen-encoder model needs the caption embeddings")
    return frozen_text_model(cfg, data.caption_embeddings)


def frozen_text_model(cfg: TrainConfig, caption_embeddings: torch.Tensor) -> DualEncoder:
    """CNN image tower + projection of frozen caption embeddings (export passes a dummy bank)."""
    torch.manual_seed(cfg.seed)
    image = SmallCNN(cfg.dim, **cfg.cnn).to(memory_format=torch.channels_last)
    return DualEncoder(image, CachedCaptionTower(caption_embeddings, cfg.dim))


def normalize(pixels: torch.Tensor, spec: ImageTower = IMAGE_SPEC) -> torch.Tensor:
    """float [N, 3, H, W] in 0..1 -> the manifest's ``(x - mean) / std``."""
    mean = torch.tensor(spec.mean, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=pixels.device).view(1, 3, 1, 1)
    return (pixels - mean) / std


def to_pixels(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in 0..1, channels_last (a permute, no copy)."""
    return batch.permute(0, 3, 1, 2).float().div_(255)


def augment(pixels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Small shift, scale and horizontal flip with white fill; geometry only, colour is a label."""
    n = pixels.shape[0]
    rand = torch.rand(n, 4, generator=gen).to(pixels.device)
    scale = 1 + (rand[:, 0] * 2 - 1) * 0.1
    flip = torch.where(rand[:, 1] < 0.5, -1.0, 1.0)
    shift = (rand[:, 2:] * 2 - 1) * 0.1
    theta = torch.zeros(n, 2, 3, device=pixels.device)
    theta[:, 0, 0] = scale * flip
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    # Sample (x - 1) with zero padding so that the area brought in is white, not black.
    return F.grid_sample(pixels - 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1


def lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW with no decay on norms, biases and the temperature."""
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=cfg.lr,
    )


def _rngs(cfg: TrainConfig, step: int) -> tuple[np.random.Generator, torch.Generator]:
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    return np.random.default_rng([cfg.seed, step]), gen


def epoch_order(cfg: TrainConfig, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([cfg.seed, 10**6 + epoch]).permutation(n)


def batch_for_step(cfg: TrainConfig, data: Prepared, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(item indices, caption ids) of global step ``step``; a pure function of (seed, step)."""
    per_epoch = len(data.train_idx) // cfg.batch_size
    epoch, k = divmod(step, per_epoch)
    items = data.train_idx[
        epoch_order(cfg, epoch, len(data.train_idx))[k * cfg.batch_size : (k + 1) * cfg.batch_size]
    ]
    rng, _ = _rngs(cfg, step)
    return items, data.bank.sample(items, rng, cfg.name_prob)


def train_step(
    cfg: TrainConfig,
    model: DualEncoder,
    opt: torch.optim.Optimizer,
    data: Prepared,
    step: int,
    total: int,
    device: torch.device,
) -> float:
    items, captions = batch_for_step(cfg, data, step)
    _, gen = _rngs(cfg, step)
    pixels = normalize(augment(to_pixels(data.images[items]).to(device), gen), data.spec)
    caption_ids = torch.from_numpy(captions).long().to(device)
    positives = match_matrix(
        torch.from_numpy(data.bank.attrs[items]).to(device),
        torch.from_numpy(data.bank.spec[captions]).to(device),
    )
    for group in opt.param_groups:
        group["lr"] = lr_at(cfg, step, total)
    img, txt = model(pixels, caption_ids)
    loss = multi_positive_infonce(img, txt, positives, model.scale()) + attribute_loss(
        cfg, model, data, items, img
    )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def attribute_loss(
    cfg: TrainConfig, model: DualEncoder, data: Prepared, items: np.ndarray, img: torch.Tensor
) -> torch.Tensor:
    """Weighted cross-entropy of each image against every value's bare label ("navy blue",
    "blue", "black", ...) of the configured fields.

    In-batch InfoNCE rarely puts "navy blue t-shirt" and "blue t-shirt" in one batch, so near
    colours are seldom told apart; here every value is a negative at every step. The labels go
    through the caption tower, so what is learnt is the text-image alignment that queries use.
    """
    total = img.new_zeros(())
    for name, weight in cfg.attribute_weights.items():
        f = FIELDS.index(name)
        prompts = data.bank.class_prompts[f]
        classes = np.flatnonzero(prompts >= 0)
        class_of = np.full(len(prompts), -100, dtype=np.int64)  # blank values are ignored
        class_of[classes] = np.arange(len(classes))
        target = torch.from_numpy(class_of[data.bank.attrs[items, f]]).to(img.device)
        if not (target >= 0).any():
            continue
        label_ids = torch.from_numpy(prompts[classes]).long().to(img.device)
        labels = F.normalize(model.caption_tower(label_ids), dim=-1)
        total = total + weight * F.cross_entropy(model.scale() * img @ labels.t(), target, ignore_index=-100)
    return total


@torch.inference_mode()
def embed_items(
    model: DualEncoder, images: torch.Tensor, spec: ImageTower, device: torch.device, batch: int = 512
) -> torch.Tensor:
    out = [
        model.image_tower(normalize(to_pixels(images[s : s + batch]).to(device), spec))
        for s in range(0, len(images), batch)
    ]
    return F.normalize(torch.cat(out), dim=-1)


@torch.inference_mode()
def validate(model: DualEncoder, data: Prepared, device: torch.device) -> dict[str, float]:
    """Product-name text -> image Recall@1/@10 (any image with the same name counts) on the
    validation slice of the training ids: a progress signal that never touches the held-out set."""
    model.eval()
    idx = data.val_idx
    names = data.bank.name_caption[idx]
    keep = names >= 0
    img = embed_items(model, data.images[idx], data.spec, device)
    txt = F.normalize(model.caption_tower(torch.from_numpy(names[keep]).long().to(device)), dim=-1)
    sims = txt @ img.t()
    same = torch.from_numpy(data.bank.attrs[idx][:, 0][keep][:, None] == data.bank.attrs[idx][:, 0][None, :])
    top = sims.topk(min(10, sims.shape[1]), dim=1).indices.cpu()
    hits = same.gather(1, top)
    model.train()
    return {"val_r1": float(hits[:, 0].float().mean()), "val_r10": float(hits.any(1).float().mean())}


def save_checkpoint(
    path: Path, cfg: TrainConfig, model: DualEncoder, opt: torch.optim.Optimizer, step: int, extra: dict
) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "config": cfg.to_json(),
            "step": step,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            **extra,
        },
        tmp,
    )
    tmp.replace(path)


def load_checkpoint(path: Path, model: DualEncoder, opt: torch.optim.Optimizer | None = None) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"], strict=False)
    if opt is not None:
        opt.load_state_dict(state["optimizer"])
    return state


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train(
    cfg: TrainConfig, resume: bool = True, stop_after: int | None = None
) -> tuple[DualEncoder, Prepared, dict]:
    """Train (or continue) the run in ``cfg.run_dir``; returns the model at the last step.

    ``stop_after`` ends this call after that many steps (checkpointed) without changing the
    schedule, which is what an interrupted run looks like.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    t0 = time.time()
    data = prepare(cfg)
    model = build_model(cfg, data).to(device)
    opt = make_optimizer(cfg, model)
    per_epoch = len(data.train_idx) // cfg.batch_size
    if per_epoch < 1:
        raise ValueError(f"batch size {cfg.batch_size} exceeds the {len(data.train_idx)} training items")
    total = max(1, round(cfg.epochs * per_epoch))
    last, best = cfg.run_dir / "last.pt", cfg.run_dir / "best.pt"
    step, best_r10, elapsed = 0, -1.0, 0.0
    if resume and last.is_file():
        state = load_checkpoint(last, model, opt)
        step, best_r10, elapsed = (
            state["step"],
            state.get("best_val_r10", -1.0),
            state.get("train_seconds", 0.0),
        )
        log.info("resumed", extra={"step": step, "of": total})
    logf = (cfg.run_dir / "train.log.jsonl").open("a")
    logf.write(
        json.dumps(
            {
                "event": "start",
                "config": cfg.to_json(),
                "step": step,
                "total_steps": total,
                "train_items": len(data.train_idx),
                "captions": len(data.bank.texts),
                "prepare_seconds": round(time.time() - t0, 1),
            }
        )
        + "\n"
    )
    stop = {"flag": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    model.train()
    started, ema, first_step = time.time(), None, step
    bar = tqdm(total=total, initial=step, desc="train", mininterval=20, unit="step")
    try:
        out_of_time = cfg.max_minutes is not None and elapsed > cfg.max_minutes * 60
        while step < total and not stop["flag"] and not out_of_time:
            loss = train_step(cfg, model, opt, data, step, total, device)
            step += 1
            ema = loss if ema is None else 0.98 * ema + 0.02 * loss
            bar.update(1)
            bar.set_postfix(loss=f"{ema:.3f}", scale=f"{float(model.scale().detach()):.1f}", refresh=False)
            seconds = elapsed + time.time() - started
            if cfg.max_minutes is not None and seconds > cfg.max_minutes * 60:
                stop["flag"] = True
            if stop_after is not None and step - first_step >= stop_after:
                stop["flag"] = True
            at_epoch_end = step % per_epoch == 0 or step == total
            record = {
                "event": "step",
                "step": step,
                "epoch": round(step / per_epoch, 3),
                "loss_ema": round(ema, 4),
                "lr": lr_at(cfg, step - 1, total),
                "scale": round(float(model.scale().detach()), 2),
                "train_seconds": round(seconds, 1),
            }
            if at_epoch_end:
                record.update(validate(model, data, device))
                if record["val_r10"] > best_r10:
                    best_r10 = record["val_r10"]
                    save_checkpoint(
                        best, cfg, model, opt, step, {"best_val_r10": best_r10, "train_seconds": seconds}
                    )
            if at_epoch_end or step % cfg.checkpoint_every == 0 or stop["flag"]:
                save_checkpoint(
                    last, cfg, model, opt, step, {"best_val_r10": best_r10, "train_seconds": seconds}
                )
                logf.write(json.dumps(record) + "\n")
                logf.flush()
    finally:
        bar.close()
        signal.signal(signal.SIGTERM, previous)
        logf.write(
            json.dumps(
                {
                    "event": "stop",
                    "step": step,
                    "total_steps": total,
                    "train_seconds": round(elapsed + time.time() - started, 1),
                }
            )
            + "\n"
        )
        logf.close()
    return (
        model,
        data,
        {
            "step": step,
            "total_steps": total,
            "best_val_r10": best_r10,
            "train_seconds": round(elapsed + time.time() - started, 1),
        },
    )
