"""Checks an export must pass: ONNX vs PyTorch parity and the MAE gate on labels.

Parity compares standardised outputs (the raw head) batch by batch on texts
of varied length, padded right and left. The reference for a decoder is
PyTorch on right-padded batches for both sides, since last-token pooling must
not depend on the padding side; an encoder with absolute positions is compared
on the very same (left- or right-padded) batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.artifact import Calibration, TargetScaler
from distill.errors import DistillError
from distill.export.encode import Labelled, batches
from distill.export.merge import Student
from distill.filter_spec import FilterSpec
from distill.scoring import overall_scores, tier_report, tiers_for, top_populated_tier
from distill.student.encode import PADDING_SIDES, encode_batch, encode_texts
from distill.student.predict import predict_sorted, torch_outputs


class ExportCheckError(DistillError):
    """An export failed parity or the accuracy gate; the message says by how much."""


@dataclass
class VariantMAE:
    name: str
    mae: float
    per_dimension: dict[str, float]
    scores: np.ndarray | None = None  # [N, D] on the 0-10 scale, before the folder's calibration


def ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session: Any, batch: dict[str, np.ndarray]) -> np.ndarray:
    return session.run(["scores"], batch)[0].astype(np.float64)


def check_parity(
    student: Student, session: Any, texts: list[str], batch_size: int, tolerance: float
) -> dict[str, Any]:
    """Max abs difference per padding side; raises ExportCheckError above `tolerance`."""
    info = student.info
    decoder = info.architecture == "decoder"
    figures: dict[str, Any] = {"texts": len(texts), "batch_size": batch_size, "tolerance": tolerance}
    worst = {side: 0.0 for side in PADDING_SIDES}
    for chunk in batches(texts, batch_size):
        right = encode_batch(student.tokenizer, chunk, info.max_tokens, info.head_share, "right")
        reference = torch_outputs(student.model, right)
        for side in PADDING_SIDES:
            batch = right if side == "right" else encode_batch(student.tokenizer, chunk, info.max_tokens, info.head_share, side)
            expected = reference if decoder or side == "right" else torch_outputs(student.model, batch)
            worst[side] = max(worst[side], float(np.abs(run_onnx(session, batch) - expected).max()))
    figures.update({f"max_abs_diff_{side}_padded": worst[side] for side in PADDING_SIDES})
    figures["reference"] = "pytorch right-padded" if decoder else "pytorch on the same batch"
    failed = {side: diff for side, diff in worst.items() if diff > tolerance}
    if failed:
        detail = ", ".join(f"{side}-padded {diff:.2e}" for side, diff in failed.items())
        raise ExportCheckError(
            f"ONNX fp32 differs from PyTorch by up to {detail} on standardised outputs "
            f"(tolerance {tolerance:g}); export not written"
        )
    return figures


def predict_standardised(session: Any, student: Student, texts: list[str], batch_size: int) -> np.ndarray:
    """ONNX outputs for all texts, batched by length to keep padding low."""
    info = student.info
    token_ids = encode_texts(student.tokenizer, texts, info.max_tokens, info.head_share)

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return run_onnx(session, {"input_ids": ids, "attention_mask": mask})

    return predict_sorted(run, token_ids, student.tokenizer.pad_token_id, batch_size, len(info.dimensions))


def variant_mae(name: str, session: Any, student: Student, data: Labelled, batch_size: int) -> VariantMAE:
    """MAE on the 0–10 scale (inverse-standardised, clipped) against the labels."""
    scores = TargetScaler.from_info(student.info).to_scores(
        predict_standardised(session, student, data.texts, batch_size)
    )
    errors = np.abs(scores - data.labels)
    per_dim = {d: round(float(errors[:, j].mean()), 5) for j, d in enumerate(student.info.dimensions)}
    return VariantMAE(name, float(errors.mean()), per_dim, scores)


def tier_figures(spec: FilterSpec, calibration: Calibration | None, scores: np.ndarray,
                 labels: np.ndarray) -> dict[str, Any]:
    """Tier accuracy and the rarest populated tier's precision / recall, tiered as
    distill-score tiers (the folder's calibration and operating point applied) against
    the oracle's tiers: quantisation moves articles across a tier boundary that an MAE
    gate does not see."""
    if calibration is not None:
        scores = calibration.apply(scores, spec.dimension_names)
    shifts = calibration.tier_shifts if calibration is not None else None
    report = tier_report(spec, tiers_for(spec, overall_scores(spec, labels)),
                         tiers_for(spec, overall_scores(spec, scores), shifts))
    support = {name: tier["support"] for name, tier in report["per_tier"].items()}
    rare = top_populated_tier(spec, support)
    figures: dict[str, Any] = {"accuracy": round(report["accuracy"], 4), "rare_tier": rare}
    if rare is not None:
        figures.update({k: round(report["per_tier"][rare][k], 4) for k in ("precision", "recall")},
                       support=report["per_tier"][rare]["support"])
    return figures


def gate(candidate: VariantMAE, fp32: VariantMAE, tolerance: float) -> dict[str, Any]:
    """Accept a quantised variant only if its MAE is within `tolerance` of fp32's."""
    excess = candidate.mae - fp32.mae
    result = {"mae": round(candidate.mae, 5), "fp32_mae": round(fp32.mae, 5),
              "mae_increase": round(excess, 5), "tolerance": tolerance,
              "accepted": excess <= tolerance, "per_dimension": candidate.per_dimension}
    return result
