"""File names inside a student model folder.

distill.json and calibration.json are named in distill.artifact, ensemble.npz
in distill.ensemble; these are the weights.
"""

from __future__ import annotations

ADAPTER_FILE = "adapter_model.safetensors"  # peft-lora: LoRA weights plus the trained head
ADAPTER_CONFIG_FILE = "adapter_config.json"
FULL_FILE = "model.safetensors"  # full and merged: one file ...
FULL_INDEX_FILE = "model.safetensors.index.json"  # ... or shards listed here
WEIGHTS_FORMATS = ("peft-lora", "full", "merged")
# What distill-export writes and distill-score reads, per variant: int8 is ONNX
# Runtime's dynamic quantisation, int8w int8 weights only (for OpenVINO).
ONNX_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "int8w": "model.int8w.onnx",
              "fp16": "model.fp16.onnx"}
# OpenVINO IR of the static int8 model (NNCF, activations calibrated on real
# articles): the .xml graph names its weights file, the .bin beside it.
OPENVINO_INT8_FILE = "openvino_model.int8.xml"
OPENVINO_INT8_WEIGHTS = "openvino_model.int8.bin"
