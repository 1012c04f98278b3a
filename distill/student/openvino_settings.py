"""How every OpenVINO model is compiled, so the export's MAE gate measures what the scorer runs."""

from __future__ import annotations

from distill.cpu_features import CpuFeatures, cpu_features


def compile_config(precision: str, threads: int, features: CpuFeatures | None = None) -> dict[str, object]:
    """OpenVINO's CPU settings for `precision` ("fp32", "bf16" or "int8") on `threads` threads.

    fp32 pins f32 (OpenVINO would pick bf16 by itself on CPUs with bf16 units).
    A static int8 model computes its quantised MatMuls in int8 whatever the hint;
    the hint sets the precision of everything between them (softmax, LayerNorm,
    GELU), bf16 where the CPU has bf16 units (AMD EPYC, avx512_bf16: 4.40 against
    5.27 ms/article with f32), f32 elsewhere, where bf16 would be emulated.
    """
    features = features or cpu_features()
    hint = {"fp32": "f32", "bf16": "bf16", "int8": "bf16" if features.bf16 else "f32"}[precision]
    config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return config
