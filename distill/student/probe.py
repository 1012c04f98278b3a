"""The start-up parity probe: a few articles' fp32 outputs, kept beside an export.

`distill-export` writes probe.json (token ids of a handful of real articles of
varied length and PyTorch fp32's standardised outputs for them); the scorer
runs its chosen backend on the same ids at start-up and keeps the choice only
if the outputs agree, so a lossy or machine-specific path (int8, bf16, a new
runtime) is checked on this machine before it scores a corpus. It needs
neither torch nor the fp32 weights, which the shipped student does not carry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.errors import ModelArtifactError

PROBE_FILE = "probe.json"
# Standardised units (one target std). On the shipped student's probe, bf16
# differs by 0.006 on average (max 0.03) and ONNX Runtime int8 by 0.036 (max
# 0.16), with the same val MAE as fp32; a broken kernel or a wrong graph is off
# by whole standard deviations. The lossy limits leave int8 room on CPUs whose
# int8 kernels round differently.
TOLERANCE = {"fp32": {"max": 1e-3, "mean": 1e-4}, "lossy": {"max": 1.0, "mean": 0.1}}


# For folders without probe.json (training runs, older exports): the scorer
# computes the fp32 reference itself on these, in the corpus's two languages.
PROBE_TEXTS = (
    "Solar farm opens.",
    "A 50 MW offshore wind farm began feeding the grid this week; the operator says it will power 60,000 homes.",
    "De gemeente plaatst warmtepompen in vijftig sociale huurwoningen en meet een jaar lang het verbruik.",
    "Researchers report a perovskite cell with 26% efficiency in the lab. Stability beyond 1,000 hours has "
    "not been shown, and the authors name no partner for manufacturing. " * 3,
    "Stock markets closed higher on Friday after the central bank kept interest rates unchanged.",
    "Een startup uit Eindhoven bouwt een fabriek voor ijzerpoederbatterijen; de eerste klant is een "
    "bierbrouwerij die er zijn stoomketel mee wil vervangen. " * 4,
)


@dataclass(frozen=True)
class Probe:
    sequences: list[list[int]]
    outputs: np.ndarray  # float64 [n, D], the reference's standardised outputs
    reference: str  # what made them, e.g. "torch-fp32"


@dataclass(frozen=True)
class ProbeResult:
    passed: bool
    max_abs: float
    mean_abs: float
    articles: int
    reference: str

    def describe(self) -> str:
        return (f"max |diff| {self.max_abs:.3g}, mean {self.mean_abs:.2g} vs {self.reference} "
                f"on {self.articles} articles")


def write_probe(folder: Path, probe: Probe) -> Path:
    path = folder / PROBE_FILE
    body = {"reference": probe.reference, "sequences": probe.sequences,
            "outputs": np.round(probe.outputs, 7).tolist()}
    path.write_text(json.dumps(body) + "\n", encoding="utf-8")
    return path


def read_probe(folder: Path) -> Probe | None:
    """The folder's probe.json, or None when it has none; a damaged one is one clear error."""
    path = folder / PROBE_FILE
    if not path.is_file():
        return None
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        sequences = [[int(t) for t in row] for row in body["sequences"]]
        outputs = np.asarray(body["outputs"], dtype=np.float64)
        reference = str(body["reference"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelArtifactError(f"{path}: unreadable probe ({exc}); export the model again") from None
    if outputs.ndim != 2 or len(outputs) != len(sequences) or not sequences:
        raise ModelArtifactError(f"{path}: {len(sequences)} sequences but outputs of shape {outputs.shape}")
    return Probe(sequences, outputs, reference)


def compare(outputs: np.ndarray, probe: Probe, precision: str) -> ProbeResult:
    """Does a backend's output on the probe's ids match the reference within its precision's tolerance?"""
    limits = TOLERANCE["fp32" if precision == "fp32" else "lossy"]
    if outputs.shape != probe.outputs.shape:
        return ProbeResult(False, float("inf"), float("inf"), len(probe.sequences), probe.reference)
    diff = np.abs(outputs.astype(np.float64) - probe.outputs)
    finite = bool(np.isfinite(diff).all())
    worst = float(diff.max()) if finite else float("inf")
    mean = float(diff.mean()) if finite else float("inf")
    passed = finite and worst <= limits["max"] and mean <= limits["mean"]
    return ProbeResult(passed, worst, mean, len(probe.sequences), probe.reference)
