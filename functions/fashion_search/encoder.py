"""The ONNX dual encoder: images and texts into one L2-normalised embedding space.

Sessions are created once per process (they cost hundreds of milliseconds and tens of MB) and
are safe to call from several threads at once, which is how the API serves concurrent requests.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from fashion_search.errors import ModelError
from fashion_search.imaging import normalise_batch, tower_pixels
from fashion_search.manifest import ModelManifest, load_manifest
from fashion_search.tokenize import TextTokenizer

log = logging.getLogger(__name__)


def _session(path: Path, threads: int, providers: Sequence[str]) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    available = set(ort.get_available_providers())
    chosen = [p for p in providers if p in available] or ["CPUExecutionProvider"]
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=chosen)
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise ModelError(f"could not load {path}: {exc}") from exc


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class Encoder:
    def __init__(
        self,
        manifest: ModelManifest,
        image_session: ort.InferenceSession,
        text_session: ort.InferenceSession,
        tokenizer: TextTokenizer,
    ) -> None:
        self.manifest = manifest
        self.model_id = manifest.model_id
        self.dim = manifest.embedding_dim
        self._image = image_session
        self._text = text_session
        self._tokenizer = tokenizer
        self._check_io()

    @classmethod
    def load(cls, model_dir: Path, threads: int = 0, providers: Sequence[str] | None = None) -> Encoder:
        model_dir = Path(model_dir)
        manifest = load_manifest(model_dir)
        providers = list(providers or ["CPUExecutionProvider"])
        encoder = cls(
            manifest,
            _session(model_dir / manifest.image.file, threads, providers),
            _session(model_dir / manifest.text.file, threads, providers),
            TextTokenizer.from_dir(model_dir, manifest.text),
        )
        log.info("model loaded", extra={"model_id": encoder.model_id, "providers": encoder.providers})
        return encoder

    @property
    def providers(self) -> list[str]:
        return self._image.get_providers()

    def _check_io(self) -> None:
        """Fail at load time, with the manifest's names, rather than on the first request."""
        img, txt = self.manifest.image, self.manifest.text
        expected = {
            "image.onnx inputs": ({img.input_name}, {i.name for i in self._image.get_inputs()}),
            "image.onnx outputs": ({img.output_name}, {o.name for o in self._image.get_outputs()}),
            "text.onnx inputs": (
                {txt.input_ids_name} | ({txt.attention_mask_name} if txt.attention_mask_name else set()),
                {i.name for i in self._text.get_inputs()},
            ),
            "text.onnx outputs": ({txt.output_name}, {o.name for o in self._text.get_outputs()}),
        }
        for what, (want, have) in expected.items():
            if not want <= have:
                raise ModelError(f"model.json names {sorted(want)} but {what} are {sorted(have)}")
        for session, name in ((self._image, img.output_name), (self._text, txt.output_name)):
            out = next(o for o in session.get_outputs() if o.name == name)
            last = out.shape[-1] if out.shape else None
            if isinstance(last, int) and last != self.dim:
                raise ModelError(f"{name} has dimension {last}; model.json says {self.dim}")

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) prepared by ``imaging.prepare_pixels`` -> (N, D) unit vectors."""
        if len(pixels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        feed = {self.manifest.image.input_name: np.ascontiguousarray(pixels, dtype=np.float32)}
        (out,) = self._image.run([self.manifest.image.output_name], feed)
        return l2_normalize(out)

    def embed_tower_pixels(self, batch: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) from ``imaging.tower_pixels`` -> (N, D) unit vectors."""
        return self.embed_pixels(normalise_batch(batch, self.manifest.image))

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """RGB images (already decoded safely) -> (N, D) unit vectors."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.embed_tower_pixels(np.stack([tower_pixels(im, self.manifest.image) for im in images]))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Strings -> (N, D) unit vectors."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        spec = self.manifest.text
        feed = self._tokenizer.feeds(texts)
        (out,) = self._text.run([spec.output_name], feed)
        return l2_normalize(out)
