"""Smaller and faster variants of model.onnx: dynamic int8 for CPU, fp16 for GPU.

Both are only candidates: the caller keeps one only if its MAE against labels
stays within the tolerance of fp32's (naive int8 has doubled a student's MAE).
"""

from __future__ import annotations

import shutil
from pathlib import Path


def quantize_int8(source: Path, target: Path, external: bool) -> None:
    """Dynamic int8 weights, per output channel (per-tensor loses too much)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Pre-processing writes an intermediate model; keep it out of the export folder.
    scratch = target.parent / f".quant-{target.stem}"
    scratch.mkdir()
    try:
        prepared = _preprocess(source, scratch / "prepared.onnx", external)
        quantize_dynamic(
            prepared, target, per_channel=True, weight_type=QuantType.QInt8,
            use_external_data_format=external,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _preprocess(source: Path, prepared: Path, external: bool) -> Path:
    """ONNX shape inference and graph clean-up that ORT recommends before quantising
    (its symbolic shape inference gives up on HF attention masks, so it is skipped)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True, save_as_external_data=external)
    return prepared


def convert_fp16(source: Path, target: Path, external: bool) -> None:
    """fp16 weights and compute; inputs stay int64 and `scores` stays float32."""
    import onnx
    from distill.export.onnx_export import save_onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = onnx.load(str(source), load_external_data=True)
    half = convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=external)
    save_onnx(half, target, external)
