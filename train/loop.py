"""The training recipe, top to bottom: `train()` calls `setup` (setup_model,
setup_data, setup_optimizer, a resume), then per epoch `train_epoch` (the one
visible loop over batches) and `end_epoch` (validate, checkpoint, stop early),
then `save`. No Trainer class: what runs is what you read here.

What the run has done so far is a `TrainState` (what a checkpoint saves and a
resume restores); what it works with is a `TrainRun` (settings, filter,
folders, model, data, optimiser), built once by `setup`."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from distill.artifact import (
    StudentInfo,
    TargetScaler,
    copy_file_atomic,
    write_text_atomic,
    writing,
)
from distill.errors import CheckpointError, ConfigError
from distill.filter_spec import FilterSpec, load_filter
from distill.progress import Progress
from distill.splits import Split, read_split
from distill.student.encode import encode_texts
from distill.student.heads import verify_head
from distill.student.load import portable_base_name
from distill.student.predict import predict_raw
from distill.train import checkpoint as ckpt
from distill.train.data import length_grouped_batches, tier_balance_weights
from distill.train.model import build_student, pad_batch, save_student
from distill.train.precision import longest_batch, settle_precision
from distill.train.settings import TrainSettings, has_bf16_units
from distill.train.tracking import Tracker, open_tracker, require_package

Echo = Callable[[str], None]


@dataclass
class TrainState:
    """Progress of a run: saved in every checkpoint's trainer_state.json, restored on resume.

    Together with the settings' seed it fixes the data order: the batches of
    epoch e are length_grouped_batches(..., seed, e), so a resume skips the
    first `step_in_epoch` of them and continues where the run stopped.
    """

    epoch: int = 0  # epochs finished
    step_in_epoch: int = 0  # optimiser steps into the current epoch
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per finished epoch
    best_mae: float | None = None  # the best val MAE so far: checkpoint-best holds that epoch
    stale_epochs: int = 0  # epochs since best_mae last improved
    train_seconds: float = 0.0

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> TrainState:
        """The progress in a checkpoint's state (checked by checkpoint.read_state)."""
        return cls(**{f.name: saved[f.name] for f in fields(cls) if f.name in saved})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def record_epoch(self, train_loss: float | None, metrics: dict[str, Any]) -> bool:
        """Close the current epoch with its val metrics; True when its val MAE is the best yet."""
        improved = self.best_mae is None or metrics["val_mae"] < self.best_mae
        self.history.append({"epoch": self.epoch + 1, "train_loss": train_loss, **metrics,
                             "seconds": round(self.train_seconds, 1)})
        self.epoch, self.step_in_epoch = self.epoch + 1, 0
        self.best_mae = metrics["val_mae"] if improved else self.best_mae
        self.stale_epochs = 0 if improved else self.stale_epochs + 1
        return improved


@dataclass
class TrainData:
    train: Split
    val: Split
    train_ids: list[list[int]]
    val_ids: list[list[int]]
    scaler: TargetScaler
    train_targets: np.ndarray  # standardised
    train_weights: np.ndarray
    overall_coef: np.ndarray  # [D]: standardised errors @ this = the overall score's error in train overall stds


@dataclass
class TrainRun:
    """What every part of one run works with, built once by `setup`."""

    settings: TrainSettings
    spec: FilterSpec
    out: Path
    core: Any  # the plain model: saved and evaluated
    model: Any  # what the training step calls: `core`, or its DDP wrapper under accelerate
    tokenizer: Any
    arch: str
    data: TrainData
    optimizer: Any
    device: str
    max_tokens: int
    accelerator: Any | None
    echo: Echo
    tracker: Tracker | None = None  # --report-to

    @property
    def last(self) -> Path:
        return self.out / "checkpoint-last"

    @property
    def best(self) -> Path:
        return self.out / "checkpoint-best"

    @property
    def main_process(self) -> bool:
        return self.accelerator is None or self.accelerator.is_main_process

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.data.train_ids]

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.data.train_ids) / self.settings.batch_size)


