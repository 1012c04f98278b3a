"""`--batch`: a backend's batch API (Gemini's) at the batch price, through the same
ledger (calls.py) and journal as the concurrent runner.

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
from collections.abc import Iterable
from dataclasses import dataclass

from distill.errors import OracleUnreachableError
from distill.label.calls import BUDGET, UNREACHABLE, CallLedger, LabelRequest, RunStats
from distill.label.oracle.base import CONNECTION, TIMEOUT, BatchOracle, OracleFailure
from distill.records import Article

MISSING = "missing_from_batch"


@dataclass
class BatchRunner:
    ledger: CallLedger  # its pricing already at the batch price
    oracle: BatchOracle
    batch_size: int = 1000
    poll_s: float = 30.0
    max_attempts: int = 5

    def __post_init__(self) -> None:
        self.stats: RunStats = self.ledger.stats

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
        for article in articles:
            self.ledger.add(article)
        for name, keys in self.ledger.journal.open_batches():
            await self._collect(name, keys)
        for _ in range(self.max_attempts):
            todo = list(self.ledger.waiting.values())
            if not todo or self.stats.stopped:
                break
            submitted = await self._submit(todo)
            for name, keys in submitted:
                await self._collect(name, keys)
        for request in self.ledger.waiting.values():  # still unlabelled after every round
            self.ledger.give_up(request, MISSING)
        self.stats.elapsed_s = time.monotonic() - start
        return self.stats

    async def _submit(self, todo: list[LabelRequest]) -> list[tuple[str, list[str]]]:
        submitted = []
        for i in range(0, len(todo), self.batch_size):
            chunk = []
            for request in todo[i:i + self.batch_size]:
                if not self.ledger.reserve(request):
                    self.stats.stopped = BUDGET
                    break
                chunk.append(request)
            if chunk:
                name = await self.oracle.submit_batch([(r.key, r.prompt) for r in chunk],
                                                      f"distill-{self.stats.run_id}-{i // self.batch_size}")
                self.ledger.submitted(name, chunk)
                submitted.append((name, [r.key for r in chunk]))
            if self.stats.stopped:
                self.ledger.leave(todo[i + len(chunk):])
                break
        return submitted

    async def _collect(self, name: str, keys: list[str]) -> None:
        status = await self.oracle.batch_status(name)
        while not status.done:
            await asyncio.sleep(self.poll_s)
            status = await self.oracle.batch_status(name)
        results = await self.oracle.batch_results(name) if status.state != "CANCELLED" else {}
        for key in keys:
            call_id = self.ledger.journal.batch_call_id(name, key)
            if call_id is None:  # collected before the last kill
                continue
            result = results.get(key) or OracleFailure(MISSING, f"no result in {name} ({status.state})", True)
            self.ledger.settle(call_id, key, result, 0.0)
        self.ledger.journal.set_batch_state(name, "COLLECTED")
