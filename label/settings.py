"""Typed settings of a labelling run: one home for every default.

CLI flags fill a `LabelSettings`; the filter's `oracle:` section fills what a
flag leaves unset. `validate()` reports every problem at once.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field, fields
from pathlib import Path

from distill.errors import ConfigError
from distill.filter_spec import FilterSpec
from distill.label.oracle.base import GenerationConfig

BACKENDS = ("gemini", "openai")


@dataclass(frozen=True)
class Shorthand:
    """An --llm spelling from the seed guide: the Gemini backend with a model of
    one family. A filter whose oracle.model is of that family keeps its model
    and prices; otherwise `model` is used at its list price, so --max-cost and
    the cost columns stay right when the family changes."""

    family: str  # matched as "-flash" / "-pro" in a model id
    model: str
    price_input: float  # USD per 1M tokens, sync API
    price_output: float


SHORTHANDS = {
    "gemini-flash": Shorthand("flash", "gemini-2.0-flash", 0.10, 0.40),
    "gemini-pro": Shorthand("pro", "gemini-2.5-pro", 1.25, 10.00),
}
LLM_CHOICES = ("gemini", *SHORTHANDS, "openai")
# Models that cannot turn thinking off: a budget of 0 is refused by the API.
MIN_THINKING_BUDGET = {"gemini-2.5-pro": 128}


def _f(default, help_text: str):
    return field(default=default, metadata={"help": help_text})


@dataclass
class LabelSettings:
    filter: str = _f("sustainability/v1", "filter package: name/vN, a bare name (newest version) or a folder")
    source: tuple[str, ...] = _f((), "article JSONL files or globs (quote globs), .gz allowed")
    output_dir: Path = _f(Path("labelled"), "folder for labelled.jsonl, the journal, rejects and run records")
    llm: str = _f("gemini", "oracle backend: gemini (google-genai, the filter's oracle.model); gemini-flash / "
                  "gemini-pro (gemini with the filter's model of that family, else gemini-2.0-flash / "
                  "gemini-2.5-pro at list price); or openai (any OpenAI-compatible chat endpoint)")
    model: str | None = _f(None, "model id; default: the filter's oracle.model (gemini only)")
    base_url: str | None = _f(None, "endpoint URL: required for openai (e.g. http://localhost:8000/v1); for gemini, overrides the API host")
    api_version: str | None = _f(None, "Gemini API version to pin (default: the SDK's)")
    temperature: float | None = _f(None, "sampling temperature; default: the filter's")
    thinking_budget: int | None = _f(None, "thinking tokens (0 = off); default: the filter's")
    max_output_tokens: int | None = _f(None, "cap on answer tokens; default: the filter's")
    price_input: float | None = _f(None, "USD per 1M input tokens; default: the filter's")
    price_output: float | None = _f(None, "USD per 1M output tokens; default: the filter's")
    concurrency: int = _f(8, "requests in flight at once")
    rpm: int | None = _f(None, "requests per minute cap (none: unlimited)")
    tpm: int | None = _f(None, "tokens per minute cap, input + expected output (none: unlimited)")
    timeout_s: float = _f(60.0, "per-request timeout in seconds")
    max_attempts: int = _f(5, "attempts per article in one run before it is counted as failed")
    backoff_base_s: float = _f(1.0, "first retry waits about this long; doubles each retry")
    backoff_max_s: float = _f(60.0, "longest wait between retries")
    max_cost: float | None = _f(None, "stop cleanly before this run's spend could exceed this many USD")
    target_count: int | None = _f(None, "label until the output holds this many articles")
    random_sample: bool = _f(False, "pick articles at random (reproducible with --seed) instead of in file order")
    seed: int = _f(0, "seed for --random-sample")
    strict: bool = _f(False, "stop at the first bad input line instead of rejecting it")
    batch: bool = _f(False, "use the Gemini Batch API (half price, results within 24 h)")
    batch_size: int = _f(1000, "requests per batch job")
    poll_s: float = _f(30.0, "seconds between batch status polls")
    plan: bool = _f(False, "estimate tokens and cost (sync and batch) and exit; no calls, no key needed")
    expected_output_tokens: int = _f(120, "answer length assumed by --plan and the TPM limiter before real answers are journaled")
    progress: bool = _f(True, "show a progress bar")

    def source_files(self) -> list[Path]:
        files: list[Path] = []
        for pattern in self.source:
            matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            files.extend(Path(m) for m in matches)
        return files

    @property
    def backend(self) -> str:
        """gemini or openai: what the --llm value runs on."""
        return "gemini" if self.llm in SHORTHANDS else self.llm

    def _oracle_model(self, spec: FilterSpec) -> tuple[str, float, float]:
        """The model and its sync prices from the filter, after an --llm shorthand."""
        oracle = spec.oracle
        short = SHORTHANDS.get(self.llm)
        if short is None or f"-{short.family}" in oracle.model:
            return oracle.model, oracle.price_input_per_million, oracle.price_output_per_million
        return short.model, short.price_input, short.price_output

    def generation(self, spec: FilterSpec) -> GenerationConfig:
        oracle = spec.oracle
        model = self.model or self._oracle_model(spec)[0]
        thinking = max(oracle.thinking_budget, MIN_THINKING_BUDGET.get(model, 0))
        return GenerationConfig(
            model=model,
            temperature=oracle.temperature if self.temperature is None else self.temperature,
            thinking_budget=thinking if self.thinking_budget is None else self.thinking_budget,
            max_output_tokens=oracle.max_output_tokens if self.max_output_tokens is None else self.max_output_tokens,
        )

    def prices(self, spec: FilterSpec) -> tuple[float, float]:
        """USD per 1M input and output tokens at the sync price."""
        _, p_in, p_out = self._oracle_model(spec)
        return (p_in if self.price_input is None else self.price_input,
                p_out if self.price_output is None else self.price_output)

    def validate(self) -> None:
        problems = []
        if not self.source:
            problems.append("--source: give at least one article JSONL file or glob")
        for pattern in self.source:
            if glob.has_magic(pattern) and not glob.glob(pattern):
                problems.append(f"--source {pattern!r}: the glob matches no file")
            elif not glob.has_magic(pattern) and not Path(pattern).is_file():
                problems.append(f"--source {pattern!r}: no such file")
        if self.llm not in LLM_CHOICES:
            problems.append(f"--llm {self.llm!r}: choose one of {', '.join(LLM_CHOICES)}")
        if self.llm == "openai" and not self.plan and not (self.base_url and self.model):
            problems.append("--llm openai needs --base-url (e.g. http://localhost:8000/v1) and --model")
        if self.batch and self.backend != "gemini":
            problems.append("--batch works with the Gemini backend only (--llm gemini, gemini-flash or gemini-pro)")
        floor = MIN_THINKING_BUDGET.get(self.model or getattr(SHORTHANDS.get(self.llm), "model", ""), 0)
        if self.thinking_budget is not None and self.thinking_budget < floor:
            problems.append(f"--thinking-budget: this model cannot turn thinking off; give at least {floor}")
        for name in ("concurrency", "max_attempts", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')}: must be at least 1")
        for name in ("rpm", "tpm", "target_count"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"--{name.replace('_', '-')}: must be at least 1 (leave it out for no limit)")
        if self.timeout_s <= 0:
            problems.append("--timeout: must be positive")
        if self.max_cost is not None and self.max_cost <= 0:
            problems.append("--max-cost: must be a positive number of USD")
        if problems:
            raise ConfigError("bad settings:\n  - " + "\n  - ".join(problems))

    def to_json(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else
                         str(v) if isinstance(v, Path) else v) for f in fields(self)}


def help_of(name: str) -> str:
    """The help text of a settings field, for the CLI."""
    return LabelSettings.__dataclass_fields__[name].metadata["help"]
