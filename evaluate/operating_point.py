"""An operating point for tiers, fitted on val: for each --target-recall tier, the
smallest shift of its lower boundary at which the student's val recall of that
tier reaches the target.

A rare tier sits at a boundary: many of its articles are predicted just under
it (or are capped by a gatekeeper just under it). Lowering that one boundary
buys recall and costs precision; the other boundaries stay where the filter
puts them. Recall only grows as a boundary drops (articles move in from
below, none leave above), so the smallest shift that reaches the target is
the first candidate that does, in ascending order. The candidates are the
shifts that put one of the tier's own val articles exactly on the boundary:
recall changes nowhere else. The shift may be negative: a tier already above
its target gets a higher boundary and more precision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from distill.errors import ConfigError
from distill.filter_spec import FilterSpec
from distill.scoring import TierShifts, overall_scores, tier_report, tier_shift_problems, tiers_for

_DECIMALS = 6  # as distill.scoring rounds overall scores


def fit_operating_point(spec: FilterSpec, val_pred: np.ndarray, val_true: np.ndarray,
                        targets: Mapping[str, float]) -> dict[str, float]:
    """{tier: shift} reaching each target recall on val (`val_pred` as shipped, calibrated).

    Tiers are fitted from the top down: a lower tier's recall depends on the
    boundary above it, never the other way round."""
    problems = [f"--target-recall: {tier!r} is not a tier of {spec.id} ({', '.join(spec.tier_names)})"
                for tier in targets if tier not in spec.tier_names]
    problems += [f"--target-recall: {tier!r} is the lowest tier, which takes every score: it has no boundary"
                 for tier in targets if tier == spec.tier_names[-1]]
    if problems:
        raise ConfigError("; ".join(problems))
    overall = overall_scores(spec, val_pred)
    true_tiers = np.array(tiers_for(spec, overall_scores(spec, val_true)))
    shifts: dict[str, float] = {}
    for tier in (t for t in spec.tier_names if t in targets):
        shifts[tier] = smallest_shift(spec, overall, true_tiers, tier, targets[tier], shifts)
    return shifts


def smallest_shift(spec: FilterSpec, overall: np.ndarray, true_tiers: np.ndarray, tier: str, target: float,
                   shifts: TierShifts) -> float:
    """The smallest shift of `tier`'s boundary (others at `shifts`) with recall >= target."""
    members = overall[true_tiers == tier]
    if not len(members):
        raise ConfigError(f"--target-recall {tier}: val has no {tier} articles to fit a boundary on")
    minimum = next(t.min_score for t in spec.tiers if t.name == tier)
    best_recall, best_shift = 0.0, 0.0
    for shift in np.unique(np.round(minimum - members, _DECIMALS)):
        trial = {**shifts, tier: float(shift)}
        if tier_shift_problems(spec, trial):
            continue  # the boundary would cross a neighbour's
        recall = float(np.mean(np.array(tiers_for(spec, members, trial)) == tier))
        if recall >= target:
            return float(shift)
        if recall > best_recall:
            best_recall, best_shift = recall, float(shift)
    raise ConfigError(f"--target-recall {tier}={target:g}: no shift of the {tier} boundary reaches it on val "
                      f"without crossing another tier's (best: recall {best_recall:.3f} at shift {best_shift:+g})")


def operating_point_effect(spec: FilterSpec, pred: np.ndarray, true: np.ndarray,
                           shifts: TierShifts) -> dict[str, dict[str, Any]]:
    """Per shifted tier: recall, precision and predicted count at the filter's thresholds and at `shifts`."""
    overall, true_tiers = overall_scores(spec, pred), tiers_for(spec, overall_scores(spec, true))
    reports = {"default": tier_report(spec, true_tiers, tiers_for(spec, overall)),
               "shifted": tier_report(spec, true_tiers, tiers_for(spec, overall, shifts))}
    return {tier: {name: {key: report["per_tier"][tier][key] for key in ("recall", "precision", "predicted", "support")}
                   | {"accuracy": report["accuracy"]}
                   for name, report in reports.items()}
            for tier in shifts}
