"""Model backends for the runner: each turns token id lists into standardised outputs.

A backend exposes `predict(sequences) -> float32 [n, D]` (the student's
standardised outputs, before TargetScaler) and its `limits`; padding happens
here because only the backend knows its pad id and layout.

`backend_candidates` lists what the flags allow, fastest first for this
machine (`auto` flags leave several, explicit ones one); `open_best_backend`
opens the first that loads and, for an auto choice, passes the start-up
parity probe (probe.json, distill.student.probe), falling back to the next
and saying why. On a CPU the order is:

- with VNNI or AMX int8 (`distill.cpu_features`): OpenVINO static int8
  (openvino_model.int8.xml, `distill-export --openvino-int8`) first;
- with AMX or AVX-512 BF16: OpenVINO bf16 over the export's model.int8w.onnx
  (int8 weights; or model.fp16.onnx / model.onnx), then torch bf16 (without
  AMX, a bf16 choice races the next int8 candidate at start-up); bf16
  elsewhere is emulated and never chosen;
- ONNX Runtime int8 (model.int8.onnx), OpenVINO static int8 where the CPU has
  no int8 units (unmeasured there, so after the established path), then ONNX
  Runtime or OpenVINO fp32, then torch fp32.

On CUDA: torch bf16, else ONNX Runtime fp16/fp32 (onnxruntime-gpu). The
shipped student carries openvino_model.int8.xml, model.int8.onnx,
model.int8w.onnx and probe.json, so it scores without torch (`pip install 'distill[score]'`).
"""

from __future__ import annotations

import importlib.util
import queue
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.artifact import StudentInfo
from distill.cpu_features import CpuFeatures, cpu_features
from distill.ensemble import TokenRidge
from distill.errors import ConfigError, ModelArtifactError
from distill.serve.batcher import Backend, BackendLimits, padded_shape
from distill.student.encode import pad_sequences
from distill.student.files import ADAPTER_FILE, FULL_FILE, FULL_INDEX_FILE, OPENVINO_INT8_FILE
from distill.student.files import ONNX_FILES as EXPORTED_ONNX
from distill.student.openvino_settings import compile_configs
from distill.student.probe import PROBE_TEXTS, Probe, ProbeResult, compare, read_probe
from distill.timing import fastest_run

# The file each runtime reads per precision, in order of preference.
ONNX_FILES = {"fp32": (EXPORTED_ONNX["fp32"],), "int8": (EXPORTED_ONNX["int8"],),
              "fp16": (EXPORTED_ONNX["fp16"],)}
OPENVINO_FILES = {"int8": (OPENVINO_INT8_FILE,),
                  "bf16": (EXPORTED_ONNX["int8w"], EXPORTED_ONNX["fp16"], EXPORTED_ONNX["fp32"]),
                  "fp32": (EXPORTED_ONNX["fp32"],)}
BACKEND_PACKAGES = {"torch": "torch", "onnx": "onnxruntime", "openvino": "openvino"}
INSTALL_HINTS = {"torch": "pip install 'distill[cpu]'", "onnx": "pip install 'distill[score]'",
                 "openvino": "pip install 'distill[openvino]'"}
# Padded tokens per batch and rows per batch: CPU caches favour small batches
# (MiniLM, 253-token articles, 2 AMX cores: 2,048 tokens against 8,192 took ONNX
# Runtime int8 from 15.2 to 12.1 ms/article and fp32 from 28.8 to 23.6; OpenVINO
# bf16 and torch bf16 within noise), a GPU needs large ones to fill its cores.
DEFAULT_LIMITS = {"cpu": (2048, 64), "cuda": (65536, 512)}


@dataclass(frozen=True)
class BackendChoice:
    backend: str  # "torch", "onnx" (ONNX Runtime) or "openvino"
    device: str  # "cpu" or "cuda"
    precision: str  # "fp32", "int8", "bf16" or "fp16"

    @property
    def label(self) -> str:
        return f"{self.backend}-{self.device}-{self.precision}"


def ranked_choices(device: str, features: CpuFeatures, emulated: bool = False) -> list[BackendChoice]:
    """Every backend and precision for `device`, the fastest expected first on this CPU;
    bf16 on a CPU without bf16 units only with `emulated` (an explicit --precision bf16)."""
    if device == "cuda":
        order = [("torch", "bf16"), ("onnx", "fp16"), ("torch", "fp32"), ("onnx", "fp32")]
    else:
        bf16 = [("openvino", "bf16"), ("torch", "bf16")]
        # OpenVINO fp32 was only ~15% ahead of ONNX Runtime fp32 (AMX Xeon): ORT, the
        # established path, goes first; OpenVINO leads where it has bf16 or int8 units.
        # Static int8 beat bf16 on an AMD EPYC with VNNI (9.2 against 13.7 ms/article) and on
        # a Xeon with AMX hidden (13.0 against 23.2);
        # where the CPU has no int8 units it is unmeasured, so it follows ORT's int8.
        int8_first = [("openvino", "int8")] if features.int8 else []
        rest = [("onnx", "int8")] + ([] if features.int8 else [("openvino", "int8")]) + [
            ("onnx", "fp32"), ("openvino", "fp32"), ("torch", "fp32")]
        order = int8_first + (bf16 + rest if features.bf16 else rest + (bf16 if emulated else []))
    return [BackendChoice(backend, device, precision) for backend, precision in order]


def backend_candidates(model_dir: Path, backend: str, device: str, precision: str,
                       features: CpuFeatures | None = None) -> list[BackendChoice]:
    """What the flags allow for this folder and install, fastest first; `auto` flags
    may give several (the caller probes and falls back), explicit ones give one."""
    if device == "auto":
        device = "cuda" if _torch_cuda() else "cpu"
    wanted = [c for c in ranked_choices(device, features or cpu_features(), emulated=precision != "auto")
              if backend in ("auto", c.backend) and precision in ("auto", c.precision)]
    usable = [c for c in wanted if not choice_problems(model_dir, c)]
    if usable:
        return usable
    if len(wanted) == 1:
        _check_choice(model_dir, wanted[0])
    if not wanted:  # e.g. --backend onnx --precision bf16
        asked = BackendChoice("torch" if backend == "auto" else backend, device,
                              "fp32" if precision == "auto" else precision)
        pairs = ", ".join(c.label for c in ranked_choices(device, features or cpu_features()))
        raise ConfigError("cannot use this model as asked:\n  " + "\n  ".join(
            choice_problems(model_dir, asked) or [f"{asked.label} is not a path distill-score runs; it runs {pairs}"]))
    raise ConfigError(f"{model_dir}: no backend can run this model here; the candidates were:\n  "
                      + "\n  ".join(f"{c.label}: {'; '.join(choice_problems(model_dir, c))}" for c in wanted))


def choose_backend(model_dir: Path, backend: str, device: str, precision: str) -> BackendChoice:
    """The first candidate: what the run uses unless its start-up probe fails."""
    return backend_candidates(model_dir, backend, device, precision)[0]


def model_file(model_dir: Path, choice: BackendChoice) -> Path | None:
    """The ONNX or OpenVINO IR file `choice` reads (None for torch, or when the folder has none)."""
    files = OPENVINO_FILES if choice.backend == "openvino" else ONNX_FILES
    for name in files.get(choice.precision, ()):
        if (model_dir / name).is_file():
            return model_dir / name
    return None


def choice_problems(model_dir: Path, choice: BackendChoice) -> list[str]:
    """Why `choice` cannot run this folder here; empty when it can."""
    problems = []
    package = BACKEND_PACKAGES[choice.backend]
    if importlib.util.find_spec(package) is None:
        problems.append(f"--backend {choice.backend} needs {package}: {INSTALL_HINTS[choice.backend]}")
    if choice.backend == "torch":
        if choice.precision not in ("fp32", "bf16"):
            problems.append(f"--precision {choice.precision} needs the onnx backend")
        elif not any((model_dir / name).is_file() for name in (ADAPTER_FILE, FULL_FILE, FULL_INDEX_FILE)):
            problems.append(f"{model_dir}: no PyTorch weights (an ONNX-only export); use --backend onnx")
        elif choice.device == "cuda" and not problems and not _torch_cuda():
            problems.append("--device cuda: torch sees no CUDA GPU")
        return problems
    files = OPENVINO_FILES if choice.backend == "openvino" else ONNX_FILES
    if choice.precision not in files:
        problems.append(f"--precision {choice.precision}: {choice.backend} runs {' or '.join(files)}")
    elif model_file(model_dir, choice) is None:
        problems.append(f"{model_dir}: no {' or '.join(files[choice.precision])} (run distill-export --onnx"
                        f"{_export_flag(choice)})")
    if choice.backend == "openvino" and choice.device != "cpu":
        problems.append("--backend openvino runs on the CPU here; use --device cpu")
    elif choice.backend == "onnx" and choice.device == "cuda" and not problems \
            and "CUDAExecutionProvider" not in _ort_providers():
        problems.append("--device cuda with ONNX needs onnxruntime-gpu instead of onnxruntime "
                        "(pip uninstall -y onnxruntime && pip install onnxruntime-gpu)")
    return problems


def _export_flag(choice: BackendChoice) -> str:
    if choice.backend == "openvino":
        return {"bf16": " --int8-weights", "int8": " --openvino-int8"}.get(choice.precision, "")
    return {"int8": " --quantize int8", "fp16": " --fp16"}.get(choice.precision, "")


def _check_choice(model_dir: Path, choice: BackendChoice) -> None:
    problems = choice_problems(model_dir, choice)
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


def open_best_backend(model_dir: Path, info: StudentInfo, backend: str, device: str, precision: str,
                      threads: int, token_budget: int | None = None, max_batch: int | None = None,
                      compile_model: bool = False, streams: int = 1) -> Backend:
    """The first candidate that loads and, when several were possible, passes the
    start-up probe; `backend.note` says what was chosen, why, and any fallback.

    On a CPU whose bf16 flags come without AMX, bf16 is not always fast (an AMD
    EPYC ran it well, an Intel Xeon whose hypervisor hides AMX did not), so an
    auto bf16 choice is timed against the next int8 candidate and the faster kept."""
    candidates = backend_candidates(model_dir, backend, device, precision)
    auto = len(candidates) > 1 or "auto" in (backend, precision)
    probe = read_probe(model_dir) if auto else None
    if auto and probe is None and candidates[0].precision != "fp32":
        probe = live_probe(model_dir, info, candidates, threads)
    skipped: list[str] = []

    def opened(choice: BackendChoice, last: bool, why_not: list[str]) -> tuple[Backend, ProbeResult | None] | None:
        """The model for `choice` if it loads and passes the probe, else None and the reason in
        `why_not`. The last candidate is kept whatever its probe says; when it does not load (or
        any candidate of an explicit choice does not), that raises."""
        try:
            model = open_model(model_dir, info, choice, threads, token_budget, max_batch, compile_model, streams)
        except ModelArtifactError as exc:
            if last or not auto:
                raise
            why_not.append(f"{choice.label} did not load ({str(exc).splitlines()[0]})")
            return None
        result = compare(model.predict(probe.sequences), probe, choice.precision) if probe else None
        if result is not None and not result.passed and not last:
            why_not.append(f"{choice.label} failed its start-up probe ({result.describe()})")
            return None
        return model, result

    for position, choice in enumerate(candidates):
        found = opened(choice, position == len(candidates) - 1, skipped)
        if found is None:
            continue
        model, result = found
        detail = getattr(model, "detail", "")
        if auto and choice.device == "cpu" and choice.precision == "bf16" and not cpu_features().amx:
            choice, model, result, detail = _faster_than_bf16(choice, model, result, candidates[position + 1:], opened)
        chosen = with_ensemble(model, model_dir)
        chosen.note = _choice_note(choice, auto, result, skipped, detail)
        return chosen
    raise AssertionError("unreachable: the last candidate returns or raises")


