"""Run the student: standardised outputs batched by length, then 0-10 scores.

`predict_sorted` is the one batching loop; PyTorch (`predict_raw`) and ONNX
Runtime (export's gate) plug in a function of (input_ids, attention_mask).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from distill.artifact import Calibration, StudentInfo, TargetScaler
from distill.student.encode import encode_texts, pad_sequences

if TYPE_CHECKING:
    from distill.ensemble import TokenRidge

# (input_ids, attention_mask) -> outputs [batch, D]
Run = Callable[[np.ndarray, np.ndarray], np.ndarray]


def predict_sorted(run: Run, token_ids: Sequence[Sequence[int]], pad_id: int, batch_size: int,
                   width: int) -> np.ndarray:
    """run()'s outputs [N, width] over right-padded batches of similar length, in input order."""
    order = np.argsort([len(ids) for ids in token_ids], kind="stable")
    out = np.zeros((len(token_ids), width), dtype=np.float64)
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        out[index] = run(*pad_sequences([token_ids[i] for i in index], pad_id))
    return out


def torch_outputs(model: Any, batch: dict[str, np.ndarray]) -> np.ndarray:
    """The model's logits as float64 numpy for a batch of numpy inputs (on the model's device)."""
    import torch

    device = next(model.parameters()).device
    with torch.no_grad():  # not inference_mode: export traces the same model afterwards
        tensors = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
        return model(**tensors).logits.float().cpu().numpy().astype(np.float64)


def predict_raw(model: Any, tokenizer: Any, token_ids: Sequence[Sequence[int]], batch_size: int = 16) -> np.ndarray:
    """Model outputs (standardised scale) for pre-encoded inputs, batched by length."""
    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return torch_outputs(model, {"input_ids": ids, "attention_mask": mask})

    return predict_sorted(run, token_ids, tokenizer.pad_token_id, batch_size, model.config.num_labels)


def predict_scores(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    info: StudentInfo,
    batch_size: int = 16,
    calibration: Calibration | None = None,
    ensemble: TokenRidge | None = None,
) -> np.ndarray:
    """Scores [N, D] on the 0–10 scale: blended with the ensemble's ridge when one is
    given, inverse-standardised, clipped, then calibrated when a Calibration is
    given (load them with TokenRidge.load / Calibration.load(model_dir))."""
    if len(texts) == 0:
        return np.zeros((0, len(info.dimensions)))
    token_ids = encode_texts(tokenizer, texts, info.max_tokens, info.head_share)
    raw = predict_raw(model, tokenizer, token_ids, batch_size)
    if ensemble is not None:
        raw = ensemble.blend(raw, token_ids)
    scores = TargetScaler.from_info(info).to_scores(raw)
    if calibration is not None:
        scores = calibration.apply(scores, info.dimensions)
    return scores
