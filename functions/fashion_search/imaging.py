"""Safe image decoding and the manifest-driven preprocessing every tower input goes through.

Decoding is where untrusted bytes meet C code, so it is strict: an allow-list of formats (Pillow
would otherwise happily hand EPS to Ghostscript), a byte limit, a pixel limit checked from the
header before any pixel is decoded (decompression bombs), and truncated files rejected rather than
silently padded. All of it without touching Pillow's process-wide globals.

Preprocessing reproduces what the model saw in training: CLIP's shortest-side bicubic resize +
centre crop (done with PIL on uint8, exactly as Hugging Face's CLIPImageProcessor does), or
fit-and-pad for models trained on whole product photos. Large JPEGs are decoded at a reduced DCT
scale (``draft``) that stays at least twice the tower's input size, so the final bicubic
downscale still sees enough pixels; the tests bound the resulting difference.

Catalogue photos are mostly small, plain JPEGs, and for those Pillow's Python-level header
parsing costs five times the decode itself. They go straight through libjpeg-turbo
(``simplejpeg``) into an array instead: the same library and settings as Pillow's, so the pixels
are identical (tested), and anything that needs Pillow's care (EXIF or XMP orientation, CMYK,
a reduced-scale decode, a damaged file) still takes the Pillow path.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError

from fashion_search.errors import InputError
from fashion_search.manifest import ImageTower

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # MPO opens as JPEG
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
_WHITE = (255, 255, 255)


@dataclass(frozen=True)
class DecodedImage:
    rgb: Image.Image | np.ndarray  # RGB, EXIF orientation applied; uint8 (H, W, 3) from the fast path
    width: int  # of the original, as stored (before any draft reduction)
    height: int
    format: str

    @cached_property
    def image(self) -> Image.Image:
        """As a Pillow image; made only when asked for, since a catalogue photo that is already
        the tower's size goes from the fast path to the tower as an array without one."""
        return Image.fromarray(self.rgb) if isinstance(self.rgb, np.ndarray) else self.rgb


def decode_image(
    data: bytes, *, max_bytes: int, max_pixels: int, min_side: int | None = None
) -> DecodedImage:
    """Bytes -> RGB image, or ``InputError`` naming what is wrong with them.

    ``min_side``: when given, JPEGs may be decoded at a reduced scale as long as both sides stay
    at least this large (see module docstring).
    """
    if not data:
        raise InputError("empty_image", "the image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise InputError(
            "too_large", f"the image is {len(data)} bytes; the limit is {max_bytes}", status_code=413
        )
    plain = _decode_plain_jpeg(data, max_pixels=max_pixels, min_side=min_side)
    return plain if plain is not None else _decode_with_pillow(data, max_pixels=max_pixels, min_side=min_side)


