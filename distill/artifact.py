"""What a model folder records about itself: `distill.json` and `calibration.json`.

Every stage after training (evaluate, export, score) reads a model through
this module, so the dimension order, target scaling, truncation and
calibration a student was trained with travel with its weights.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill import __version__
from distill.errors import ModelArtifactError, OutputError
from distill.filter_spec import FilterSpec
from distill.scoring import tier_shift_problems

INFO_FILE = "distill.json"
CALIBRATION_FILE = "calibration.json"
# What to tell a user whose model folder no longer matches its weights.
RESTORE = "restore the file from the training run (or retrain)"
RECOPY = "copy it again from where it was made, or retrain"
# Errors that mean "this place cannot be written" (read-only, full), not a bug.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


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
    write_text_atomic(path, json.dumps(asdict(info), indent=2, sort_keys=True) + "\n")
    return path


def read_info(folder: str | Path) -> StudentInfo:
    """distill.json, checked: a scaler that does not fit the dimensions would score garbage."""
    path = Path(folder) / INFO_FILE
    if not path.is_file():
        raise ModelArtifactError(f"{folder}: no {INFO_FILE}; is this a distill model folder?")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        info = StudentInfo(**raw)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
        raise ModelArtifactError(f"{path}: unreadable ({exc}); {RESTORE}") from None
    problems = info_problems(info)
    if problems:
        raise ModelArtifactError(f"{path}: {'; '.join(problems)}; {RESTORE}")
    return info


def info_problems(info: StudentInfo) -> list[str]:
    """Every inconsistency in a StudentInfo, each naming the field."""
    dims = info.dimensions
    if not isinstance(dims, list) or not dims or not all(isinstance(d, str) for d in dims):
        return ["dimensions must be a non-empty list of names"]
    problems = [] if len(set(dims)) == len(dims) else ["dimensions holds a name twice"]
    for name in ("target_mean", "target_std"):
        problems += _scaler_problems(name, getattr(info, name), dims)
    if not isinstance(info.max_tokens, int) or info.max_tokens < 1:
        problems.append(f"max_tokens must be a whole number >= 1 (got {info.max_tokens!r})")
    if not isinstance(info.head_share, int | float) or not 0.0 <= info.head_share <= 1.0:
        problems.append(f"head_share must be between 0 and 1 (got {info.head_share!r})")
    return problems


def _scaler_problems(name: str, values: Any, dims: list[str]) -> list[str]:
    if not isinstance(values, list) or len(values) != len(dims):
        count = len(values) if isinstance(values, list) else "no list of"
        return [f"{name} has {count} values for {len(dims)} dimensions"]
    problems = []
    for value, dim in zip(values, dims, strict=True):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or (name == "target_std" and value <= 0):
            rule = "a finite number > 0" if name == "target_std" else "a finite number"
            problems.append(f"{name} for {dim} is {value!r}; it must be {rule}")
    return problems


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write beside the target, then rename over it: a reader sees the old file or the
    new one, never half of one, and a failed write (full disk) leaves the old one."""

    def fill(temp: Path) -> None:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    _replace(Path(path), fill)


def copy_file_atomic(source: str | Path, target: str | Path) -> None:
    """As write_bytes_atomic, without holding the file in memory (a full fine-tune's
    weights can be many GB)."""
    _replace(Path(target), lambda temp: shutil.copyfile(source, temp))


def _replace(target: Path, fill: Callable[[Path], Any]) -> None:
    temp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        fill(temp)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_failure(exc: BaseException) -> OSError | None:
    """The OSError behind a failed write into a read-only folder or onto a full disk.

    safetensors and tokenizers (Rust) report it only as text ending in
    "(os error 28)"; anything else is not a write failure and gives None.
    """
    if isinstance(exc, OSError):
        return exc if exc.errno in WRITE_ERRNOS else None
    found = re.search(r"\(os error (\d+)\)", str(exc))
    if found and int(found.group(1)) in WRITE_ERRNOS:
        code = int(found.group(1))
        path = re.search(r'at path "([^"]+)"', str(exc))
        return OSError(code, os.strerror(code), path.group(1) if path else None)
    return None


@contextmanager
def writing(target: str | Path, doing: str, then: str = "", name_target: bool = False) -> Iterator[None]:
    """Turn a failed write under `target` (read-only, disk full) into one OutputError line
    naming the file (or `target`, with `name_target`) and the fix; `then` adds what the
    rerun needs. Other errors pass."""
    from distill.records import output_error

    try:
        yield
    except Exception as exc:
        cause = write_failure(exc)
        if cause is None:
            raise
        error = output_error(target if name_target else cause.filename or target, cause, doing)
        raise OutputError(f"{error}{then}") from exc


def weight_shapes(path: str | Path, fix: str = RECOPY) -> dict[str, list[int]]:
    """Tensor name -> shape from a safetensors file's header, which safetensors checks
    against the file's size: a truncated or garbage file fails here, before any load."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except SafetensorError as exc:
        detail = str(exc).removeprefix("Error while deserializing header: ")
        raise ModelArtifactError(
            f"{path}: not a readable safetensors file ({detail}); it is truncated or corrupt: {fix}"
        ) from None


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
    """Per-dimension monotone maps (isotonic fits stored as knots), applied with interp,
    and optionally an operating point for tiers (distill.scoring's `shifts`).

    Stored as JSON, never pickled: {"dimensions": {name: {"x": [...], "y": [...]}},
    "method": how the knots were fitted, "tier_shifts": {tier: shift}}; the last two
    are optional. Every stage that loads it tiers with its tier_shifts.
    """

    def __init__(self, knots: dict[str, tuple[list[float], list[float]]], method: str | None = None,
                 tier_shifts: dict[str, float] | None = None):
        self.knots = knots
        self.method = method
        self.tier_shifts = dict(tier_shifts or {})

    def apply(self, scores: np.ndarray, dimensions: list[str]) -> np.ndarray:
        out = np.array(scores, dtype=np.float64, copy=True)
        for j, name in enumerate(dimensions):
            if name in self.knots:
                x, y = self.knots[name]
                out[:, j] = np.interp(out[:, j], x, y)
        return np.clip(out, 0.0, 10.0)

    def check_tier_shifts(self, spec: FilterSpec, folder: str | Path) -> None:
        """Refuse an operating point that does not fit `spec` (a tier it lacks, tiers out of order)."""
        problems = tier_shift_problems(spec, self.tier_shifts)
        if problems:
            raise ModelArtifactError(
                f"{Path(folder) / CALIBRATION_FILE}: its tier_shifts do not fit filter {spec.id}: {problems[0]}; "
                "refit them with distill-evaluate --target-recall, or remove tier_shifts")

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / CALIBRATION_FILE
        data: dict[str, Any] = {"dimensions": {k: {"x": list(x), "y": list(y)} for k, (x, y) in self.knots.items()}}
        if self.method:
            data["method"] = self.method
        if self.tier_shifts:
            data["tier_shifts"] = dict(self.tier_shifts)
        write_text_atomic(path, json.dumps(data, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> Calibration | None:
        path = Path(folder) / CALIBRATION_FILE
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            shifts = {str(k): _finite(v, f"tier_shifts.{k}") for k, v in raw.get("tier_shifts", {}).items()}
            return cls({k: (list(v["x"]), list(v["y"])) for k, v in raw["dimensions"].items()},
                       raw.get("method"), shifts)
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ModelArtifactError(
                f"{path}: not a calibration file ({type(exc).__name__}: {exc}); "
                "refit it with distill-evaluate --calibrate, or delete it"
            ) from None


def _finite(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key} is {value!r}, not a finite number")
    return float(value)
