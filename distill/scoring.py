"""The one place that turns dimension scores into an overall score and a tier.

Labelling, preparation, evaluation and scoring all call these functions, so a
filter's weights, gatekeepers, caps and tiers mean the same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from distill.filter_spec import FilterSpec

# Overall scores are rounded so that e.g. weights summing to 0.9999999 cannot
# drop an article that sits exactly on a tier boundary into the tier below.
_DECIMALS = 6


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
) -> ScoreResult:
    """Overall score, tier and what capped it, for one article."""
    vector = score_vector(spec, scores)
    overall, capped = overall_scores(spec, vector[None, :], [content_type], explain=True)
    value = float(overall[0])
    return ScoreResult(value, tier_for(spec, value), capped[0])


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


def tier_for(spec: FilterSpec, overall: float) -> str:
    """The first tier, checked from the highest minimum down, that the score reaches."""
    for tier in spec.tiers:
        if overall >= tier.min_score:
            return tier.name
    return spec.tiers[-1].name


def top_populated_tier(spec: FilterSpec, support: Mapping[str, int]) -> str | None:
    """The highest tier above the lowest with any examples (`support`: count per tier), else None."""
    return next((name for name in spec.tier_names[:-1] if support.get(name, 0) > 0), None)


def tiers_for(spec: FilterSpec, overall: np.ndarray) -> list[str]:
    """Vectorised tier_for."""
    mins = np.array([t.min_score for t in spec.tiers])
    # index of the first tier whose minimum the score reaches (tiers are descending)
    reached = np.asarray(overall)[:, None] >= mins[None, :]
    index = np.where(reached.any(axis=1), reached.argmax(axis=1), len(mins) - 1)
    return [spec.tiers[i].name for i in index]
