"""Token-budget batches from length-sorted work; knows nothing about the model.

A window of tokenised articles is sorted by length (longest first, so a too
large budget fails on the first batch rather than the last) and cut greedily
into batches whose padded size, rows x longest row, stays within the
backend's token budget. Results are scattered back to window positions by
index, so callers see them in the order they handed the sequences in.

A backend that compiles kernels per input shape (OpenVINO) pads each batch
to one of a bounded set of shapes (`padded_shape`); batches are then planned
in those shapes, so the budget holds for what actually runs and the padding
counted is the padding computed.
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
    width_step: int = 1  # >1: the backend pads batches to bounded shapes (padded_shape)


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


def padded_shape(rows: int, longest: int, limits: BackendLimits) -> tuple[int, int]:
    """(rows, width) that a batch of `rows` sequences, the longest `longest` tokens, runs at.

    With `width_step` 1, the batch as it is. Otherwise the width rounds up to a
    multiple of the step (never past max_tokens) and the rows up to a power of
    two, or to the rows the token budget fits at that width where the power of
    two would pass it: a budget-full batch, the common one, runs unpadded (a
    batch of 9 at width 224 once ran as 16: 12% of the tokens a 99K corpus ran were
    wasted), and each width still sees a handful of row counts.
    """
    if limits.width_step == 1:
        return rows, longest
    width = padded_width(longest, limits)
    padded = 1 << (rows - 1).bit_length()
    fits = min(limits.max_batch, limits.token_budget // width)
    return (min(padded, fits) if rows <= fits else padded), width


def padded_width(longest: int, limits: BackendLimits) -> int:
    """The width a batch whose longest sequence has `longest` tokens runs at (see padded_shape)."""
    step = limits.width_step
    return min(-(-longest // step) * step, max(longest, limits.max_tokens))


def plan_batches(lengths: list[int], limits: BackendLimits) -> list[list[int]]:
    """Groups of positions into `lengths`, longest first, each within the limits."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = padded_width(lengths[current[0]] if current else lengths[i], limits)
        rows = len(current) + 1
        if current and (rows > limits.max_batch or rows * width > limits.token_budget):
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
        rows, width = padded_shape(len(batch), lengths[batch[0]], backend.limits)
        timings.padded_tokens += rows * width
    return out
