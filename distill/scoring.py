"""The one place that turns dimension scores into an overall score and a tier.

Labelling, preparation, evaluation and scoring all call these functions, so a
filter's weights, gatekeepers, caps and tiers mean the same thing everywhere.

An *operating point* (`shifts`, tier -> amount) moves a tier's lower boundary:
the tier is reached when overall score + shift >= its minimum. The overall
score itself is untouched. `distill-evaluate --target-recall` fits one on val
and saves it in calibration.json; score, serve and evaluate pass it here, so
they tier alike. No shifts (the default) means the filter's own thresholds.
`tier_report` measures predicted tiers against the oracle's (evaluate, export).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from distill.filter_spec import FilterSpec

# Overall scores are rounded so that e.g. weights summing to 0.9999999 cannot
# drop an article that sits exactly on a tier boundary into the tier below.
_DECIMALS = 6

TierShifts = Mapping[str, float]  # tier name -> shift of the overall score at its lower boundary


@dataclass(frozen=True)
class ScoreResult:
    overall_score: float
    tier: str
    capped_by: tuple[str, ...]  # gatekeeper dimensions / content type that capped it


def score_vector(spec: FilterSpec, scores: Mapping[str, float] | Sequence[float]) -> np.ndarray:
    """Scores in the filter's dimension order, from a mapping or an ordered sequence."""
    if isinstance(scores, Mapping):
        missing = [d for d in spec.dimension_names if d not in scores]
        if missing:
            raise KeyError(f"missing dimension(s): {', '.join(missing)}")
        return np.array([float(scores[d]) for d in spec.dimension_names])
    vector = np.asarray(scores, dtype=float)
    if vector.shape != (len(spec.dimensions),):
        raise ValueError(f"expected {len(spec.dimensions)} scores, got shape {vector.shape}")
    return vector


def score_record(
    spec: FilterSpec,
    scores: Mapping[str, float] | Sequence[float],
    content_type: str | None = None,
    shifts: TierShifts | None = None,
) -> ScoreResult:
    """Overall score, tier (at the operating point `shifts`, if any) and what capped it, for one article."""
    vector = score_vector(spec, scores)
    overall, capped = overall_scores(spec, vector[None, :], [content_type], explain=True)
    value = float(overall[0])
    return ScoreResult(value, tier_for(spec, value, shifts), capped[0])


def overall_scores(
    spec: FilterSpec,
    matrix: np.ndarray,
    content_types: Sequence[str | None] | None = None,
    explain: bool = False,
):
    """Vectorised overall scores for an (N, D) matrix in dimension order.

    Weighted mean with weights normalised to sum 1, then every applicable cap
    (gatekeepers, content type) takes the minimum. With explain=True also
    returns, per row, the names of the caps that lowered the score.
    """
    matrix = np.asarray(matrix, dtype=float)
    weights = np.array([d.weight for d in spec.dimensions])
    overall = matrix @ (weights / weights.sum())
    names = spec.dimension_names
    reasons: list[list[str]] = [[] for _ in range(len(matrix))] if explain else []
    for j, dim in enumerate(spec.dimensions):
        gk = dim.gatekeeper
        if gk is None:
            continue
        applies = matrix[:, j] < gk.threshold
        if gk.unless_dimension is not None:
            applies &= matrix[:, names.index(gk.unless_dimension)] < gk.unless_min
        lowered = applies & (overall > gk.cap)
        overall = np.where(applies, np.minimum(overall, gk.cap), overall)
        for i in np.flatnonzero(lowered) if explain else ():
            reasons[i].append(dim.name)
    if content_types is not None and spec.content_type_caps:
        caps = np.array([spec.content_type_caps.get(c or "", np.inf) for c in content_types])
        lowered = overall > caps
        overall = np.minimum(overall, caps)
        for i in np.flatnonzero(lowered) if explain else ():
            reasons[i].append(f"content_type:{content_types[i]}")
    overall = np.round(overall, _DECIMALS)
    if explain:
        return overall, [tuple(r) for r in reasons]
    return overall


def tier_for(spec: FilterSpec, overall: float, shifts: TierShifts | None = None) -> str:
    """The first tier, checked from the highest minimum down, that the score reaches."""
    for name, minimum in _checked_minimums(spec, shifts).items():
        if overall >= minimum:
            return name
    return spec.tiers[-1].name


def tier_shift_problems(spec: FilterSpec, shifts: TierShifts) -> list[str]:
    """What is wrong with an operating point for this filter (empty when it can be used)."""
    names = spec.tier_names
    problems = [f"tier {t!r} is not a tier of {spec.id} ({', '.join(names)})" for t in shifts if t not in names]
    if names[-1] in shifts:
        problems.append(f"tier {names[-1]!r} is the lowest tier, which takes every score: it has no boundary to shift")
    if not problems:
        mins = list(tier_minimums(spec, shifts).values())
        problems += [f"shifted boundaries must keep the tiers in order, but {hi} would start at {a:g} and {lo} "
                     f"at {b:g}" for hi, lo, a, b in zip(names, names[1:], mins, mins[1:], strict=False) if a <= b]
    return problems


def tier_minimums(spec: FilterSpec, shifts: TierShifts | None = None) -> dict[str, float]:
    """The lowest overall score each tier takes at this operating point, highest tier first."""
    # Rounded like overall scores, so a shift fitted to put a score exactly on a boundary does.
    return {t.name: round(t.min_score - float((shifts or {}).get(t.name, 0.0)), _DECIMALS) for t in spec.tiers}


def _checked_minimums(spec: FilterSpec, shifts: TierShifts | None) -> dict[str, float]:
    problems = tier_shift_problems(spec, shifts) if shifts else []
    if problems:
        raise ValueError("; ".join(problems))
    return tier_minimums(spec, shifts)


def top_populated_tier(spec: FilterSpec, support: Mapping[str, int]) -> str | None:
    """The highest tier above the lowest with any examples (`support`: count per tier), else None."""
    return next((name for name in spec.tier_names[:-1] if support.get(name, 0) > 0), None)


def tiers_for(spec: FilterSpec, overall: np.ndarray, shifts: TierShifts | None = None) -> list[str]:
    """Vectorised tier_for; `shifts` is an operating point (see the module doc)."""
    mins = np.array(list(_checked_minimums(spec, shifts).values()))
    # index of the first tier whose minimum the score reaches (tiers are descending)
    reached = np.asarray(overall)[:, None] >= mins[None, :]
    index = np.where(reached.any(axis=1), reached.argmax(axis=1), len(mins) - 1)
    return [spec.tiers[i].name for i in index]


def tier_report(spec: FilterSpec, true_tiers: list[str], pred_tiers: list[str]) -> dict[str, Any]:
    """Accuracy, per-tier precision/recall/F1/support and the confusion matrix (rows: oracle)."""
    names = spec.tier_names
    index = {name: i for i, name in enumerate(names)}
    confusion = np.zeros((len(names), len(names)), dtype=int)
    for t, p in zip(true_tiers, pred_tiers, strict=True):
        confusion[index[t], index[p]] += 1
    per_tier = {}
    for i, name in enumerate(names):
        tp, predicted, support = confusion[i, i], confusion[:, i].sum(), confusion[i, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else float("nan")
        f1 = 2 * precision * recall / (precision + recall) if support and precision + recall else 0.0
        per_tier[name] = {"precision": float(precision), "recall": float(recall), "f1": float(f1),
                          "support": int(support), "predicted": int(predicted)}
    return {
        "accuracy": float(np.trace(confusion) / max(1, confusion.sum())),
        "per_tier": per_tier,
        "confusion": {"labels": names, "matrix": confusion.tolist()},
    }
