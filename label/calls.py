"""What both label runners share: requests grouped by key, the budget, and the
bookkeeping of every call.

`CallLedger` is the one place that decides, for the concurrent runner and the
batch runner alike, whether an article needs a call (a key the journal holds a
label for is written straight from the journal; articles sharing a key wait on
one request), journals a call's start, and settles its outcome: cost into the
budget and the run's stats, the outcome into the journal, and, for a label,
the articles that share it into labelled.jsonl, always journal first. The
runners only decide *when* to call: concurrently with retries (concurrent.py)
or as Batch API jobs (batch.py).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from distill.errors import LabelRunError
from distill.filter_spec import FilterSpec
from distill.label.journal import Journal, Label, call_key
from distill.label.oracle.base import GenerationConfig, OracleFailure, OracleReply
from distill.label.selection import oracle_text
from distill.records import Article, JsonlWriter, LabelledRecord

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
class LabelRequest:
    """One journal key's work: the prompt to send, and every article waiting on its label."""

    key: str
    prompt: str
    articles: list[Article]


def make_request(spec: FilterSpec, config: GenerationConfig, article: Article) -> LabelRequest:
    """The prompt the oracle gets for an article, and its journal key."""
    text = oracle_text(spec, article)
    return LabelRequest(call_key(spec.prompt_sha256, text, config), spec.render_prompt(text), [article])


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
            oracle = {
                "model": label.model,
                "prompt_sha256": label.prompt_sha256,
                "labelled_at": label.labelled_at,
                "input_tokens": label.input_tokens,
                "output_tokens": label.output_tokens,
                "cost_usd": round(label.cost_usd, 8),
            }
            self.writer.append(LabelledRecord(article, dict(label.scores), oracle).to_json())
            count += 1
        self.stats.labelled += count
        if from_journal:
            self.stats.from_journal += count
        self.on_write(count)


@dataclass
class CallLedger:
    """The bookkeeping both runners share, from an article to its written label."""

    spec: FilterSpec
    config: GenerationConfig
    journal: Journal
    writer: LabelWriter
    pricing: Pricing  # at the price of the mode that calls (sync, or batch)
    budget: Budget
    stats: RunStats
    on_call: Callable[[], None] = lambda: None
    waiting: dict[str, LabelRequest] = field(default_factory=dict)  # key -> request without its label yet
    reserved: dict[str, float] = field(default_factory=dict)  # key -> worst case held in the budget

    def add(self, article: Article) -> LabelRequest | None:
        """The new request an article needs, or None: written from the journal
        (paid for already, by an earlier run or a twin) or joined to the request
        of a twin still waiting."""
        request = make_request(self.spec, self.config, article)
        label = self.journal.label(request.key)
        if label is not None:
            self.writer.write(label, [article], from_journal=True)
            return None
        if request.key in self.waiting:
            self.waiting[request.key].articles.append(article)
            return None
        self.waiting[request.key] = request
        return request

    def drop(self, request: LabelRequest) -> None:
        """Stop waiting on a request that got no label in this run; a twin read later asks anew."""
        self.waiting.pop(request.key, None)

    def worst_case(self, request: LabelRequest) -> float:
        return worst_case_cost(self.pricing, self.config, request.prompt)

    def reserve(self, request: LabelRequest) -> bool:
        """Hold the request's worst case in the budget; False where it does not fit now."""
        worst = self.worst_case(request)
        if not self.budget.reserve(worst):
            return False
        self.reserved[request.key] = worst
        return True

    def start(self, request: LabelRequest) -> int:
        """Journal one sync attempt as pending; returns its call id."""
        return self.journal.start_call(request.key, request.articles[0].id, self._next_attempt(request),
                                       self.stats.run_id)

    def submitted(self, name: str, requests: list[LabelRequest]) -> None:
        """Journal a submitted batch job and one pending call per request in it."""
        keys = {r.key: (r.articles[0].id, self._next_attempt(r)) for r in requests}
        self.journal.add_batch(name, self.stats.run_id, keys)

    def _next_attempt(self, request: LabelRequest) -> int:
        return self.journal.attempts(request.key) + 1

    def settle(self, call_id: int, key: str, result: OracleReply | OracleFailure, latency_s: float) -> None:
        """A call's outcome, paid for: its cost into the budget and the stats, the
        outcome into the journal, and a label out to every article waiting on it."""
        cost = self.pricing.cost(result.input_tokens, result.output_tokens)
        self._release(key, cost)
        self.stats.calls += 1
        self.stats.spend_usd += cost
        self.stats.input_tokens += result.input_tokens
        self.stats.output_tokens += result.output_tokens
        if isinstance(result, OracleFailure):
            self.stats.call_failures[result.kind] += 1
            self.journal.finish_call(call_id, result.kind, latency_s, result.input_tokens,
                                     result.output_tokens, cost, str(result))
        else:
            label = self.journal.record_label(call_id, key, self.config.model, self.spec.prompt_sha256,
                                              result, cost, latency_s)
            request = self.waiting.pop(key, None)  # None: a job of a killed run this run did not select
            if request is not None:
                self.writer.write(label, request.articles, from_journal=False)
        self.on_call()

    def abandon(self, call_id: int, key: str, status: str, latency_s: float, message: str) -> None:
        """A call that ended with no answer to pay for (cancelled, or an error nobody classified)."""
        self.journal.finish_call(call_id, status, latency_s, 0, 0, 0.0, message)
        self._release(key, 0.0)

    def _release(self, key: str, cost: float) -> None:
        if key in self.reserved:
            self.budget.settle(self.reserved.pop(key), cost)
        else:  # a batch job submitted by a killed run: it held no reservation in this one
            self.budget.charge(cost)

    def give_up(self, request: LabelRequest, kind: str) -> None:
        """Its articles count as failed (by the last failure's kind); a rerun retries them."""
        self.stats.failed_articles[kind] += len(request.articles)

    def leave(self, requests: Iterable[LabelRequest]) -> None:
        """Their articles are left for a later run (the run is stopping)."""
        self.stats.not_attempted += sum(len(r.articles) for r in requests)


def unexpected(exc: BaseException) -> LabelRunError:
    """The one line for an error nobody foresaw; the traceback stays on as its cause."""
    return LabelRunError(f"labelling stopped on an unexpected {type(exc).__name__}: {exc}; "
                         "the journal is intact, rerun the same command to resume")
