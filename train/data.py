"""Per-example weights and length-grouped batches for the training loop.

The splits themselves are read by the core (distill.splits.read_split, one
records.TrainingExample per line), since evaluate/ reads them too.
"""

from __future__ import annotations

import numpy as np


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
