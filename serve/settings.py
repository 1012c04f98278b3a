"""Settings of a `distill-score` run: one typed home for every default.

The CLI fills `ScoreSettings` from its flags (the help text below is the
flags' help) and `validate` reports every problem at once, each naming the
flag and the fix. Nothing here imports torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from distill.errors import ConfigError

BACKENDS = ("auto", "torch", "onnx")
RECORD_FIELDS = ("id", "scores", "overall_score", "tier", "prefilter", "model")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "int8", "bf16")


@dataclass
class ScoreSettings:
    inputs: list[Path] = field(metadata={"help": "corpus JSONL files (.jsonl or .jsonl.gz); articles need id and content/text"})
    model: Path = field(metadata={"help": "model folder with distill.json: a trained run (train/) or an export (exports/NAME)"})
    output: Path = field(metadata={"help": "scored JSONL; if it exists the run resumes and skips ids already in it"})
    filter: str | None = field(default=None, metadata={"help": "filter name or path; default: the filter the model was trained for"})
    backend: str = field(default="auto", metadata={"help": "auto: onnx when the folder has model.onnx and the device is CPU, else torch"})
    device: str = field(default="auto", metadata={"help": "auto: cuda when torch sees a GPU, else cpu"})
    precision: str = field(default="auto", metadata={"help": "auto: onnx int8 when model.int8.onnx exists (CPU), torch bf16 on cuda, else fp32"})
    token_budget: int | None = field(default=None, metadata={"help": "padded tokens per batch; default: the backend's (CPU 8192, GPU 65536)"})
    max_batch: int | None = field(default=None, metadata={"help": "articles per batch at most; default: the backend's (CPU 64, GPU 512)"})
    window: int = field(default=2048, metadata={"help": "articles sorted by length together; bounds memory and work lost to a kill"})
    workers: int = field(default=1, metadata={"help": "tokenizer processes running ahead of the model (0: tokenise in the main process)"})
    threads: int = field(default_factory=lambda: os.cpu_count() or 1, metadata={"help": "CPU threads for the model (default: all cores)"})
    carry: tuple[str, ...] = field(default=(), metadata={"help": "input fields copied into each output record (e.g. url, title)"})
    write_blocked: bool = field(default=True, metadata={"help": "write a record (scores null, prefilter = reason) for articles the prefilter blocks"})
    strict: bool = field(default=False, metadata={"help": "stop at the first bad input line instead of writing it to the rejects file"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar on stderr"})

    @property
    def rejects_path(self) -> Path:
        """`scored.jsonl` -> `scored.rejects.jsonl` beside it."""
        name = self.output.name.removesuffix(".jsonl")
        return self.output.with_name(name + ".rejects.jsonl")

    def validate(self) -> None:
        """Raise one ConfigError listing every problem."""
        problems = self._problems()
        if problems:
            raise ConfigError("invalid settings:\n  " + "\n  ".join(problems))

    def _problems(self) -> list[str]:
        problems = []
        if not self.inputs:
            problems.append("INPUTS: give at least one corpus JSONL file")
        problems += [f"INPUTS: {p}: no such file" for p in self.inputs if not Path(p).is_file()]
        if not Path(self.model).is_dir():
            problems.append(f"--model: {self.model} is not a folder")
        for name, allowed in (("backend", BACKENDS), ("device", DEVICES), ("precision", PRECISIONS)):
            if getattr(self, name) not in allowed:
                problems.append(f"--{name}: {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.precision == "int8" and self.backend == "torch":
            problems.append("--precision: int8 needs the onnx backend (use --backend onnx or auto)")
        if self.precision == "bf16" and self.backend == "onnx":
            problems.append("--precision: bf16 is a torch precision (use --backend torch)")
        for name in ("token_budget", "max_batch", "window", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"--{name.replace('_', '-')}: must be at least 1 (got {value})")
        if self.workers < 0:
            problems.append(f"--workers: must be 0 or more (got {self.workers})")
        problems += [f"--carry {name}: a scored record already has this field" for name in self.carry if name in RECORD_FIELDS]
        if str(self.output).endswith(".gz"):
            # A killed gzip writer leaves a torn member that cannot be trimmed to resume.
            problems.append("--output: write plain .jsonl (resumable after a kill); compress it afterwards")
        if Path(self.output).resolve() in {Path(p).resolve() for p in self.inputs}:
            problems.append("--output: must not be one of the inputs")
        return problems


def help_for(name: str) -> str:
    """The help text of one settings field, for the CLI flag of the same name."""
    return next(f.metadata["help"] for f in fields(ScoreSettings) if f.name == name)
