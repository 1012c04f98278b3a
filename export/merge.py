"""Load a student folder as one plain Hugging Face model, with its head checked.

A LoRA run directory holds only the adapter (and, via modules_to_save, the
regression head); merging it into its base gives a model that serves without
peft. The head is the part that silently goes wrong in this ecosystem (saved
without it, peft re-initialises it at random), so it is compared tensor by
tensor with what the run saved, and the merged model with the unmerged one.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.artifact import CALIBRATION_FILE, StudentInfo, write_info
from distill.ensemble import ENSEMBLE_FILE
from distill.errors import ModelArtifactError
from distill.export.encode import sample_texts
from distill.student.encode import encode_batch
from distill.student.files import ADAPTER_FILE
from distill.student.heads import check_recorded_head, head_param_names
from distill.student.load import BaseModelError, base_of, load_student
from distill.student.predict import torch_outputs

# Merged vs unmerged LoRA outputs differ by float rounding only (~1e-7 on tiny
# models, more on deep ones); a wrong merge or head is off by far more.
MERGE_TOLERANCE = 1e-3


@dataclass
class Student:
    model: Any  # a transformers PreTrainedModel in eval mode, float32, eager attention
    tokenizer: Any
    info: StudentInfo
    checks: dict[str, Any] = field(default_factory=dict)  # head and merge figures for the report


def load_merged(model_dir: str | Path, base_model: str | None = None) -> Student:
    """The student in `model_dir` as a merged float32 model with eager attention (what
    the ONNX trace needs), loaded through distill.student; raises ModelArtifactError."""
    model_dir = Path(model_dir)
    try:
        model, tokenizer, info = load_student(model_dir, base_model=base_model, attn_implementation="eager")
    except BaseModelError as exc:
        raise ModelArtifactError(
            f"adapter base model {exc.base_id!r} cannot be found or loaded ({exc.reason}); "
            "pass --base-model PATH_OR_HUB_ID"
        ) from None
    if info.weights_format == "peft-lora":
        model, head, merge_diff = _merge_adapter(model_dir, model, tokenizer, info)
        checks = {"head_params": head, "head_source": ADAPTER_FILE,
                  "base_model": base_of(model_dir, info, base_model), "merge_max_abs_diff": merge_diff}
    else:
        checks = {"head_params": head_param_names(model), "head_source": "model weights"}
    checks["head_sha256_verified"] = check_recorded_head(model_dir, model, info)
    if model.config.num_labels != len(info.dimensions):
        raise ModelArtifactError(
            f"{model_dir}: head has {model.config.num_labels} outputs but distill.json lists "
            f"{len(info.dimensions)} dimensions"
        )
    return Student(model.eval(), tokenizer, info, checks)


def save_merged(student: Student, source_dir: str | Path, folder: str | Path) -> None:
    """Write the plain HF model (safetensors only), tokenizer, distill.json, calibration
    and ensemble: what the scorer needs beside the weights."""
    folder = Path(folder)
    # Name the outputs after the dimensions so the plain HF model explains itself.
    student.model.config.id2label = dict(enumerate(student.info.dimensions))
    student.model.config.label2id = {name: i for i, name in enumerate(student.info.dimensions)}
    student.model.save_pretrained(folder)
    if list(folder.glob("*.bin")):
        raise ModelArtifactError(f"{folder}: weights were pickled; expected safetensors only")
    student.tokenizer.save_pretrained(folder)
    merged = StudentInfo(**{**student.info.__dict__, "weights_format": "merged"})
    write_info(folder, merged)
    for name in (CALIBRATION_FILE, ENSEMBLE_FILE):
        if (Path(source_dir) / name).is_file():
            shutil.copy(Path(source_dir) / name, folder / name)


def _merge_adapter(model_dir: Path, peft_model: Any, tokenizer: Any, info: StudentInfo) -> tuple[Any, list[str], float]:
    """Fold LoRA into the base: (merged model, head parameter names, max output change).
    The merged head must equal the saved one exactly, the outputs the adapter's
    within MERGE_TOLERANCE."""
    import torch
    from safetensors.torch import load_file

    saved = load_file(str(model_dir / ADAPTER_FILE))
    probe = encode_batch(tokenizer, sample_texts()[:4], info.max_tokens, info.head_share)
    with torch.no_grad():
        before = torch_outputs(peft_model, probe)
        merged = peft_model.merge_and_unload().eval()
        after = torch_outputs(merged, probe)
    head = head_param_names(merged)
    params = dict(merged.named_parameters())
    head_diff = max(
        float((params[name].detach() - saved[f"base_model.model.{name}"]).abs().max()) for name in head
    )
    merge_diff = float(np.abs(before - after).max())
    if head_diff > 0 or merge_diff > MERGE_TOLERANCE:
        raise ModelArtifactError(
            f"{model_dir}: merged model differs from the adapter (head max diff {head_diff:.2e}, "
            f"outputs max diff {merge_diff:.2e} > {MERGE_TOLERANCE:g})"
        )
    return merged, head, merge_diff
