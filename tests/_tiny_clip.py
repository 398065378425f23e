"""A character-level CLIP tokenizer on disk, for pipelines built from random weights (tests and benchmarks): every
printable character and its end-of-word form are tokens, no merges."""

from __future__ import annotations

import json
import string
from pathlib import Path


def write_clip_tokenizer(folder: Path) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` of the tokenizer into ``folder`` (created) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in (c for c in string.printable if not c.isspace()):
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder
