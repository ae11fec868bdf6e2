"""Decoding is strict about bad bytes and liberal about unusual-but-valid images; preprocessing
matches the reference implementations."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashion_search.errors import InputError
from fashion_search.imaging import (
    _decode_plain_jpeg,
    _decode_with_pillow,
    decode_and_prepare,
    decode_image,
    normalise_batch,
    prepare_pixels,
    resize_for_tower,
    tower_pixels,
)
from fashion_search.manifest import ImageTower

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP = ImageTower(height=224, width=224, mean=CLIP_MEAN, std=CLIP_STD)
PORTRAIT_PAD = ImageTower(
    height=80, width=60, resize="fit_pad", interpolation="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3
)
LIMITS = {"max_bytes": 5_000_000, "max_pixels": 4_000_000}


def encode(image: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def gradient(w: int = 64, h: int = 48) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.uint8)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=2))


@pytest.mark.parametrize(
    ("make", "fmt"),
    [
        (lambda: gradient().convert("RGBA"), "PNG"),
        (lambda: gradient().convert("P"), "PNG"),
        (lambda: gradient().convert("LA"), "PNG"),
        (lambda: gradient().convert("L"), "JPEG"),
        (lambda: gradient().convert("1"), "PNG"),
        (lambda: gradient().convert("CMYK"), "JPEG"),
        (lambda: gradient().convert("CMYK"), "TIFF"),
        (lambda: gradient(), "WEBP"),
        (lambda: gradient(), "BMP"),
        (lambda: gradient(), "TIFF"),
        (lambda: gradient(1, 1), "PNG"),
        (lambda: gradient(3000, 8), "PNG"),
    ],
    ids=[
        "rgba",
        "palette",
        "la",
        "grey-jpeg",
        "1bit",
        "cmyk-jpeg",
        "cmyk-tiff",
        "webp",
        "bmp",
        "tiff",
        "tiny",
        "wide",
    ],
)
def test_unusual_valid_images_decode_to_rgb_and_prepare(make, fmt: str) -> None:
    decoded = decode_image(encode(make(), fmt), **LIMITS)
    assert decoded.image.mode == "RGB"
    assert decoded.format == fmt
    for spec in (CLIP, PORTRAIT_PAD):
        pixels = prepare_pixels(decoded.image, spec)
        assert pixels.shape == (3, spec.height, spec.width)
        assert pixels.dtype == np.float32 and np.isfinite(pixels).all()


def jpeg_claiming_size(width: int, height: int) -> bytes:
    """A small baseline JPEG whose frame header (SOF0) claims another size."""
    raw = bytearray(encode(gradient(16, 16), "JPEG"))
    sof = raw.index(b"\xff\xc0")
    raw[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(raw)


def test_plain_jpegs_take_the_fast_path_with_pillows_exact_pixels(kagl_dir: Path) -> None:
    """The libjpeg-turbo fast path must be invisible: same pixels (tolerance 0), size and format
    as the Pillow path, for catalogue photos and for every chroma layout a shop may upload."""
    photo = Image.open(kagl_dir / "images" / "15970.jpg").resize((333, 517))
    samples = [(kagl_dir / "images" / f"{i}.jpg").read_bytes() for i in (15970, 39386, 59263, 1163)]
    samples += [encode(photo, "JPEG", subsampling=s) for s in (0, 1, 2)]
    samples += [encode(photo, "JPEG", progressive=True), encode(photo.convert("L"), "JPEG")]
    samples.append(encode(photo, "JPEG", icc_profile=b"\0" * 128))  # an ICC profile changes nothing
    for data in samples:
        fast = _decode_plain_jpeg(data, max_pixels=LIMITS["max_pixels"], min_side=224)
        assert fast is not None
        slow = _decode_with_pillow(data, max_pixels=LIMITS["max_pixels"], min_side=224)
        assert (fast.width, fast.height, fast.format) == (slow.width, slow.height, slow.format)
        assert fast.image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(fast.image), np.asarray(slow.image))


def test_jpegs_needing_pillows_care_leave_the_fast_path(kagl_dir: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    needs_pillow = {
        "exif": encode(gradient(), "JPEG", exif=exif),
        "cmyk": encode(gradient().convert("CMYK"), "JPEG"),
        "draft-scale": encode(gradient(700, 700), "JPEG"),
        "truncated": encode(gradient(), "JPEG")[:300],
        "over-pixel-limit": jpeg_claiming_size(5000, 5000),
        "png": encode(gradient(), "PNG"),
    }
    for name, data in needs_pillow.items():
        assert _decode_plain_jpeg(data, max_pixels=LIMITS["max_pixels"], min_side=160) is None, name


def test_batch_normalisation_equals_per_pixel_arithmetic(kagl_dir: Path) -> None:
    """Reference: ``(v / 255 - mean) / std`` in float32 per pixel, the way the towers were trained;
    the lookup table must give the same values bit for bit (tolerance 0), for every level."""
    photos = [kagl_dir / "images" / f"{i}.jpg" for i in (15970, 39386, 59263)]
    for spec in (CLIP, PORTRAIT_PAD):
        every_level = (np.arange(spec.height * spec.width * 3) % 256).astype(np.uint8)
        batch = np.stack(
            [tower_pixels(decode_image(p.read_bytes(), **LIMITS).image, spec) for p in photos]
            + [every_level.reshape(spec.height, spec.width, 3)]
        )
        scaled = batch.astype(np.float32) * np.float32(1.0 / 255.0)
        reference = (scaled - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
        ours = normalise_batch(batch, spec)
        assert ours.shape == (len(batch), 3, spec.height, spec.width) and ours.dtype == np.float32
        np.testing.assert_array_equal(ours, reference.transpose(0, 3, 1, 2))


@pytest.mark.parametrize(
    "bad",
    [np.zeros((2, 8, 8, 3), np.float32), np.zeros((8, 8, 3), np.uint8), np.zeros((2, 8, 8, 4), np.uint8)],
)
def test_batch_normalisation_refuses_anything_but_uint8_nhwc(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8"):
        normalise_batch(bad, CLIP)


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    ramp = (np.linspace(0, 65535, 64 * 8).reshape(8, 64)).astype(np.uint16)
    decoded = decode_image(encode(Image.fromarray(ramp), "PNG"), **LIMITS)
    grey = np.asarray(decoded.image)[:, :, 0]
    # `convert("RGB")` alone would saturate everything above 255 to white.
    assert grey.min() == 0 and grey.max() == 255
    assert 100 < grey.mean() < 155


def test_transparent_pixels_become_white() -> None:
    image = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    decoded = decode_image(encode(image, "PNG"), **LIMITS)
    assert np.asarray(decoded.image).min() == 255


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    decoded = decode_image(buf.getvalue(), **LIMITS)
    r, _, b = np.asarray(decoded.image)[10, 10]
    assert r > 200 and b < 50


def test_exif_orientation_is_applied() -> None:
    image = gradient(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    decoded = decode_image(encode(image, "JPEG", exif=exif), **LIMITS)
    assert decoded.image.size == (20, 40)
    assert (decoded.width, decoded.height) == (40, 20)  # as stored


def png_with_header_size(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims a huge size: what a decompression bomb looks like up front."""
    raw = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(raw[24:29])
    raw[16:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(raw)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_image"),
        (b"this is not an image at all", "not_an_image"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not_an_image"),
        (encode(gradient(), "JPEG")[:300], "corrupt_image"),
        (png_with_header_size(100_000, 100_000), "too_many_pixels"),
        (jpeg_claiming_size(30_000, 30_000), "too_many_pixels"),
        (b"\xff" * (LIMITS["max_bytes"] + 1), "too_large"),
    ],
    ids=["empty", "text", "eps-not-allowed", "truncated-jpeg", "bomb", "jpeg-bomb", "too-large"],
)
def test_bad_bytes_are_rejected_with_a_code(data: bytes, code: str) -> None:
    with pytest.raises(InputError) as info:
        decode_image(data, **LIMITS)
    assert info.value.code == code
    assert info.value.status_code in (400, 413)


def test_fit_pad_keeps_aspect_and_pads_white() -> None:
    square = Image.new("RGB", (100, 100), (0, 0, 0))
    out = np.asarray(resize_for_tower(square, PORTRAIT_PAD))
    assert out.shape == (80, 60, 3)
    assert out[:10].min() == 255 and out[-10:].min() == 255  # white bands above and below
    assert out[40].max() == 0  # the black square in the middle


def test_catalogue_sized_photo_is_untouched_by_fit_pad(kagl_dir: Path) -> None:
    image = decode_image((kagl_dir / "images" / "15970.jpg").read_bytes(), **LIMITS).image
    assert image.size == (60, 80)
    assert np.array_equal(np.asarray(resize_for_tower(image, PORTRAIT_PAD)), np.asarray(image))


def test_shortest_side_center_crop_matches_a_direct_computation() -> None:
    image = gradient(300, 200)
    # Reference: shortest side 200 -> 224, long side int(224 * 300 / 200) = 336, crop the centre.
    resized = image.resize((336, 224), resample=Image.Resampling.BICUBIC)
    expected = np.asarray(resized)[:, 56:280]
    assert np.array_equal(np.asarray(resize_for_tower(image, CLIP)), expected)


@pytest.mark.torch
def test_clip_preprocessing_equals_transformers_clip_image_processor(kagl_dir: Path) -> None:
    """Reference computation: Hugging Face's CLIPImageProcessor. Tolerance 1e-5 (float rounding)."""
    transformers = pytest.importorskip("transformers")
    processor = transformers.CLIPImageProcessor(
        size={"shortest_edge": 224},
        crop_size={"height": 224, "width": 224},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    )
    for name in ("images/15970.jpg", "images224/10000.jpg"):
        image = decode_image((kagl_dir / name).read_bytes(), **LIMITS).image
        ours = prepare_pixels(image, CLIP)
        theirs = processor(images=image, return_tensors="np")["pixel_values"][0]
        assert np.abs(ours - theirs).max() < 1e-5, name


