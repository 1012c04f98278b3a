"""Load a student folder as one plain Hugging Face model, with its head checked.

A LoRA run directory holds only the adapter (and, via modules_to_save, the
regression head); merging it into its base gives a model that serves without
peft. The head is the part that silently goes wrong in this ecosystem (saved
without it, peft re-initialises it at random), so it is compared tensor by
tensor with what the run saved, and the merged model with the unmerged one.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.artifact import CALIBRATION_FILE, StudentInfo, read_info, write_info
from distill.ensemble import ENSEMBLE_FILE
from distill.errors import ModelArtifactError
from distill.export.encode import encode, sample_texts

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
# Merged vs unmerged LoRA outputs differ by float rounding only (~1e-7 on tiny
# models, more on deep ones); a wrong merge or head is off by far more.
MERGE_TOLERANCE = 1e-3


@dataclass
class Student:
    model: Any  # a transformers PreTrainedModel in eval mode, float32, eager attention
    tokenizer: Any
    info: StudentInfo
    checks: dict[str, Any] = field(default_factory=dict)  # head and merge figures for the report


def head_param_names(model: Any) -> list[str]:
    """Parameters outside the backbone: the regression head (classifier, score, ...)."""
    prefix = model.base_model_prefix + "."
    return [name for name, _ in model.named_parameters() if not name.startswith(prefix)]


def load_merged(model_dir: str | Path, base_model: str | None = None) -> Student:
    """The student in `model_dir` as a merged float32 model; raises ModelArtifactError."""
    from transformers.utils import logging as hf_logging

    # Loading a base reports its (expected) missing head and draws progress bars;
    # our own checks say what matters in one line.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    from distill.train.model import check_saved_weights

    model_dir = Path(model_dir)
    info = read_info(model_dir)
    # Truncated files and a distill.json that does not fit the weights stop here, in one line.
    check_saved_weights(model_dir, info)
    tokenizer = _load_tokenizer(model_dir, info)
    if info.weights_format == "peft-lora":
        model, checks = _load_adapter(model_dir, info, tokenizer, base_model)
    elif info.weights_format in ("full", "merged"):
        model, checks = _load_full(model_dir, info)
    else:
        raise ModelArtifactError(f"{model_dir}: unknown weights_format {info.weights_format!r} in distill.json")
    checks["head_sha256_verified"] = _check_recorded_head(model_dir, model, info)
    if model.config.num_labels != len(info.dimensions):
        raise ModelArtifactError(
            f"{model_dir}: head has {model.config.num_labels} outputs but distill.json lists "
            f"{len(info.dimensions)} dimensions"
        )
    if info.architecture == "decoder" and model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
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


def _load_tokenizer(model_dir: Path, info: StudentInfo) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as exc:
        raise ModelArtifactError(f"{model_dir}: no usable tokenizer files ({_first_line(exc)})") from None
    if info.architecture == "decoder" and tokenizer.pad_token is None:
        # Last-token pooling needs a pad id to tell padding from content.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _from_pretrained(source: str | Path, **kwargs: Any) -> Any:
    import torch
    from transformers import AutoModelForSequenceClassification

    # use_safetensors: without it transformers falls back to a pickled pytorch_model.bin.
    return AutoModelForSequenceClassification.from_pretrained(
        source, dtype=torch.float32, attn_implementation="eager", use_safetensors=True, **kwargs
    )


def _load_full(model_dir: Path, info: StudentInfo) -> tuple[Any, dict[str, Any]]:
    from safetensors import SafetensorError

    try:
        model, loading = _from_pretrained(model_dir, output_loading_info=True)
    except (OSError, ValueError, SafetensorError) as exc:
        raise ModelArtifactError(f"{model_dir}: model weights cannot be loaded ({_first_line(exc)})") from None
    head = head_param_names(model)
    missing = sorted(set(loading.get("missing_keys", [])) & set(head))
    if missing:
        raise ModelArtifactError(
            f"{model_dir}: regression head {missing} is not in the saved weights "
            "(it would be random); retrain or save the head"
        )
    return model, {"head_params": head, "head_source": "model weights"}


def _load_adapter(
    model_dir: Path, info: StudentInfo, tokenizer: Any, base_override: str | None
) -> tuple[Any, dict[str, Any]]:
    import torch
    from peft import PeftModel
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not (model_dir / ADAPTER_WEIGHTS).is_file() or not (model_dir / ADAPTER_CONFIG).is_file():
        raise ModelArtifactError(f"{model_dir}: weights_format is peft-lora but {ADAPTER_WEIGHTS} or {ADAPTER_CONFIG} is missing")
    from distill.train.model import resolve_base

    base_id = resolve_base(base_override or info.base_model or _adapter_base(model_dir))
    try:
        # The base's own head (if any) has another shape; the adapter brings the trained one.
        base = _from_pretrained(
            base_id, num_labels=len(info.dimensions), problem_type="regression",
            pad_token_id=tokenizer.pad_token_id, ignore_mismatched_sizes=True,
        )
    except (OSError, ValueError, SafetensorError) as exc:
        raise ModelArtifactError(
            f"adapter base model {base_id!r} cannot be found or loaded ({_first_line(exc)}); "
            "pass --base-model PATH_OR_HUB_ID"
        ) from None
    saved = load_file(str(model_dir / ADAPTER_WEIGHTS))
    head = head_param_names(base)
    absent = [name for name in head if f"base_model.model.{name}" not in saved]
    if absent:
        raise ModelArtifactError(
            f"{model_dir}: the adapter holds no trained regression head ({', '.join(absent)} not in "
            f"{ADAPTER_WEIGHTS}); train with modules_to_save=[head] or task_type SEQ_CLS"
        )
    # peft has no use_safetensors flag; it reads adapter_model.safetensors, checked above.
    peft_model = PeftModel.from_pretrained(base, model_dir).eval()
    probe = encode(tokenizer, sample_texts()[:4], info.max_tokens, info.head_share, "right")
    with torch.no_grad():
        before = _logits(peft_model, probe)
        merged = peft_model.merge_and_unload().eval()
        after = _logits(merged, probe)
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
    checks = {"head_params": head, "head_source": ADAPTER_WEIGHTS, "base_model": str(base_id),
              "merge_max_abs_diff": merge_diff}
    return merged, checks


def _check_recorded_head(model_dir: Path, model: Any, info: StudentInfo) -> bool:
    """Training records the live head's sha256; the merged head must hash the same.
    Returns whether there was a recorded checksum to compare with."""
    from distill.train.model import head_checksum

    recorded = info.training.get("head_sha256")
    if recorded and head_checksum(model) != recorded:
        raise ModelArtifactError(
            f"{model_dir}: the loaded regression head differs from the trained one "
            "(head_sha256 in distill.json does not match); the head was not saved or was re-initialised"
        )
    return bool(recorded)


def _adapter_base(model_dir: Path) -> str:
    config = json.loads((model_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    return config.get("base_model_name_or_path") or ""


def _logits(model: Any, batch: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    tensors = {k: torch.from_numpy(v) for k, v in batch.items()}
    return model(**tensors).logits.float().numpy()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
