"""The online batcher: concurrent requests gathered into token-budget batches, off the event loop.

    request (event loop)
      -> prepare (one thread): each article checked by distill-score's rules, its
         Entry built by jobs.build_entry (prefilter per filter), tokenised once per
         distinct tokenizer (tokenize.StudentEncoder)
      -> a bounded queue, counted in tokens: full -> QueueFull (503 + Retry-After)
      -> the model thread (one per inference stream, --streams): queued work, up to one batch's worth (the backend's token
         budget or --max-batch rows), waiting at most --max-wait-ms from the oldest
         arrival for that much, becomes one window -> jobs.score_window (the batcher's
         length-sorted token-budget batches) -> jobs.window_records (the records
         distill-score writes) -> each request's records, mapped back by index
      -> the request's future resolves on the event loop

So the server and distill-score share every step from the article to the
record: the server only decides which articles make a window. A request whose
client went away is dropped from the queue before the model sees it. The
event loop never runs the model or the tokenizer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from distill.errors import DistillError
from distill.prefilter import PASSED
from distill.records import Article, Reject, parse_article, parse_line
from distill.serve.batcher import Backend, Timings
from distill.serve.jobs import (
    Entry,
    build_entry,
    build_plan,
    group_rows,
    open_backends,
    score_window,
    window_records,
)
from distill.serve.server.metrics import Metrics
from distill.serve.server.settings import ServeSettings

logger = logging.getLogger("distill.serve")


class Unavailable(DistillError):
    """The server cannot take work now (models loading, queue full, draining): retry shortly."""


class QueueFull(Unavailable):
    """The token queue is full."""


class TooLarge(DistillError):
    """One request needs more tokens than the queue holds."""


@dataclass
class Prepared:
    """A request's articles ready for the model: entries, their token ids, and the bad ones."""

    entries: list[Entry]
    positions: list[int]  # index in the request of each entry
    errors: list[dict[str, Any]]  # {"index", "id", "error"} per bad article
    sequences: list[list[list[int]]]  # per token group: ids of group_rows(entries) in that order
    tokens: int
    seconds: float = 0.0  # parsing, prefiltering and tokenising, all told
    tokenise: float = 0.0  # of which tokenising


@dataclass
class Work:
    """One request's place in the queue; the model thread resolves `future` on `loop`."""

    prepared: Prepared
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)
    taken_at: float = 0.0
    infer: float = 0.0  # model seconds of the window it was scored in

    @property
    def tokens(self) -> int:
        return self.prepared.tokens

    @property
    def rows(self) -> int:
        return len(self.prepared.entries)

    def resolve(self, records: Any = None, error: BaseException | None = None) -> None:
        def settle() -> None:
            if self.future.done():  # the client went away
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(records)

        try:
            self.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop is closed: nobody is waiting
            pass


class ObservedBackend:
    """A backend passed through as it is, counting the rows of each batch the batcher forms."""

    def __init__(self, backend: Backend, metrics: Metrics):
        self.backend = backend
        self.metrics = metrics
        self.name = backend.name
        self.limits = backend.limits
        self.dimensions = backend.dimensions

    def predict(self, sequences: list[list[int]]) -> np.ndarray:
        self.metrics.batch_articles.observe(len(sequences))
        return self.backend.predict(sequences)


