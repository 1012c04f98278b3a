"""The student's tokenizer without transformers: `tokenizers` over tokenizer.json.

Scoring an export needs only ids, so it loads the folder's tokenizer.json
with the Rust `tokenizers` library (what transformers' fast tokenizers wrap)
and keeps torch and transformers out of the `[score]` install. The adapter
answers the two calls `encode_texts` makes (`tokenizer(texts,
add_special_tokens=...)["input_ids"]` and `pad_token_id`), so the ids are the
ones training saw; tests check them against AutoTokenizer on real text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distill.errors import ModelArtifactError

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


class FastTokenizer:
    """tokenizer.json through `tokenizers`, with the pad id transformers would set."""

    def __init__(self, backend: Any, pad_token_id: int):
        self.backend = backend
        self.pad_token_id = pad_token_id

    def __call__(self, texts: str | Sequence[str], add_special_tokens: bool = True) -> dict[str, Any]:
        if isinstance(texts, str):
            return {"input_ids": self.backend.encode(texts, add_special_tokens=add_special_tokens).ids}
        encodings = self.backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        return {"input_ids": [encoding.ids for encoding in encodings]}


def has_fast_tokenizer(folder: str | Path) -> bool:
    return (Path(folder) / TOKENIZER_FILE).is_file()


def load_fast_tokenizer(folder: str | Path) -> FastTokenizer:
    """The folder's tokenizer.json, truncation and padding off (the head + tail cut is ours).

    The pad token is tokenizer_config.json's `pad_token`, else its `eos_token`
    (decoders ship without a pad; `ensure_pad_token` makes the same choice).
    """
    from tokenizers import Tokenizer

    folder = Path(folder)
    try:
        backend = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
    except Exception as exc:  # tokenizers raises a bare Exception for unreadable files
        raise ModelArtifactError(f"{folder / TOKENIZER_FILE}: not a usable tokenizer ({exc})") from None
    backend.no_truncation()
    backend.no_padding()
    config = _read_config(folder / TOKENIZER_CONFIG_FILE)
    for key in ("pad_token", "eos_token"):
        token = _token_text(config.get(key))
        if token is not None and backend.token_to_id(token) is not None:
            return FastTokenizer(backend, backend.token_to_id(token))
    raise ModelArtifactError(f"{folder}: the tokenizer has neither a pad nor an eos token")


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelArtifactError(f"{path}: unreadable ({exc})") from None


def _token_text(value: Any) -> str | None:
    # transformers writes special tokens as strings or as AddedToken dicts ({"content": ...}).
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None
