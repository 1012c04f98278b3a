"""Model backends for the runner: each turns token id lists into standardised outputs.

A backend exposes `predict(sequences) -> float32 [n, D]` (the student's
standardised outputs, before TargetScaler) and its `limits`; padding happens
here because only the backend knows its pad id and layout. `open_backend`
picks one from the model folder and the flags:

- `--backend auto`: torch on a CUDA device; on CPU, ONNX Runtime when the
  folder has model.onnx (an export), else torch.
- `--precision auto`: ONNX int8 when model.int8.onnx exists and the device is
  the CPU, torch bf16 on CUDA, otherwise fp32.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.artifact import StudentInfo
from distill.ensemble import TokenRidge
from distill.errors import ConfigError, ModelArtifactError
from distill.serve.batcher import Backend, BackendLimits
from distill.student.encode import pad_sequences
from distill.student.files import ONNX_FILES as EXPORTED_ONNX

# The exports this scorer reads (fp16 is for GPU engines such as TensorRT).
ONNX_FILES = {precision: EXPORTED_ONNX[precision] for precision in ("fp32", "int8")}
# Padded tokens per batch and rows per batch: CPU caches favour small batches,
# a GPU needs large ones to fill its cores.
DEFAULT_LIMITS = {"cpu": (8192, 64), "cuda": (65536, 512)}


@dataclass(frozen=True)
class BackendChoice:
    backend: str  # "torch" or "onnx"
    device: str  # "cpu" or "cuda"
    precision: str  # "fp32", "int8" or "bf16"

    @property
    def label(self) -> str:
        return f"{self.backend}-{self.device}-{self.precision}"


def choose_backend(model_dir: Path, backend: str, device: str, precision: str) -> BackendChoice:
    """Resolve auto flags against the folder's files and what is installed."""
    has_onnx = (model_dir / ONNX_FILES["fp32"]).is_file()
    if device == "auto":
        device = "cuda" if _torch_cuda() else "cpu"
    if backend == "auto":
        backend = "onnx" if has_onnx and device == "cpu" else "torch"
    if precision == "auto":
        if backend == "onnx":
            int8_ok = device == "cpu" and (model_dir / ONNX_FILES["int8"]).is_file()
            precision = "int8" if int8_ok else "fp32"
        else:
            precision = "bf16" if device == "cuda" else "fp32"
    _check_choice(model_dir, BackendChoice(backend, device, precision))
    return BackendChoice(backend, device, precision)


def _check_choice(model_dir: Path, choice: BackendChoice) -> None:
    problems = []
    if choice.backend == "onnx":
        if choice.precision not in ONNX_FILES:
            problems.append(f"--precision {choice.precision}: ONNX has fp32 or int8")
        elif not (model_dir / ONNX_FILES[choice.precision]).is_file():
            problems.append(f"{model_dir}: no {ONNX_FILES[choice.precision]} (run distill-export --onnx)")
        if importlib.util.find_spec("onnxruntime") is None:
            problems.append("--backend onnx needs onnxruntime: pip install onnxruntime")
        elif choice.device == "cuda" and "CUDAExecutionProvider" not in _ort_providers():
            problems.append("--device cuda with ONNX needs onnxruntime-gpu (CUDAExecutionProvider)")
    else:
        if choice.precision == "int8":
            problems.append("--precision int8 needs the onnx backend")
        if importlib.util.find_spec("torch") is None:
            problems.append("--backend torch needs torch: pip install 'distill[cpu]'")
        elif choice.device == "cuda" and not _torch_cuda():
            problems.append("--device cuda: torch sees no CUDA GPU")
    if problems:
        raise ConfigError("cannot use this model as asked:\n  " + "\n  ".join(problems))


def _torch_cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def _ort_providers() -> list[str]:
    import onnxruntime

    return onnxruntime.get_available_providers()


def open_backend(
    model_dir: Path,
    info: StudentInfo,
    choice: BackendChoice,
    threads: int,
    token_budget: int | None = None,
    max_batch: int | None = None,
    compile_model: bool = False,
) -> Backend:
    """Load the model for `choice`; limits default per device. `compile_model`
    (torch only) compiles it with torch.compile during start-up."""
    budget, rows = DEFAULT_LIMITS[choice.device]
    limits = BackendLimits(info.max_tokens, max_batch or rows, token_budget or budget)
    pad_id = pad_token_id(model_dir)
    if choice.backend == "onnx":
        backend = OnnxBackend(model_dir / ONNX_FILES[choice.precision], info, limits, pad_id, choice, threads)
    else:
        backend = TorchBackend(model_dir, info, limits, pad_id, choice, threads, compile_model)
    ensemble = TokenRidge.load(model_dir)
    return backend if ensemble is None else EnsembleBackend(backend, ensemble)


def pad_token_id(model_dir: Path) -> int:
    """The pad id the student was trained with (its saved tokenizer's, else eos)."""
    from distill.student.load import load_tokenizer

    pad = load_tokenizer(model_dir).pad_token_id
    if pad is None:
        raise ModelArtifactError(f"{model_dir}: the tokenizer has neither a pad nor an eos token")
    return int(pad)


