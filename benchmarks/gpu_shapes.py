"""Scoring and LoRA-training speed of real Qwen2.5 shapes with random weights.

No weights are needed: each model is built on the device from a Qwen2Config
holding the real 0.5B / 1.5B / 7B hyperparameters, with the real Qwen
tokenizer for realistic token counts. Speed does not depend on the weights'
values, so the figures hold for trained students of the same shape.

Per size, on one corpus with a realistic length mix cut to the student's
token cap (head + tail, as the scorer cuts):

- scoring, bf16, SDPA: a plain transformers loop (batch 8, input order,
  padding to the longest, attention mask) against length-sorted token-budget
  batches (the runner's `plan_batches`) with the mask, and the runner's decoder
  path (no mask: right padding under a causal mask never reaches a real token,
  so SDPA takes its causal kernel; the head runs only at each last token);
- the runner path again under a 16 GiB memory cap
  (`torch.cuda.set_per_process_memory_fraction`), as on a 16 GB card;
- LoRA (r=16, all linear layers, head trained in full) training steps at
  batch 8 x 512 tokens, without and with gradient checkpointing, and with
  checkpointing under the cap. Out of memory is recorded as "does not fit".

Useful TFLOP/s count the real (unpadded) tokens only, against a bf16 matmul
peak measured in the same run.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.benchmarks.common import BenchResult
from distill.settings import Settings

# The published Qwen2.5 base configs (config.json of Qwen/Qwen2.5-{0.5B,1.5B,7B}).
QWEN25_SHAPES: dict[str, dict[str, Any]] = {
    "0.5B": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2, vocab_size=151936),
    "1.5B": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                 num_attention_heads=12, num_key_value_heads=2, vocab_size=151936),
    "7B": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
               num_attention_heads=28, num_key_value_heads=4, vocab_size=152064),
}
# Same code path on a CPU in seconds: the shape tests use.
TINY_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, vocab_size=151936)
QWEN_PAD_ID = 151643  # <|endoftext|>, what the students use as pad token
NUM_LABELS = 8
GIB = 2**30
DEVICES = ("auto", "cuda", "cpu")

COLUMNS = ["size", "run", "status", "ms/article", "tokens/s", "TFLOP/s", "% of peak", "padding",
           "peak GiB", "x baseline"]


@dataclass
class GpuShapesSettings(Settings):
    sizes: tuple[str, ...] = field(default=("0.5B", "1.5B", "7B"), metadata={"separator": ",", "help": "Qwen2.5 shapes to build, comma-separated"})
    tiny: bool = field(default=False, metadata={"help": "one tiny shape instead (hidden 64, 2 layers): checks the logic on a CPU"})
    device: str = field(default="auto", metadata={"choices": DEVICES, "help": "auto (cuda when present), cuda, or cpu (only with --tiny)"})
    articles: int = field(default=1024, metadata={"help": "articles scored per variant"})
    max_tokens: int = field(default=512, metadata={"help": "student token cap (head + tail cut)"})
    token_budget: int = field(default=65536, metadata={"help": "padded tokens per sorted batch (the runner's GPU default)"})
    max_batch: int = field(default=512, metadata={"help": "rows per sorted batch at most"})
    baseline_batch: int = field(default=8, metadata={"help": "batch size of the plain transformers baseline"})
    train_batch: int = field(default=8, metadata={"help": "LoRA training: rows per step"})
    train_tokens: int = field(default=512, metadata={"help": "LoRA training: tokens per row"})
    train_steps: int = field(default=4, metadata={"help": "LoRA training: timed steps (after warm-up steps)"})
    warmup_steps: int = field(default=2, metadata={"help": "LoRA training: untimed steps first"})
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank (alpha = 2 x rank, all linear layers)"})
    cap_gib: float = field(default=16.0, metadata={"help": "memory cap of the 'fits a 16 GB card' runs, GiB (0: skip them)"})
    capped_token_budget: int = field(default=8192, metadata={"help": "padded tokens per batch when scoring under the cap"})
    peak_size: int = field(default=8192, metadata={"help": "n of the n x n x n matmul that measures the peak (CPU: 512)"})
    seed: int = field(default=0, metadata={"help": "seed of the corpus and the random weights"})
    source: Path | None = field(default=None, metadata={"help": "real articles (JSONL) for the length mix; default: generated text"})
    tokenizer: Path | None = field(default=None, metadata={"help": "Qwen tokenizer folder; default: the packaged real Qwen2.5 tokenizer"})

    def problems(self) -> list[str]:
        problems = []
        unknown = [s for s in self.sizes if s not in QWEN25_SHAPES]
        if unknown and not self.tiny:
            problems.append(f"--sizes: unknown {', '.join(unknown)}; choose from {', '.join(QWEN25_SHAPES)}")
        if self.device not in DEVICES:
            problems.append(f"--device: {self.device!r} is not one of {', '.join(DEVICES)}")
        if self.device == "cpu" and not self.tiny:
            problems.append("--device cpu: real Qwen shapes would take hours on a CPU; add --tiny")
        for name in ("articles", "max_tokens", "token_budget", "max_batch", "baseline_batch",
                     "train_batch", "train_tokens", "train_steps", "lora_rank", "peak_size",
                     "capped_token_budget"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')}: must be at least 1 (got {getattr(self, name)})")
        if self.warmup_steps < 0 or self.cap_gib < 0:
            problems.append("--warmup-steps and --cap-gib: must be 0 or more")
        if self.token_budget < self.max_tokens:
            problems.append(f"--token-budget: must hold one full row of --max-tokens {self.max_tokens}")
        if self.source is not None and not Path(self.source).is_file():
            problems.append(f"--source: {self.source}: no such file")
        if self.tokenizer is not None and not Path(self.tokenizer).is_dir():
            problems.append(f"--tokenizer: {self.tokenizer} is not a folder")
        return problems

    @property
    def shapes(self) -> dict[str, dict[str, Any]]:
        return {"tiny": TINY_SHAPE} if self.tiny else {s: QWEN25_SHAPES[s] for s in self.sizes}


def resolve_device(requested: str) -> str | None:
    """'cuda' or 'cpu' as asked; None when auto finds no CUDA (the caller explains)."""
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        return None
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else None
    return requested


# ---------------------------------------------------------------- data and model


def corpus_sequences(settings: GpuShapesSettings) -> list[list[int]]:
    """Token ids of the benchmark corpus, cut to max_tokens as the scorer cuts them."""
    from transformers import AutoTokenizer

    from distill.benchmarks.corpus import CorpusSettings, iter_corpus
    from distill.local_models import qwen_tokenizer_dir
    from distill.student.encode import encode_texts
    from distill.truncation import article_text

    tokenizer = AutoTokenizer.from_pretrained(str(settings.tokenizer or qwen_tokenizer_dir()))
    tokenizer.model_max_length = 1 << 30  # we cut ourselves, head + tail
    corpus = CorpusSettings(count=settings.articles, source=settings.source, seed=settings.seed)
    texts = [article_text(r["title"], r["content"]) for r in iter_corpus(corpus)]
    return encode_texts(tokenizer, texts, settings.max_tokens, head_share=0.8)


def build_model(shape: dict[str, Any], device: str, dtype: Any, seed: int) -> Any:
    """A random-weight Qwen2 regression model, initialised directly on the device."""
    import torch
    from transformers import AutoModelForSequenceClassification, Qwen2Config

    from distill.student.load import quiet_transformers

    quiet_transformers()
    config = Qwen2Config(
        **shape, max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=False, pad_token_id=QWEN_PAD_ID, num_labels=NUM_LABELS,
        problem_type="regression",
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForSequenceClassification.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.eval()


def body_parameters(model: Any) -> int:
    """Parameters a token's forward pass multiplies through (embeddings are lookups)."""
    body = getattr(model, model.base_model_prefix)
    return sum(p.numel() for n, p in body.named_parameters() if "embed_tokens" not in n)


