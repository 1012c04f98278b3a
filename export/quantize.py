"""Smaller and faster variants of model.onnx: dynamic int8 and int8 weights for
CPU, fp16 for GPU.

- `quantize_int8`: ONNX Runtime's dynamic int8 (int8 weights, activations
  quantised per batch; MatMulInteger), ORT's fast CPU path.
- `quantize_int8_weights`: int8 weights only, each behind a standard
  DequantizeLinear; OpenVINO keeps them compressed and computes in bf16 on
  CPUs with AMX or AVX-512 BF16 (ORT would dequantise on every run).
- `convert_fp16`: fp16 weights and compute, for GPU runtimes.

All are only candidates: the caller keeps one only if its MAE against labels
stays within the tolerance of fp32's (naive int8 has doubled a student's MAE).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Model types whose attention/LayerNorm/GELU patterns ONNX Runtime's optimizer
# fuses; on MiniLM the fused int8 graph ran ~15% faster than the unfused one.
FUSABLE_MODEL_TYPES = {"bert": "bert"}


@dataclass(frozen=True)
class Fusion:
    """What ORT's transformer optimizer needs to fuse an encoder's attention."""

    model_type: str
    num_heads: int
    hidden_size: int


def fusion_for(config: Any) -> Fusion | None:
    kind = FUSABLE_MODEL_TYPES.get(config.model_type)
    if kind is None:
        return None
    return Fusion(kind, config.num_attention_heads, config.hidden_size)


def quantize_int8(source: Path, target: Path, external: bool, fusion: Fusion | None = None) -> None:
    """Dynamic int8 weights, per output channel (per-tensor loses too much).

    With `fusion`, the graph is first rewritten into ORT's fused encoder ops
    (ORT-only, like int8 itself); otherwise it gets ORT's generic pre-processing.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Intermediate models stay out of the export folder.
    scratch = target.parent / f".quant-{target.stem}"
    scratch.mkdir()
    try:
        prepared = _fuse(source, scratch / "fused.onnx", fusion, external) if fusion else _preprocess(
            source, scratch / "prepared.onnx", external
        )
        quantize_dynamic(
            prepared, target, per_channel=True, weight_type=QuantType.QInt8,
            use_external_data_format=external,
            # Shape inference cannot type the outputs of fused (contrib) ops.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _fuse(source: Path, fused: Path, fusion: Fusion, external: bool) -> Path:
    from onnxruntime.transformers.optimizer import optimize_model

    model = optimize_model(str(source), model_type=fusion.model_type, num_heads=fusion.num_heads,
                           hidden_size=fusion.hidden_size, opt_level=0)
    model.save_model_to_file(str(fused), use_external_data_format=external)
    return fused


def _preprocess(source: Path, prepared: Path, external: bool) -> Path:
    """ONNX shape inference and graph clean-up that ORT recommends before quantising
    (its symbolic shape inference gives up on HF attention masks, so it is skipped)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True, save_as_external_data=external)
    return prepared


# Smaller tables stay fp32: biases, LayerNorm, position and type embeddings
# are a rounding error of the file size and matter more to accuracy.
MIN_QUANTISED_WEIGHTS = 4096


def quantize_int8_weights(source: Path, target: Path, external: bool) -> int:
    """Symmetric per-channel int8 for every large MatMul/Gemm weight (per output
    column) and embedding table (per row); returns how many were quantised."""
    import onnx
    from onnx import helper, numpy_helper

    from distill.export.onnx_export import save_onnx

    proto = onnx.load(str(source), load_external_data=True)
    graph = proto.graph
    initializers = {init.name: init for init in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    dequantize = []
    for node in graph.node:
        weight, axis = _weight_input(node, initializers)
        if weight is None or uses[weight] != 1:
            continue
        values = numpy_helper.to_array(initializers[weight])
        if values.ndim != 2 or values.size < MIN_QUANTISED_WEIGHTS:
            continue
        scale = np.abs(values).max(axis=1 - axis) / 127.0
        scale[scale == 0] = 1.0
        shape = (1, -1) if axis == 1 else (-1, 1)
        quantised = np.clip(np.round(values / scale.reshape(shape)), -127, 127).astype(np.int8)
        graph.initializer.remove(initializers[weight])
        graph.initializer.extend([
            numpy_helper.from_array(quantised, f"{weight}_int8"),
            numpy_helper.from_array(scale.astype(np.float32), f"{weight}_scale"),
            numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{weight}_zero"),
        ])
        dequantize.append(helper.make_node("DequantizeLinear", [f"{weight}_int8", f"{weight}_scale", f"{weight}_zero"],
                                           [weight], axis=axis, name=f"{weight}_dequantize"))
    for position, node in enumerate(dequantize):  # before their users: ONNX graphs are topologically sorted
        graph.node.insert(position, node)
    save_onnx(proto, target, external)
    return len(dequantize)


def _weight_input(node: Any, initializers: dict[str, Any]) -> tuple[str | None, int]:
    """(constant weight input, its output-channel axis) of a MatMul, Gemm or embedding Gather."""
    if node.op_type == "Gather" and node.input[0] in initializers:
        return node.input[0], 0
    if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in initializers:
        transposed = any(a.name == "transB" and a.i for a in node.attribute)
        return node.input[1], 0 if transposed else 1
    return None, 0


def convert_fp16(source: Path, target: Path, external: bool) -> None:
    """fp16 weights and compute; inputs stay int64 and `scores` stays float32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from distill.export.onnx_export import save_onnx

    proto = onnx.load(str(source), load_external_data=True)
    half = convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=external)
    save_onnx(half, target, external)