def setup_model(settings: TrainSettings, spec: FilterSpec, device: str) -> tuple[Any, Any, str]:
    import torch

    on_gpu = device == "cuda"
    attn = None
    if on_gpu:
        import importlib.util

        attn = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    model, tokenizer, arch = build_student(
        settings.model_name,
        len(spec.dimensions),
        lora_rank=settings.lora_rank,
        full_finetune=settings.full_finetune,
        load_in_4bit=settings.load_in_4bit,
        gradient_checkpointing=settings.gradient_checkpointing,
        # On GPU a LoRA base sits in bf16; a full fine-tune keeps fp32 master weights under autocast.
        dtype="bfloat16" if on_gpu and not settings.full_finetune else "float32",
        attn_implementation=attn,
    )
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()  # trainable weights (adapter, head) in full precision
    return model.to(device) if not settings.load_in_4bit else model, tokenizer, arch


def setup_data(settings: TrainSettings, spec: FilterSpec, tokenizer: Any, max_tokens: int, echo: Echo) -> TrainData:
    dims = len(spec.dimensions)
    train = read_split(Path(settings.data_dir) / "train.jsonl", dims)
    val = read_split(Path(settings.data_dir) / "val.jsonl", dims)
    for split in (train, val):
        for reject in split.rejects[:5]:
            echo(f"  skipped {reject.path}:{reject.line_no}: {reject.reason}")
        if len(split.rejects) > 5:
            echo(f"  ... and {len(split.rejects) - 5} more bad lines")
    scaler = TargetScaler.fit(train.targets)
    weights = train.weights * (tier_balance_weights(train.tiers, settings.tier_balance) if settings.tier_balance else 1.0)
    head = spec.truncation.head_share
    return TrainData(
        train, val,
        encode_texts(tokenizer, train.texts, max_tokens, head),
        encode_texts(tokenizer, val.texts, max_tokens, head),
        scaler, scaler.standardise(train.targets), weights / weights.mean(),
        overall_coefficients(spec, scaler, train.targets),
    )


def setup_optimizer(model: Any, settings: TrainSettings) -> Any:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)


def learning_rate_at(step: int, total: int, settings: TrainSettings) -> float:
    """Linear warmup to the peak, then linear decay to zero."""
    warmup = max(1, int(total * settings.warmup_ratio))
    if step < warmup:
        return settings.learning_rate * (step + 1) / warmup
    return settings.learning_rate * max(0.0, (total - step) / max(1, total - warmup))


def regression_loss(pred: Any, target: Any, kind: str) -> Any:
    """Per-example loss on standardised targets, averaged over dimensions."""
    import torch.nn.functional as F

    if kind == "mse":
        return ((pred - target) ** 2).mean(dim=1)
    if kind == "l1":
        return (pred - target).abs().mean(dim=1)
    if kind == "huber":
        return F.smooth_l1_loss(pred, target, reduction="none", beta=1.0).mean(dim=1)
    return 0.5 * (((pred - target) ** 2).mean(dim=1) + (pred - target).abs().mean(dim=1))


def overall_coefficients(spec: FilterSpec, scaler: TargetScaler, train_targets: np.ndarray) -> np.ndarray:
    """Per-dimension factors that turn standardised errors into the overall score's error, in units of its spread.

    The overall score is the filter's weighted mean (distill/scoring.py's
    weights, normalised); gatekeeper caps are left out because a cap's min()
    has no gradient below it. Dividing by the train overall std keeps the term
    on the same scale as the per-dimension loss."""
    weights = np.array([d.weight for d in spec.dimensions], dtype=float)
    weights /= weights.sum()
    spread = float((train_targets @ weights).std()) or 1.0
    return (weights * scaler.std / spread).astype(np.float32)


def training_loss(pred: Any, target: Any, kind: str, overall_coef: Any, overall_weight: float) -> Any:
    """Per-example loss: the dimensions' loss plus `overall_weight` x the same loss on the overall score."""
    loss = regression_loss(pred, target, kind)
    if overall_weight:
        error = ((pred - target) * overall_coef).sum(dim=1, keepdim=True)
        loss = loss + overall_weight * regression_loss(error, error.new_zeros(error.shape), kind)
    return loss


def evaluate_val(model: Any, tokenizer: Any, data: TrainData, kind: str, batch_size: int) -> dict[str, Any]:
    import torch

    model.eval()
    raw = predict_raw(model, tokenizer, data.val_ids, batch_size)
    model.train()
    target = data.scaler.standardise(data.val.targets)
    loss = float(regression_loss(torch.tensor(raw), torch.tensor(target), kind).mean())
    mae = np.abs(data.scaler.to_scores(raw) - data.val.targets).mean(axis=0)
    return {"val_loss": loss, "val_mae": float(mae.mean()), "val_mae_per_dimension": mae.tolist()}


