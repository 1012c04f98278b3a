"""Metrics per slice of the test split: the articles sharing one value of a
carried field (`language`, `source`, ...), for the student and a baseline alike.

A single test MAE hides where a student fails: a language its backbone never
learnt, a source unlike the rest. Each slice gets MAE, tier accuracy and the
recall of the rare tier (the top populated tier of the whole test split, the
one the success criteria judge). Values with fewer than `min_size` test
articles are pooled into one "(other)" row, so a row always rests on enough
articles to mean something.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from distill.errors import ConfigError
from distill.evaluate.metrics import evaluate_predictions
from distill.filter_spec import FilterSpec
from distill.scoring import TierShifts

MISSING = "(missing)"
OTHER = "(other)"
Predictor = tuple[np.ndarray, TierShifts]  # test predictions [N, D] and the operating point they are tiered at


def slice_labels(fields: Sequence[Mapping[str, Any]], name: str, min_size: int) -> tuple[list[str], int]:
    """Each article's slice (its value of field `name`, or OTHER where that value is rare)
    and how many distinct values went into OTHER."""
    values = [MISSING if f.get(name) is None else str(f[name]) for f in fields]
    if all(v == MISSING for v in values):
        raise ConfigError(f"--slice-by {name}: no test article carries field {name!r} (fields the splits carry: "
                          f"{', '.join(sorted({k for f in fields for k in f})) or 'none'}; splits from an older "
                          "distill-prepare carry none: prepare them again)")
    counts = Counter(values)
    return [v if counts[v] >= min_size else OTHER for v in values], sum(n < min_size for n in counts.values())


def slice_metrics(spec: FilterSpec, labels: Sequence[str], pooled: int, predictors: Mapping[str, Predictor],
                  true: np.ndarray, rare_tier: str | None) -> list[dict[str, Any]]:
    """One row per slice, largest first (OTHER last): size, rare-tier support and each predictor's metrics."""
    labels_array = np.asarray(labels)
    order = sorted(set(labels), key=lambda v: (v == OTHER, -int(np.sum(labels_array == v)), v))
    rows = []
    for value in order:
        rows_in = labels_array == value
        row: dict[str, Any] = {"value": value, "n": int(rows_in.sum())}
        if value == OTHER:
            row["values"] = pooled
        for name, (pred, shifts) in predictors.items():
            m = evaluate_predictions(spec, pred[rows_in], true[rows_in], shifts)
            rare = m["tiers"]["per_tier"][rare_tier] if rare_tier else None
            row["rare_support"] = rare["support"] if rare else 0
            row[name] = {"mae": m["mae"], "overall_mae": m["overall_mae"], "tier_accuracy": m["tiers"]["accuracy"],
                         "rare_recall": rare["recall"] if rare else float("nan"),
                         "rare_precision": rare["precision"] if rare else float("nan")}
        rows.append(row)
    return rows
