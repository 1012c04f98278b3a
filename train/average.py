"""Average the weights of students trained from one base on one split (a "model soup").

Students fine-tuned from the same pretrained weights on the same data, with
different seeds, land in one basin often enough that the mean of their weights
scores like the mean of their outputs, at the cost of one model, not N
(Wortsman et al., 2022). Whether it does for a given run is checked on val by
`distill-evaluate`, never assumed here.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from distill.artifact import StudentInfo, read_info
from distill.errors import ModelArtifactError

# Fields that must agree for the averaged weights to mean anything.
SAME_FIELDS = ("filter_name", "filter_version", "filter_config_hash", "dimensions", "architecture",
               "max_tokens", "head_share")


def check_compatible(folders: list[Path], infos: list[StudentInfo]) -> None:
    """One ModelArtifactError naming the first folder that differs from the first one, and how."""
    if len(folders) < 2:
        raise ModelArtifactError("averaging needs at least two model folders")
    first = infos[0]
    for folder, info in zip(folders[1:], infos[1:], strict=True):
        for name in SAME_FIELDS:
            if getattr(info, name) != getattr(first, name):
                raise ModelArtifactError(
                    f"{folder}: {name} is {getattr(info, name)!r}, but {folders[0]} has {getattr(first, name)!r}; "
                    "only students of one filter, base and token budget can be averaged")
        if Path(info.base_model).name != Path(first.base_model).name:
            raise ModelArtifactError(f"{folder}: base {info.base_model} differs from {first.base_model} of {folders[0]}")
        for name in ("target_mean", "target_std"):
            if not np.allclose(getattr(info, name), getattr(first, name), rtol=1e-6, atol=1e-9):
                raise ModelArtifactError(
                    f"{folder}: {name} differs from {folders[0]}'s: the students were trained on different "
                    "splits, so their standardised outputs do not line up")


def mean_state_dict(models: list[Any]) -> dict[str, Any]:
    """Element-wise mean of every floating tensor; integer buffers (position ids) taken from the first."""
    states = [model.state_dict() for model in models]
    keys = list(states[0])
    for index, state in enumerate(states[1:], start=1):
        if list(state) != keys:
            raise ModelArtifactError(f"student {index + 1} has other tensors than the first: not one architecture")
    mean = {}
    for key in keys:
        first = states[0][key]
        if first.is_floating_point():
            mean[key] = sum(state[key].double() for state in states).div(len(states)).to(first.dtype)
        else:
            mean[key] = first
    return mean


def merged(model: Any) -> Any:
    """A plain transformers model: LoRA folded into the base weights, so adapters average like full weights."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def average_students(folders: list[Path], output_dir: Path, echo: Any = print) -> Path:
    """Write the weight-mean of `folders` as one full student folder in `output_dir`."""
    from distill.student.load import load_student
    from distill.train.model import save_student

    folders = [Path(folder) for folder in folders]
    check_compatible(folders, [read_info(folder) for folder in folders])
    loaded = [load_student(folder) for folder in folders]
    models = [merged(model) for model, _, _ in loaded]
    target, tokenizer, info = models[0], loaded[0][1], loaded[0][2]
    target.load_state_dict(mean_state_dict(models))
    sources = [{"folder": str(folder), "seed": read_info(folder).training.get("seed"),
                "val_mae": read_info(folder).metrics.get("val_mae")} for folder in folders]
    averaged = replace(info, weights_format="full", metrics={},
                       training={**info.training, "averaged_from": sources})
    save_student(target, tokenizer, averaged, output_dir)
    echo(f"Averaged {len(folders)} students into {output_dir} (run distill-evaluate on it: the mean is "
         "checked on val, not assumed)")
    return Path(output_dir)
