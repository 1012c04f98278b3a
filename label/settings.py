"""Typed settings of a labelling run: one home for every default.

The CLI's flags are built from these fields (`distill.settings.options_from`);
the filter's `oracle:` section fills what a flag leaves unset. `problems()`
lists every problem, each naming the flag and the fix, and the run and the
plan call `validate()` before anything else.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field, fields
from pathlib import Path

from distill.acquisition import STRATEGIES
from distill.columnar import folder_problem, pyarrow_problem
from distill.filter_spec import FilterSpec
from distill.label.oracle.base import GenerationConfig, backend_class
from distill.settings import Settings, flag_of


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


@dataclass
class LabelSettings(Settings):
    filter: str = field(default="sustainability/v1", metadata={"help": "filter package: name/vN, a bare name (newest version) or a folder"})
    source: list[str] = field(default_factory=list, metadata={"help": "article files (.jsonl, .jsonl.gz, .parquet) or globs (quote globs), or datasets.save_to_disk folders; repeat the flag for several"})
    output_dir: Path = field(default=Path("labelled"), metadata={"help": "folder for labelled.jsonl, the journal, rejects and run records"})
    llm: str = field(default="gemini", metadata={"choices": LLM_CHOICES, "help": (
        "oracle backend: gemini (google-genai, the filter's oracle.model); gemini-flash / "
        "gemini-pro (gemini with the filter's model of that family, else gemini-2.0-flash / "
        "gemini-2.5-pro at list price); or openai (any OpenAI-compatible chat endpoint)")})
    model: str | None = field(default=None, metadata={"help": "model id; default: the filter's oracle.model (gemini only)"})
    base_url: str | None = field(default=None, metadata={"help": "endpoint URL: required for openai (e.g. http://localhost:8000/v1); for gemini, overrides the API host"})
    api_version: str | None = field(default=None, metadata={"help": "Gemini API version to pin (default: the SDK's)"})
    temperature: float | None = field(default=None, metadata={"help": "sampling temperature; default: the filter's"})
    thinking_budget: int | None = field(default=None, metadata={"help": "thinking tokens (0 = off); default: the filter's"})
    max_output_tokens: int | None = field(default=None, metadata={"help": "cap on answer tokens; default: the filter's"})
    price_input: float | None = field(default=None, metadata={"help": "USD per 1M input tokens; default: the filter's"})
    price_output: float | None = field(default=None, metadata={"help": "USD per 1M output tokens; default: the filter's"})
    concurrency: int = field(default=8, metadata={"help": "requests in flight at once"})
    rpm: int | None = field(default=None, metadata={"help": "requests per minute cap (none: unlimited)"})
    tpm: int | None = field(default=None, metadata={"help": "tokens per minute cap, input + expected output (none: unlimited)"})
    timeout_s: float = field(default=60.0, metadata={"help": "per-request timeout in seconds", "flag": "--timeout"})
    max_attempts: int = field(default=5, metadata={"help": "attempts per article in one run before it is counted as failed"})
    backoff_base_s: float = field(default=1.0, metadata={"help": "first retry waits about this long; doubles each retry", "flag": "--backoff-base"})
    backoff_max_s: float = field(default=60.0, metadata={"help": "longest wait between retries", "flag": "--backoff-max"})
    max_cost: float | None = field(default=None, metadata={"help": "stop cleanly before this run's spend could exceed this many USD"})
    target_count: int | None = field(default=None, metadata={"help": "label until the output holds this many articles"})
    random_sample: bool = field(default=False, metadata={"help": "pick articles at random (reproducible with --seed) instead of in file order"})
    seed: int = field(default=0, metadata={"help": "seed for --random-sample and --select"})
    select: str | None = field(default=None, metadata={"choices": STRATEGIES, "help": (
        "choose the --target-count articles by a predictor's scores of the unlabelled pool: random, boundary "
        "(predicted near a tier threshold or gatekeeper), uncertain (two predictors disagree), rare (predicted "
        "rare tier, a share kept random to explore) or mixed (a share of each; the default with --student). "
        "Picks and reasons go to OUTPUT_DIR/selection.jsonl; a rerun resumes the same picks")})
    student: Path | None = field(default=None, metadata={"help": (
        "student folder (distill.json) whose scores --select ranks by; without it, TF-IDF + ridge fitted "
        "on the labels already in OUTPUT_DIR")})
    strict: bool = field(default=False, metadata={"help": "stop at the first bad input line instead of rejecting it"})
    batch: bool = field(default=False, metadata={"help": "use the backend's batch API (Gemini: half price, results within 24 h)"})
    batch_size: int = field(default=1000, metadata={"help": "requests per batch job"})
    poll_s: float = field(default=30.0, metadata={"help": "seconds between batch status polls", "flag": "--poll"})
    plan: bool = field(default=False, metadata={"help": "estimate tokens and cost (sync and batch) and exit; no calls, no key needed"})
    expected_output_tokens: int = field(default=120, metadata={"help": "answer length assumed by --plan and the TPM limiter before real answers are journaled"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def source_files(self) -> list[Path]:
        files: list[Path] = []
        for pattern in self.source:
            matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            files.extend(Path(m) for m in matches)
        return files

    @property
    def strategy(self) -> str | None:
        """The --select strategy: mixed when only --student is given, None for file order / --random-sample."""
        return self.select or ("mixed" if self.student is not None else None)

    @property
    def backend(self) -> str:
        """gemini or openai (a name in oracle.base.BACKENDS): what the --llm value runs on."""
        return _backend_of(self.llm)

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

    def problems(self) -> list[str]:
        problems = self._source_problems()
        if self.llm not in LLM_CHOICES:
            problems.append(f"--llm {self.llm!r}: choose one of {', '.join(LLM_CHOICES)}")
        elif self.batch and not backend_class(self.backend).supports_batch:
            problems.append(self._no_batch_problem())
        if self.llm == "openai" and not self.plan and not (self.base_url and self.model):
            problems.append("--llm openai needs --base-url (e.g. http://localhost:8000/v1) and --model")
        floor = MIN_THINKING_BUDGET.get(self.model or getattr(SHORTHANDS.get(self.llm), "model", ""), 0)
        if self.thinking_budget is not None and self.thinking_budget < floor:
            problems.append(f"--thinking-budget: this model cannot turn thinking off; give at least {floor}")
        flags = {f.name: flag_of(f) for f in fields(self)}
        for name in ("concurrency", "max_attempts", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{flags[name]}: must be at least 1")
        for name in ("rpm", "tpm", "target_count"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{flags[name]}: must be at least 1 (leave it out for no limit)")
        if self.timeout_s <= 0:
            problems.append(f"{flags['timeout_s']}: must be positive")
        if self.max_cost is not None and self.max_cost <= 0:
            problems.append("--max-cost: must be a positive number of USD")
        return problems + self._select_problems()

    def _select_problems(self) -> list[str]:
        if self.strategy is None:
            return []
        problems = []
        if self.target_count is None:
            problems.append("--select: give --target-count N (how many labels the output should hold)")
        if self.random_sample:
            problems.append("--random-sample and --select both choose the articles; use --select random instead")
        if self.student is not None and not (Path(self.student) / "distill.json").is_file():
            problems.append(f"--student: {self.student} has no distill.json (a distill-train run or export)")
        return problems

    def _source_problems(self) -> list[str]:
        if not self.source:
            return ["--source: give at least one article JSONL file or glob"]
        problems = []
        for pattern in self.source:
            if glob.has_magic(pattern) and not glob.glob(pattern):
                problems.append(f"--source {pattern!r}: the glob matches no file")
            elif not glob.has_magic(pattern) and not Path(pattern).is_file():
                problem = folder_problem(Path(pattern)) if Path(pattern).is_dir() else "no such file"
                if problem:
                    problems.append(f"--source {pattern!r}: {problem}")
        missing = next((f"{path}: {problem}" for path in self.source_files() if (problem := pyarrow_problem(path))),
                       None)
        return problems + ([f"--source {missing}"] if missing else [])  # one line, not one per file

    def _no_batch_problem(self) -> str:
        """--batch with a backend whose `supports_batch` is False (reads each backend's class)."""
        with_batch = [llm for llm in LLM_CHOICES if backend_class(_backend_of(llm)).supports_batch]
        return (f"--batch: the {self.backend} backend (--llm {self.llm}) has no batch API; drop --batch, "
                f"or use a backend that has one (--llm {', '.join(with_batch)})")


def _backend_of(llm: str) -> str:
    """The backend an --llm value runs on: a shorthand names a Gemini model family."""
    return "gemini" if llm in SHORTHANDS else llm