def forward_flops(model: Any, lengths: np.ndarray) -> float:
    """Useful forward FLOPs of sequences this long: 2 x body params per token plus
    causal attention, 2 x n^2 x hidden per layer (QK^T and AV, half masked away)."""
    config = model.config
    n = lengths.astype(np.float64)
    attention = 2.0 * config.num_hidden_layers * config.hidden_size * float((n**2).sum())
    return 2.0 * body_parameters(model) * float(n.sum()) + attention


# ---------------------------------------------------------------- timing helpers


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def timed(device: str, fn: Callable[[], Any]) -> tuple[float, float | None, Any]:
    """(seconds, peak GiB on the GPU or None, fn's result)."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / GIB if device == "cuda" else None
    return seconds, peak, result


def release(device: str) -> None:
    """Give cached blocks back so the next run (and any cap) starts from what is live."""
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def attempt(device: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """run()'s row, or a 'does not fit' row when it runs out of memory."""
    import torch

    try:
        row = run()
    except torch.cuda.OutOfMemoryError as exc:
        row = {"status": "does not fit", "error": str(exc).splitlines()[0][:200]}
    release(device)  # after the except block, so the traceback's tensors are gone
    return row


class MemoryCap:
    """Limit this process to `gib` of GPU memory while inside the block (CUDA only)."""

    def __init__(self, device: str, gib: float):
        self.device, self.gib = device, gib

    def __enter__(self) -> MemoryCap:
        import torch

        release(self.device)
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, self.gib * GIB / total))
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        torch.cuda.set_per_process_memory_fraction(1.0)


