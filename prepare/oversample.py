"""Balancing the train split: copies of minority-tier examples, or loss weights.

Val and test are never touched, so their metrics describe the natural
distribution the student will meet.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from distill.prepare.split import seeded_hash
from distill.prepare.validate import Example


@dataclass
class Balance:
    method: str  # "oversample" | "weighting" | "none"
    ratio: float | None = None
    target: int | None = None  # minimum examples per tier after oversampling
    added: dict[str, int] = field(default_factory=dict)  # copies per tier
    weights: dict[str, float] = field(default_factory=dict)  # loss weight per tier

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v not in (None, {})}


def oversample(train: list[Example], ratio: float, seed: int) -> tuple[list[Example], Balance]:
    """Train rows in a seeded order, with each minority tier copied up to
    `ratio` x the largest tier's count. Copies keep their id."""
    counts = Counter(ex.tier for ex in train)
    balance = Balance("oversample" if ratio > 0 else "none", ratio=ratio)
    rows = [(seeded_hash(seed, "order", ex.id, 0), ex) for ex in train]
    if ratio > 0 and counts:
        balance.target = math.ceil(ratio * max(counts.values()))
        for tier in sorted(counts):
            need = balance.target - counts[tier]
            if need <= 0:
                continue
            pool = sorted((ex for ex in train if ex.tier == tier), key=lambda ex: seeded_hash(seed, "copy", ex.id))
            for i in range(need):
                example = pool[i % len(pool)]
                rows.append((seeded_hash(seed, "order", example.id, 1 + i // len(pool)), example))
            balance.added[tier] = need
    return [ex for _, ex in sorted(rows, key=lambda row: row[0])], balance


def tier_weights(train: list[Example]) -> Balance:
    """Inverse tier frequency, scaled so the mean weight over train is 1."""
    counts = Counter(ex.tier for ex in train)
    weights = {tier: round(len(train) / (len(counts) * n), 6) for tier, n in sorted(counts.items())}
    return Balance("weighting", weights=weights)
