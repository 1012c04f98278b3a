"""The student's tokenisation and the one padding routine.

`encode_texts` is what the student was trained on: head + tail cut to
`max_tokens` counting the special tokens put around it. Training,
evaluation, export and scoring all call it, so none can drift. Padding
gives int64 numpy arrays (torch callers use torch.from_numpy), on the right
by default; export also checks left-padded batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from distill.truncation import truncate_token_ids

PADDING_SIDES = ("right", "left")


def special_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """Special token ids the tokenizer puts before and after one sequence ([CLS]/[SEP], none for Qwen)."""
    probe = "distill probe"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    start = next((i for i in range(len(full) - len(bare) + 1) if full[i:i + len(bare)] == bare), None)
    if start is None:
        return [], []
    return list(full[:start]), list(full[start + len(bare):])


def encode_texts(
    tokenizer: Any, texts: Sequence[str], max_tokens: int, head_share: float
) -> list[list[int]]:
    """Token ids per text: head+tail truncated to max_tokens, special tokens around."""
    prefix, suffix = special_affixes(tokenizer)
    budget = max(1, max_tokens - len(prefix) - len(suffix))
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [prefix + truncate_token_ids(ids, budget, head_share) + suffix for ids in encoded]


def pad_sequences(
    sequences: Sequence[Sequence[int]], pad_id: int, side: str = "right"
) -> tuple[np.ndarray, np.ndarray]:
    """int64 `input_ids` and `attention_mask` [n, longest], padded on `side` ("right" or "left")."""
    if side not in PADDING_SIDES:
        raise ValueError(f"side must be one of {PADDING_SIDES}, not {side!r}")
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    width = int(lengths.max())
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    for row, seq in enumerate(sequences):
        if side == "right":
            ids[row, : len(seq)] = seq
        else:
            ids[row, width - len(seq):] = seq
    positions = np.arange(width)[None, :]
    real = positions < lengths[:, None] if side == "right" else positions >= (width - lengths)[:, None]
    return ids, real.astype(np.int64)


def encode_batch(
    tokenizer: Any, texts: Sequence[str], max_tokens: int, head_share: float, side: str = "right"
) -> dict[str, np.ndarray]:
    """`input_ids` and `attention_mask` of texts as the student reads them, padded on `side`."""
    ids, mask = pad_sequences(encode_texts(tokenizer, texts, max_tokens, head_share), tokenizer.pad_token_id, side)
    return {"input_ids": ids, "attention_mask": mask}