def matmul_peak_tflops(device: str, dtype: Any, n: int, repeats: int = 10) -> float:
    """Measured dense matmul TFLOP/s: n x n x n, 3 warm-ups, mean of `repeats`."""
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    seconds, _, _ = timed(device, lambda: [a @ b for _ in range(repeats)])
    return 2.0 * n**3 * repeats / seconds / 1e12


# ---------------------------------------------------------------- scoring variants


def to_device(sequences: list[list[int]], pad_id: int, device: str, mask: bool) -> tuple[Any, Any, Any]:
    """Right-padded ids (and mask) on the device via pinned memory, plus lengths."""
    import torch

    from distill.student.encode import pad_sequences

    padded_ids, padding_mask = pad_sequences(sequences, pad_id)
    ids = torch.from_numpy(padded_ids)
    lengths = torch.from_numpy(padding_mask.sum(axis=1))
    attention = torch.from_numpy(padding_mask) if mask else None

    def move(t: Any) -> Any:
        if t is None or device != "cuda":
            return t
        return t.pin_memory().to(device, non_blocking=True)

    return move(ids), move(attention), move(lengths)


def score_baseline(model: Any, sequences: list[list[int]], device: str, batch: int) -> tuple[Any, int]:
    """Plain transformers: input order, fixed batch, padding to the longest, mask, logits."""
    import torch

    outputs, padded = [], 0
    with torch.inference_mode():
        for start in range(0, len(sequences), batch):
            chunk = sequences[start:start + batch]
            ids, mask, _ = to_device(chunk, QWEN_PAD_ID, device, mask=True)
            outputs.append(model(input_ids=ids, attention_mask=mask).logits.float().cpu())
            padded += ids.numel()
    return torch.cat(outputs), padded


def score_sorted(model: Any, sequences: list[list[int]], device: str, budget: int, max_batch: int,
                 runner_path: bool) -> tuple[Any, int]:
    """Length-sorted token-budget batches (the runner's plan); results in input order.

    runner_path: no mask and the head only at each row's last real token, as
    serve.backends.TorchBackend does for decoders; else plain model(...).logits
    with the mask.
    """
    import torch

    from distill.serve.batcher import BackendLimits, plan_batches

    limits = BackendLimits(max(len(s) for s in sequences), max_batch, budget)
    out = torch.empty(len(sequences), model.config.num_labels)
    padded = 0
    with torch.inference_mode():
        for batch in plan_batches([len(s) for s in sequences], limits):
            rows = [sequences[i] for i in batch]
            ids, mask, lengths = to_device(rows, QWEN_PAD_ID, device, mask=not runner_path)
            if runner_path:
                hidden = model.model(input_ids=ids).last_hidden_state
                logits = model.score(hidden[torch.arange(len(rows), device=ids.device), lengths - 1])
            else:
                logits = model(input_ids=ids, attention_mask=mask).logits
            out[batch] = logits.float().cpu()
            padded += ids.numel()
    return out, padded


