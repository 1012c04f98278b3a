"""The streaming scoring pipeline behind `distill-score` (the local engine).

    read + parse + dedupe + prefilter per filter (main process, chunk by chunk)
      -> tokenise (worker processes, one pool per distinct tokenizer; a
         bounded number of chunks in flight)
      -> window of `window` articles needing a model, sorted by length into
         token-budget batches -> each distinct model once (batcher.predict_window)
      -> postfilter per filter (scaler, calibration, overall, tier) -> its output

While the models work on one window the workers tokenise the next, so
tokenising overlaps inference; only ids (for dedupe and resume) grow with
the corpus, every other buffer is bounded by the window. Filters, models
and outputs are resolved by jobs.py, which the Ray engine shares.

Output order is input order: a window's records (scored and blocked) are
written when the window is done, in the order the articles were read. A kill
loses at most the window in progress; the rerun skips ids already written
(resume.py), per output; a second run on the same output stops at once
(lock.py), since two would each write every record. A Parquet output is
journalled and published when the run completes (distill/columnar.py). Within one input, the first line with an id wins;
later lines with that id are rejected as duplicates. Bad lines go to the
rejects file, which each run rewrites (every run re-reads all input, so it
sees them all).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from distill.columnar import OutputWriter, open_output, publish_outputs
from distill.records import RejectsWriter, output_error
from distill.serve.batcher import Timings
from distill.serve.jobs import (
    Entry,
    Job,
    Plan,
    ReadCounts,
    build_plan,
    chunk_size,
    group_rows,
    open_backends,
    read_chunks,
    resume_plan,
    score_window,
    write_window,
)
from distill.serve.lock import OutputLock
from distill.serve.settings import ScoreSettings
from distill.serve.tokenize import TokenizerPool


@dataclass
class RunSummary:
    rejects: Path
    jobs: list[Job]
    backend: str = ""
    engine: str = "local"
    articles: int = 0  # articles run through the model(s)
    rejected: int = 0
    resumed: int = 0  # articles every output already had, skipped
    startup: float = 0.0  # loading models, tokenizers and workers; resume scan
    seconds: float = 0.0  # the pipeline itself
    timings: Timings = field(default_factory=Timings)
    notes: list[str] = field(default_factory=list)

    @property
    def filter_id(self) -> str:
        return ", ".join(job.spec.id for job in self.jobs)

    @property
    def model_id(self) -> str:
        return ", ".join(dict.fromkeys(job.postfilter.model_id for job in self.jobs))

    @property
    def scored(self) -> int:
        """Scored records over all outputs (articles x filters)."""
        return sum(job.scored for job in self.jobs)

    @property
    def blocked(self) -> int:
        return sum(job.blocked for job in self.jobs)

    @property
    def tiers(self) -> Counter:
        return sum((job.tiers for job in self.jobs), Counter())

    @property
    def articles_per_second(self) -> float:
        return self.articles / self.seconds if self.seconds else 0.0


def start_run(settings: ScoreSettings, stack: ExitStack,
              progress: Callable[[int], None] | None = None) -> tuple[Plan, RunSummary]:
    """Resolve the shipped students (no --model), validate, resolve jobs, lock the outputs
    (held until `stack` closes), read resume state, start a fresh rejects file and tell
    `progress` the run has started (0). Nothing is read or trimmed before the lock."""
    settings.use_shipped_students()
    settings.validate()
    plan = build_plan(settings)
    stack.enter_context(OutputLock([job.output for job in plan.jobs] + [plan.rejects]))
    resume_plan(plan)
    summary = RunSummary(plan.rejects, plan.jobs, engine=settings.engine, notes=list(plan.notes))
    try:
        plan.rejects.unlink(missing_ok=True)
    except OSError as exc:
        raise output_error(plan.rejects, exc, "replace it") from exc
    if progress is not None:
        progress(0)
    return plan, summary


def score_corpus(settings: ScoreSettings, progress: Callable[[int], None] | None = None) -> RunSummary:
    """Score `settings.inputs` into each job's output, resuming where they exist.

    The settings are checked here (`start_run`), once, whoever calls. `progress(n)`
    is called with 0 once they are and the outputs are locked, then after each
    window with the input records handled so far (written, skipped as already
    scored, or rejected).
    """
    if settings.engine == "ray":
        from distill.serve.ray_engine import score_corpus_ray

        return score_corpus_ray(settings, progress)
    start = time.perf_counter()
    with ExitStack() as stack:
        plan, summary = start_run(settings, stack, progress)
        # Workers start (and load the tokenizer) while the models load.
        pools = [stack.enter_context(TokenizerPool(g.folder, g.max_tokens, g.head_share, _workers(settings, plan)))
                 for g in plan.groups]
        backends = open_backends(settings, plan)
        summary.backend = ", ".join(dict.fromkeys(backend.name for backend in backends))
        summary.notes += [backend.note for backend in backends if backend.note]
        writers = [stack.enter_context(open_output(job.output)) for job in plan.jobs]
        rejects = stack.enter_context(RejectsWriter(plan.rejects))
        counts = ReadCounts()
        pipeline = _Pipeline(settings, plan, backends, pools, writers, summary, progress, rejects, counts)
        summary.startup = time.perf_counter() - start
        pipeline.run(read_chunks(settings, plan, rejects, counts))
        publish_outputs(writers)  # still under the output lock
        summary.rejected = rejects.count
        summary.resumed = counts.resumed
    summary.seconds = time.perf_counter() - start - summary.startup
    return summary


def _workers(settings: ScoreSettings, plan: Plan) -> int:
    """Tokenizer processes: --workers, else one beside a GPU; on CPU one only takes cores from the model."""
    if settings.workers is not None:
        return settings.workers
    from distill.serve.backends import choose_backend  # cheap: reads which files the folder has

    devices = {choose_backend(m.folder, settings.backend, settings.device, settings.precision).device
               for m in plan.models}
    return 1 if "cuda" in devices else 0


class _Pipeline:
    """Keeps tokenised chunks in flight ahead of the models and writes windows in order."""

    def __init__(self, settings: ScoreSettings, plan: Plan, backends: list, pools: list[TokenizerPool],
                 writers: list[OutputWriter], summary: RunSummary, progress: Callable[[int], None] | None,
                 rejects: RejectsWriter, counts: ReadCounts):
        self.settings = settings
        self.plan = plan
        self.backends = backends
        self.pools = pools
        self.writers = writers
        self.summary = summary
        self.timings = summary.timings
        self.progress = progress
        self.rejects = rejects
        self.counts = counts
        self.handled = 0
        # Enough chunks in flight that the next window is tokenised while this one runs.
        self.max_in_flight = -(-settings.window // chunk_size(settings)) + 1
        self.entries: list[Entry] = []
        self.sequences: list[list[list[int]]] = [[] for _ in plan.groups]  # per group, window order
        self.needing = 0

    def run(self, chunks: Iterator[list[Entry]]) -> None:
        in_flight: deque = deque()
        exhausted = False
        while True:
            while not exhausted and len(in_flight) < self.max_in_flight:
                exhausted = not self._submit_next(chunks, in_flight)
            if not in_flight:
                break
            entries, futures = in_flight.popleft()
            for group, future in futures.items():
                waited = time.perf_counter()
                sequences, seconds = self.pools[group].result(future)
                self.timings.wait += time.perf_counter() - waited
                self.timings.tokenise += seconds
                self.sequences[group] += sequences
            self.entries += entries
            self.needing += sum(1 for e in entries if e.models)
            if self.needing >= self.settings.window:  # the cut jobs.windows makes for the Ray engine
                self._flush()
        self._flush()

    def _submit_next(self, chunks: Iterator, in_flight: deque) -> bool:
        started = time.perf_counter()
        entries = next(chunks, None)
        self.timings.read += time.perf_counter() - started
        if entries is None:
            return False
        futures = {}
        for group, pool in enumerate(self.pools):
            texts = [entries[i].text for i in group_rows(self.plan, entries, group)]
            if texts:
                futures[group] = pool.submit(texts)
        for entry in entries:
            entry.text = None  # the workers have it; keep only ids in memory
        in_flight.append((entries, futures))
        return True

    def _flush(self) -> None:
        """Run each model over the window and write every job's records in input order."""
        if not self.entries:
            return
        outputs = score_window(self.plan, self.backends, self.entries, self.sequences, self.timings)
        started = time.perf_counter()
        write_window(self.plan, self.entries, outputs, self.writers)
        self.summary.articles += self.needing
        self.timings.write += time.perf_counter() - started
        self.handled += len(self.entries)
        if self.progress is not None:
            self.progress(self.handled + self.counts.resumed + self.rejects.count)
        self.entries, self.needing = [], 0
        self.sequences = [[] for _ in self.plan.groups]
