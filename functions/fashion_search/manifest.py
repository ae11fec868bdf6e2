"""The model manifest (``model.json``): the one contract between ``model_export/`` and the runtime.

An exported model directory holds two ONNX towers, a ``tokenizer.json`` and this manifest. The
manifest says everything the runtime needs to reproduce the preprocessing the model was trained
with, because a model fed differently-prepared pixels or tokens silently returns worse results.
It is deliberately broader than CLIP's recipe: non-square inputs, fit-and-pad resizing, and text
towers that take an attention mask (sentence-encoder text towers) are all first-class.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from fashion_search.errors import ModelError

MANIFEST_NAME = "model.json"
SCHEMA_VERSION = 1

ResizeMode = Literal["shortest_side_center_crop", "fit_pad", "squash"]


class ImageTower(BaseModel):
    """How to turn a decoded RGB image into the image tower's input tensor (NCHW float32)."""

    file: str = "image.onnx"
    input_name: str = "pixel_values"
    output_name: str = "image_embeds"
    height: int = Field(..., ge=1)
    width: int = Field(..., ge=1)
    resize: ResizeMode = "shortest_side_center_crop"
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    pad_color: tuple[int, int, int] = (255, 255, 255)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class TextTower(BaseModel):
    """How to turn a string into the text tower's inputs."""

    file: str = "text.onnx"
    tokenizer_file: str = "tokenizer.json"
    input_ids_name: str = "input_ids"
    attention_mask_name: str | None = None
    output_name: str = "text_embeds"
    max_length: int = Field(..., ge=2)
    padding: Literal["max_length", "longest"] = "max_length"
    pad_id: int = Field(..., ge=0)
    pad_token: str
    lowercase: bool = False


class ModelManifest(BaseModel):
    """Contents of ``model.json``."""

    schema_version: int = SCHEMA_VERSION
    name: str
    source: str = Field(..., description="Where the weights came from (HF id, local dir, 'trained').")
    embedding_dim: int = Field(..., ge=1)
    precision: Literal["fp32", "fp16", "int8", "mixed"] = "fp32"
    image: ImageTower
    text: TextTower
    files: dict[str, str] = Field(default_factory=dict, description="file name -> sha256 hex")
    extra: dict[str, object] = Field(default_factory=dict, description="Free-form: card, metrics.")

    @model_validator(mode="after")
    def _check_version(self) -> ModelManifest:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"unsupported schema_version {self.schema_version}, expected {SCHEMA_VERSION}")
        return self

    @property
    def model_id(self) -> str:
        """Stable identity of the weights: records embedded by another model must be re-embedded."""
        digest = hashlib.sha256()
        for name in sorted(self.files):
            digest.update(f"{name}={self.files[name]};".encode())
        return f"{self.name}@{digest.hexdigest()[:12]}"


HOW_TO_GET_A_MODEL = (
    "Produce one with `python -m model_export export --out DIR` (needs internet), "
    "`python -m model_export tiny --out DIR` (a random test model), or use the trained model "
    "under models/; then set FASHION_SEARCH_MODEL_DIR=DIR."
)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(model_dir: Path, manifest: ModelManifest) -> ModelManifest:
    """Fill in the sha256 of every referenced file and write ``model.json``; returns the result."""
    names = [manifest.image.file, manifest.text.file, manifest.text.tokenizer_file]
    files = {name: sha256_file(model_dir / name) for name in names}
    final = manifest.model_copy(update={"files": files})
    (model_dir / MANIFEST_NAME).write_text(json.dumps(final.model_dump(mode="json"), indent=2) + "\n")
    return final


def load_manifest(model_dir: Path, *, verify_hashes: bool = True) -> ModelManifest:
    """Read and check a model directory; any problem is one ``ModelError`` that says how to fix it."""
    path = Path(model_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ModelError(f"no model at {model_dir}: {MANIFEST_NAME} is missing. {HOW_TO_GET_A_MODEL}")
    try:
        manifest = ModelManifest.model_validate_json(path.read_text())
    except (ValidationError, ValueError) as exc:
        raise ModelError(f"invalid {path}: {exc}. {HOW_TO_GET_A_MODEL}") from exc
    for name in (manifest.image.file, manifest.text.file, manifest.text.tokenizer_file):
        file = Path(model_dir) / name
        if not file.is_file():
            raise ModelError(f"model at {model_dir} is incomplete: {name} is missing. {HOW_TO_GET_A_MODEL}")
        expected = manifest.files.get(name)
        if verify_hashes and expected and sha256_file(file) != expected:
            raise ModelError(
                f"model at {model_dir} is inconsistent: sha256 of {name} does not match {MANIFEST_NAME} "
                f"(a partial copy or a file from another export?). {HOW_TO_GET_A_MODEL}"
            )
    return manifest
