"""Token-budget batches from length-sorted work; knows nothing about the model.

A window of tokenised articles is sorted by length (longest first, so a too
large budget fails on the first batch rather than the last) and cut greedily
into batches whose padded size, rows x longest row, stays within the
backend's token budget. Results are scattered back to window positions by
index, so callers see them in the order they handed the sequences in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class BackendLimits:
    max_tokens: int  # longest sequence the model accepts, special tokens included
    max_batch: int  # rows per batch at most
    token_budget: int  # padded tokens (rows x longest row) per batch that suit the device
    streams: int = 1  # predict calls that may run at once (OpenVINO inference streams)


class Backend(Protocol):
    """What the batcher needs from a model: its limits and a batch predictor."""

    name: str
    limits: BackendLimits
    dimensions: int

    def predict(self, sequences: list[list[int]]) -> np.ndarray:
        """Standardised outputs, float32 array [len(sequences), dimensions], in order."""
        ...


@dataclass
class Timings:
    """Wall seconds by phase. `tokenise` is worker time (it overlaps the rest)."""

    read: float = 0.0  # reading, parsing and prefiltering input
    tokenise: float = 0.0
    wait: float = 0.0  # the model side blocked waiting for tokenised work
    infer: float = 0.0
    write: float = 0.0  # postfilter and output
    batches: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0

    @property
    def padding_share(self) -> float:
        return 1 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0


def plan_batches(lengths: list[int], limits: BackendLimits) -> list[list[int]]:
    """Groups of positions into `lengths`, longest first, each within the limits."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        rows = len(current) + 1
        if current and (rows > limits.max_batch or rows * longest > limits.token_budget):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def predict_window(backend: Backend, sequences: list[list[int]], timings: Timings) -> np.ndarray:
    """Outputs [len(sequences), D] in the given order, computed in sorted batches."""
    out = np.empty((len(sequences), backend.dimensions), dtype=np.float32)
    lengths = [len(s) for s in sequences]
    for batch in plan_batches(lengths, backend.limits):
        start = time.perf_counter()
        out[batch] = backend.predict([sequences[i] for i in batch])
        timings.infer += time.perf_counter() - start
        timings.batches += 1
        timings.real_tokens += sum(lengths[i] for i in batch)
        timings.padded_tokens += len(batch) * lengths[batch[0]]
    return out
