"""Standardised model outputs -> scored records, through the shared rules only.

Outputs are mapped back to 0–10 with the artifact's TargetScaler, calibrated
when the model folder has calibration.json, and turned into overall score and
tier by distill.scoring (weights, gatekeepers, content-type caps, tiers, and the
operating point calibration.json may hold), so a scored record means exactly
what a labelled one does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.artifact import Calibration, StudentInfo, TargetScaler
from distill.filter_spec import FilterSpec
from distill.prefilter import PASSED
from distill.scoring import overall_scores, tiers_for

SCORE_DECIMALS = 4


@dataclass
class Item:
    """One article on its way through the runner (no text once tokenised)."""

    id: str
    prefilter: str  # "passed" or the block reason
    content_type: str | None = None
    carried: dict[str, Any] = field(default_factory=dict)


class Postfilter:
    def __init__(self, spec: FilterSpec, info: StudentInfo, model_dir: Path, model_id: str):
        self.spec = spec
        self.dimensions = spec.dimension_names
        self.scaler = TargetScaler.from_info(info)
        self.calibration = Calibration.load(model_dir)
        self.tier_shifts = self.calibration.tier_shifts if self.calibration is not None else {}
        if self.calibration is not None:
            self.calibration.check_tier_shifts(spec, model_dir)
        self.model_id = model_id

    def scores(self, outputs: np.ndarray) -> np.ndarray:
        """Standardised outputs [n, D] -> calibrated 0–10 scores [n, D]."""
        scores = self.scaler.to_scores(outputs)
        if self.calibration is not None:
            scores = self.calibration.apply(scores, self.dimensions)
        return scores

    def scored_records(self, items: list[Item], outputs: np.ndarray) -> list[dict[str, Any]]:
        """Records for articles that passed the prefilter, in the order of `items`."""
        scores = self.scores(outputs)
        overall = overall_scores(self.spec, scores, [i.content_type for i in items])
        tiers = tiers_for(self.spec, overall, self.tier_shifts)
        return [
            {
                "id": item.id,
                "scores": {d: round(float(v), SCORE_DECIMALS) for d, v in zip(self.dimensions, row, strict=True)},
                "overall_score": round(float(total), SCORE_DECIMALS),
                "tier": tier,
                "prefilter": PASSED,
                "model": self.model_id,
                **item.carried,
            }
            for item, row, total, tier in zip(items, scores, overall, tiers, strict=True)
        ]

    def blocked_record(self, item: Item) -> dict[str, Any]:
        """A prefilter-blocked article: no scores, the reason in `prefilter`."""
        return {
            "id": item.id,
            "scores": None,
            "overall_score": None,
            "tier": None,
            "prefilter": item.prefilter,
            "model": self.model_id,
            **item.carried,
        }
