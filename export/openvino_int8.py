"""Static int8 for OpenVINO: NNCF post-training quantisation of model.onnx.

Dynamic int8 (quantize.py) measures each batch's activation range at run
time; static int8 measures the ranges once, on real articles, and bakes them
into the graph, so every MatMul of the encoder runs in int8 (VNNI / AMX)
with no per-batch work. NNCF's transformer preset keeps the ops that int8
hurts (softmax, LayerNorm, GELU) in float and applies SmoothQuant and bias
correction. The result is saved as OpenVINO IR (openvino_model.int8.xml +
.bin): NNCF's ONNX backend failed on our graphs (an invalid graph after its
Cast clean-up), its OpenVINO backend works.

Calibration articles should be training articles: the MAE gate then measures
the model on val articles it has never seen in any form.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

import numpy as np

from distill.export.validate import ExportCheckError

INSTALL_HINT = "pip install 'distill[openvino-int8]' (nncf and openvino)"


def missing_packages() -> list[str]:
    """The packages --openvino-int8 needs and this install lacks."""
    return [name for name in ("nncf", "openvino") if importlib.util.find_spec(name) is None]


def quantize_openvino_int8(source: Path, target: Path, calibration: list[list[int]]) -> dict[str, Any]:
    """Quantise the ONNX model `source` with activation ranges from `calibration`
    (token id lists, one article each, unpadded as the scorer's shortest batches
    are) and save it as OpenVINO IR at `target` (.xml; the .bin goes beside it)."""
    import nncf
    import openvino as ov

    if not calibration:
        raise ExportCheckError("--openvino-int8: no calibration articles to measure activation ranges on")

    def feed(ids: list[int]) -> dict[str, np.ndarray]:
        row = np.array([ids], dtype=np.int64)
        return {"input_ids": row, "attention_mask": np.ones_like(row)}

    start = time.perf_counter()
    model = ov.Core().read_model(str(source))
    quantised = nncf.quantize(model, nncf.Dataset(calibration, feed), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(calibration))
    # fp32 for what stays in float: the scorer decides bf16 or f32 at compile time.
    ov.save_model(quantised, str(target), compress_to_fp16=False)
    return {"calibration_articles": len(calibration), "seconds": round(time.perf_counter() - start, 1)}


class OpenVinoSession:
    """An OpenVINO model behind ONNX Runtime's `run(output_names, feeds)`, so the
    parity, MAE gate and timing code treat both runtimes alike; compiled with the
    scorer's own settings (distill.student.openvino_settings; where the scorer
    times two, the first: bf16 between the int8 MatMuls, the lossier)."""

    def __init__(self, path: Path, precision: str, threads: int):
        import openvino as ov

        from distill.student.openvino_settings import compile_configs

        config = compile_configs(precision, threads)[0]
        self.request = ov.Core().compile_model(str(path), "CPU", config).create_infer_request()

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [np.array(self.request.infer(feeds)[0])]  # a copy: the request reuses its buffer
