"""The compute floor of this CPU: its matmul peak per precision at the student's shapes.

A variant's floor is the work one article needs (the linear layers and the
attention products, from the model's config and the corpus's mean token
count) divided by the peak a plain matmul reaches at the model's own shapes
on the same threads. `measured / floor` then says how far a variant is from
what this machine can do, so runs on different CPUs compare as ratios.
fp32 and bf16 are timed through torch; int8 through ONNX Runtime's
MatMulInteger (uint8 activations x int8 weights, what dynamic int8 runs).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from distill.cpu_features import CPUINFO, read_flags

# What decides which precision can be fast here (read from /proc/cpuinfo).
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")
# Families whose MLP is gated (three projections), as Qwen2.5's is.
GATED_MLP = ("qwen2", "qwen3", "llama", "mistral", "gemma", "gemma2", "gemma3")
PRECISIONS = ("fp32", "bf16", "int8")


def cpu_flags(cpuinfo: Path = CPUINFO) -> list[str]:
    """The CPU features among CPU_FLAGS this machine reports (empty where unknown)."""
    present = read_flags(cpuinfo)
    return [flag for flag in CPU_FLAGS if flag in present]


def projection_shapes(config: Any) -> list[tuple[int, int]]:
    """(in, out) of every linear layer in one transformer block."""
    h, inner = config.hidden_size, config.intermediate_size
    heads = config.num_attention_heads
    kv = h * getattr(config, "num_key_value_heads", heads) // heads
    attention = [(h, h), (h, kv), (h, kv), (h, h)]
    mlp = [(h, inner), (h, inner), (inner, h)] if config.model_type in GATED_MLP else [(h, inner), (inner, h)]
    return attention + mlp


def article_gflop(config: Any, tokens: float) -> float:
    """GFLOP one article of `tokens` tokens needs: linear layers plus QK^T and AV."""
    linear = sum(a * b for a, b in projection_shapes(config))
    per_layer = 2 * linear * tokens + 4 * tokens * tokens * config.hidden_size
    return config.num_hidden_layers * per_layer / 1e9


def matmul_peak(precision: str, shapes: list[tuple[int, int]], rows: int, threads: int,
                seconds: float = 0.5) -> float:
    """GFLOP/s of [rows, in] x [in, out] over `shapes`, timed for about `seconds` each."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    flop, spent = 0.0, 0.0
    for k, n in dict.fromkeys(shapes):  # each distinct shape once, weighted by its FLOPs below
        run = _int8_matmul(rows, k, n, threads) if precision == "int8" else _torch_matmul(precision, rows, k, n, threads)
        run()  # warm-up: first calls pay for packing and allocation
        repeats, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds or repeats < 2:
            run()
            repeats += 1
        weight = shapes.count((k, n))
        flop += weight * 2.0 * rows * k * n
        spent += weight * elapsed / repeats
    return flop / spent / 1e9


def _torch_matmul(precision: str, rows: int, k: int, n: int, threads: int) -> Any:
    import torch

    torch.set_num_threads(threads)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(rows, k, dtype=dtype), torch.randn(k, n, dtype=dtype)

    def run() -> None:
        with torch.inference_mode():
            torch.mm(a, b)

    return run


def _int8_matmul(rows: int, k: int, n: int, threads: int) -> Any:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.integers(-128, 127, (k, n), dtype=np.int8), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "int8_matmul",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [rows, k])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [rows, n])], initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a = rng.integers(0, 255, (rows, k), dtype=np.uint8)
    onnx.checker.check_model(model)
    return lambda: session.run(None, {"A": a})


def with_floors(gflop: float, peaks: dict[str, float]) -> dict[str, float]:
    """Each precision's floor in ms an article: the article's work at that precision's peak."""
    return {p: round(1000 * gflop / peak, 2) for p, peak in peaks.items()}


def higher_peaks(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """One floor from two measurements of it (say, before and after the timed runs):
    each precision's higher peak. Anything else running on the cores only lowers a
    peak (a run here once read half the quiet machine's int8 peak), so the higher of
    two is the better estimate; both are kept."""
    peaks = {p: max(before["peak_gflops"][p], after["peak_gflops"][p]) for p in before["peak_gflops"]}
    return before | {"peak_gflops": peaks, "floor_ms": with_floors(before["gflop_per_article"], peaks),
                     "peak_gflops_measured": [before["peak_gflops"], after["peak_gflops"]]}


def measure_floor(model_dir: Path, mean_tokens: float, threads: int, rows: int = 4096,
                  seconds: float = 0.5) -> dict[str, Any]:
    """Peaks per precision and each precision's floor in ms an article, for this model."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    shapes = projection_shapes(config)
    gflop = article_gflop(config, mean_tokens)
    peaks = {p: round(matmul_peak(p, shapes, rows, threads, seconds), 1) for p in PRECISIONS}
    return {"cpu_flags": cpu_flags(), "mean_tokens": round(mean_tokens, 1), "gflop_per_article": round(gflop, 3),
            "rows": rows, "threads": threads, "peak_gflops": peaks,
            "floor_ms": with_floors(gflop, peaks)}
