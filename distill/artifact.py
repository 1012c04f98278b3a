"""What a model folder records about itself: `distill.json` and `calibration.json`.

Every stage after training (evaluate, export, score) reads a model through
this module, so the dimension order, target scaling, truncation and
calibration a student was trained with travel with its weights.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill import __version__
from distill.errors import ModelArtifactError
from distill.filter_spec import FilterSpec

INFO_FILE = "distill.json"
CALIBRATION_FILE = "calibration.json"


@dataclass
class StudentInfo:
    filter_name: str
    filter_version: int
    filter_config_hash: str
    dimensions: list[str]
    base_model: str  # hub id or local path the weights were built from
    architecture: str  # "decoder" (last-token pooling) or "encoder"
    weights_format: str  # "peft-lora", "full" or "merged"
    max_tokens: int
    head_share: float
    target_mean: list[float]
    target_std: list[float]
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)  # resolved settings of the run
    distill_version: str = __version__

    @property
    def artifact_id(self) -> str:
        return f"{self.filter_name}/v{self.filter_version}:{Path(self.base_model).name}"

    def check_filter(self, spec: FilterSpec) -> None:
        """A model is only valid for the filter dimensions it was trained on."""
        if spec.dimension_names != self.dimensions:
            raise ModelArtifactError(
                f"model was trained for dimensions {self.dimensions} of "
                f"{self.filter_name}/v{self.filter_version}, but filter {spec.id} has "
                f"{spec.dimension_names}"
            )


def write_info(folder: str | Path, info: StudentInfo) -> Path:
    path = Path(folder) / INFO_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(info), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_info(folder: str | Path) -> StudentInfo:
    path = Path(folder) / INFO_FILE
    if not path.is_file():
        raise ModelArtifactError(f"{folder}: no {INFO_FILE}; is this a distill model folder?")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return StudentInfo(**raw)
    except (json.JSONDecodeError, TypeError) as exc:
        raise ModelArtifactError(f"{path}: unreadable ({exc})") from None


class TargetScaler:
    """Per-dimension standardisation for training; inverse maps back and clips to 0–10."""

    def __init__(self, mean: np.ndarray, std: np.ndarray):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.maximum(np.asarray(std, dtype=np.float64), 1e-6)

    @classmethod
    def fit(cls, targets: np.ndarray) -> TargetScaler:
        targets = np.asarray(targets, dtype=np.float64)
        return cls(targets.mean(axis=0), targets.std(axis=0))

    @classmethod
    def from_info(cls, info: StudentInfo) -> TargetScaler:
        return cls(np.array(info.target_mean), np.array(info.target_std))

    def standardise(self, scores: np.ndarray) -> np.ndarray:
        return (np.asarray(scores, dtype=np.float64) - self.mean) / self.std

    def to_scores(self, outputs: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(outputs, dtype=np.float64) * self.std + self.mean, 0.0, 10.0)


class Calibration:
    """Per-dimension monotone maps (isotonic fits stored as knots), applied with interp.

    Stored as JSON, never pickled: {"dimensions": {name: {"x": [...], "y": [...]}}}.
    """

    def __init__(self, knots: dict[str, tuple[list[float], list[float]]]):
        self.knots = knots

    def apply(self, scores: np.ndarray, dimensions: list[str]) -> np.ndarray:
        out = np.array(scores, dtype=np.float64, copy=True)
        for j, name in enumerate(dimensions):
            if name in self.knots:
                x, y = self.knots[name]
                out[:, j] = np.interp(out[:, j], x, y)
        return np.clip(out, 0.0, 10.0)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / CALIBRATION_FILE
        data = {"dimensions": {k: {"x": list(x), "y": list(y)} for k, (x, y) in self.knots.items()}}
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> Calibration | None:
        path = Path(folder) / CALIBRATION_FILE
        if not path.is_file():
            return None
        raw = json.loads(path.read_text(encoding="utf-8"))
        return cls({k: (v["x"], v["y"]) for k, v in raw["dimensions"].items()})