def _decode_with_pillow(data: bytes, *, max_pixels: int, min_side: int | None) -> DecodedImage:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise InputError(
                    "too_many_pixels",
                    f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
                    status_code=413,
                )
            fmt = image.format or ""
            if min_side and fmt in ("JPEG", "MPO"):
                image.draft("RGB", (2 * min_side, 2 * min_side))
            image.load()
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError("too_many_pixels", str(exc), status_code=413) from exc
    except UnidentifiedImageError as exc:
        raise InputError(
            "not_an_image", f"not a supported image (accepted: {', '.join(ALLOWED_FORMATS)})"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError("corrupt_image", f"the image could not be decoded: {exc}") from exc
    return DecodedImage(to_rgb(ImageOps.exif_transpose(image)), width, height, fmt)


def _decode_plain_jpeg(data: bytes, *, max_pixels: int, min_side: int | None) -> DecodedImage | None:
    """The fast path (see module docstring), or None when the Pillow path must decide."""
    if data[:2] != b"\xff\xd8" or _has_orientation_or_frames(data):
        return None
    try:
        height, width, colourspace, _ = simplejpeg.decode_jpeg_header(data)
        if colourspace not in ("YCbCr", "Gray") or width * height > max_pixels:
            return None
        if min_side and min(width, height) // (2 * min_side) >= 2:  # Pillow would use a draft scale
            return None
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB")
    except ValueError:  # damaged or unusual: Pillow names the problem
        return None
    return DecodedImage(pixels, width, height, "JPEG")


def _has_orientation_or_frames(data: bytes) -> bool:
    """Whether the JPEG has an APP1 segment (EXIF or XMP, where orientation lives) or an MPF one
    (a multi-picture file, which Pillow reports as MPO); True when the segment layout before the
    first scan cannot be followed, so that Pillow decides."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan: no metadata segments after this
            return False
        if marker == 0xE1 or (marker == 0xE2 and data[pos + 4 : pos + 8] == b"MPF\x00"):
            return True
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return True


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode -> RGB. Transparency is composited on white (catalogue backgrounds are white),
    16/32-bit greyscale is scaled rather than clipped, which is what ``convert`` alone would do."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if arr.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def resize_for_tower(image: Image.Image, spec: ImageTower) -> Image.Image:
    """RGB image -> exactly (spec.width, spec.height), the way the model was trained."""
    out_w, out_h = spec.width, spec.height
    resample = _RESAMPLE[spec.interpolation]
    w, h = image.size
    if spec.resize == "squash":
        return image.resize((out_w, out_h), resample=resample)
    if spec.resize == "fit_pad":
        scale = min(out_w / w, out_h / h)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        if (new_w, new_h) != (w, h):
            image = image.resize((new_w, new_h), resample=resample)
        if (new_w, new_h) == (out_w, out_h):
            return image  # already fills the frame (catalogue photos usually do): nothing to pad
        canvas = Image.new("RGB", (out_w, out_h), tuple(spec.pad_color))
        canvas.paste(image, ((out_w - new_w) // 2, (out_h - new_h) // 2))
        return canvas
    # shortest_side_center_crop: as CLIPImageProcessor (shortest edge -> size, long edge truncated).
    if out_w == out_h:
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = out_w, int(out_w * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    else:
        scale = max(out_w / w, out_h / h)
        new_w, new_h = max(out_w, int(w * scale)), max(out_h, int(h * scale))
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), resample=resample)
    left, top = (new_w - out_w) // 2, (new_h - out_h) // 2
    return image.crop((left, top, left + out_w, top + out_h))


def tower_pixels(image: Image.Image, spec: ImageTower) -> np.ndarray:
    """RGB image -> uint8 (H, W, 3) at the tower's size, not yet normalised.

    Ingest and backfill carry this form between stages and normalise a whole batch at once
    (``normalise_batch``): one vectorised pass per batch instead of float arithmetic per image in
    GIL-bound worker threads, and queued (or pickled) arrays a quarter of the float size.
    """
    return np.asarray(resize_for_tower(image, spec), dtype=np.uint8)


def normalise_batch(batch: np.ndarray, spec: ImageTower) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W): scaled to [0, 1], normalised by mean/std.

    A 256-entry table per channel holds ``(v / 255 - mean) / std`` computed in float32 exactly as
    per-pixel arithmetic would, so a lookup gives bit-identical values at a fraction of the cost.
    """
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[3] != 3:
        raise ValueError(f"expected uint8 (N, H, W, 3), got {batch.dtype} {batch.shape}")
    levels = np.arange(256, dtype=np.float32)[:, None] * np.float32(1.0 / 255.0)
    table = (levels - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    n, h, w, _ = batch.shape
    out = np.empty((n, 3, h, w), dtype=np.float32)
    for c in range(3):
        out[:, c] = table[:, c][batch[..., c]]
    return out


def prepare_pixels(image: Image.Image, spec: ImageTower) -> np.ndarray:
    """RGB image -> float32 (3, H, W), the tower's input for a single image."""
    return normalise_batch(tower_pixels(image, spec)[None], spec)[0]


def decode_and_prepare(
    data: bytes, spec: ImageTower, *, max_bytes: int, max_pixels: int
) -> tuple[DecodedImage, np.ndarray]:
    """The one path from untrusted bytes to a tower input (uint8, see ``tower_pixels``), shared by
    ingest and search."""
    decoded = decode_image(
        data, max_bytes=max_bytes, max_pixels=max_pixels, min_side=max(spec.width, spec.height)
    )
    rgb = decoded.rgb
    if isinstance(rgb, np.ndarray) and rgb.shape[:2] == (spec.height, spec.width):
        return decoded, rgb  # already the tower's size: every resize mode leaves it as it is
    return decoded, tower_pixels(decoded.image, spec)