class TorchBackend:
    """PyTorch, CPU or CUDA; LoRA adapters merged at load; bf16 + SDPA on GPU.

    Decoders run without an attention mask: with right padding a causal model
    never lets a real token see a pad, so the mask is redundant and SDPA takes
    its fast causal path; the head then runs only at each row's last real token.
    Encoders need the mask only when a batch has padding at all.

    Compiled (torch.compile, dynamic shapes) the forward pass is one graph for
    every batch shape, so encoders always get the mask; the compile runs once
    at start-up (tens of seconds on CPU) and pays off on large corpora: with
    bf16 on a CPU with AMX it more than halved MiniLM's time per article.
    """

    def __init__(self, model_dir: Path, info: StudentInfo, limits: BackendLimits, pad_id: int,
                 choice: BackendChoice, threads: int, compile_model: bool = False):
        import torch

        from distill.student.heads import head_name
        from distill.student.load import load_student

        torch.set_num_threads(threads)
        model, _, _ = load_student(model_dir, device="cpu")
        if hasattr(model, "merge_and_unload"):  # peft: fold LoRA into the weights for speed
            model = model.merge_and_unload()
        dtype = torch.bfloat16 if choice.precision == "bf16" else torch.float32
        self.model = model.to(device=choice.device, dtype=dtype).eval()
        self.device = torch.device(choice.device)
        self.decoder = info.architecture == "decoder"
        self.body = getattr(self.model, self.model.base_model_prefix)
        self.head = getattr(self.model, head_name(self.model))
        self.pad_id = pad_id
        self.limits = limits
        self.dimensions = len(info.dimensions)
        self.compiled = compile_model
        self.name = choice.label + ("-compiled" if compile_model else "")
        self._forward = torch.compile(self._eager_forward, dynamic=True) if compile_model else self._eager_forward
        if compile_model:
            # Two rows of different lengths: a size of 1 would be specialised and recompiled later.
            self.predict([[pad_id] * 17, [pad_id] * 9])

    def predict(self, sequences: list[list[int]]) -> np.ndarray:
        import torch

        ids, mask = pad_sequences(sequences, self.pad_id)
        lengths = mask.sum(axis=1)
        padded = bool((lengths != ids.shape[1]).any())
        attention = self._to_device(mask) if padded or self.compiled else None
        with torch.inference_mode():
            out = self._forward(self._to_device(ids), attention, self._to_device(lengths - 1))
        return out.float().cpu().numpy()

    def _eager_forward(self, ids: Any, attention: Any, last: Any) -> Any:
        import torch

        if self.decoder:
            hidden = self.body(input_ids=ids).last_hidden_state
            return self.head(hidden[torch.arange(ids.shape[0], device=ids.device), last])
        return self.model(input_ids=ids, attention_mask=attention).logits

    def _to_device(self, array: np.ndarray) -> Any:
        import torch

        tensor = torch.from_numpy(array)
        if self.device.type == "cuda":  # pinned host memory lets the copy run asynchronously
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor


class EnsembleBackend:
    """A backend whose outputs are blended with the model folder's token ridge (ensemble.npz)."""

    def __init__(self, model: Backend, ensemble: TokenRidge):
        self.model = model
        self.ensemble = ensemble
        self.limits = model.limits
        self.dimensions = model.dimensions
        self.name = f"{model.name}+ridge"

    def predict(self, sequences: list[list[int]]) -> np.ndarray:
        return self.ensemble.blend(self.model.predict(sequences), sequences)


class OnnxBackend:
    """ONNX Runtime over an export's model.onnx / model.int8.onnx.

    Inputs input_ids and attention_mask (int64 [batch, seq]); output `scores`
    float32 [batch, D], standardised (the export contract).
    """

    def __init__(self, path: Path, info: StudentInfo, limits: BackendLimits, pad_id: int,
                 choice: BackendChoice, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        if choice.device == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        self.session = _onnx_session(path, options, providers)
        names = {i.name for i in self.session.get_inputs()}
        if not {"input_ids", "attention_mask"} <= names:
            raise ModelArtifactError(f"{path}: inputs {sorted(names)}; expected input_ids and attention_mask")
        width = self.session.get_outputs()[0].shape[-1]
        if isinstance(width, int) and width != len(info.dimensions):
            raise ModelArtifactError(
                f"{path}: the model has {width} outputs but {path.parent / 'distill.json'} lists "
                f"{len(info.dimensions)} dimensions; the two do not belong together: re-export the model"
            )
        self.pad_id = pad_id
        self.limits = limits
        self.dimensions = len(info.dimensions)
        self.name = choice.label
        self.path = path

    def predict(self, sequences: list[list[int]]) -> np.ndarray:
        ids, mask = pad_sequences(sequences, self.pad_id)
        out = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        if out.shape != (len(sequences), self.dimensions):
            raise ModelArtifactError(
                f"{self.path}: output shape {out.shape}; expected ({len(sequences)}, {self.dimensions})"
            )
        return out.astype(np.float32, copy=False)


def _onnx_session(path: Path, options: Any, providers: list[str]) -> Any:
    """An ONNX Runtime session; a file that is not a usable ONNX model is one line naming it."""
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except (ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.Fail, ort_errors.NoSuchFile) as exc:
        # ORT says "[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from PATH failed:WHY"
        detail = str(exc).strip().rpartition("failed:")[2].strip() or type(exc).__name__
        raise ModelArtifactError(
            f"{path}: not a usable ONNX model ({detail}); it is corrupt or truncated: "
            "export it again with distill-export --onnx"
        ) from None
