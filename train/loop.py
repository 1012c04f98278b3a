"""The training recipe, top to bottom: setup_model, setup_data, setup_optimizer,
one visible loop, save. No Trainer class: what runs is what you read here."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
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
from distill.train import checkpoint as ckpt
from distill.train.data import Split, length_grouped_batches, read_split, tier_balance_weights
from distill.train.model import (
    build_student,
    encode_texts,
    pad_batch,
    portable_base_name,
    predict_raw,
    save_student,
    verify_head,
)
from distill.train.settings import TrainSettings

Echo = Callable[[str], None]


@dataclass
class TrainData:
    train: Split
    val: Split
    train_ids: list[list[int]]
    val_ids: list[list[int]]
    scaler: TargetScaler
    train_targets: np.ndarray  # standardised
    train_weights: np.ndarray


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
    import torch
    from tqdm import tqdm

    settings.validate()
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
    saved_state = None
    if settings.resume:
        settings, saved_state = resume_settings(settings, last, echo)
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    torch.manual_seed(settings.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    max_tokens = settings.max_length or spec.truncation.student_tokens

    model, tokenizer, arch = setup_model(settings, spec, device)
    data = setup_data(settings, spec, tokenizer, max_tokens, echo)
    optimizer = setup_optimizer(model, settings)
    lengths = [len(ids) for ids in data.train_ids]
    steps_per_epoch = math.ceil(len(lengths) / settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    progress = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "history": [], "best_mae": None,
                "stale_epochs": 0, "train_seconds": 0.0}
    if saved_state is not None:
        ckpt.check_position(last, saved_state, steps_per_epoch, settings.epochs)
        progress.update({k: v for k, v in ckpt.load_training_state(last, model, optimizer).items() if k in progress})
        echo(f"Resuming at epoch {progress['epoch'] + 1}, step {progress['global_step']}")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    core = model  # the plain model: saved, evaluated; `model` may be its DDP wrapper
    if accelerator is not None:
        model = accelerator.prepare_model(model)
        device = accelerator.device.type
    echo(f"Training {settings.model_name} ({arch}, {'full' if settings.full_finetune else f'LoRA r={settings.lora_rank}'}, "
         f"{trainable / 1e6:.2f}M trainable) on {len(lengths)} examples, {len(data.val_ids)} val, "
         f"{max_tokens} tokens, {device}")

    def make_info(metrics: dict[str, Any]) -> StudentInfo:
        return StudentInfo(
            filter_name=spec.name, filter_version=spec.version, filter_config_hash=spec.config_hash,
            dimensions=spec.dimension_names, base_model=portable_base_name(settings.model_name),
            architecture=arch, weights_format="full" if settings.full_finetune else "peft-lora",
            max_tokens=max_tokens, head_share=spec.truncation.head_share,
            target_mean=data.scaler.mean.tolist(), target_std=data.scaler.std.tolist(),
            metrics=metrics, training={**settings.to_json(), "train_seconds": round(progress["train_seconds"], 1),
                                       "train_examples": len(lengths), "val_examples": len(data.val_ids)},
        )

    def write_checkpoint(folder: Path, metrics: dict[str, Any]) -> None:
        save_student(core, tokenizer, make_info(metrics), folder)
        ckpt.save_training_state(folder, core, optimizer, {**progress, "settings": settings.to_json()})

    def save_last(metrics: dict[str, Any], also_best: bool = False) -> None:
        """checkpoint-last (and checkpoint-best) swapped in whole; a failed save keeps the old ones."""
        if main_process:
            with writing(out, "save a checkpoint", then=resume_hint(last)):
                save_checkpoint(last, best if also_best else None, lambda folder: write_checkpoint(folder, metrics))
        if accelerator is not None:
            accelerator.wait_for_everyone()

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    model.train()
    for epoch in range(progress["epoch"], settings.epochs):
        batches = length_grouped_batches(lengths, settings.batch_size, settings.seed, epoch)
        skip = progress["step_in_epoch"]
        bar = tqdm(batches[skip:], desc=f"Epoch {epoch + 1}/{settings.epochs}", initial=skip,
                   total=len(batches), dynamic_ncols=True, disable=not main_process)
        running, started = None, time.monotonic()
        for batch in bar:
            index, divisor = local_share(batch, data.train_weights, accelerator)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(progress["global_step"], total_steps, settings)
            ids, mask = pad_batch([data.train_ids[i] for i in index], tokenizer.pad_token_id)
            target = torch.tensor(data.train_targets[index], dtype=torch.float32, device=device)
            weight = torch.tensor(data.train_weights[index], dtype=torch.float32, device=device)
            with autocast:
                pred = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            loss = (regression_loss(pred, target, settings.loss) * weight).sum() / (divisor or weight.sum())
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            progress["global_step"] += 1
            progress["step_in_epoch"] += 1
            running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
            bar.set_postfix(loss=f"{running:.4f}")
            if settings.save_steps and progress["global_step"] % settings.save_steps == 0:
                progress["train_seconds"] += time.monotonic() - started
                started = time.monotonic()
                save_last({})
        progress["train_seconds"] += time.monotonic() - started
        metrics = evaluate_val(core, tokenizer, data, settings.loss, settings.batch_size * 2)
        bar.set_postfix(loss=f"{running or 0:.4f}", val_loss=f"{metrics['val_loss']:.4f}")
        bar.close()
        improved = progress["best_mae"] is None or metrics["val_mae"] < progress["best_mae"]
        progress["history"].append({"epoch": epoch + 1, "train_loss": running, **metrics,
                                    "seconds": round(progress["train_seconds"], 1)})
        progress.update(epoch=epoch + 1, step_in_epoch=0,
                        best_mae=metrics["val_mae"] if improved else progress["best_mae"],
                        stale_epochs=0 if improved else progress["stale_epochs"] + 1)
        echo(f"Epoch {epoch + 1}: loss={running:.4f} val_loss={metrics['val_loss']:.4f} "
             f"val_mae={metrics['val_mae']:.4f}")
        save_last(metrics, also_best=improved)
        echo(f"  saved checkpoint {last}")
        if improved:
            echo(f"  new best val MAE {metrics['val_mae']:.4f}: saved {best}")
        if settings.patience and progress["stale_epochs"] >= settings.patience:
            echo(f"Early stop: no better val MAE for {settings.patience} epoch(s)")
            break
    if accelerator is not None:
        accelerator.wait_for_everyone()
    if not main_process:
        return out
    with writing(out, "write the model folder", then=resume_hint(last)):
        return finish(out, best, progress, echo)


def prepare_output(out: Path, last: Path, best: Path) -> None:
    """Tidy what an interrupted save left, and fail now, not after an epoch, if `out` is read-only."""
    with writing(out, "write into the model folder", name_target=True):
        out.mkdir(parents=True, exist_ok=True)
        for folder in (last, best):
            ckpt.recover(folder)
        ckpt.staging_for(last).rmdir()


def resume_settings(settings: TrainSettings, last: Path, echo: Echo) -> tuple[TrainSettings, dict[str, Any]]:
    """The settings to resume with (the checkpoint's win where they shape the run) and its state."""
    if not last.is_dir():
        raise ConfigError(f"--resume: no checkpoint in {last}; start without --resume")
    state = ckpt.read_state(last)
    merged, notes = ckpt.reconcile_settings(state["settings"], settings.to_json())
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


def finish(out: Path, best: Path, progress: dict[str, Any], echo: Echo) -> Path:
    """The best checkpoint's model files become the model folder; the head is checked.
    Each file is replaced atomically, so a failure leaves every file whole."""
    for item in best.iterdir():
        if item.is_file() and item.name not in ckpt.RESUME_FILES:
            copy_file_atomic(item, out / item.name)
    write_text_atomic(out / "history.json", json.dumps(progress["history"], indent=1) + "\n")
    verify_head(out)
    echo(f"Model saved to {out} (best val MAE {progress['best_mae']:.4f}; head verified after reload)")
    return out
