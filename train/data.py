"""Training examples from distill-prepare splits, and length-grouped batches.

A split line: id, text, dimension_scores (filter order), overall_score, tier,
optional weight. Bad lines are reported with file and line and skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.errors import ConfigError
from distill.records import Reject, check_score, read_records


@dataclass
class Split:
    ids: list[str]
    texts: list[str]
    targets: np.ndarray  # [N, D] on the 0–10 scale
    tiers: list[str]
    weights: np.ndarray  # [N], mean 1 when any weight is given
    rejects: list[Reject]


def _parser(num_dimensions: int):
    def parse(obj: dict[str, Any]) -> tuple[str, str, list[float], str, float]:
        text = obj.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError("field 'text': missing or not a non-empty string")
        scores = obj.get("dimension_scores")
        if not isinstance(scores, list) or len(scores) != num_dimensions:
            raise ValueError(f"field 'dimension_scores': expected a list of {num_dimensions} scores")
        values = [check_score(v, "dimension_scores") for v in scores]
        weight = obj.get("weight", 1.0)
        if not isinstance(weight, (int, float)) or not weight > 0:
            raise ValueError("field 'weight': must be a positive number")
        return str(obj.get("id", "")), text, values, str(obj.get("tier", "")), float(weight)

    return parse


def read_split(path: str | Path, num_dimensions: int) -> Split:
    rejects: list[Reject] = []
    rows = list(read_records([path], _parser(num_dimensions), rejects))
    if not rows:
        raise ConfigError(f"{path}: no usable training examples ({len(rejects)} rejected)")
    ids, texts, scores, tiers, weights = (list(col) for col in zip(*rows, strict=True))
    weights_arr = np.array(weights, dtype=np.float64)
    return Split(ids, texts, np.array(scores, dtype=np.float64), tiers, weights_arr / weights_arr.mean(), rejects)


def tier_balance_weights(tiers: list[str], power: float) -> np.ndarray:
    """(n_largest / n_tier)^power per example, normalised to mean 1; 0 gives all ones."""
    names, counts = np.unique(tiers, return_counts=True)
    factor = dict(zip(names, (counts.max() / counts) ** power, strict=True))
    weights = np.array([factor[t] for t in tiers])
    return weights / weights.mean()


def length_grouped_batches(
    lengths: list[int], batch_size: int, seed: int, epoch: int
) -> list[list[int]]:
    """Batches of similar length in a shuffled order, reproducible from (seed, epoch).

    Shuffle, sort within mega-batches of 50 batches by length, cut into batches,
    shuffle the batches: little padding, still a random order.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    mega = batch_size * 50
    batches = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start:start + mega], key=lambda i: -lengths[i])
        batches += [list(map(int, chunk[i:i + batch_size])) for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches
