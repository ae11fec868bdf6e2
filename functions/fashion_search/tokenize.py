"""Text -> token ids (and attention mask) exactly as the manifest describes.

The tokenizer file may carry padding/truncation settings of its own from whoever exported it;
the manifest is authoritative, so they are overridden here rather than trusted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from fashion_search.manifest import TextTower


class TextTokenizer:
    def __init__(self, tokenizer: Tokenizer, spec: TextTower) -> None:
        self._spec = spec
        tokenizer.enable_truncation(max_length=spec.max_length)
        if spec.padding == "max_length":
            tokenizer.enable_padding(pad_id=spec.pad_id, pad_token=spec.pad_token, length=spec.max_length)
        else:
            tokenizer.enable_padding(pad_id=spec.pad_id, pad_token=spec.pad_token)
        # Query text is user input: a literal "<|endoftext|>" or "[SEP]" in it must stay text,
        # not end the sequence early. Not stored in tokenizer.json, so it is set here.
        tokenizer.encode_special_tokens = True
        self._tokenizer = tokenizer

    @classmethod
    def from_dir(cls, model_dir: Path, spec: TextTower) -> TextTokenizer:
        return cls(Tokenizer.from_file(str(Path(model_dir) / spec.tokenizer_file)), spec)

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask), both int64 [N, L]."""
        if self._spec.lowercase:
            texts = [t.lower() for t in texts]
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        return ids, mask

    def feeds(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The text tower's inputs by the manifest's names (mask only when the tower takes one)."""
        ids, mask = self.encode(texts)
        feeds = {self._spec.input_ids_name: ids}
        if self._spec.attention_mask_name:
            feeds[self._spec.attention_mask_name] = mask
        return feeds
