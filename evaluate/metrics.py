"""Regression and tier metrics of predicted dimension scores against the oracle's.

Overall scores and tiers come from distill.scoring only, for predictions and
labels alike, so a tier here means what it means in labelling and scoring.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from distill.filter_spec import FilterSpec
from distill.scoring import TierShifts, overall_scores, tier_report, tiers_for, top_populated_tier
from distill.stats import spearman

# The seed guide's success criteria.
MAX_DIMENSION_MAE = 1.5
MIN_TIER_ACCURACY = 0.70
MIN_TOP_TIER_RECALL = 0.60


def evaluate_predictions(spec: FilterSpec, pred: np.ndarray, true: np.ndarray,
                         shifts: TierShifts | None = None) -> dict[str, Any]:
    """Every metric of one prediction set [N, D] against the oracle labels [N, D]; predicted
    tiers at the operating point `shifts` (none: the filter's thresholds), the oracle's never shifted."""
    pred, true = np.asarray(pred, dtype=float), np.asarray(true, dtype=float)
    errors = pred - true
    dims = {
        name: {"mae": float(np.abs(errors[:, j]).mean()), "rmse": float(np.sqrt((errors[:, j] ** 2).mean())),
               "spearman": spearman(pred[:, j], true[:, j])}
        for j, name in enumerate(spec.dimension_names)
    }
    pred_overall, true_overall = overall_scores(spec, pred), overall_scores(spec, true)
    tiers = tier_report(spec, tiers_for(spec, true_overall), tiers_for(spec, pred_overall, shifts))
    return {
        "mae": float(np.abs(errors).mean()),
        "dimensions": dims,
        "overall_mae": float(np.abs(pred_overall - true_overall).mean()),
        "overall_spearman": spearman(pred_overall, true_overall),
        "tiers": tiers,
    }


def success_criteria(spec: FilterSpec, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The seed's criteria, each with its value and pass/fail."""
    worst = max(metrics["dimensions"].items(), key=lambda kv: kv[1]["mae"])
    checks = [
        {"criterion": f"MAE < {MAX_DIMENSION_MAE} on every dimension", "value": f"worst {worst[0]} {worst[1]['mae']:.3f}",
         "passed": worst[1]["mae"] < MAX_DIMENSION_MAE},
        {"criterion": f"tier accuracy >= {MIN_TIER_ACCURACY:.0%}", "value": f"{metrics['tiers']['accuracy']:.1%}",
         "passed": metrics["tiers"]["accuracy"] >= MIN_TIER_ACCURACY},
    ]
    top = top_populated_tier(spec, tier_support(metrics))
    if top is not None:
        recall = metrics["tiers"]["per_tier"][top]["recall"]
        checks.append({"criterion": f"recall of top populated tier ({top}) >= {MIN_TOP_TIER_RECALL:.0%}",
                       "value": f"{recall:.3f}", "passed": bool(recall >= MIN_TOP_TIER_RECALL)})
    return checks


def tier_support(metrics: dict[str, Any]) -> dict[str, int]:
    """Oracle examples per tier, from the metrics of one prediction set."""
    return {name: tier["support"] for name, tier in metrics["tiers"]["per_tier"].items()}
