"""A checkpoint is weights plus progress, stored without pickle.

checkpoint-last/ holds a loadable model folder (save_student) plus what a
resume needs: trainable.safetensors (the live trainable tensors, by name),
optimizer.safetensors + trainer_state.json (step, epoch, position within the
epoch, seed, settings, history) and the torch RNG state.

A checkpoint is written whole into a staging folder and swapped into place
(swap_in), so a crash, a full disk or a read-only folder mid-save leaves the
previous checkpoint as it was: its files always belong to one step.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from distill.errors import CheckpointError

STATE_FILE = "trainer_state.json"
TRAINABLE_FILE = "trainable.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
RESUME_FILES = (TRAINABLE_FILE, OPTIMIZER_FILE, STATE_FILE)
# Progress a resume reads back, and the type each must have.
PROGRESS_KEYS = {"epoch": int, "step_in_epoch": int, "global_step": int, "history": list,
                 "stale_epochs": int, "train_seconds": (int, float)}
# Settings that shape the model or the data order: on resume the checkpoint's value wins.
FIXED_ON_RESUME = (
    "model_name", "full_finetune", "lora_rank", "load_in_4bit", "max_length", "seed",
    "batch_size", "loss", "tier_balance", "learning_rate", "warmup_ratio", "weight_decay",
)
# Settings whose `auto` the first run settled and saved: on resume `auto` keeps that value
# (the precision was timed on this run's model; timing again could switch it mid-run).
SETTLED_ON_FIRST_RUN = ("precision",)
START_OVER = "start without --resume to train from scratch"


def save_training_state(folder: Path, model: Any, optimizer: Any, state: dict[str, Any]) -> None:
    import torch
    from safetensors.torch import save_file

    trainable = {n: p.detach().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}
    save_file(trainable, str(folder / TRAINABLE_FILE))
    opt = optimizer.state_dict()
    tensors = {
        f"{index}.{key}": (value if torch.is_tensor(value) else torch.tensor(value)).contiguous()
        for index, slots in opt["state"].items()
        for key, value in slots.items()
    }
    tensors["torch_rng"] = torch.get_rng_state()
    save_file(tensors, str(folder / OPTIMIZER_FILE))
    state = {**state, "param_groups": opt["param_groups"]}
    (folder / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")


def read_state(folder: Path) -> dict[str, Any]:
    """trainer_state.json, checked for everything a resume reads from it."""
    path = folder / STATE_FILE
    missing = [name for name in RESUME_FILES if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"--resume: {folder} is incomplete (no {', '.join(missing)}); {START_OVER}")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"--resume: {path} is not valid JSON ({exc}); {START_OVER}") from None
    problems = _state_problems(state)
    if problems:
        raise CheckpointError(f"--resume: {path}: {'; '.join(problems)}; {START_OVER}")
    return state


def _state_problems(state: Any) -> list[str]:
    if not isinstance(state, dict):
        return ["expected a JSON object"]
    problems = [f"{key} must be {kind.__name__ if isinstance(kind, type) else 'a number'}"
                for key, kind in PROGRESS_KEYS.items()
                if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool)]
    problems += [f"{key} must not be negative" for key in ("epoch", "step_in_epoch", "global_step")
                 if isinstance(state.get(key), int) and state[key] < 0]
    best = state.get("best_mae")
    if best is not None and (not isinstance(best, int | float) or isinstance(best, bool)):
        problems.append("best_mae must be a number or null")
    if not isinstance(state.get("settings"), dict):
        problems.append("settings must be an object")
    groups = state.get("param_groups")
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        problems.append("param_groups must be a list of objects")
    return problems


def check_position(folder: Path, state: dict[str, Any], steps_per_epoch: int, epochs: int) -> None:
    """The saved step must lie on this run: same data (steps per epoch) and within --epochs."""
    epoch, step, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
    where = f"--resume: {folder / STATE_FILE} is at global step {global_step} ({epoch} full epochs + {step} steps)"
    if step > steps_per_epoch or global_step != epoch * steps_per_epoch + step:
        raise CheckpointError(
            f"{where}, which does not fit this data's {steps_per_epoch} steps per epoch: the checkpoint was "
            f"made on other data or is corrupt; resume with the data it was trained on, or {START_OVER}"
        )
    if global_step > epochs * steps_per_epoch:
        raise CheckpointError(
            f"{where}, beyond this run's {epochs * steps_per_epoch} steps ({epochs} epochs of "
            f"{steps_per_epoch}); pass --epochs {epoch + (step > 0)} or more, or {START_OVER}"
        )


def load_training_state(folder: Path, model: Any, optimizer: Any) -> dict[str, Any]:
    """Restore trainable weights, optimiser and RNG in place; return the saved progress."""
    from distill.artifact import weight_shapes
    from distill.errors import ModelArtifactError

    state = read_state(folder)
    try:  # the headers first: a truncated file is named before anything is loaded
        for name in (TRAINABLE_FILE, OPTIMIZER_FILE):
            weight_shapes(folder / name, fix=START_OVER)
    except ModelArtifactError as exc:
        raise CheckpointError(f"--resume: {exc}") from None
    _restore_weights(folder, model)
    _restore_optimizer(folder, optimizer, state.pop("param_groups"))
    return state


def _restore_weights(folder: Path, model: Any) -> None:
    from safetensors.torch import load_file

    weights = load_file(str(folder / TRAINABLE_FILE))
    live = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = [n for n in live if n not in weights]
    if missing:
        raise CheckpointError(
            f"--resume: {folder / TRAINABLE_FILE} does not match this model "
            f"({len(missing)} tensors missing, e.g. {missing[0]}); {START_OVER}"
        )
    wrong = [n for n, p in live.items() if tuple(weights[n].shape) != tuple(p.shape)]
    if wrong:
        raise CheckpointError(
            f"--resume: {folder / TRAINABLE_FILE}: {wrong[0]} has shape {tuple(weights[wrong[0]].shape)}, "
            f"the model {tuple(live[wrong[0]].shape)}; {START_OVER}"
        )
    model.load_state_dict(weights, strict=False)


def _restore_optimizer(folder: Path, optimizer: Any, param_groups: list[dict[str, Any]]) -> None:
    import torch
    from safetensors.torch import load_file

    path = folder / OPTIMIZER_FILE
    tensors = load_file(str(path))
    rng = tensors.pop("torch_rng", None)
    if rng is None:
        raise CheckpointError(f"--resume: {path} holds no torch_rng (the RNG state); {START_OVER}")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    slots: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, _, name = key.partition(".")
        # torch checks group sizes on load, but a moment tensor of the wrong shape only fails mid-step
        if not index.isdigit() or int(index) >= len(params) or value.dim() and value.shape != params[int(index)].shape:
            raise CheckpointError(f"--resume: {path}: tensor {key!r} does not fit this model's parameters; {START_OVER}")
        slots.setdefault(int(index), {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in param_groups]
    try:
        optimizer.load_state_dict({"state": slots, "param_groups": groups})
        torch.set_rng_state(rng)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        # torch's own checks: group sizes, missing keys, an RNG state of the wrong size or dtype
        raise CheckpointError(f"--resume: {path} does not fit this run's optimiser ({exc}); {START_OVER}") from None


def reconcile_settings(saved: dict[str, Any], current: dict[str, Any],
                       bf16_units: bool = True) -> tuple[dict[str, Any], list[str]]:
    """Merge settings for a resume; each mismatch is reported with the value that wins.
    `bf16_units`: whether this machine computes bf16 natively; without, a run settled
    as bf16 (on a GPU, say) resumes under `auto` in fp32 rather than emulating bf16."""
    merged, notes = dict(current), []
    for key, old in saved.items():
        new = current.get(key)
        if key in ("resume", "output_dir", "data_dir") or old == new:
            continue
        if key not in current:
            notes.append(f"{key}: checkpoint has {old!r}, a setting this version does not know; ignored")
        elif key == "precision" and new == "auto" and old == "bf16" and not bf16_units:
            merged[key] = "fp32"
            notes.append("precision: auto, settled as 'bf16' when the run started, but this machine has no "
                         "bf16 units (it would emulate bf16, many times slower): resuming in fp32; "
                         "--precision bf16 keeps bf16")
        elif key in SETTLED_ON_FIRST_RUN and new == "auto":
            merged[key] = old
            notes.append(f"{key}: auto, settled as {old!r} when the run started; keeping it")
        elif key in FIXED_ON_RESUME:
            merged[key] = old
            notes.append(f"{key}: checkpoint has {old!r}, flag says {new!r}; keeping the checkpoint's")
        else:
            notes.append(f"{key}: checkpoint had {old!r}; using {new!r} from the flags")
    return merged, notes


def staging_for(target: Path) -> Path:
    """A fresh, empty folder beside `target` to write a checkpoint into."""
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def copy_folder(source: Path, target: Path) -> None:
    """Copy a flat checkpoint folder, as hard links where the file system has them:
    no file in a checkpoint is changed after it is written, so sharing costs no safety
    and the best checkpoint takes no extra disk."""
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_file():
            try:
                os.link(item, target / item.name)
            except OSError:
                shutil.copyfile(item, target / item.name)


def swap_in(staging: Path, target: Path) -> None:
    """Replace `target` by the finished `staging` folder. Between the two renames
    only `<target>.old` exists; recover() puts it back after a crash there."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def recover(target: Path) -> None:
    """Undo what an interrupted save left: a half-written staging folder, or a
    checkpoint moved aside whose replacement never arrived."""
    old = target.with_name(target.name + ".old")
    if not target.exists() and old.is_dir():
        old.rename(target)
    shutil.rmtree(target.with_name(target.name + ".partial"), ignore_errors=True)
