"""The splits distill-prepare writes (train/val/test.jsonl), read back as arrays.

Each line is a `records.TrainingExample`; train/ learns from the splits,
evaluate/ and the quality benchmark score on them. Bad lines are reported
with file and line and skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.errors import ConfigError
from distill.records import Reject, TrainingExample, read_records

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    ids: list[str]
    texts: list[str]
    targets: np.ndarray  # [N, D] on the 0–10 scale
    tiers: list[str]
    weights: np.ndarray  # [N], mean 1 when any weight is given
    rejects: list[Reject]
    fields: list[dict[str, Any]] = field(default_factory=list)  # [N] the articles' carried fields (language, ...)


def read_split(path: str | Path, num_dimensions: int) -> Split:
    rejects: list[Reject] = []
    rows = list(read_records([path], lambda obj: TrainingExample.from_json(obj, num_dimensions), rejects))
    if not rows:
        raise ConfigError(f"{path}: no usable training examples ({len(rejects)} rejected)")
    weights = np.array([1.0 if row.weight is None else row.weight for row in rows], dtype=np.float64)
    return Split([row.id for row in rows], [row.text for row in rows],
                 np.array([row.dimension_scores for row in rows], dtype=np.float64),
                 [row.tier for row in rows], weights / weights.mean(), rejects, [row.fields for row in rows])