class OnlineScorer:
    """Resolves models and filters at once (as distill-score does); `start` loads the models."""

    def __init__(self, settings: ServeSettings, metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        self.score_settings = settings.score_settings()
        self.score_settings.use_shipped_students()
        settings.validate()
        self.plan = build_plan(self.score_settings)
        self.filter_ids = [job.spec.id for job in self.plan.jobs]
        self.state = "loading"  # -> ready -> draining; or failed
        self.error: BaseException | None = None
        self.backend_name = ""
        self._ready = threading.Event()
        self._cond = threading.Condition()
        self._queue: deque[Work] = deque()
        self._queued_tokens = 0
        self._queued_rows = 0
        self._stopping = False
        self._encoders: list = []
        self._backends: list[Backend] = []
        self._window = (1, 1)  # a window is one batch's worth at most: (token budget, rows)
        self._model_threads = 1
        self._prepare_pool = ThreadPoolExecutor(1, thread_name_prefix="distill-prepare")
        self._thread = threading.Thread(target=self._run, name="distill-model", daemon=True)

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Load the tokenizers and models in the model thread, then serve the queue."""
        self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> None:
        self._ready.wait(timeout)
        if self.error is not None:
            raise self.error

    def begin_drain(self) -> None:
        """Take no new work (readiness fails); what is queued is still scored."""
        if self.state == "ready":
            self.state = "draining"

    def close(self, timeout: float) -> None:
        """Score what is queued (for at most `timeout` s), stop the model thread, fail the rest."""
        self.begin_drain()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._cond:
            left, self._queue = list(self._queue), deque()
        for work in left:
            work.resolve(error=Unavailable("the server is shutting down"))
        self._prepare_pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        try:
            self._load()
        except BaseException as exc:  # noqa: BLE001 - reported by whoever waits for readiness
            self.error, self.state = exc, "failed"
            logger.error("could not load the models: %s", exc)
            self._ready.set()
            return
        self.state = "ready"
        self._ready.set()
        others = [threading.Thread(target=self._serve_queue, name=f"distill-model-{k}", daemon=True)
                  for k in range(1, self._model_threads)]
        for thread in others:
            thread.start()
        self._serve_queue()
        for thread in others:
            thread.join()

    def _serve_queue(self) -> None:
        while (window := self._take()) is not None:
            self._score(window)

    def _load(self) -> None:
        from distill.serve.tokenize import StudentEncoder

        started = time.perf_counter()
        self._encoders = [StudentEncoder(g.folder, g.max_tokens, g.head_share) for g in self.plan.groups]
        backends = open_backends(self.score_settings, self.plan, streams=self.settings.streams)
        self._backends = [ObservedBackend(b, self.metrics) for b in backends]
        self._window = (min(b.limits.token_budget for b in backends), min(b.limits.max_batch for b in backends))
        # One model thread per inference stream every backend allows (OpenVINO --streams).
        self._model_threads = min(b.limits.streams for b in backends)
        for backend in backends:  # the first batch pays for lazy initialisation, not a client
            backend.predict([[0] * 8])
        self.backend_name = ", ".join(dict.fromkeys(b.name for b in backends))
        for backend in backends:
            if backend.note:
                logger.info("%s", backend.note)
        logger.info("loaded %s (%s) in %.1f s; scoring %s with %d model thread%s",
                    ", ".join(j.postfilter.model_id for j in self.plan.jobs), self.backend_name,
                    time.perf_counter() - started, ", ".join(self.filter_ids), self._model_threads,
                    "" if self._model_threads == 1 else "s")

    # -- requests (event loop) ---------------------------------------------------------------

    def job_indices(self, filters: list[str] | None) -> list[int]:
        """Jobs for the filter ids a request names (all when None); ValueError naming the unknown one."""
        if filters is None:
            return list(range(len(self.plan.jobs)))
        if not filters:
            raise ValueError("name at least one filter, or leave 'filters' out to score them all")
        for name in filters:
            if name not in self.filter_ids:
                raise ValueError(f"unknown filter {name!r}; this server scores {', '.join(self.filter_ids)}")
        return sorted({self.filter_ids.index(name) for name in filters})

    async def submit(self, articles: list[Any], jobs: list[int]) -> Work | Prepared:
        """Prepare the articles off the loop and queue them; a Prepared back when none needs the model."""
        self._check_open()
        if self._queued_tokens >= self.settings.max_queue_tokens:  # full: do not even tokenise
            raise QueueFull("the queue is full")
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(self._prepare_pool, self.prepare, articles, jobs)
        self.metrics.phase_seconds.labels("prepare").observe(prepared.seconds)
        self.metrics.phase_seconds.labels("tokenise").observe(prepared.tokenise)
        if not prepared.entries:
            return prepared
        work = Work(prepared, loop, loop.create_future())
        self._admit(work)
        return work

    def cancel(self, work: Work) -> None:
        """The client went away: drop the work if the model has not taken it yet."""
        with self._cond:
            try:
                self._queue.remove(work)
            except ValueError:
                return
            self._queued_tokens -= work.tokens
            self._queued_rows -= work.rows
            self.metrics.queue_tokens.set(self._queued_tokens)

    def results(self, prepared: Prepared, records: list[list[dict | None]] | None) -> list[dict[str, Any]]:
        """One result per article, in request order: its records by filter id, or its error."""
        out: list[dict[str, Any] | None] = [None] * (len(prepared.entries) + len(prepared.errors))
        for error in prepared.errors:
            out[error["index"]] = error
        for k, (index, entry) in enumerate(zip(prepared.positions, prepared.entries, strict=True)):
            mine = {self.filter_ids[j]: job_records[k] for j, job_records in enumerate(records or [])
                    if job_records[k] is not None}
            for filter_id in mine:
                self.metrics.articles.labels(filter_id).inc()
            out[index] = {"index": index, "id": entry.id, "records": mine}
        return out

    def _check_open(self) -> None:
        if self.state == "loading":
            raise Unavailable("the models are still loading")
        if self.state != "ready":
            raise Unavailable(f"the server is {self.state}")

    def _admit(self, work: Work) -> None:
        limit = self.settings.max_queue_tokens
        if work.tokens > limit:
            raise TooLarge(f"the articles need {work.tokens} tokens; the queue holds {limit} "
                           "(--max-queue-tokens): send fewer articles per request")
        with self._cond:
            if self._stopping:  # (a request already read when the drain began is still taken)
                raise Unavailable("the server is shutting down")
            if self._queued_tokens + work.tokens > limit:
                raise QueueFull("the queue is full")
            self._queue.append(work)
            self._queued_tokens += work.tokens
            self._queued_rows += work.rows
            self.metrics.queue_tokens.set(self._queued_tokens)
            self._cond.notify()

    # -- preparing (the prepare thread) ---------------------------------------------------------

    def prepare(self, articles: list[Any], jobs: list[int]) -> Prepared:
        """Check, prefilter and tokenise a request's articles (distill-score's rules)."""
        started = time.perf_counter()
        entries, positions, errors = [], [], []
        for index, obj in enumerate(articles):
            try:
                article = request_article(obj)
            except ValueError as exc:
                errors.append({"index": index, "id": _id_of(obj), "error": str(exc)})
                continue
            entries.append(self._entry(article, jobs))
            positions.append(index)
        tokenising = time.perf_counter()
        sequences = []
        for g, encoder in enumerate(self._encoders):
            texts = [entries[i].text for i in group_rows(self.plan, entries, g)]
            sequences.append(encoder.encode(texts) if texts else [])
        for entry in entries:
            entry.text = None
        tokens = sum(len(s) for group in sequences for s in group)
        done = time.perf_counter()
        return Prepared(entries, positions, errors, sequences, tokens, done - started, done - tokenising)

    def _entry(self, article: Article, jobs: list[int]) -> Entry:
        entry = build_entry(article, self.score_settings, self.plan)
        if len(jobs) < len(self.plan.jobs):  # the request names some filters: the others write nothing
            entry.reasons = [r if j in jobs else None for j, r in enumerate(entry.reasons)]
            entry.models = tuple(sorted({self.plan.jobs[j].model for j in jobs if entry.reasons[j] == PASSED}))
            if not entry.models:
                entry.text = None
        return entry

    # -- the model thread ------------------------------------------------------------------------

    def _take(self) -> list[Work] | None:
        """The next window: queued work up to one batch's worth (token budget or rows), after
        waiting up to max_wait from the oldest arrival for that much to queue."""
        budget, max_rows = self._window
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            deadline = self._queue[0].queued_at + self.settings.max_wait_ms / 1000
            while (self._queue and self._queued_tokens < budget and self._queued_rows < max_rows
                   and not self._stopping):
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
            window: list[Work] = []
            tokens = rows = 0
            while self._queue and (not window or (tokens + self._queue[0].tokens <= budget
                                                  and rows + self._queue[0].rows <= max_rows)):
                work = self._queue.popleft()  # (the first may alone be more than a batch)
                window.append(work)
                tokens, rows = tokens + work.tokens, rows + work.rows
            self._queued_tokens -= tokens
            self._queued_rows -= rows
            self.metrics.queue_tokens.set(self._queued_tokens)
        now = time.perf_counter()
        for work in window:
            work.taken_at = now
            self.metrics.phase_seconds.labels("wait").observe(now - work.queued_at)
        return window

    def _score(self, window: list[Work]) -> None:
        """Every model over the window's entries, then each request's records by index."""
        entries = [entry for work in window for entry in work.prepared.entries]
        sequences = [[s for work in window for s in work.prepared.sequences[g]] for g in range(len(self.plan.groups))]
        timings = Timings()
        try:
            outputs = score_window(self.plan, self._backends, entries, sequences, timings)
            records = window_records(self.plan, entries, outputs)
        except Exception as exc:  # noqa: BLE001 - every waiting request hears of it
            logger.error("scoring a window of %d articles failed: %s: %s", len(entries), type(exc).__name__, exc)
            for work in window:
                work.resolve(error=exc)
            return
        self.metrics.phase_seconds.labels("infer").observe(timings.infer)
        self.metrics.tokens.inc(timings.real_tokens)
        start = 0
        for work in window:
            end = start + len(work.prepared.entries)
            work.infer = timings.infer
            work.resolve([job_records[start:end] for job_records in records])
            start = end


def request_article(obj: Any) -> Article:
    """An Article from one element of a request's `articles`, by the rules distill-score reads a
    line with (records.parse_line, then parse_article); ValueError with the same reason."""
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    checked = parse_line("request", 0, json.dumps(obj).encode())  # ASCII JSON: lone surrogates stay \u escapes
    if isinstance(checked, Reject):
        raise ValueError(checked.reason)
    return parse_article(obj)


def _id_of(obj: Any) -> str | None:
    value = obj.get("id") if isinstance(obj, dict) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and value.strip() else None
