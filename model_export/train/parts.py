"""Label parts of the image embedding: what lets "more like this" find the same kind of product.

Why: image -> image search ranks by the embedding that text search uses, and that space, learnt
from captions alone, keeps sibling types close (casual vs sports shoes, tops vs t-shirts, flats vs
heels: the 15 most frequent such pairs are 42% of v8's same-type misses). The catalogue states
those labels exactly. A small classifier per label (article type, colour, ...) on the image tower's
own pooled features, trained on the training products' labels after the main run, separates them
better than the shared space does (v8 with article and colour parts, held-out products: same-type
P@10 0.761 -> 0.787, same type and colour 0.341 -> 0.377; docs/training.md, v12).

Each part's output, a unit vector, is appended to the image embedding with a weight ``w``:
``[a * e, sqrt(w1) * u1, sqrt(w2) * u2, ...]`` with ``a**2 = 1 - sum(w)``, so every image vector
stays unit length. The text tower appends zeros (``SentenceTextTower.pad``), so a text query's
score against any image is ``a`` times its score without parts: text search ranks exactly as
before, while image -> image scores add ``w`` times each label part's agreement. One vector per
image, so every store and the runtime need nothing new.

The parts train in under two minutes on two CPU cores: the CNN is frozen, its pooled features of
every training photo and its mirror image are computed once, and only a two-layer MLP per label
learns, as a cosine classifier against one learnt prototype per value (the prototypes are dropped).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fashion_search.manifest import ImageTower
from model_export.train.data import FIELDS
from model_export.train.model import SmallCNN

PART_DIM = 64
HIDDEN = 512
EPOCHS = 30
BATCH = 512
LR = 2e-3
SCALE = 16.0  # cosine-classifier logit scale
LABEL_SMOOTHING = 0.1
# Fields a part may learn: every labelled field but the product name (31k values, mostly unique).
PART_FIELDS = FIELDS[1:]


def check_weights(weights: Mapping[str, float]) -> None:
    """Refuse weights that cannot make a unit vector: the parts' weights plus the shared part's must
    sum to 1, and the shared part must keep some (it is all that text search scores)."""
    unknown = set(weights) - set(PART_FIELDS)
    if unknown:
        raise ValueError(f"image part on unknown field(s) {sorted(unknown)}; choose from {list(PART_FIELDS)}")
    if any(not 0.0 < w < 1.0 for w in weights.values()):
        raise ValueError("image part weights must be between 0 and 1 (exclusive)")
    if sum(weights.values()) >= 1.0:
        raise ValueError(
            f"image part weights sum to {sum(weights.values()):.2f}; they must leave the shared "
            "embedding a share (sum below 1)"
        )


class LabelPart(nn.Module):
    """Pooled features -> standardised -> MLP -> unit vector near its label's prototype."""

    def __init__(self, din: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(din))
        self.register_buffer("std", torch.ones(din))
        self.mlp = nn.Sequential(nn.Linear(din, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, PART_DIM))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp((pooled - self.mean) / self.std), dim=-1)


class PartedImageTower(nn.Module):
    """The exported image tower when a run has label parts: one pass of the CNN, then the shared
    embedding and each part, weighted and concatenated (already unit length)."""

    def __init__(self, tower: SmallCNN, parts: Mapping[str, LabelPart], weights: Mapping[str, float]) -> None:
        super().__init__()
        check_weights(weights)
        self.tower = tower
        self.parts = nn.ModuleDict(dict(parts))
        self.shares = {name: math.sqrt(weights[name]) for name in parts}
        self.shared = math.sqrt(1.0 - sum(weights[name] for name in parts))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        embedding, pooled = self.tower.embed_and_pool(pixel_values)
        out = [self.shared * F.normalize(embedding, dim=-1)]
        out += [self.shares[name] * part(pooled) for name, part in self.parts.items()]
        return torch.cat(out, dim=1)


@torch.inference_mode()
def pooled_features(
    tower: SmallCNN, images: torch.Tensor, spec: ImageTower, device: torch.device, batch: int = 512
) -> torch.Tensor:
    """Pooled features of every photo (uint8 [N, H, W, 3]) and of its mirror image (the only
    augmentation: geometry, never colour, as in the main run)."""
    from model_export.train.loop import normalize, to_pixels  # loop imports this module

    out = []
    for flip in (False, True):
        for s in range(0, len(images), batch):
            x = normalize(to_pixels(images[s : s + batch]).to(device), spec)
            out.append(tower.embed_and_pool(torch.flip(x, dims=[3]) if flip else x)[1])
    return torch.cat(out)


def fit_part(features: torch.Tensor, labels: torch.Tensor, classes: int, seed: int) -> LabelPart:
    """Train one part as a cosine classifier (label smoothing: neighbouring labels such as navy
    blue and blue are often the same product filed twice)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    part = LabelPart(features.shape[1]).to(features.device)
    part.mean.copy_(features.mean(dim=0))
    part.std.copy_(features.std(dim=0) + 1e-6)
    prototypes = nn.Parameter(0.1 * torch.randn(classes, PART_DIM, generator=gen).to(features.device))
    opt = torch.optim.AdamW([*part.parameters(), prototypes], lr=LR, weight_decay=1e-4)
    batch = min(BATCH, len(features))
    per_epoch = len(features) // batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, LR, total_steps=EPOCHS * per_epoch)
    for _ in range(EPOCHS):
        order = torch.randperm(len(features), generator=gen).to(features.device)
        for s in range(per_epoch):
            pick = order[s * batch : (s + 1) * batch]
            logits = SCALE * part(features[pick]) @ F.normalize(prototypes, dim=-1).T
            loss = F.cross_entropy(logits, labels[pick], label_smoothing=LABEL_SMOOTHING)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return part.eval()


def fit_parts(
    tower: SmallCNN,
    images: torch.Tensor,
    attrs: np.ndarray,
    weights: Mapping[str, float],
    *,
    spec: ImageTower,
    device: torch.device,
    seed: int,
) -> PartedImageTower:
    """``images``: the training photos; ``attrs[i, f]``: photo ``i``'s value id of field
    ``FIELDS[f]`` (``CaptionBank.attrs``). Seeded: the same run gives the same parts. The weights
    were checked by ``TrainConfig`` and are checked again by ``PartedImageTower``."""
    tower.eval()
    features = pooled_features(tower, images, spec, device)
    parts = {}
    for k, name in enumerate(sorted(weights)):
        values = torch.from_numpy(attrs[:, FIELDS.index(name)].astype(np.int64)).to(features.device)
        labels = torch.cat([values, values])  # the photos, then their mirror images
        parts[name] = fit_part(features, labels, int(values.max()) + 1, seed + k)
    return PartedImageTower(tower, parts, weights).eval()