def scoring_rows(model: Any, sequences: list[list[int]], settings: GpuShapesSettings, device: str,
                 peak: float) -> list[dict[str, Any]]:
    """Baseline, sorted + mask and the runner path, each after a short warm-up."""
    lengths = np.array([len(s) for s in sequences])
    flops = forward_flops(model, lengths)
    variants = {
        "score baseline (batch 8, input order)": lambda seqs: score_baseline(
            model, seqs, device, settings.baseline_batch),
        "score sorted + mask": lambda seqs: score_sorted(
            model, seqs, device, settings.token_budget, settings.max_batch, runner_path=False),
        "score runner path (sorted, no mask)": lambda seqs: score_sorted(
            model, seqs, device, settings.token_budget, settings.max_batch, runner_path=True),
    }
    rows: list[dict[str, Any]] = []
    reference = None  # the baseline's outputs, when it ran
    for name, run in variants.items():
        def measure(run=run) -> dict[str, Any]:
            run(sequences[: min(64, len(sequences))])  # warm-up: kernels, allocator
            seconds, gib, (outputs, padded) = timed(device, lambda: run(sequences))
            return score_row(seconds, gib, lengths, padded, flops, peak) | {"outputs": outputs}

        row = {"run": name} | attempt(device, measure)
        outputs = row.pop("outputs", None)
        if outputs is not None and not rows:
            reference = outputs
        elif outputs is not None and reference is not None:
            row["max |diff| vs baseline"] = float((outputs - reference).abs().max())
        rows.append(row)
    base = rows[0].get("articles/s")
    for row in rows:
        if base and row.get("articles/s"):
            row["x baseline"] = row["articles/s"] / base
    return rows


def score_row(seconds: float, gib: float | None, lengths: np.ndarray, padded: int, flops: float,
              peak: float) -> dict[str, Any]:
    tflops = flops / seconds / 1e12
    return {
        "status": "ok",
        "ms/article": 1000 * seconds / len(lengths),
        "articles/s": len(lengths) / seconds,
        "tokens/s": float(lengths.sum()) / seconds,
        "TFLOP/s": tflops,
        "% of peak": 100 * tflops / peak,
        "padding": f"{1 - lengths.sum() / padded:.0%}",
        "peak GiB": gib,
    }


def capped_scoring_row(model: Any, sequences: list[list[int]], settings: GpuShapesSettings,
                       device: str, peak: float) -> dict[str, Any]:
    """The runner path with the whole process held under the memory cap."""
    lengths = np.array([len(s) for s in sequences])
    flops = forward_flops(model, lengths)

    def measure() -> dict[str, Any]:
        with MemoryCap(device, settings.cap_gib):
            seconds, gib, (_, padded) = timed(device, lambda: score_sorted(
                model, sequences, device, settings.capped_token_budget, settings.max_batch, True))
        return score_row(seconds, gib, lengths, padded, flops, peak) | {"status": "fits"}

    name = f"score runner path @{settings.cap_gib:g} GiB (budget {settings.capped_token_budget})"
    return {"run": name} | attempt(device, measure)


# ---------------------------------------------------------------- LoRA training


def training_batch(sequences: list[list[int]], settings: GpuShapesSettings, device: str) -> tuple[Any, Any]:
    """batch x tokens ids cut from the corpus' token stream, and random targets."""
    import torch

    need = settings.train_batch * settings.train_tokens
    stream = np.fromiter((t for s in sequences for t in s), dtype=np.int64)
    stream = np.resize(stream, need)  # repeats the stream when the corpus is short
    ids = torch.from_numpy(stream.reshape(settings.train_batch, settings.train_tokens)).to(device)
    generator = torch.Generator().manual_seed(settings.seed)
    targets = torch.randn(settings.train_batch, NUM_LABELS, generator=generator).to(device)
    return ids, targets


