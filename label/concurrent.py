"""The concurrent labelling loop: asyncio workers, one call per key at a time,
journal first, output second.

For each selected article the ledger (calls.py) gives the request it needs, if
any: a key the journal already holds a label for is written straight from the
journal (no call), and articles sharing a key in flight wait on the same call.
Workers take one request at a time, respect the rate limiter and the budget,
retry with backoff, and settle every attempt through the ledger, which commits
a label to the journal *before* appending its articles to labelled.jsonl.

The producer and the workers are structured like an asyncio.TaskGroup (which
Python 3.10 lacks): whatever error ends one of them (an endpoint that stays
unreachable, a refused key, a bug) cancels the rest at once and is raised as
one DistillError, instead of a dead worker leaving the producer waiting on a
full queue for ever. A call cancelled that way is journaled as `interrupted`
(its outcome is unknown), so a rerun retries it, and everything journaled as
labelled is kept.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from distill.errors import DistillError, OracleError, OracleUnreachableError
from distill.label.calls import (
    BUDGET,
    ERROR,
    INTERRUPTED,
    UNREACHABLE,
    CallLedger,
    LabelRequest,
    RunStats,
    unexpected,
)
from distill.label.limiter import RateLimiter, backoff_delay
from distill.label.oracle.base import AUTH, CONNECTION, Oracle, OracleFailure, OracleReply
from distill.records import Article


@dataclass
class ConcurrentRunner:
    ledger: CallLedger
    oracle: Oracle
    limiter: RateLimiter
    concurrency: int = 8
    max_attempts: int = 5
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    expected_output_tokens: int = 120
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self.stats: RunStats = self.ledger.stats
        self._stop = asyncio.Event()
        self._settled = asyncio.Event()  # replaced each time a call settles; waiters hold the old one
        self._bad_input: DistillError | None = None

    async def run(self, articles: Iterable[Article]) -> RunStats:
        start = time.monotonic()
        queue: asyncio.Queue[LabelRequest | None] = asyncio.Queue(maxsize=self.concurrency * 2)
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
            request = self.ledger.add(article)
            if request is not None:
                await queue.put(request)

    async def _worker(self, queue: asyncio.Queue) -> None:
        while (request := await queue.get()) is not None:
            try:
                if self._stop.is_set():
                    self.ledger.leave([request])
                else:
                    await self._label(request)
            finally:
                self.ledger.drop(request)

    async def _label(self, request: LabelRequest) -> None:
        estimate = len(request.prompt) // 4 + self.expected_output_tokens
        failure: OracleFailure | None = None
        for retry_no in range(self.max_attempts):
            if not await self._reserve(request):
                self.stats.stopped = self.stats.stopped or BUDGET
                self.ledger.leave([request])
                self._stop.set()
                return
            await self.limiter.acquire(estimate)
            failure = await self._attempt(request, self.ledger.start(request), estimate)
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
        self.ledger.give_up(request, failure.kind)
        if failure.kind == CONNECTION:  # every later article would fail the same way
            raise self._unreachable(failure)

    async def _reserve(self, request: LabelRequest) -> bool:
        """Hold a call's worst case in the budget, waiting while calls in flight may
        give back enough; False once it cannot fit (the run then stops)."""
        while not self.ledger.reserve(request):
            if self._stop.is_set() or not self.ledger.budget.may_fit_later(self.ledger.worst_case(request)):
                return False
            await self._settled.wait()
        return True

    async def _attempt(self, request: LabelRequest, call_id: int, estimate: int) -> OracleFailure | None:
        """One call, settled through the ledger: None for a label, else the failure."""
        started = time.monotonic()
        try:
            result: OracleReply | OracleFailure = await self.oracle.score(request.prompt)
        except OracleFailure as failure:
            result = failure
        except BaseException as exc:  # cancelled (the run is stopping) or an error nobody classified
            status = INTERRUPTED if isinstance(exc, asyncio.CancelledError) else ERROR
            self.ledger.abandon(call_id, request.key, status, time.monotonic() - started,
                                f"{type(exc).__name__}: {exc}")
            self._wake()
            raise
        self.ledger.settle(call_id, request.key, result, time.monotonic() - started)
        self.limiter.settle(estimate, result.input_tokens + result.output_tokens)
        self._wake()
        return result if isinstance(result, OracleFailure) else None

    def _wake(self) -> None:
        """Wake every call waiting for room in the budget: one has just settled."""
        self._settled.set()
        self._settled = asyncio.Event()

    def _unreachable(self, failure: OracleFailure) -> OracleUnreachableError:
        self.stats.stopped = UNREACHABLE
        return OracleUnreachableError(
            f"cannot reach {self.oracle.endpoint}: {self.max_attempts} attempt(s) failed, "
            f"the last with {failure}. Check that the endpoint is up and that the network (proxy, firewall, --base-url) lets "
            f"you through, then rerun the same command to resume: the {self.stats.labelled} label(s) "
            "of this run are kept and nothing is paid twice"
        )


async def _first_failure(tasks: list[asyncio.Task]) -> None:
    """Wait until every task is done, or raise the error of the first that fails
    (asyncio.TaskGroup does this from Python 3.11; this runs on 3.10 too)."""
    pending = set(tasks)
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()
