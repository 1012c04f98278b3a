"""`--batch`: the Gemini Batch API at the batch price, with the same journal.

1. Jobs left open by an earlier (killed) run are polled and collected first:
   they are paid for, so their labels are journaled whatever this run selects.
2. Keys still without a label are submitted in chunks of `batch_size`; each
   job and a pending call per key are journaled right after submission.
3. Results are joined by the key each request carried, never by position.
4. Keys missing from a job's results or failed are resubmitted, up to
   `max_attempts` rounds; nothing that already has a label is sent again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from distill.errors import OracleUnreachableError
from distill.filter_spec import FilterSpec
from distill.label.journal import Journal
from distill.label.oracle.base import (
    CONNECTION,
    TIMEOUT,
    GenerationConfig,
    OracleFailure,
    OracleReply,
)
from distill.label.oracle.gemini import GeminiOracle
from distill.label.runner import (
    BUDGET,
    UNREACHABLE,
    Budget,
    Job,
    LabelWriter,
    Pricing,
    RunStats,
    make_job,
    worst_case_cost,
)
from distill.records import Article

MISSING = "missing_from_batch"


@dataclass
class BatchRunner:
    spec: FilterSpec
    oracle: GeminiOracle
    config: GenerationConfig
    journal: Journal
    writer: LabelWriter
    pricing: Pricing  # already at the batch price
    budget: Budget
    stats: RunStats
    batch_size: int = 1000
    poll_s: float = 30.0
    max_attempts: int = 5
    on_call: Callable[[], None] = lambda: None
    jobs: dict[str, Job] = field(default_factory=dict)
    reserved: dict[str, float] = field(default_factory=dict)  # key -> worst case held in the budget

    async def run(self, articles: Iterable[Article]) -> RunStats:
        try:
            return await self._run(articles)
        except OracleFailure as failure:
            if failure.kind not in (CONNECTION, TIMEOUT):
                raise
            self.stats.stopped = UNREACHABLE
            raise OracleUnreachableError(
                f"cannot reach {self.oracle.endpoint} ({failure}). Batch jobs already submitted are "
                "journaled and keep running server-side: check the endpoint and the network, then "
                "rerun the same command to collect them"
            ) from None

    async def _run(self, articles: Iterable[Article]) -> RunStats:
        start = time.monotonic()
        self._gather(articles)
        for name, keys in self.journal.open_batches():
            await self._collect(name, keys)
        for _ in range(self.max_attempts):
            todo = [job for job in self.jobs.values()]
            if not todo or self.stats.stopped:
                break
            submitted = await self._submit(todo)
            for name, keys in submitted:
                await self._collect(name, keys)
        for job in self.jobs.values():  # still unlabelled after every round
            self.stats.failed_articles[MISSING] += len(job.articles)
        self.stats.elapsed_s = time.monotonic() - start
        return self.stats

    def _gather(self, articles: Iterable[Article]) -> None:
        for article in articles:
            job = make_job(self.spec, self.config, article)
            label = self.journal.label(job.key)
            if label is not None:
                self.writer.write(label, [article], from_journal=True)
            elif job.key in self.jobs:
                self.jobs[job.key].articles.append(article)
            else:
                self.jobs[job.key] = job

    async def _submit(self, todo: list[Job]) -> list[tuple[str, list[str]]]:
        submitted = []
        for i in range(0, len(todo), self.batch_size):
            chunk = []
            for job in todo[i:i + self.batch_size]:
                worst = worst_case_cost(self.pricing, self.config, job.prompt)
                if not self.budget.reserve(worst):
                    self.stats.stopped = BUDGET
                    break
                self.reserved[job.key] = worst
                chunk.append(job)
            if chunk:
                name = await self.oracle.submit_batch([(j.key, j.prompt) for j in chunk],
                                                      f"distill-{self.stats.run_id}-{i // self.batch_size}")
                keys = {j.key: (j.articles[0].id, self.journal.attempts(j.key) + 1) for j in chunk}
                self.journal.add_batch(name, self.stats.run_id, keys)
                submitted.append((name, list(keys)))
            if self.stats.stopped:
                self.stats.not_attempted += sum(len(j.articles) for j in todo[i + len(chunk):])
                break
        return submitted

    async def _collect(self, name: str, keys: list[str]) -> None:
        status = await self.oracle.batch_status(name)
        while not status.done:
            await asyncio.sleep(self.poll_s)
            status = await self.oracle.batch_status(name)
        results = await self.oracle.batch_results(name) if status.state != "CANCELLED" else {}
        for key in keys:
            call_id = self.journal.batch_call_id(name, key)
            if call_id is None:  # collected before the last kill
                continue
            result = results.get(key) or OracleFailure(MISSING, f"no result in {name} ({status.state})", True)
            self._settle(name, key, call_id, result)
        self.journal.set_batch_state(name, "COLLECTED")

    def _settle(self, name: str, key: str, call_id: int, result: OracleReply | OracleFailure) -> None:
        cost = self.pricing.cost(result.input_tokens, result.output_tokens)
        if key in self.reserved:
            self.budget.settle(self.reserved.pop(key), cost)
        else:  # a job submitted by a killed run: it held no reservation in this one
            self.budget.charge(cost)
        self.stats.calls += 1
        self.stats.spend_usd += cost
        self.stats.input_tokens += result.input_tokens
        self.stats.output_tokens += result.output_tokens
        if isinstance(result, OracleFailure):
            self.stats.call_failures[result.kind] += 1
            self.journal.finish_call(call_id, result.kind, 0.0, result.input_tokens, result.output_tokens,
                                     cost, str(result))
        else:
            label = self.journal.record_label(call_id, key, self.config.model, self.spec.prompt_sha256,
                                              result, cost, 0.0)
            job = self.jobs.pop(key, None)
            if job is not None:
                self.writer.write(label, job.articles, from_journal=False)
        self.on_call()