def _faster_than_bf16(choice: BackendChoice, model: Backend, result: ProbeResult | None,
                      rest: list[BackendChoice], opened: Any) -> tuple[BackendChoice, Backend, ProbeResult | None, str]:
    """The bf16 choice, or the next int8 candidate if it runs a full batch faster here."""
    rival = next((c for c in rest if c.precision == "int8"), None)
    found = opened(rival, False, []) if rival is not None else None  # a rival that fails is simply not raced
    if found is None:
        return choice, model, result, getattr(model, "detail", "")
    rival_model, rival_result = found
    mine, theirs = full_batch_seconds(model), full_batch_seconds(rival_model)
    timing = (f"timed against each other on a full batch ({choice.label} {1000 * mine:.0f} ms, "
              f"{rival.label} {1000 * theirs:.0f} ms): bf16 flags without AMX do not promise fast bf16")
    if theirs < mine:
        return rival, rival_model, rival_result, "; ".join(filter(None, [timing, getattr(rival_model, "detail", "")]))
    return choice, model, result, "; ".join(filter(None, [timing, getattr(model, "detail", "")]))


def full_batch_seconds(model: Backend) -> float:
    """How long one full batch (token budget in rows of max_tokens) takes `model`, at best."""
    batch = [[0] * model.limits.max_tokens for _ in range(full_batch_rows(model.limits))]
    return fastest_run(lambda: model.predict(batch))


