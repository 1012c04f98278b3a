"""Smaller and faster variants of model.onnx: dynamic int8 for CPU, fp16 for GPU.

Both are only candidates: the caller keeps one only if its MAE against labels
stays within the tolerance of fp32's (naive int8 has doubled a student's MAE).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def convert_fp16(source: Path, target: Path, external: bool) -> None:
    """fp16 weights and compute; inputs stay int64 and `scores` stays float32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from distill.export.onnx_export import save_onnx

    proto = onnx.load(str(source), load_external_data=True)
    half = convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=external)
    save_onnx(half, target, external)