def train_steps(model: Any, ids: Any, targets: Any, steps: int, optimizer: Any) -> float:
    """Run `steps` optimizer steps; returns the last loss (as a float, which syncs)."""
    loss = None
    for _ in range(steps):
        loss = model(input_ids=ids, labels=targets.to(model.dtype)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return float(loss.detach()) if loss is not None else float("nan")


def training_row(model: Any, batch: tuple[Any, Any], settings: GpuShapesSettings, device: str,
                 checkpointing: bool, cap: bool) -> dict[str, Any]:
    import torch

    ids, targets = batch
    name = f"LoRA train {settings.train_batch}x{settings.train_tokens}"
    name += " + checkpointing" if checkpointing else ""
    name += f" @{settings.cap_gib:g} GiB" if cap else ""

    def measure() -> dict[str, Any]:
        set_checkpointing(model.get_base_model(), checkpointing)
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        with MemoryCap(device, settings.cap_gib) if cap else nullcontext():
            train_steps(model, ids, targets, settings.warmup_steps, optimizer)
            seconds, gib, loss = timed(device, lambda: train_steps(
                model, ids, targets, settings.train_steps, optimizer))
        tokens = settings.train_steps * ids.numel()
        return {"status": "fits" if cap else "ok", "tokens/s": tokens / seconds, "peak GiB": gib,
                "ms/step": 1000 * seconds / settings.train_steps, "loss": loss}

    row = {"run": name} | attempt(device, measure)
    model.zero_grad(set_to_none=True)  # an out-of-memory step leaves gradients behind
    model.eval()
    return row


def set_checkpointing(model: Any, on: bool) -> None:
    """Activation checkpointing on or off; transformers renamed the methods in 5.x."""
    kwargs = {"use_reentrant": False}  # no need for inputs that require grad
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_disable()


# ---------------------------------------------------------------- one size, all sizes


def size_rows(size: str, shape: dict[str, Any], sequences: list[list[int]],
              settings: GpuShapesSettings, device: str, peak: float) -> list[dict[str, Any]]:
    """Every run for one shape; a model that cannot even be built says so in one row."""
    import torch

    from distill.train.model import add_lora

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    holder: dict[str, Any] = {}
    built = attempt(device, lambda: holder.update(model=build_model(shape, device, dtype, settings.seed)) or {})
    if "model" not in holder:
        return [{"size": size, "run": "build model"} | built]
    model = holder.pop("model")
    info = {"size": size, "body params (M)": body_parameters(model) / 1e6}
    capped = device == "cuda" and settings.cap_gib > 0
    rows = scoring_rows(model, sequences, settings, device, peak)
    if capped:
        rows.append(capped_scoring_row(model, sequences, settings, device, peak))
    model = add_lora(model, settings.lora_rank)  # as distill-train sets it up
    batch = training_batch(sequences, settings, device)
    rows.append(training_row(model, batch, settings, device, checkpointing=False, cap=False))
    rows.append(training_row(model, batch, settings, device, checkpointing=True, cap=False))
    if capped:
        rows.append(training_row(model, batch, settings, device, checkpointing=True, cap=True))
    del model, batch
    release(device)
    return [info | row for row in rows]


def run_gpu_shapes(settings: GpuShapesSettings, name: str = "gpu-shapes",
                   after_size: Callable[[BenchResult], None] | None = None) -> BenchResult | None:
    """All sizes on one corpus; None when no CUDA device is there to use.

    `after_size` sees the result so far after each size, so a run stopped by a
    time limit still leaves the sizes it finished.
    """
    import torch

    settings.validate()
    device = resolve_device(settings.device)
    if device is None:
        return None
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    peak_n = settings.peak_size if device == "cuda" else min(settings.peak_size, 512)
    peak = matmul_peak_tflops(device, dtype, peak_n)
    sequences = corpus_sequences(settings)
    lengths = np.array([len(s) for s in sequences])
    notes = [
        f"{'bf16' if device == 'cuda' else 'fp32'} matmul peak measured here: {peak:.1f} TFLOP/s "
        f"({peak_n}^3); TFLOP/s count real tokens only",
        f"corpus: {len(lengths)} articles, {'generated' if settings.source is None else settings.source}; "
        f"tokens per article after the {settings.max_tokens}-token cap: mean {lengths.mean():.0f}, "
        f"median {np.median(lengths):.0f}, at cap {np.mean(lengths == settings.max_tokens):.0%}",
        "random weights; scoring times exclude tokenisation (done once, up front)",
    ]
    result = BenchResult(
        name=name, title=f"Qwen2.5 shapes, random weights, {device}", columns=COLUMNS, rows=[],
        notes=notes, settings=settings.to_json() | {"device": device, "peak_tflops": peak, "peak_matmul_n": peak_n},
    )
    for size, shape in settings.shapes.items():
        result.rows += size_rows(size, shape, sequences, settings, device, peak)
        if after_size is not None:
            after_size(result)
    return result
