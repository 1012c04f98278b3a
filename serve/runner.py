"""The streaming scoring pipeline behind `distill-score`.

    read + parse + dedupe + prefilter (main process, chunk by chunk)
      -> tokenise (worker processes; a bounded number of chunks in flight)
      -> window of `window` passing articles, sorted by length into
         token-budget batches -> backend.predict (batcher.predict_window)
      -> postfilter (scaler, calibration, overall, tier) -> output

While the model works on one window the workers tokenise the next, so
tokenising overlaps inference; only ids (for dedupe and resume) grow with
the corpus, every other buffer is bounded by the window.

Output order is input order: a window's records (scored and blocked) are
written when the window is done, in the order the articles were read. A kill
loses at most the window in progress; the rerun skips ids already written
(resume.py). Within one input, the first line with an id wins; later lines
with that id are rejected as duplicates. Bad lines go to the rejects file,
which each run rewrites (every run re-reads all input, so it sees them all).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from distill.artifact import read_info
from distill.filter_spec import load_filter
from distill.prefilter import PASSED, Prefilter
from distill.records import (
    Article,
    JsonlWriter,
    ReadStats,
    RejectsWriter,
    parse_article,
    read_records,
)
from distill.serve.backends import choose_backend, open_backend
from distill.serve.batcher import Backend, Timings, predict_window
from distill.serve.postfilter import Item, Postfilter
from distill.serve.resume import load_resume_state
from distill.serve.settings import ScoreSettings
from distill.serve.tokenize import TokenizerPool
from distill.truncation import article_text

CHUNK = 256  # articles per tokenizer task: big enough to amortise the process hop


@dataclass
class RunSummary:
    output: Path
    rejects: Path
    backend: str = ""
    model_id: str = ""
    filter_id: str = ""
    scored: int = 0
    blocked: int = 0
    rejected: int = 0
    resumed: int = 0  # ids already in the output, skipped
    tiers: Counter = field(default_factory=Counter)
    startup: float = 0.0  # loading model, tokenizer and workers; resume scan
    seconds: float = 0.0  # the pipeline itself
    timings: Timings = field(default_factory=Timings)
    notes: list[str] = field(default_factory=list)

    @property
    def articles_per_second(self) -> float:
        return self.scored / self.seconds if self.seconds else 0.0


def score_corpus(settings: ScoreSettings, progress: Callable[[int], None] | None = None) -> RunSummary:
    """Score `settings.inputs` into `settings.output`, resuming if it exists.

    `progress(n)` is called after each window with the input records handled
    so far (written, skipped as already scored, or rejected).
    """
    settings.validate()
    start = time.perf_counter()
    model_dir = Path(settings.model)
    info = read_info(model_dir)
    spec = load_filter(settings.filter or f"{info.filter_name}/v{info.filter_version}")
    info.check_filter(spec)
    choice = choose_backend(model_dir, settings.backend, settings.device, settings.precision)
    summary = RunSummary(settings.output, settings.rejects_path, choice.label, info.artifact_id, spec.id)
    if spec.config_hash != info.filter_config_hash:
        summary.notes.append(
            f"filter {spec.id} changed since the model was trained (config hash differs); "
            "its current weights, gatekeepers and tiers are used"
        )
    state = load_resume_state(Path(settings.output))
    summary.notes += state.notes(info.artifact_id)
    settings.rejects_path.unlink(missing_ok=True)
    # Workers start (and load the tokenizer) while the model loads.
    with TokenizerPool(model_dir, info.max_tokens, info.head_share, settings.workers) as pool:
        backend = open_backend(model_dir, info, choice, settings.threads, settings.token_budget, settings.max_batch)
        postfilter = Postfilter(spec, info, model_dir, info.artifact_id)
        with JsonlWriter(settings.output) as writer, RejectsWriter(settings.rejects_path) as rejects:
            pipeline = _Pipeline(settings, backend, pool, postfilter, writer, rejects, summary, progress)
            summary.startup = time.perf_counter() - start
            pipeline.run(_chunks(settings, Prefilter(spec), state.done, rejects, summary))
            summary.rejected = rejects.count
    summary.seconds = time.perf_counter() - start - summary.startup
    return summary


def _chunks(
    settings: ScoreSettings, prefilter: Prefilter, done: set[str], rejects: RejectsWriter, summary: RunSummary
) -> Iterator[tuple[list[Item], list[str]]]:
    """(items in input order, texts of the items that passed the prefilter), CHUNK at a time."""
    items: list[Item] = []
    texts: list[str] = []
    for article in read_records(settings.inputs, _first_id_wins(), rejects, settings.strict, ReadStats()):
        if article.id in done:
            summary.resumed += 1
            continue
        reason = prefilter.check(article)
        if reason != PASSED and not settings.write_blocked:
            summary.blocked += 1
            continue
        items.append(Item(article.id, reason, article.extra.get("content_type"), _carried(article, settings.carry)))
        if reason == PASSED:
            texts.append(article_text(article.title, article.text))
        if len(items) == CHUNK:
            yield items, texts
            items, texts = [], []
    if items:
        yield items, texts


def _first_id_wins() -> Callable[[dict], Article]:
    seen: set[str] = set()

    def parse(obj: dict) -> Article:
        article = parse_article(obj)
        if article.id in seen:
            raise ValueError(f"duplicate id {article.id!r}: an earlier line has it and is kept")
        seen.add(article.id)
        return article

    return parse


def _carried(article: Article, names: tuple[str, ...]) -> dict:
    """The --carry fields an article has (title and content are Article attributes)."""
    fields = {**article.extra, "title": article.title, "content": article.text}
    return {name: fields[name] for name in names if name in fields}


class _Pipeline:
    """Keeps tokenised chunks in flight ahead of the model and writes windows in order."""

    def __init__(self, settings: ScoreSettings, backend: Backend, pool: TokenizerPool,
                 postfilter: Postfilter, writer: JsonlWriter, rejects: RejectsWriter,
                 summary: RunSummary, progress: Callable[[int], None] | None):
        self.settings = settings
        self.backend = backend
        self.pool = pool
        self.postfilter = postfilter
        self.writer = writer
        self.rejects = rejects
        self.summary = summary
        self.timings = summary.timings
        self.progress = progress
        # Enough chunks in flight that the next window is tokenised while this one runs.
        self.max_in_flight = -(-settings.window // CHUNK) + 1
        self.items: list[Item] = []
        self.sequences: list[list[int]] = []

    def run(self, chunks: Iterator[tuple[list[Item], list[str]]]) -> None:
        in_flight: deque = deque()
        exhausted = False
        while True:
            while not exhausted and len(in_flight) < self.max_in_flight:
                exhausted = not self._submit_next(chunks, in_flight)
            if not in_flight:
                break
            items, future = in_flight.popleft()
            if future is not None:
                waited = time.perf_counter()
                sequences, seconds = self.pool.result(future)
                self.timings.wait += time.perf_counter() - waited
                self.timings.tokenise += seconds
                self.sequences += sequences
            self.items += items
            if len(self.sequences) >= self.settings.window:
                self._flush()
        self._flush()

    def _submit_next(self, chunks: Iterator, in_flight: deque) -> bool:
        started = time.perf_counter()
        chunk = next(chunks, None)
        self.timings.read += time.perf_counter() - started
        if chunk is None:
            return False
        items, texts = chunk
        in_flight.append((items, self.pool.submit(texts) if texts else None))
        return True

    def _flush(self) -> None:
        """Score the window and write its records in input order."""
        if not self.items:
            return
        outputs = predict_window(self.backend, self.sequences, self.timings)
        started = time.perf_counter()
        passed = [item for item in self.items if item.prefilter == PASSED]
        scored = iter(self.postfilter.scored_records(passed, outputs))
        for item in self.items:
            if item.prefilter == PASSED:
                record = next(scored)
                self.summary.scored += 1
                self.summary.tiers[record["tier"]] += 1
            else:
                record = self.postfilter.blocked_record(item)
                self.summary.blocked += 1
            self.writer.append(record)
        self.timings.write += time.perf_counter() - started
        if self.progress is not None:
            done = self.summary.scored + self.summary.blocked + self.summary.resumed + self.rejects.count
            self.progress(done)
        self.items, self.sequences = [], []