def test_large_jpeg_draft_decoding_stays_within_tolerance(kagl_dir: Path) -> None:
    """Decoding 1200x1600 photos at reduced DCT scale must not move the tower input noticeably:
    stated tolerance mean |diff| < 0.03 and max |diff| < 0.6 in normalised units (~1% / ~15 grey levels)."""
    photos = sorted((kagl_dir / "hires").glob("*.jpg"))[:5]
    assert photos
    for path in photos:
        data = path.read_bytes()
        fast = normalise_batch(
            decode_and_prepare(data, CLIP, max_bytes=50_000_000, max_pixels=50_000_000)[1][None], CLIP
        )[0]
        full = prepare_pixels(decode_image(data, max_bytes=50_000_000, max_pixels=50_000_000).image, CLIP)
        diff = np.abs(fast - full)
        assert diff.mean() < 0.03 and diff.max() < 0.6, (path.name, diff.mean(), diff.max())


@pytest.mark.parametrize("resize", ["fit_pad", "squash", "shortest_side_center_crop"])
def test_tower_sized_jpegs_skip_resizing_with_the_same_result(resize: str, kagl_dir: Path) -> None:
    """A fast-path photo already at the tower's size goes in as decoded; the shortcut must equal
    what resizing through Pillow gives, for every resize mode (and differ from nothing else)."""
    spec = PORTRAIT_PAD.model_copy(update={"resize": resize, "interpolation": "bicubic"})
    data = (kagl_dir / "images" / "15970.jpg").read_bytes()
    decoded, pixels = decode_and_prepare(data, spec, **LIMITS)
    assert isinstance(decoded.rgb, np.ndarray) and pixels.shape == (80, 60, 3)
    np.testing.assert_array_equal(pixels, np.asarray(resize_for_tower(decoded.image, spec)))
    other = spec.model_copy(update={"height": 64, "width": 48})
    np.testing.assert_array_equal(
        decode_and_prepare(data, other, **LIMITS)[1], np.asarray(resize_for_tower(decoded.image, other))
    )
