"""Settings for `distill-export`: one home for every default, checked up front."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from distill.artifact import INFO_FILE
from distill.settings import Settings

QUANTIZE_CHOICES = ("int8",)


@dataclass
class ExportSettings(Settings):
    model_dir: Path = field(metadata={"help": "trained student folder (holds distill.json)", "argument": True})
    output: Path = field(metadata={"help": "export folder to create, e.g. exports/NAME", "aliases": ("-o",)})
    onnx: bool = field(default=False, metadata={"help": "also write model.onnx and validate it against PyTorch"})
    quantize: str | None = field(default=None, metadata={"choices": QUANTIZE_CHOICES, "help": "write model.int8.onnx (dynamic, per-channel); needs --onnx"})
    int8_weights: bool = field(default=False, metadata={"help": "write model.int8w.onnx (int8 weights, bf16/fp32 compute), which distill-score runs with OpenVINO on CPUs with AMX or AVX-512 BF16; needs --onnx"})
    openvino_int8: bool = field(default=False, metadata={"help": "write openvino_model.int8.xml/.bin: static int8 (NNCF, activation ranges from --calibration-data), distill-score's first choice on CPUs with VNNI or AMX; needs --onnx and pip install 'distill[openvino-int8]'"})
    calibration_data: Path | None = field(default=None, metadata={"help": "articles whose activation ranges --openvino-int8 bakes in: training examples or labelled JSONL, not the --validation-data it is gated on"})
    calibration_limit: int = field(default=300, metadata={"help": "articles of --calibration-data used for --openvino-int8"})
    fp16: bool = field(default=False, metadata={"help": "write model.fp16.onnx for GPU serving (ONNX Runtime CUDA) and OpenVINO; needs --onnx"})
    tensorrt: bool = field(default=False, metadata={"help": "build a TensorRT engine (model.plan) when tensorrt is installed"})
    validation_data: Path | None = field(default=None, metadata={"help": "labelled or training-example JSONL for the MAE gate and parity texts"})
    validation_limit: int = field(default=500, metadata={"help": "articles of --validation-data used for the MAE gate"})
    base_model: str | None = field(default=None, metadata={"help": "where the adapter's base model lives, if not where distill.json says"})
    opset: int = field(default=17, metadata={"help": "ONNX opset (at least 17)"})
    parity_tolerance: float = field(default=1e-4, metadata={"help": "max abs difference ONNX fp32 vs PyTorch on standardised outputs"})
    mae_tolerance: float = field(default=0.02, metadata={"help": "how much a quantised variant's MAE may exceed fp32's"})
    parity_texts: int = field(default=32, metadata={"help": "texts of varied length for the parity check"})
    bench_batch: int = field(default=16, metadata={"help": "batch size for the articles/s measurement"})
    bench_articles: int = field(default=64, metadata={"help": "articles per timing round (0: skip timing)"})
    bench_rounds: int = field(default=3, metadata={"help": "timing rounds; the median round is reported"})
    threads: int = field(default=0, metadata={"help": "CPU threads for PyTorch and ONNX Runtime (0: all cores)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing export folder"})

    def problems(self) -> list[str]:
        """Every problem with these settings, each naming the flag and the fix."""
        found = []
        if not self.model_dir.is_dir():
            found.append(f"MODEL_DIR {self.model_dir}: no such folder")
        elif not (self.model_dir / INFO_FILE).is_file():
            found.append(f"MODEL_DIR {self.model_dir}: no {INFO_FILE}; is this a distill model folder?")
        if self.output.exists() and not self.overwrite:
            found.append(f"--output {self.output} already exists; pass --overwrite to replace it")
        if self.output.resolve() == self.model_dir.resolve():
            found.append("--output must differ from MODEL_DIR")
        if self.quantize is not None and self.quantize not in QUANTIZE_CHOICES:
            found.append(f"--quantize {self.quantize!r}: choose one of {', '.join(QUANTIZE_CHOICES)}")
        for flag, used in (("--quantize", self.quantize), ("--int8-weights", self.int8_weights),
                           ("--openvino-int8", self.openvino_int8), ("--fp16", self.fp16),
                           ("--tensorrt", self.tensorrt)):
            if used and not self.onnx:
                found.append(f"{flag} works on the ONNX export; add --onnx")
        if (self.quantize or self.int8_weights or self.openvino_int8 or self.fp16) and self.validation_data is None:
            found.append("--quantize/--int8-weights/--openvino-int8/--fp16 are gated on MAE against labels; "
                         "pass --validation-data FILE.jsonl")
        found += self._openvino_int8_problems()
        for flag, path in (("--validation-data", self.validation_data), ("--calibration-data", self.calibration_data)):
            if path is not None and not path.is_file():
                found.append(f"{flag} {path}: no such file")
        if self.opset < 17:
            found.append(f"--opset {self.opset}: must be at least 17")
        for name in ("validation_limit", "calibration_limit", "parity_texts", "bench_batch", "bench_rounds"):
            if getattr(self, name) < 1:
                found.append(f"--{name.replace('_', '-')} must be at least 1")
        for name in ("bench_articles", "threads"):
            if getattr(self, name) < 0:
                found.append(f"--{name.replace('_', '-')} must be 0 or more")
        if not self.parity_tolerance > 0 or not self.mae_tolerance >= 0:
            found.append("--parity-tolerance must be > 0 and --mae-tolerance >= 0")
        return found

    def _openvino_int8_problems(self) -> list[str]:
        from distill.export.openvino_int8 import INSTALL_HINT, missing_packages

        if not self.openvino_int8:
            return ["--calibration-data is only read by --openvino-int8"] if self.calibration_data else []
        found = []
        if self.calibration_data is None:
            found.append("--openvino-int8 measures activation ranges on real articles; pass --calibration-data "
                         "FILE.jsonl (training articles, e.g. datasets/<filter>/v<N>/train.jsonl)")
        missing = missing_packages()
        if missing:
            found.append(f"--openvino-int8 needs {' and '.join(missing)}: {INSTALL_HINT}")
        return found