def full_batch_rows(limits: BackendLimits) -> int:
    return max(1, min(limits.max_batch, limits.token_budget // limits.max_tokens))


def live_probe(model_dir: Path, info: StudentInfo, candidates: list[BackendChoice], threads: int) -> Probe | None:
    """A folder without probe.json: the first fp32 candidate's outputs on PROBE_TEXTS,
    one article at a time (no padding); None when no fp32 path can run here."""
    from distill.serve.tokenize import StudentEncoder

    reference = next((c for c in candidates if c.precision == "fp32"), None)
    if reference is None:
        return None
    model = open_model(model_dir, info, reference, threads)
    sequences = StudentEncoder(model_dir, info.max_tokens, info.head_share).encode(list(PROBE_TEXTS))
    outputs = np.concatenate([model.predict([seq]) for seq in sequences]).astype(np.float64)
    return Probe(sequences, outputs, reference.label)


def _choice_note(choice: BackendChoice, auto: bool, result: ProbeResult | None, skipped: list[str],
                 detail: str = "") -> str:
    why = f"chosen for this CPU ({cpu_features().describe()})" if auto and choice.device == "cpu" else "as asked"
    checked = f"; start-up probe {result.describe()}" if result else ""
    if auto and result is None and choice.precision != "fp32":
        checked = "; not probed: no probe.json and no fp32 path to compare with"
    failed = f"; {'; '.join(skipped)}, so it fell back" if skipped else ""
    if result is not None and not result.passed:
        checked = f"; start-up probe FAILED too ({result.describe()}), the last candidate, kept"
    configured = f"; {detail}" if detail else ""
    return f"backend {choice.label} {why}{checked}{failed}{configured}"


def open_backend(
    model_dir: Path,
    info: StudentInfo,
    choice: BackendChoice,
    threads: int,
    token_budget: int | None = None,
    max_batch: int | None = None,
    compile_model: bool = False,
) -> Backend:
    """Load the model for `choice`, blended with the folder's token ridge if it has one."""
    model = open_model(model_dir, info, choice, threads, token_budget, max_batch, compile_model)
    return with_ensemble(model, model_dir)


def open_model(model_dir: Path, info: StudentInfo, choice: BackendChoice, threads: int,
               token_budget: int | None = None, max_batch: int | None = None,
               compile_model: bool = False, streams: int = 1) -> Backend:
    """The network alone for `choice`; limits default per device. `compile_model`
    (torch only) compiles it with torch.compile during start-up; `streams` (OpenVINO
    only; the others run one call at a time) splits its threads into that many streams."""
    _check_choice(model_dir, choice)
    budget, rows = DEFAULT_LIMITS[choice.device]
    limits = BackendLimits(info.max_tokens, max_batch or rows, token_budget or budget)
    pad_id = pad_token_id(model_dir)
    if choice.backend == "onnx":
        return OnnxBackend(model_file(model_dir, choice), info, limits, pad_id, choice, threads)
    if choice.backend == "openvino":
        limits = BackendLimits(limits.max_tokens, limits.max_batch, limits.token_budget, streams,
                               OpenVinoBackend.WIDTH_STEP)
        return OpenVinoBackend(model_file(model_dir, choice), info, limits, pad_id, choice, threads)
    return TorchBackend(model_dir, info, limits, pad_id, choice, threads, compile_model)


def with_ensemble(model: Backend, model_dir: Path) -> Backend:
    ensemble = TokenRidge.load(model_dir)
    return model if ensemble is None else EnsembleBackend(model, ensemble)


def pad_token_id(model_dir: Path) -> int:
    """The pad id the student was trained with (its saved tokenizer's, else eos)."""
    from distill.serve.tokenize import student_tokenizer

    pad = student_tokenizer(model_dir).pad_token_id
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

    note = ""  # why open_best_backend chose it (empty when opened directly)

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

    note = ""  # why open_best_backend chose it (empty when opened directly)

    def __init__(self, model: Backend, ensemble: TokenRidge):
        self.model = model
        self.ensemble = ensemble
        self.limits = model.limits
        self.dimensions = model.dimensions
        self.name = f"{model.name}+ridge"

    def predict(self, sequences: list[list[int]]) -> np.ndarray:
        return self.ensemble.blend(self.model.predict(sequences), sequences)


class ExportBackend:
    """What the runtimes over an export's ONNX file share: the export contract is inputs
    input_ids and attention_mask (int64 [batch, seq]) and output `scores` float32
    [batch, D], standardised."""

    note = ""  # why open_best_backend chose it (empty when opened directly)
    detail = ""  # how it configured itself on this machine, if it chose anything

    def __init__(self, path: Path, info: StudentInfo, limits: BackendLimits, pad_id: int, choice: BackendChoice):
        self.pad_id = pad_id
        self.limits = limits
        self.dimensions = len(info.dimensions)
        self.name = choice.label
        self.path = path

    def _checked(self, out: np.ndarray, rows: int) -> np.ndarray:
        if out.shape != (rows, self.dimensions):
            raise ModelArtifactError(f"{self.path}: output shape {out.shape}; expected ({rows}, {self.dimensions})")
        return out


class OnnxBackend(ExportBackend):
    """ONNX Runtime over an export's model.onnx / model.int8.onnx / model.fp16.onnx."""

    def __init__(self, path: Path, info: StudentInfo, limits: BackendLimits, pad_id: int,
                 choice: BackendChoice, threads: int):
        import onnxruntime as ort

        super().__init__(path, info, limits, pad_id, choice)

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

    def predict(self, sequences: list[list[int]]) -> np.ndarray:
        ids, mask = pad_sequences(sequences, self.pad_id)
        out = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return self._checked(out, len(sequences)).astype(np.float32, copy=False)


class OpenVinoBackend(ExportBackend):
    """OpenVINO on the CPU over an export's ONNX file or its static int8 IR (the
    export contract as for OnnxBackend), compiled as the export's gate compiled
    it (distill.student.openvino_settings): bf16 compute runs on AMX / AVX-512
    BF16; fp32 pins fp32; int8 runs the quantised MatMuls in int8 and, where the
    settings offer two precisions for the ops between them, keeps the one that
    ran a full batch faster here at start-up (`detail` says which and by how much).

    OpenVINO keeps compiled kernels for every input shape it has seen (about
    2 MB each here: 750 shapes took a process from 133 MB to 1.46 GB), so batches
    are padded to a bounded set of shapes (batcher.padded_shape, with WIDTH_STEP
    in the limits so batches are planned in those shapes): widths to a multiple
    of WIDTH_STEP (padding is masked, outputs are unchanged) and row counts to a
    power of two or the budget's rows at that width (extra rows repeat the first).
    """

    WIDTH_STEP = 32

    def __init__(self, path: Path, info: StudentInfo, limits: BackendLimits, pad_id: int,
                 choice: BackendChoice, threads: int):
        import openvino as ov

        super().__init__(path, info, limits, pad_id, choice)
        core = ov.Core()
        compiled = {}
        for config in compile_configs(choice.precision, threads, streams=limits.streams):
            try:
                compiled[str(config["INFERENCE_PRECISION_HINT"])] = core.compile_model(str(path), "CPU", config)
            except RuntimeError as exc:  # OpenVINO reports unreadable or unconvertible models so
                raise ModelArtifactError(f"{path}: OpenVINO cannot run it ({_openvino_reason(exc)})") from None
        model = self._fastest(compiled) if len(compiled) > 1 else next(iter(compiled.values()))
        # One infer request per stream; a call takes a free one, so `streams` threads may call at once.
        self.requests: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(limits.streams):
            self.requests.put(model.create_infer_request())

    def _fastest(self, compiled: dict[str, Any]) -> Any:
        """The compiled model that runs one full batch (the token budget in rows of max_tokens) fastest."""
        rows = full_batch_rows(self.limits)
        ids = np.full((rows, self.limits.max_tokens), self.pad_id, dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        seconds = {hint: fastest_run(lambda request=model.create_infer_request(): request.infer(feeds))
                   for hint, model in compiled.items()}
        best = min(seconds, key=seconds.get)
        self.detail = (f"{best} between the int8 MatMuls (a {rows}x{self.limits.max_tokens} batch took "
                       + ", ".join(f"{1000 * s:.0f} ms in {hint}" for hint, s in seconds.items()) + ")")
        return compiled[best]

    def predict(self, sequences: list[list[int]]) -> np.ndarray:
        ids, mask = self._bucketed(sequences)
        request = self.requests.get()
        try:
            out = self._checked(request.infer({"input_ids": ids, "attention_mask": mask})[0], len(ids))
            return np.array(out[: len(sequences)], dtype=np.float32)  # a copy: the request reuses its buffer
        finally:
            self.requests.put(request)

    def _bucketed(self, sequences: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        rows, width = padded_shape(len(sequences), max(map(len, sequences)), self.limits)
        ids, mask = pad_sequences(list(sequences) + [sequences[0]] * (rows - len(sequences)), self.pad_id)
        extra = width - ids.shape[1]
        if extra:
            ids = np.pad(ids, ((0, 0), (0, extra)), constant_values=self.pad_id)
            mask = np.pad(mask, ((0, 0), (0, extra)))
        return ids, mask


def _openvino_reason(exc: Exception) -> str:
    """OpenVINO's message without its source-location lines ("Exception from src/...", "Check ... failed at")."""
    lines = [line.strip() for line in str(exc).splitlines()]
    kept = [line for line in lines if line and not line.startswith(("Exception from", "Check '"))]
    return " ".join(kept)[:300] or type(exc).__name__


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
