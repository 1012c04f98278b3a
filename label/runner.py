"""The synchronous labelling loop: async workers, journal first, output second.

For each selected article: build the prompt, hash it into a call key; a key
the journal already holds a label for is written straight from the journal
(no call); articles sharing a key in flight wait on the same call. Workers
take one key at a time, respect the rate limiter and the budget, retry with
backoff, and on success commit the label to the journal *before* appending
the article to labelled.jsonl.

The producer and the workers are structured like an asyncio.TaskGroup (which
Python 3.10 lacks): whatever error ends one of them (an endpoint that stays
unreachable, a refused key, a bug) cancels the rest at once and is raised as
one DistillError, instead of a dead worker leaving the producer waiting on a
full queue for ever. A call
cancelled that way is journaled as `interrupted` (its outcome is unknown), so
a rerun retries it, and everything journaled as labelled is kept.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from distill.errors import DistillError, LabelRunError, OracleError, OracleUnreachableError
from distill.filter_spec import FilterSpec
from distill.label.journal import Journal, Label, call_key
from distill.label.limiter import RateLimiter, backoff_delay
from distill.label.oracle.base import AUTH, CONNECTION, GenerationConfig, Oracle, OracleFailure
from distill.label.selection import oracle_text
from distill.records import Article, JsonlWriter

# Why a run stopped early (RunStats.stopped, and label_runs.jsonl).
BUDGET = "budget"
UNREACHABLE = "unreachable"
ERROR = "error"
# Journal status of a call whose outcome is unknown: cancelled mid-call, or the
# process was killed (Journal.mark_interrupted). It counts as a failed attempt.
INTERRUPTED = "interrupted"
# Input tokens a request may be billed beyond its prompt text: the response
# schema and the message framing.
REQUEST_OVERHEAD_TOKENS = 512


@dataclass
class Pricing:
    input_per_million: float
    output_per_million: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_million + output_tokens * self.output_per_million) / 1e6


@dataclass
class RunStats:
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    labelled: int = 0  # articles appended to the output in this run
    from_journal: int = 0  # of those, written from a label paid for earlier
    calls: int = 0
    call_failures: Counter = field(default_factory=Counter)  # failed attempts by kind
    failed_articles: Counter = field(default_factory=Counter)  # articles given up, by last kind
    spend_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    not_attempted: int = 0  # selected articles left for a later run (budget reached)
    stopped: str | None = None  # why the run stopped early, if it did
    elapsed_s: float = 0.0


@dataclass
class Job:
    key: str
    prompt: str
    articles: list[Article]


def make_job(spec: FilterSpec, config: GenerationConfig, article: Article) -> Job:
    """The prompt the oracle gets for an article, and its journal key."""
    text = oracle_text(spec, article)
    return Job(call_key(spec.prompt_sha256, text, config), spec.render_prompt(text), [article])


def worst_case_cost(pricing: Pricing, config: GenerationConfig, prompt: str) -> float:
    """The most one call can cost: no tokenizer makes a token of less than one
    byte, so at most one input token per UTF-8 byte of the prompt (plus the
    request's overhead), and a full-length answer plus thinking out."""
    worst_in = len(prompt.encode("utf-8")) + REQUEST_OVERHEAD_TOKENS
    return pricing.cost(worst_in, config.max_output_tokens + config.thinking_budget)


class Budget:
    """Spend so far plus the worst case of every call in flight stays under the cap.

    Only calls in flight hold a reservation, and each gives it back as soon as
    its real cost is known, so near the cap fewer calls fit at once and the
    last ones run alone: a run stops only when even one call's worst case no
    longer fits, i.e. within one call's worst case of the cap, never past it."""

    def __init__(self, max_cost: float | None):
        self.max_cost = max_cost
        self.spent = 0.0
        self.reserved = 0.0
        self.holds = 0  # calls holding a reservation

    def reserve(self, worst_case: float) -> bool:
        if self.max_cost is not None and self.spent + self.reserved + worst_case > self.max_cost:
            return False
        self.reserved += worst_case
        self.holds += 1
        return True

    def may_fit_later(self, worst_case: float) -> bool:
        """Whether waiting for the calls in flight to settle could make room."""
        return self.holds > 0 and (self.max_cost is None or self.spent + worst_case <= self.max_cost)

    def settle(self, worst_case: float, actual: float) -> None:
        """A reserved call finished: its worst case is given back, its real cost spent."""
        self.holds -= 1
        self.reserved = self.reserved - worst_case if self.holds else 0.0  # no float drift once idle
        self.spent += actual

    def charge(self, actual: float) -> None:
        """Spend that held no reservation (a batch job submitted by an earlier run)."""
        self.spent += actual


class LabelWriter:
    """Turns a journaled label into output records for the articles that share it."""

    def __init__(self, writer: JsonlWriter, stats: RunStats, on_write: Callable[[int], None]):
        self.writer = writer
        self.stats = stats
        self.on_write = on_write

    def write(self, label: Label, articles: Iterable[Article], from_journal: bool) -> None:
        count = 0
        for article in articles:
            record = article.to_json()
            record["scores"] = dict(label.scores)
            record["oracle"] = {
                "model": label.model,
                "prompt_sha256": label.prompt_sha256,
                "labelled_at": label.labelled_at,
                "input_tokens": label.input_tokens,
                "output_tokens": label.output_tokens,
                "cost_usd": round(label.cost_usd, 8),
            }
            self.writer.append(record)
            count += 1
        self.stats.labelled += count
        if from_journal:
            self.stats.from_journal += count
        self.on_write(count)


@dataclass
class SyncRunner:
    spec: FilterSpec
    oracle: Oracle
    config: GenerationConfig
    journal: Journal
    writer: LabelWriter
    pricing: Pricing
    limiter: RateLimiter
    budget: Budget
    stats: RunStats
    concurrency: int = 8
    max_attempts: int = 5
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    expected_output_tokens: int = 120
    on_call: Callable[[], None] = lambda: None
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self._inflight: dict[str, Job] = {}
        self._stop = asyncio.Event()
        self._settled = asyncio.Event()  # replaced each time a call settles; waiters hold the old one
        self._bad_input: DistillError | None = None

    async def run(self, articles: Iterable[Article]) -> RunStats:
        start = time.monotonic()
        queue: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=self.concurrency * 2)
        tasks = [asyncio.create_task(self._worker(queue)) for _ in range(self.concurrency)]
        tasks.append(asyncio.create_task(self._produce_then_close(articles, queue)))
        try:
            await _first_failure(tasks)
        except DistillError:
            self.stats.stopped = self.stats.stopped or ERROR
            raise
        except Exception as exc:
            self.stats.stopped = self.stats.stopped or ERROR
            raise unexpected(exc) from exc
        finally:
            # Structured: no task outlives the run. Cancelled calls journal themselves as
            # interrupted while we wait for them here.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.stats.elapsed_s = time.monotonic() - start
        if self._bad_input is not None:
            raise self._bad_input
        return self.stats

    async def _produce_then_close(self, articles: Iterable[Article], queue: asyncio.Queue) -> None:
        try:
            await self._produce(articles, queue)
        except DistillError as exc:  # a bad line under --strict: let calls in flight land, start no more
            self._bad_input = exc
            self._stop.set()
        for _ in range(self.concurrency):
            await queue.put(None)

    async def _produce(self, articles: Iterable[Article], queue: asyncio.Queue) -> None:
        for article in articles:
            if self._stop.is_set():
                return
            job = make_job(self.spec, self.config, article)
            label = self.journal.label(job.key)
            if label is not None:  # paid for already (an earlier run, or a twin article)
                self.writer.write(label, [article], from_journal=True)
            elif job.key in self._inflight:
                self._inflight[job.key].articles.append(article)
            else:
                self._inflight[job.key] = job
                await queue.put(job)

    async def _worker(self, queue: asyncio.Queue) -> None:
        while (job := await queue.get()) is not None:
            try:
                if self._stop.is_set():
                    self.stats.not_attempted += len(job.articles)
                else:
                    await self._label(job)
            finally:
                self._inflight.pop(job.key, None)

    async def _label(self, job: Job) -> None:
        previous = self.journal.attempts(job.key)
        estimate = len(job.prompt) // 4 + self.expected_output_tokens
        worst = worst_case_cost(self.pricing, self.config, job.prompt)
        failure: OracleFailure | None = None
        for retry_no in range(self.max_attempts):
            if not await self._reserve(worst):
                self.stats.stopped = self.stats.stopped or BUDGET
                self.stats.not_attempted += len(job.articles)
                self._stop.set()
                return
            await self.limiter.acquire(estimate)
            call_id = self.journal.start_call(job.key, job.articles[0].id, previous + retry_no + 1, self.stats.run_id)
            failure = await self._attempt(job, call_id, worst, estimate)
            if failure is None:
                return
            if failure.kind == AUTH:
                self._stop.set()
                raise OracleError(f"the oracle refused the API key: {failure}")
            if not failure.retryable:
                break
            if failure.retry_after:
                self.limiter.pause(failure.retry_after)
            if retry_no + 1 < self.max_attempts:
                await asyncio.sleep(backoff_delay(retry_no, self.backoff_base_s, self.backoff_max_s,
                                                  failure.retry_after, self.rng))
        assert failure is not None
        self.stats.failed_articles[failure.kind] += len(job.articles)
        if failure.kind == CONNECTION:  # every later article would fail the same way
            raise self._unreachable(failure)

    async def _reserve(self, worst: float) -> bool:
        """Hold a call's worst case in the budget, waiting while calls in flight may
        give back enough; False once it cannot fit (the run then stops)."""
        while not self.budget.reserve(worst):
            if self._stop.is_set() or not self.budget.may_fit_later(worst):
                return False
            await self._settled.wait()
        return True

    async def _attempt(self, job: Job, call_id: int, worst: float, estimate: int) -> OracleFailure | None:
        """One call: its label journaled then written (None), or its failure journaled and returned."""
        started = time.monotonic()
        try:
            reply = await self.oracle.score(job.prompt)
        except OracleFailure as failure:
            self._failed(call_id, failure, worst, estimate, time.monotonic() - started)
            return failure
        except BaseException as exc:  # cancelled (the run is stopping) or an error nobody classified
            status = INTERRUPTED if isinstance(exc, asyncio.CancelledError) else ERROR
            self.journal.finish_call(call_id, status, time.monotonic() - started, 0, 0, 0.0,
                                     f"{type(exc).__name__}: {exc}")
            self._settle_budget(worst, 0.0)
            raise
        cost = self.pricing.cost(reply.input_tokens, reply.output_tokens)
        self._count_call(worst, cost, reply.input_tokens, reply.output_tokens, estimate)
        label = self.journal.record_label(call_id, job.key, self.config.model, self.spec.prompt_sha256,
                                          reply, cost, time.monotonic() - started)
        self.writer.write(label, job.articles, from_journal=False)
        return None

    def _unreachable(self, failure: OracleFailure) -> OracleUnreachableError:
        self.stats.stopped = UNREACHABLE
        return OracleUnreachableError(
            f"cannot reach {self.oracle.endpoint}: {self.max_attempts} attempt(s) failed, "
            f"the last with {failure}. Check that the endpoint is up and that the network (proxy, firewall, --base-url) lets "
            f"you through, then rerun the same command to resume: the {self.stats.labelled} label(s) "
            "of this run are kept and nothing is paid twice"
        )

    def _settle_budget(self, worst: float, cost: float) -> None:
        self.budget.settle(worst, cost)
        self._settled.set()  # wake every call waiting for room in the budget
        self._settled = asyncio.Event()

    def _failed(self, call_id: int, failure: OracleFailure, worst: float, estimate: int, latency: float) -> None:
        cost = self.pricing.cost(failure.input_tokens, failure.output_tokens)
        self._count_call(worst, cost, failure.input_tokens, failure.output_tokens, estimate)
        self.stats.call_failures[failure.kind] += 1
        self.journal.finish_call(call_id, failure.kind, latency, failure.input_tokens,
                                 failure.output_tokens, cost, str(failure))

    def _count_call(self, worst: float, cost: float, tokens_in: int, tokens_out: int, estimate: int) -> None:
        self._settle_budget(worst, cost)
        self.stats.calls += 1
        self.stats.spend_usd += cost
        self.stats.input_tokens += tokens_in
        self.stats.output_tokens += tokens_out
        self.limiter.settle(estimate, tokens_in + tokens_out)
        self.on_call()


def unexpected(exc: BaseException) -> LabelRunError:
    """The one line for an error nobody foresaw; the traceback stays on as its cause."""
    return LabelRunError(f"labelling stopped on an unexpected {type(exc).__name__}: {exc}; "
                         "the journal is intact, rerun the same command to resume")


async def _first_failure(tasks: list[asyncio.Task]) -> None:
    """Wait until every task is done, or raise the error of the first that fails
    (asyncio.TaskGroup does this from Python 3.11; this runs on 3.10 too)."""
    pending = set(tasks)
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()
