"""The regression head: the part that silently goes wrong in this ecosystem.

Saved without it, a loader initialises a random one and scores with it. One
rule names it everywhere: an attribute in HEAD_NAMES on the model, and any
weight whose dotted key has such a part.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from distill.artifact import INFO_FILE, StudentInfo
from distill.errors import ModelArtifactError

# The regression head's attribute name in HF sequence-classification models.
HEAD_NAMES = ("score", "classifier")


def is_head_key(key: str) -> bool:
    """A parameter or saved-tensor key that belongs to the regression head."""
    return any(part in HEAD_NAMES for part in key.split("."))


def head_name(model: Any) -> str:
    """Name of the regression head on a (possibly peft-wrapped) HF model."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    for name in HEAD_NAMES:
        if hasattr(inner, name):
            return name
    raise ModelArtifactError(f"{type(inner).__name__} has no regression head named {HEAD_NAMES}")


def head_param_names(model: Any) -> list[str]:
    """The head's parameter names on a plain (not peft-wrapped) HF model."""
    return [name for name, _ in model.named_parameters() if is_head_key(name)]


def head_state(model: Any) -> dict[str, Any]:
    """The regression head's live tensors (for peft: the trained copy, not the original)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    module = getattr(inner, head_name(model))
    # peft wraps modules_to_save; the active trained copy sits under modules_to_save.<adapter>
    trained = getattr(module, "modules_to_save", None)
    if trained is not None:
        module = trained[model.active_adapter]
    return {k: v.detach() for k, v in module.state_dict().items()}


def head_checksum(model: Any) -> str:
    """sha256 of the head's weights as float32 (exact for fp32 and bf16 heads)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(head_state(model).items()):
        digest.update(key.encode())
        digest.update(tensor.to("cpu").float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def check_head_shapes(path: Path, shapes: dict[str, list[int]], info: StudentInfo) -> None:
    """From saved tensor shapes: a head missing from the file would be random; one of
    another width would not load."""
    head = {key: shape for key, shape in shapes.items() if is_head_key(key)}
    if not head:
        raise ModelArtifactError(
            f"{path}: holds no trained regression head ({'/'.join(HEAD_NAMES)}): with no regression head "
            "in the saved weights the model would score with a random one. Retrain or re-save the model."
        )
    # The output layer: `<head>.weight` (a Linear), or `<head>.out_proj.weight` (RoBERTa-style).
    outputs = [shape[0] for key, shape in head.items() if len(shape) == 2 and
               (key.split(".")[-2] in HEAD_NAMES or key.endswith("out_proj.weight"))]
    if outputs and outputs[-1] != len(info.dimensions):
        raise ModelArtifactError(
            f"{path}: the regression head has {outputs[-1]} outputs but {path.parent / INFO_FILE} lists "
            f"{len(info.dimensions)} dimensions; the two do not belong together: restore distill.json from the "
            "training run (or retrain)"
        )


def verify_head(model_dir: str | Path, expected: dict[str, Any] | None = None) -> None:
    """Reload the folder and check its head holds the trained weights.

    Compares with `expected` head tensors when given, else with the checksum
    save_student recorded from the live model (check_recorded_head). Raises
    ModelArtifactError.
    """
    import torch

    from distill.student.load import load_student

    model, _, info = load_student(model_dir)
    if expected is not None:
        loaded = head_state(model)
        for key, tensor in expected.items():
            if key not in loaded or not torch.equal(loaded[key].float().cpu(), tensor.float().cpu()):
                raise ModelArtifactError(f"{model_dir}: head tensor {key} differs from the trained one")
        return
    if not check_recorded_head(model_dir, model, info):
        raise ModelArtifactError(f"{model_dir}: distill.json records no head_sha256 to check against")


def check_recorded_head(model_dir: str | Path, model: Any, info: StudentInfo) -> bool:
    """Training records the live head's sha256; a loaded (or merged) head must hash the
    same. Returns whether there was a recorded checksum to compare with."""
    recorded = info.training.get("head_sha256")
    if recorded and head_checksum(model) != recorded:
        raise ModelArtifactError(
            f"{model_dir}: the loaded regression head differs from the trained one (head_sha256 in "
            f"{INFO_FILE} does not match): the head was dropped or re-initialised on save/load"
        )
    return bool(recorded)
