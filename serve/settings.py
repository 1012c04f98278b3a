"""Settings of a `distill-score` run: one typed home for every default.

The CLI's flags are built from these fields (`distill.settings.options_from`)
and `problems` reports every problem at once, each naming the flag and the
fix; the run checks them (`runner.start_run`), not the CLI. Nothing here
imports torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.columnar import WRITING, folder_problem, is_parquet, pyarrow_problem
from distill.errors import ConfigError
from distill.records import output_error
from distill.settings import Settings

BACKENDS = ("auto", "torch", "onnx", "openvino")
ENGINES = ("local", "ray")
FILE_OUTPUTS = (".jsonl", ".parquet")  # an --output with these suffixes is one file, not a folder
RECORD_FIELDS = ("id", "scores", "overall_score", "tier", "prefilter", "model")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "int8", "bf16", "fp16")


@dataclass
class ScoreSettings(Settings):
    inputs: list[Path] = field(metadata={"argument": True, "help": "corpus files (.jsonl, .jsonl.gz or .parquet) or datasets.save_to_disk folders; articles need id and content/text"})
    output: Path = field(metadata={"aliases": ("-o",), "help": "scored JSONL, or .parquet (journalled beside it, written whole when the run completes); if it exists the run resumes and skips ids already in it. Several filters: a folder (one FILTER.jsonl each, e.g. sustainability-v1.jsonl) or a path with {filter}"})
    model: list[Path] = field(default_factory=list, metadata={"aliases": ("-m",), "help": "model folder with distill.json: a trained run (train/) or an export (exports/NAME); repeat to score with several models in one pass. Default: the student shipped with each --filter"})
    filter: list[str] = field(default_factory=list, metadata={"aliases": ("-f",), "help": "filter name or path; default: the filter the model was trained for. Repeat to score several filters in one pass: with one --model all share its forward pass, with several models they pair in order"})
    engine: str = field(default="local", metadata={"choices": ENGINES, "help": "local: this process and tokenizer workers; ray: a Ray Data pipeline (pip install 'distill[ray]')"})
    ray_address: str | None = field(default=None, metadata={"help": "Ray cluster to join (e.g. auto or ray://host:10001); default: start a local Ray instance (--engine ray)"})
    ray_cpus: int | None = field(default=None, metadata={"help": "CPUs of the local Ray instance started without --ray-address (default: all cores)"})
    actors: int = field(default=1, metadata={"help": "model actors in the Ray pipeline (--engine ray), each holding every model of the run"})
    gpus_per_actor: float | None = field(default=None, metadata={"help": "GPU share of each model actor (--engine ray; e.g. 0.5 puts two on a GPU); default: 1 on --device cuda, else 0"})
    backend: str = field(default="auto", metadata={"choices": BACKENDS, "help": "auto: the fastest this machine, the folder and the install allow, checked at start-up against fp32 (probe.json) with fallback: on CPUs with VNNI/AMX openvino static int8 first; on CPUs with AMX/AVX-512 BF16 openvino bf16 then torch bf16; then onnx int8, then fp32 paths; on cuda torch. onnx is ONNX Runtime"})
    device: str = field(default="auto", metadata={"choices": DEVICES, "help": "auto: cuda when torch sees a GPU, else cpu"})
    precision: str = field(default="auto", metadata={"choices": PRECISIONS, "help": "auto: as --backend auto; int8 is ONNX Runtime's model.int8.onnx or openvino's static openvino_model.int8.xml, bf16 openvino (model.int8w.onnx) or torch, fp16 ONNX Runtime on cuda (model.fp16.onnx)"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model at start-up (torch backend; needs a C++ compiler on CPU): tens of seconds once, then faster batches; pays off from a few thousand articles, most with --precision bf16 on CPUs with AMX"})
    token_budget: int | None = field(default=None, metadata={"help": "padded tokens per batch; default: the backend's (CPU 2048, GPU 65536)"})
    max_batch: int | None = field(default=None, metadata={"help": "articles per batch at most; default: the backend's (CPU 64, GPU 512)"})
    window: int = field(default=2048, metadata={"help": "articles sorted by length together; bounds memory and work lost to a kill"})
    workers: int | None = field(default=None, metadata={"help": "tokenizer processes running ahead of the model (0: tokenise in the main process); default: 0 on CPU, where the model already uses every core, 1 on CUDA; --engine ray: tokenizer actors (at least 1)"})
    threads: int = field(default_factory=lambda: os.cpu_count() or 1, metadata={"help": "CPU threads for the model (default: all cores); --engine ray: per model actor, which reserves at most what the tokenizer actors leave"})
    carry: tuple[str, ...] = field(default=(), metadata={"help": "input fields copied into each output record (e.g. url, title); repeat for several"})
    write_blocked: bool = field(default=True, metadata={"off_flag": "--skip-blocked", "help": "write a record (scores null, prefilter = reason) for articles the prefilter blocks"})
    strict: bool = field(default=False, metadata={"help": "stop at the first bad input line instead of writing it to the rejects file"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar on stderr"})

    def __post_init__(self) -> None:
        self.model, self.filter = models_and_filters(self.model, self.filter)
        self.inputs = [Path(p) for p in self.inputs]
        self.output = Path(self.output)
        self.carry = tuple(self.carry)

    def use_shipped_students(self) -> None:
        """No --model: each --filter's shipped student (filters/<name>/vN/student/)."""
        if self.model:
            return
        from distill.filter_spec import load_filter

        if not self.filter:
            raise ConfigError("--model: give a model folder, or a --filter that ships a student")
        students = []
        for name in self.filter:
            student = load_filter(name).shipped_student
            if student is None:
                raise ConfigError(f"--model: filter {name} ships no student; give --model PATH")
            students.append(student)
        self.model = students

    def model_filter_pairs(self) -> list[tuple[Path, str | None]]:
        """(model folder, filter or None for the model's own) per job, in flag order."""
        models, filters = self.model, self.filter
        if len(models) == 1:
            return [(models[0], name) for name in filters] or [(models[0], None)]
        return list(zip(models, filters or [None] * len(models), strict=True))

    @property
    def folder_output(self) -> bool:
        """Several jobs write FILTER.jsonl files into --output (unless it has {filter})."""
        if "{filter}" in str(self.output):
            return False
        return Path(self.output).is_dir() or (self._jobs() > 1 and not str(self.output).endswith(FILE_OUTPUTS))

    def output_paths(self, filter_ids: list[str]) -> list[Path]:
        """One output per job: `-o` itself for one filter, else the folder or {filter} template."""
        slugs = [filter_id.replace("/", "-") for filter_id in filter_ids]
        if len(set(slugs)) != len(slugs):
            raise ConfigError(f"--filter: the same filter twice ({', '.join(filter_ids)}) would share an output")
        if "{filter}" in str(self.output):
            return [Path(str(self.output).replace("{filter}", slug)) for slug in slugs]
        if self.folder_output:
            try:
                Path(self.output).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise output_error(self.output, exc, "create the output folder") from exc
            return [Path(self.output) / f"{slug}.jsonl" for slug in slugs]
        if len(slugs) > 1:
            raise ConfigError("--output: several filters need a folder or a path with {filter}")
        return [Path(self.output)]

    @property
    def rejects_path(self) -> Path:
        """`scored.jsonl` -> `scored.rejects.jsonl`; a folder -> FOLDER/rejects.jsonl; {filter} -> rejects."""
        if "{filter}" in str(self.output):
            rejects = Path(str(self.output).replace("{filter}", "rejects"))
            return rejects.with_suffix(".jsonl") if is_parquet(rejects) else rejects
        if self.folder_output:
            return Path(self.output) / "rejects.jsonl"
        name = self.output.name.removesuffix(".jsonl").removesuffix(".parquet")
        return self.output.with_name(name + ".rejects.jsonl")

    def _jobs(self) -> int:
        return max(len(self.model), len(self.filter), 1)

    def problems(self) -> list[str]:
        problems = []
        if not self.inputs:
            problems.append("INPUTS: give at least one corpus JSONL file")
        problems += [problem for p in self.inputs if (problem := _input_problem(Path(p)))]
        problems += [f"--model: {m} is not a folder" for m in self.model if not m.is_dir()]
        models, filters = len(self.model), len(self.filter)
        if models > 1 and filters not in (0, models):
            problems.append(f"--filter: given {filters} times for {models} models; give one per --model "
                            "(paired in order) or none (each model's own filter)")
        if len(set(self.filter)) != filters:
            problems.append("--filter: a filter is named twice")
        if self._jobs() > 1 and "{filter}" not in str(self.output) and str(self.output).endswith(FILE_OUTPUTS):
            problems.append("--output: several filters write one file each: give a folder or a path with {filter}")
        for name, allowed in (("backend", BACKENDS), ("device", DEVICES), ("precision", PRECISIONS),
                              ("engine", ENGINES)):
            if getattr(self, name) not in allowed:
                problems.append(f"--{name}: {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.precision == "int8" and self.backend == "torch":
            problems.append("--precision: int8 needs the onnx or openvino backend (use --backend onnx, openvino or auto)")
        if self.precision == "bf16" and self.backend == "onnx":
            problems.append("--precision: bf16 runs on torch or openvino (use --backend torch or openvino)")
        if self.compile and self.backend == "onnx":
            problems.append("--compile: compiles the torch backend (ONNX Runtime optimises its graph itself)")
        if self.gpus_per_actor is not None and self.gpus_per_actor < 0:
            problems.append(f"--gpus-per-actor: must not be negative (got {self.gpus_per_actor})")
        if self.engine != "ray" and (self.ray_address or self.ray_cpus):
            problems.append("--ray-address / --ray-cpus: only with --engine ray")
        for name in ("token_budget", "max_batch", "window", "threads", "actors", "ray_cpus"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"--{name.replace('_', '-')}: must be at least 1 (got {value})")
        if self.workers is not None and self.workers < 0:
            problems.append(f"--workers: must be 0 or more (got {self.workers})")
        problems += [f"--carry {name}: a scored record already has this field" for name in self.carry if name in RECORD_FIELDS]
        if str(self.output).endswith(".gz"):
            # A killed gzip writer leaves a torn member that cannot be trimmed to resume.
            problems.append("--output: write plain .jsonl (resumable after a kill); compress it afterwards")
        if Path(str(self.output).replace("{filter}", "x")).resolve() in {Path(p).resolve() for p in self.inputs}:
            problems.append("--output: must not be one of the inputs")
        if (missing := pyarrow_problem(str(self.output), WRITING)) is not None:
            problems.append(f"--output: {missing}")
        return problems


def _input_problem(path: Path) -> str | None:
    """Why an INPUTS path cannot be read as a corpus file, or None."""
    if path.is_dir():
        problem = folder_problem(path) or pyarrow_problem(path)
        return f"INPUTS: {path}: {problem}" if problem else None
    if not path.exists():
        return f"INPUTS: {path}: no such file"
    if not path.is_file():
        return f"INPUTS: {path}: not a regular file"
    if not os.access(path, os.R_OK):
        return f"INPUTS: {path}: not readable (permission denied)"
    return f"INPUTS: {path}: {missing}" if (missing := pyarrow_problem(path)) else None


def models_and_filters(model: Any, filters: Any) -> tuple[list[Path], list[str]]:
    """--model and --filter as lists; the library also takes one folder or one name as it is."""
    models = [model] if isinstance(model, str | Path) else list(model or [])
    return [Path(m) for m in models], [filters] if isinstance(filters, str) else list(filters or [])