def launched_processes() -> Any | None:
    """An accelerate Accelerator when `accelerate launch` started several processes, else None.

    Then each process takes its share of every batch and DDP averages the
    gradients, so an optimiser step sees the same batch as on one device;
    process 0 alone saves, and every process evaluates the same val set so
    they agree on the best epoch and on stopping early.
    """
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return None
    from accelerate import Accelerator

    return Accelerator()


def local_share(batch: list[int], weights: np.ndarray, accelerator: Any | None) -> tuple[list[int], float | None]:
    """This process's rows of `batch` and the loss divisor that makes DDP's mean gradient the batch's own.

    None means one process: divide by the rows' weight sum as before. With
    `world` processes each divides by (the whole batch's weight sum / world),
    since DDP averages the processes' gradients. A process left without rows
    runs one row with an infinite divisor (zero gradient): DDP needs every
    process in each backward pass.
    """
    if accelerator is None:
        return batch, None
    world = accelerator.num_processes
    mine = list(batch[accelerator.process_index::world])
    if not mine:
        return list(batch[:1]), math.inf
    return mine, float(weights[batch].sum()) / world


def train(settings: TrainSettings, echo: Echo = print) -> Path:
    """Run distill-train; returns the finished model folder."""
    settings.validate()
    run, state = setup(settings, echo)
    try:
        run.model.train()
        while state.epoch < run.settings.epochs:
            train_loss = train_epoch(run, state)
            if end_epoch(run, state, train_loss):
                break
        return save(run, state)
    finally:
        if run.tracker is not None:
            run.tracker.close()


def setup(settings: TrainSettings, echo: Echo) -> tuple[TrainRun, TrainState]:
    """Filter, output folder, a resume's settings, then model, data and optimiser (and their saved state)."""
    import torch

    accelerator = launched_processes()
    main_process = accelerator is None or accelerator.is_main_process
    if not main_process:
        echo = lambda _: None  # noqa: E731 - process 0 reports for all
    spec = load_filter(settings.filter)
    out = settings.resolved_output_dir(spec.name)
    last, best = out / "checkpoint-last", out / "checkpoint-best"
    if main_process:
        prepare_output(out, last, best)
    if accelerator is not None:
        accelerator.wait_for_everyone()  # the others read checkpoint-last only once it is tidied
    saved = None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if settings.resume:
        settings, saved = resume_settings(settings, last, echo, device)
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    torch.manual_seed(settings.seed)
    max_tokens = settings.max_length or spec.truncation.student_tokens
    # Before the model loads, so a missing tracker package fails in a second, not minutes.
    require_package(settings.report_to)

    model, tokenizer, arch = setup_model(settings, spec, device)
    data = setup_data(settings, spec, tokenizer, max_tokens, echo)
    optimizer = setup_optimizer(model, settings)
    # `auto` becomes bf16 or fp32 here, in the settings that the tracker, checkpoints and distill.json record.
    batch = longest_batch(data.train_ids, settings.batch_size, tokenizer.pad_token_id)
    settings = settle_precision(settings, model, batch, device, echo, accelerator)
    tracker = open_tracker(settings.report_to, out, settings.to_json())
    run = TrainRun(settings, spec, out, model, model, tokenizer, arch, data, optimizer, device, max_tokens,
                   accelerator, echo, tracker)
    state = TrainState()
    if saved is not None:
        ckpt.check_position(last, saved, run.steps_per_epoch, settings.epochs)
        state = TrainState.from_json(ckpt.load_training_state(last, model, optimizer))
        echo(f"Resuming at epoch {state.epoch + 1}, step {state.global_step}")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if accelerator is not None:
        run.model, run.device = accelerator.prepare_model(model), accelerator.device.type
    echo(f"Training {settings.model_name} ({arch}, {'full' if settings.full_finetune else f'LoRA r={settings.lora_rank}'}, "
         f"{trainable / 1e6:.2f}M trainable) on {len(data.train_ids)} examples, {len(data.val_ids)} val, "
         f"{max_tokens} tokens, {run.device} in {settings.precision}, "
         f"attention {model.config._attn_implementation}")
    return run, state


