"""Trace the merged student to ONNX: `input_ids`, `attention_mask` -> `scores`.

`scores` are the raw head outputs (standardised targets); the caller maps
them back with the TargetScaler from distill.json. Uses the legacy
TorchScript exporter with eager attention (it traced faster in ONNX Runtime
than an SDPA trace, and the dynamo exporter needs onnxscript).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from distill.student.heads import head_name

INPUTS = ("input_ids", "attention_mask")
OUTPUT = "scores"
PROTOBUF_LIMIT = 2 * 1024**3  # a single .onnx file cannot exceed 2 GiB
# Above this many parameter bytes the weights go to an external-data file;
# kept well under the limit because the graph itself needs room too.
EXTERNAL_DATA_BYTES = int(1.8 * 1024**3)


def scores_module(model: Any, decoder: bool) -> Any:
    """The model as a module returning float32 [batch, D] from ids and mask only."""
    import torch

    class Scores(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            if not decoder:
                return self.model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
            return self._last_token(input_ids, attention_mask)

        def _last_token(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            # Pool from the mask, not from input_ids == pad id (the pad id can be
            # content), and count positions from the first real token so a
            # left-padded row scores as if it were unpadded.
            position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
            backbone = getattr(self.model, self.model.base_model_prefix)
            hidden = backbone(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                use_cache=False,
            ).last_hidden_state
            steps = torch.arange(input_ids.shape[1], device=input_ids.device, dtype=torch.float32)
            last = (steps * attention_mask.to(torch.float32)).argmax(-1)
            pooled = hidden[torch.arange(input_ids.shape[0], device=input_ids.device), last]
            return getattr(self.model, head)(pooled).float()

    # Only the decoder path pools by hand; a model without a head is a ModelArtifactError.
    head = head_name(model) if decoder else ""
    return Scores().eval()


def export_onnx(model: Any, decoder: bool, example: dict[str, np.ndarray], path: Path, opset: int) -> dict[str, Any]:
    """Write `path` (plus `path.data` for large models); returns what the report records."""
    import onnx
    import torch

    module = scores_module(model, decoder)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    external = weight_bytes > EXTERNAL_DATA_BYTES
    args = tuple(torch.from_numpy(example[name]) for name in INPUTS)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS} | {OUTPUT: {0: "batch"}}
    # A large trace may land as one file per tensor: trace into a scratch folder,
    # then save once with all weights in a single `model.onnx.data`.
    scratch = path.parent / f".trace-{path.stem}"
    scratch.mkdir()
    try:
        traced = scratch / path.name
        with torch.no_grad():
            torch.onnx.export(
                module, args, str(traced), dynamo=False, input_names=list(INPUTS),
                output_names=[OUTPUT], dynamic_axes=axes, opset_version=opset,
                do_constant_folding=True, external_data=external,
            )
        proto = onnx.load(str(traced), load_external_data=True)
        save_onnx(proto, path, external)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    onnx.checker.check_model(str(path))
    return {"opset": opset, "external_data": external, "weight_bytes": weight_bytes,
            "decoder_pooling": "attention_mask" if decoder else None}


def save_onnx(proto: Any, path: Path, external: bool) -> None:
    """Save inline, or with every weight in one `<name>.data` file beside it."""
    import onnx

    if external:
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(proto, str(path))
