"""Articles per second per variant at a fixed batch size, on this machine.

Variants are timed in interleaved rounds over the same pre-tokenised batches
(in input order, as a corpus arrives), and each variant's median round is
reported, so a burst of load from other processes hits every variant alike.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from distill.export.encode import batches
from distill.export.merge import Student
from distill.student.encode import encode_batch

Runner = Callable[[dict[str, np.ndarray]], Any]


def throughput(
    student: Student, runners: dict[str, Runner], texts: list[str], batch_size: int, rounds: int
) -> dict[str, Any]:
    """{"articles_per_s": {variant: float}, ...}: tokenisation is excluded from timing."""
    info = student.info
    prepared = [
        encode_batch(student.tokenizer, chunk, info.max_tokens, info.head_share)
        for chunk in batches(texts, batch_size)
    ]
    for run in runners.values():  # warm-up: first calls allocate and pick kernels
        run(prepared[0])
    timings: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            for batch in prepared:
                run(batch)
            timings[name].append(time.perf_counter() - start)
    rates = {name: round(len(texts) / statistics.median(times), 2) for name, times in timings.items()}
    tokens = int(sum(b["attention_mask"].sum() for b in prepared))
    return {
        "articles_per_s": rates,
        "articles": len(texts),
        "mean_tokens": round(tokens / len(texts), 1),
        "batch_size": batch_size,
        "rounds": rounds,
        "machine": machine(),
    }


def machine() -> dict[str, Any]:
    import os

    import onnxruntime
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnx_provider": "CPUExecutionProvider",  # fp16 is meant for GPUs; on CPU it is timed as is
    }