def train_epoch(run: TrainRun, state: TrainState) -> float | None:
    """One pass over train from where `state` stands; returns the smoothed train loss (None: no step left)."""
    import torch

    settings, data, device, epoch = run.settings, run.data, run.device, state.epoch
    total_steps = run.steps_per_epoch * settings.epochs
    autocast = torch.autocast("cuda" if device == "cuda" else "cpu", dtype=torch.bfloat16,
                              enabled=settings.precision == "bf16")
    overall_coef = torch.tensor(data.overall_coef, device=device)
    batches = length_grouped_batches(run.lengths, settings.batch_size, settings.seed, epoch)
    skip = state.step_in_epoch
    bar = Progress(len(batches), f"Epoch {epoch + 1}/{settings.epochs}", "steps", initial=skip,
                   enabled=run.main_process)
    running, started = None, time.monotonic()
    for batch in batches[skip:]:
        step_started = time.monotonic()
        index, divisor = local_share(batch, data.train_weights, run.accelerator)
        for group in run.optimizer.param_groups:
            group["lr"] = learning_rate_at(state.global_step, total_steps, settings)
        ids, mask = pad_batch([data.train_ids[i] for i in index], run.tokenizer.pad_token_id)
        target = torch.tensor(data.train_targets[index], dtype=torch.float32, device=device)
        weight = torch.tensor(data.train_weights[index], dtype=torch.float32, device=device)
        with autocast:
            pred = run.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        loss = (training_loss(pred, target, settings.loss, overall_coef, settings.overall_loss_weight) * weight).sum()
        loss = loss / (divisor or weight.sum())
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in run.model.parameters() if p.requires_grad], 1.0)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        state.global_step += 1
        state.step_in_epoch += 1
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        bar.update(1, loss=f"{running:.4f}")
        if run.tracker is not None:
            seconds = max(time.monotonic() - step_started, 1e-9)
            run.tracker.log({"train/loss": loss.item(), "train/loss_smoothed": running,
                             "train/learning_rate": run.optimizer.param_groups[0]["lr"],
                             "train/examples_per_s": len(index) / seconds,
                             "train/tokens_per_s": float(mask.sum()) / seconds}, step=state.global_step)
        if settings.save_steps and state.global_step % settings.save_steps == 0:
            state.train_seconds += time.monotonic() - started
            started = time.monotonic()
            save_last(run, state, {})
    state.train_seconds += time.monotonic() - started
    bar.close()
    return running


def end_epoch(run: TrainRun, state: TrainState, train_loss: float | None) -> bool:
    """Validate, checkpoint (last, and best when val MAE improved); True to stop early."""
    settings, echo = run.settings, run.echo
    metrics = evaluate_val(run.core, run.tokenizer, run.data, settings.loss, settings.batch_size * 2)
    improved = state.record_epoch(train_loss, metrics)
    loss_text = "n/a" if train_loss is None else f"{train_loss:.4f}"  # None: resumed at the epoch's end
    echo(f"Epoch {state.epoch}: loss={loss_text} val_loss={metrics['val_loss']:.4f} "
         f"val_mae={metrics['val_mae']:.4f}")
    if run.tracker is not None:
        per_dimension = dict(zip(run.spec.dimension_names, metrics["val_mae_per_dimension"], strict=True))
        run.tracker.log({"val/loss": metrics["val_loss"], "val/mae": metrics["val_mae"], "epoch": state.epoch,
                         **{f"val/mae_{name}": value for name, value in per_dimension.items()}},
                        step=state.global_step)
    save_last(run, state, metrics, also_best=improved)
    echo(f"  saved checkpoint {run.last}")
    if improved:
        echo(f"  new best val MAE {metrics['val_mae']:.4f}: saved {run.best}")
    if settings.patience and state.stale_epochs >= settings.patience:
        echo(f"Early stop: no better val MAE for {settings.patience} epoch(s)")
        return True
    return False


def save(run: TrainRun, state: TrainState) -> Path:
    """Process 0 turns checkpoint-best into the model folder, once every process is done."""
    if run.accelerator is not None:
        run.accelerator.wait_for_everyone()
    if not run.main_process:
        return run.out
    with writing(run.out, "write the model folder", then=resume_hint(run.last)):
        return finish(run.out, run.best, state, run.echo)


