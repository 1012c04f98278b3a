"""Optional TensorRT engine (model.plan) built from model.onnx on an NVIDIA GPU.

TensorRT is not a dependency: without it `--tensorrt` says so and the rest of
the export proceeds. An engine is tied to the GPU and TensorRT version that
built it, so it is built where it will serve.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from distill.errors import DistillError

NOT_INSTALLED = (
    "TensorRT is not installed, so no engine was built: on a machine with an NVIDIA GPU "
    "run `pip install tensorrt` and rerun with --tensorrt"
)


def available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def build_engine(onnx_path: Path, plan_path: Path, max_batch: int, max_tokens: int, fp16: bool) -> dict[str, Any]:
    """Parse the ONNX graph and serialise an engine with one dynamic-shape profile."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise DistillError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name in ("input_ids", "attention_mask"):
        profile.set_shape(name, (1, 1), (max_batch, max_tokens // 2 or 1), (max_batch, max_tokens))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise DistillError("TensorRT failed to build an engine (see the TensorRT log above)")
    plan_path.write_bytes(bytes(engine))
    return {"built": True, "file": plan_path.name, "tensorrt": trt.__version__, "fp16": fp16,
            "max_batch": max_batch, "max_tokens": max_tokens}
