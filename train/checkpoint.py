"""A checkpoint is weights plus progress, stored without pickle.

checkpoint-last/ holds a loadable model folder (save_student) plus what a
resume needs: trainable.safetensors (the live trainable tensors, by name),
optimizer.safetensors + trainer_state.json (step, epoch, position within the
epoch, seed, settings, history) and the torch RNG state.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from distill.errors import ConfigError

STATE_FILE = "trainer_state.json"
# Settings that shape the model or the data order: on resume the checkpoint's value wins.
FIXED_ON_RESUME = (
    "model_name", "full_finetune", "lora_rank", "load_in_4bit", "max_length", "seed",
    "batch_size", "loss", "tier_balance", "learning_rate", "warmup_ratio", "weight_decay",
)


def save_training_state(folder: Path, model: Any, optimizer: Any, state: dict[str, Any]) -> None:
    import torch
    from safetensors.torch import save_file

    trainable = {n: p.detach().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}
    save_file(trainable, str(folder / "trainable.safetensors"))
    opt = optimizer.state_dict()
    tensors = {
        f"{index}.{key}": (value if torch.is_tensor(value) else torch.tensor(value)).contiguous()
        for index, slots in opt["state"].items()
        for key, value in slots.items()
    }
    tensors["torch_rng"] = torch.get_rng_state()
    save_file(tensors, str(folder / "optimizer.safetensors"))
    state = {**state, "param_groups": opt["param_groups"]}
    (folder / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")


def load_training_state(folder: Path, model: Any, optimizer: Any) -> dict[str, Any]:
    """Restore trainable weights, optimiser and RNG in place; return the saved progress."""
    import torch
    from safetensors.torch import load_file

    state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    weights = load_file(str(folder / "trainable.safetensors"))
    missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in weights]
    if missing:
        raise ConfigError(f"--resume: {folder} does not match this model ({len(missing)} tensors missing, e.g. {missing[0]})")
    model.load_state_dict(weights, strict=False)
    tensors = load_file(str(folder / "optimizer.safetensors"))
    torch.set_rng_state(tensors.pop("torch_rng"))
    slots: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        slots.setdefault(int(index), {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in state.pop("param_groups")]
    optimizer.load_state_dict({"state": slots, "param_groups": groups})
    return state


def reconcile_settings(saved: dict[str, Any], current: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Merge settings for a resume; each mismatch is reported with the value that wins."""
    merged, notes = dict(current), []
    for key, old in saved.items():
        new = current.get(key)
        if key in ("resume", "output_dir", "data_dir") or old == new:
            continue
        if key in FIXED_ON_RESUME:
            merged[key] = old
            notes.append(f"{key}: checkpoint has {old!r}, flag says {new!r}; keeping the checkpoint's")
        else:
            notes.append(f"{key}: checkpoint had {old!r}; using {new!r} from the flags")
    return merged, notes


def replace_folder(source: Path, target: Path) -> None:
    """Copy a finished checkpoint over another atomically enough: write aside, then swap."""
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