def student_info(run: TrainRun, state: TrainState, metrics: dict[str, Any]) -> StudentInfo:
    """distill.json of a checkpoint: the filter, the model, its target scaling and how it was trained."""
    settings, spec, data = run.settings, run.spec, run.data
    return StudentInfo(
        filter_name=spec.name, filter_version=spec.version, filter_config_hash=spec.config_hash,
        dimensions=spec.dimension_names, base_model=portable_base_name(settings.model_name),
        architecture=run.arch, weights_format="full" if settings.full_finetune else "peft-lora",
        max_tokens=run.max_tokens, head_share=spec.truncation.head_share,
        target_mean=data.scaler.mean.tolist(), target_std=data.scaler.std.tolist(),
        metrics=metrics, training={**settings.to_json(), "train_seconds": round(state.train_seconds, 1),
                                   "train_examples": len(data.train_ids), "val_examples": len(data.val_ids)},
    )


def save_last(run: TrainRun, state: TrainState, metrics: dict[str, Any], also_best: bool = False) -> None:
    """checkpoint-last (and checkpoint-best) swapped in whole; a failed save keeps the old ones."""
    def write(folder: Path) -> None:
        save_student(run.core, run.tokenizer, student_info(run, state, metrics), folder)
        ckpt.save_training_state(folder, run.core, run.optimizer,
                                 {**state.to_json(), "settings": run.settings.to_json()})

    if run.main_process:
        with writing(run.out, "save a checkpoint", then=resume_hint(run.last)):
            save_checkpoint(run.last, run.best if also_best else None, write)
    if run.accelerator is not None:
        run.accelerator.wait_for_everyone()


def prepare_output(out: Path, last: Path, best: Path) -> None:
    """Tidy what an interrupted save left, and fail now, not after an epoch, if `out` is read-only."""
    with writing(out, "write into the model folder", name_target=True):
        out.mkdir(parents=True, exist_ok=True)
        for folder in (last, best):
            ckpt.recover(folder)
        ckpt.staging_for(last).rmdir()


def resume_settings(settings: TrainSettings, last: Path, echo: Echo,
                    device: str) -> tuple[TrainSettings, dict[str, Any]]:
    """The settings to resume with (the checkpoint's win where they shape the run) and its state."""
    if not last.is_dir():
        raise ConfigError(f"--resume: no checkpoint in {last}; start without --resume")
    state = ckpt.read_state(last)
    merged, notes = ckpt.reconcile_settings(state["settings"], settings.to_json(), has_bf16_units(device))
    for note in notes:
        echo(f"  resume: {note}")
    try:
        resumed = TrainSettings(**{**merged, "data_dir": Path(merged["data_dir"]), "output_dir": last.parent})
        resumed.validate()
    except TypeError as exc:  # a value of the wrong type in the saved settings
        raise CheckpointError(f"--resume: {last / ckpt.STATE_FILE}: bad settings ({exc}); {ckpt.START_OVER}") from None
    return resumed, state


def resume_hint(last: Path) -> str:
    """What the rerun after a failed write needs: --resume, when a checkpoint is there."""
    if (last / ckpt.STATE_FILE).is_file():
        return f" (add --resume: {last} is intact)"
    return ""


def save_checkpoint(last: Path, best: Path | None, write: Callable[[Path], Any]) -> None:
    """Write a checkpoint aside and swap it in: best first, so a failure between the two
    swaps leaves last one step behind best, and the resumed run redoes that step."""
    staging = ckpt.staging_for(last)
    best_staging = ckpt.staging_for(best) if best else None
    try:
        write(staging)
        if best is not None:
            ckpt.copy_folder(staging, best_staging)
            ckpt.swap_in(best_staging, best)
        ckpt.swap_in(staging, last)
    finally:  # a failed save frees its space at once
        for folder in (staging, best_staging):
            if folder is not None and folder.exists():
                shutil.rmtree(folder, ignore_errors=True)


def finish(out: Path, best: Path, state: TrainState, echo: Echo) -> Path:
    """The best checkpoint's model files become the model folder; the head is checked.
    Each file is replaced atomically, so a failure leaves every file whole."""
    for item in best.iterdir():
        if item.is_file() and item.name not in ckpt.RESUME_FILES:
            copy_file_atomic(item, out / item.name)
    write_text_atomic(out / "history.json", json.dumps(state.history, indent=1) + "\n")
    verify_head(out)
    echo(f"Model saved to {out} (best val MAE {state.best_mae:.4f}; head verified after reload)")
    return out
