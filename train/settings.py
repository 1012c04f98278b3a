"""Settings of a `distill-train` run: one typed home for every default.

The CLI builds its flags from these fields (help text and defaults included);
`validate` reports every problem at once, each naming the flag and the fix.
The resolved settings are written into the model's distill.json.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from distill.settings import Settings

LOSSES = ("mse", "l1", "huber", "mse+l1")
SPLIT_FILES = ("train.jsonl", "val.jsonl")
REPORT_TO = ("tensorboard", "mlflow", "wandb")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class TrainSettings(Settings):
    filter: str = field(metadata={"help": "filter the splits were prepared for: name/vN, a bare name or a folder"})
    data_dir: Path = field(metadata={"help": "folder with train.jsonl and val.jsonl from distill-prepare (test.jsonl is for distill-evaluate)"})
    output_dir: Path | None = field(default=None, metadata={"help": "model folder; default models/<filter name>"})
    model_name: str = field(default="Qwen/Qwen2.5-7B-Instruct", metadata={"help": "base model: hub id or local HF folder (decoder LLM or BERT-family encoder)"})
    epochs: int = field(default=3, metadata={"help": "passes over train.jsonl"})
    batch_size: int = field(default=8, metadata={"help": "examples per optimiser step"})
    learning_rate: float = field(default=2e-5, metadata={"help": "peak AdamW learning rate (linear warmup, then linear decay to 0)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(default=0.06, metadata={"help": "share of all steps spent warming the learning rate up"})
    max_length: int | None = field(default=None, metadata={"help": "student input tokens (head+tail truncation); default the filter's truncation.student_tokens"})
    loss: str = field(default="mse", metadata={"choices": LOSSES, "help": "loss on standardised targets: mse, l1, huber, or mse+l1 (their mean; L1 pulls less toward the mean)"})
    overall_loss_weight: float = field(default=0.0, metadata={"help": (
        "add this times a loss on the overall score (the filter's weighted mean of the dimensions, "
        "distill/scoring.py's weights) to the per-dimension loss; 0 = off")})
    tier_balance: float = field(default=0.0, metadata={"help": "extra per-example weight (n_largest_tier / n_tier)^x on top of any `weight` field; 0 = off"})
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank (all linear layers of the backbone; the head is trained in full)"})
    full_finetune: bool = field(default=False, metadata={"help": "train every weight instead of a LoRA adapter"})
    load_in_4bit: bool = field(default=False, metadata={"help": "load the base in 4-bit NF4 (bitsandbytes, CUDA only); head stays full precision"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations in the backward pass: less memory, ~30% slower"})
    patience: int = field(default=2, metadata={"help": "stop after this many epochs without a better val MAE (0 = never stop early)"})
    precision: str = field(default="auto", metadata={"choices": PRECISIONS, "help": (
        "matmul precision of the forward and backward pass (weights and optimiser stay fp32): bf16 autocast, "
        "or fp32; auto = bf16 on CUDA and on CPUs with AMX, fp32 on CPUs without bf16 units, and on AVX-512 "
        "BF16 without AMX whichever runs the longest batch faster (timed at start-up); the settled choice "
        "is saved, and --resume keeps it")})
    seed: int = field(default=42, metadata={"help": "seed for init, dropout and the data order"})
    resume: bool = field(default=False, metadata={"help": "continue from the latest checkpoint in --output-dir (weights, optimiser, step, data order)"})
    save_steps: int = field(default=0, metadata={"help": "also checkpoint every N optimiser steps within an epoch (0 = only at epoch ends)"})
    num_threads: int | None = field(default=None, metadata={"help": "CPU threads for torch (default: torch's choice)"})
    report_to: str | None = field(default=None, metadata={"choices": REPORT_TO, "help": (
        "also log loss, learning rate, throughput and val metrics through accelerate's tracker: tensorboard "
        "(into OUTPUT_DIR/runs), mlflow or wandb (each needs its package)")})

    def resolved_output_dir(self, filter_name: str) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("models") / filter_name

    def resolved_precision(self, device: str) -> str:
        """bf16 or fp32: what the device's flags make of `auto` (bf16 on a CPU without it is emulated
        and slow). A bf16 answer on a CPU without AMX is only a candidate: train/precision.py times it."""
        if self.precision != "auto":
            return self.precision
        return "bf16" if has_bf16_units(device) else "fp32"

    def problems(self) -> list[str]:
        problems = []
        data = Path(self.data_dir)
        if not data.is_dir():
            problems.append(f"--data-dir: {data} is not a folder (run distill-prepare first)")
        else:
            problems += [f"--data-dir: {data / f} is missing" for f in SPLIT_FILES if not (data / f).is_file()]
        for flag, value in (("--epochs", self.epochs), ("--batch-size", self.batch_size), ("--lora-rank", self.lora_rank)):
            if value < 1:
                problems.append(f"{flag}: must be at least 1 (got {value})")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            problems.append(f"--learning-rate: must be a positive number (got {self.learning_rate})")
        if self.max_length is not None and self.max_length < 8:
            problems.append(f"--max-length: must be at least 8 tokens (got {self.max_length})")
        if self.loss not in LOSSES:
            problems.append(f"--loss: one of {', '.join(LOSSES)} (got {self.loss!r})")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"--warmup-ratio: must be in [0, 1) (got {self.warmup_ratio})")
        if self.precision not in PRECISIONS:
            problems.append(f"--precision: one of {', '.join(PRECISIONS)} (got {self.precision!r})")
        if not (math.isfinite(self.overall_loss_weight) and self.overall_loss_weight >= 0):
            problems.append(f"--overall-loss-weight: must be a number >= 0 (got {self.overall_loss_weight})")
        if self.tier_balance < 0 or self.patience < 0 or self.save_steps < 0:
            problems.append("--tier-balance, --patience and --save-steps must not be negative")
        if self.report_to is not None and self.report_to not in REPORT_TO:
            problems.append(f"--report-to: one of {', '.join(REPORT_TO)} (got {self.report_to!r})")
        if self.load_in_4bit and self.full_finetune:
            problems.append("--load-in-4bit: 4-bit weights cannot be fully fine-tuned; drop --full-finetune")
        return problems


def has_bf16_units(device: str) -> bool:
    """Whether `device` computes bf16 natively: CUDA, or a CPU with AVX-512 BF16 or AMX."""
    if device == "cuda":
        return True
    from distill.cpu_features import cpu_features

    return cpu_features().bf16
