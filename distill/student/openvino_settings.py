"""How every OpenVINO model is compiled, so the export's MAE gate measures what the scorer runs."""

from __future__ import annotations

from distill.cpu_features import CpuFeatures, cpu_features

HINTS = {"fp32": "f32", "bf16": "bf16"}


def compile_configs(precision: str, threads: int, features: CpuFeatures | None = None,
                    streams: int = 1) -> list[dict[str, object]]:
    """OpenVINO's CPU settings for `precision` ("fp32", "bf16" or "int8") on `threads`
    threads: one config, or for int8 on a CPU with bf16 flags two, which the scorer
    times at start-up, keeping the faster. With `streams` > 1 the threads are split
    into that many independent inference streams (distill-serve runs one model
    thread per stream): no thread of one batch waits for another's.

    fp32 pins f32 (OpenVINO would pick bf16 by itself on CPUs with bf16 units).
    A static int8 model runs its quantised MatMuls in int8 whatever the hint; the
    hint sets the precision of the ops between them (softmax, LayerNorm, GELU).
    bf16 there was faster on an AMD EPYC with avx512_bf16 (4.40 against 5.27
    ms/article) but slower on an Intel Xeon whose hypervisor hides AMX (14.2
    against 11.1): the flags cannot tell the two apart, a timing can.
    """
    features = features or cpu_features()
    if precision == "int8":
        hints = ["bf16", "f32"] if features.bf16 else ["f32"]
    else:
        hints = [HINTS[precision]]
    base: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY"}
    if streams > 1:
        base = {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": streams}
    if threads:
        base["INFERENCE_NUM_THREADS"] = threads
    return [base | {"INFERENCE_PRECISION_HINT": hint} for hint in hints]
