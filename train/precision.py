"""What `--precision auto` trains in: settled once, before the first step, and recorded.

The device's flags settle most machines (TrainSettings.resolved_precision):
CUDA and AMX compute bf16 fast, a CPU without bf16 units emulates it far
slower than fp32. AVX-512 BF16 without AMX promises nothing: on an AMD EPYC a
bf16 step beat fp32, on an Intel Xeon whose hypervisor hides AMX a step of
16 x 256 tokens took 3.4-4.5 s in bf16 against 2.7-3.6 s in fp32. There both
are timed on the longest full batch, as the scorer times its bf16 backend, and
the faster kept. The settled value replaces `auto` in the settings, so
distill.json, every checkpoint and a `--resume` keep what the run used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from distill.cpu_features import cpu_features
from distill.timing import fastest_run
from distill.train.model import pad_batch
from distill.train.settings import TrainSettings


def settle_precision(settings: TrainSettings, model: Any, batch: tuple[Any, Any], device: str,
                     echo: Callable[[str], None], accelerator: Any | None = None) -> TrainSettings:
    """`settings` with `auto` precision replaced by bf16 or fp32; timed (the `batch` of
    ids and mask through `model`) only where the flags leave it open."""
    if settings.precision != "auto":
        return settings
    chosen = settings.resolved_precision(device)
    if chosen == "bf16" and device == "cpu" and not cpu_features().amx:
        chosen = _on_process_zero(accelerator, lambda: faster_precision(model, batch, echo))
    return replace(settings, precision=chosen)


def longest_batch(train_ids: list[list[int]], batch_size: int, pad_id: int) -> tuple[Any, Any]:
    """Ids and mask of the `batch_size` longest training examples: the slowest step the run takes."""
    longest = sorted(train_ids, key=len, reverse=True)[:batch_size]
    return pad_batch(longest, pad_id)


def faster_precision(model: Any, batch: tuple[Any, Any], echo: Callable[[str], None]) -> str:
    """bf16 or fp32, whichever runs a step on `batch` faster here; both times are echoed."""
    bf16, fp32 = (step_seconds(model, *batch, bf16=flag) for flag in (True, False))
    chosen = "bf16" if bf16 < fp32 else "fp32"
    echo(f"precision auto: bf16 step {bf16:.2f} s, fp32 {fp32:.2f} s: training in {chosen}")
    return chosen


def step_seconds(model: Any, ids: Any, mask: Any, bf16: bool) -> float:
    """The best time of one forward and backward pass on the CPU. The RNG state is forked
    (dropout draws from it), so the run's random stream is the one it would have been,
    and the gradients are cleared (None, as before the first step)."""
    import torch

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            pred = model(input_ids=ids, attention_mask=mask).logits.float()
        pred.square().mean().backward()

    model.train()  # dropout on, as in the steps being timed
    with torch.random.fork_rng(devices=[]):
        seconds = fastest_run(step)
    model.zero_grad(set_to_none=True)
    return seconds


def _on_process_zero(accelerator: Any | None, decide: Callable[[], str]) -> str:
    """`decide()` on process 0 alone, shared with the others: every process must train
    in the same precision, and they would compete for the cores if each timed."""
    if accelerator is None:
        return decide()
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([decide() if accelerator.is_main_process else None])[0]
