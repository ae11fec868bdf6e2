"""Turn checkpoints into the model directories the runtime loads (ONNX towers, tokenizer, manifest).

Needs torch and transformers (see ``model_export/requirements.txt``); the runtime under
``functions/`` never imports this package. It does import the runtime's manifest schema, so when
run from a source checkout without ``pip install -e .`` the ``functions/`` directory is put on
the import path here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("fashion_search") is None:  # pragma: no cover - depends on the install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "functions"))
