"""The dual encoder: a small CNN image tower and a frozen sentence encoder with a learned projection.

The text side is split in two on purpose. The sentence encoder (all-MiniLM-L6-v2) stays frozen, so
its pooled embedding of every caption is computed once and training only updates the projection
(``CachedCaptionTower``); the exported text tower (``SentenceTextTower``) chains the same encoder,
pooling and projection so that the runtime sees one ONNX graph from token ids to embedding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LOGIT_SCALE_MAX = math.log(100.0)


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """ResNet basic block; the shortcut is a strided 1x1 conv when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(cin, cout, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x), inplace=True)


class ColourBranch(nn.Module):
    """A learnt soft colour histogram: per-pixel 1x1 convolutions on the (2x2-averaged) input,
    averaged over the photo, then a small MLP into the shared space.

    Deep features after global pooling blur shade and hue: two thirds of v1's misses on templated
    attribute queries were colour (navy blue vs blue vs black, black vs grey), a label the pixels
    carry directly. This path sees each pixel's colour for ~1.3 M multiply-adds per photo.
    """

    def __init__(self, channels: int, dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.pixels = nn.Sequential(
            nn.AvgPool2d(2),
            nn.Conv2d(3, channels, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def pooled(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The soft histogram; ``SmallCNN`` adds ``head`` of it to its output and keeps it for
        label parts, so the branch has no ``forward`` of its own."""
        return self.pixels(pixel_values).mean(dim=(2, 3))


class SmallCNN(nn.Module):
    """A ~1.5M-parameter ResNet for 80x60 product photos. The stem strides early because on two
    CPU cores full-resolution convolutions cost more epochs than the detail they keep is worth.
    ``colour_channels`` > 0 adds a ``ColourBranch`` whose output is summed with the CNN's."""

    def __init__(
        self,
        dim: int,
        stem: Sequence[int] = (24,),
        widths: Sequence[int] = (32, 64, 128, 256),
        depths: Sequence[int] = (1, 1, 1, 1),
        strides: Sequence[int] = (1, 2, 2, 2),
        colour_channels: int = 0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for width in stem:
            layers.append(_conv_bn(cin, width, stride=2))
            cin = width
        for width, depth, stride in zip(widths, depths, strides, strict=True):
            for k in range(depth):
                layers.append(BasicBlock(cin, width, stride=stride if k == 0 else 1))
                cin = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, dim)
        self.colour = ColourBranch(colour_channels, dim) if colour_channels else None
        self.pooled_dim = cin + colour_channels

    def embed_and_pool(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The embedding (not normalised) and the pooled features it was made from (the CNN's,
        then the colour branch's): label parts (``parts.py``) read the latter without a second pass."""
        pooled = self.features(pixel_values).mean(dim=(2, 3))
        out = self.head(pooled)
        if self.colour is None:
            return out, pooled
        colour = self.colour.pooled(pixel_values)
        return out + self.colour.head(colour), torch.cat([pooled, colour], dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.embed_and_pool(pixel_values)[0]


class Projection(nn.Module):
    """Linear map plus a residual MLP, from the frozen sentence space into the shared space."""

    def __init__(self, din: int, dim: int, hidden: int = 1024) -> None:
        super().__init__()
        self.linear = nn.Linear(din, dim)
        self.mlp = nn.Sequential(nn.Linear(din, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.mlp(x)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sentence-transformers pooling, then L2 norm (all-MiniLM-L6-v2's Pooling + Normalize modules)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return F.normalize(pooled, dim=-1)


class CachedCaptionTower(nn.Module):
    """Training-time text tower: projection of precomputed frozen-encoder embeddings, by caption id."""

    def __init__(self, caption_embeddings: torch.Tensor, dim: int) -> None:
        super().__init__()
        self.register_buffer("bank", caption_embeddings.float(), persistent=False)
        self.projection = Projection(caption_embeddings.shape[1], dim)

    def forward(self, caption_ids: torch.Tensor) -> torch.Tensor:
        return self.projection(self.bank[caption_ids])


class SentenceTextTower(nn.Module):
    """Export-time text tower: token ids + mask -> frozen encoder -> mean pool -> projection, then
    ``pad`` zeros where the image embedding carries label parts (``parts.py``), which text never
    scores against."""

    def __init__(self, encoder: nn.Module, projection: Projection, pad: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        self.projection = projection
        self.pad = pad

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        out = self.projection(mean_pool(hidden, attention_mask))
        return F.pad(out, (0, self.pad)) if self.pad else out


class DualEncoder(nn.Module):
    """Image tower + caption tower + learnable temperature (capped so the loss cannot collapse)."""

    def __init__(
        self, image_tower: nn.Module, caption_tower: nn.Module, init_temperature: float = 0.07
    ) -> None:
        super().__init__()
        self.image_tower = image_tower
        self.caption_tower = caption_tower
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=LOGIT_SCALE_MAX).exp()

    def forward(self, pixels: torch.Tensor, caption_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        img = F.normalize(self.image_tower(pixels), dim=-1)
        txt = F.normalize(self.caption_tower(caption_ids), dim=-1)
        return img, txt


def multi_positive_infonce(
    img: torch.Tensor, txt: torch.Tensor, positives: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE whose targets spread evenly over every positive pair.

    ``positives[i, j]`` is true when image ``i`` matches caption ``j`` (the diagonal always is);
    one-hot targets would push apart products that share a name or the attributes a caption pins.
    """
    logits = scale * img @ txt.t()
    target = positives.to(logits.dtype)
    i2t = -(target / target.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1).mean()
    t2i = -(target.t() / target.t().sum(1, keepdim=True) * F.log_softmax(logits.t(), dim=1)).sum(1).mean()
    return (i2t + t2i) / 2


def match_matrix(item_attrs: torch.Tensor, caption_spec: torch.Tensor) -> torch.Tensor:
    """[B_img, B_txt] bool: every field a caption pins (spec >= 0) equals the item's value."""
    spec = caption_spec.unsqueeze(0)
    return ((spec < 0) | (spec == item_attrs.unsqueeze(1))).all(dim=-1)
