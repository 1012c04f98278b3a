"""Which articles a run labels: valid lines, not yet labelled, passing the
prefilter, then the first, a seeded random or a `--select`ed `--target-count`
of them (the chooser, from label/active.py).

A random sample orders candidates by a seeded hash of their id, so a rerun
with the same seed picks the same articles however the files are split or
ordered; only the `needed` best-ranked are held in memory.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from distill.acquisition import seeded_rank
from distill.filter_spec import FilterSpec
from distill.prefilter import PASSED, Prefilter
from distill.records import Article, ReadStats, RejectsWriter, read_articles
from distill.truncation import article_text, truncate_words


@dataclass
class SelectionStats:
    read: ReadStats = field(default_factory=ReadStats)
    already_labelled: int = 0
    duplicate_ids: int = 0
    prefilter_checked: int = 0
    prefilter_blocked: Counter = field(default_factory=Counter)
    selected: int = 0
    first_rejects: list = field(default_factory=list)  # a few bad lines, shown with file:line

    @property
    def prefilter_passed(self) -> int:
        return self.prefilter_checked - sum(self.prefilter_blocked.values())

    @property
    def pass_rate(self) -> float | None:
        return self.prefilter_passed / self.prefilter_checked if self.prefilter_checked else None


def oracle_text(spec: FilterSpec, article: Article) -> str:
    """The article text the oracle sees: title + body, head/tail truncated in words."""
    trunc = spec.truncation
    return truncate_words(article_text(article.title, article.text), trunc.oracle_words, trunc.head_share)


def select_articles(
    spec: FilterSpec,
    files: list[Path],
    done_ids: set[str],
    target_count: int | None,
    random_sample: bool,
    seed: int,
    stats: SelectionStats,
    rejects: RejectsWriter | list | None = None,
    strict: bool = False,
    chooser: Callable[[Iterator[Article], int], list[Article]] | None = None,
) -> Iterator[Article]:
    """The articles to send; `chooser(candidates, needed)` picks them when given (--select)."""
    needed = None if target_count is None else max(0, target_count - len(done_ids))
    candidates = _candidates(spec, files, done_ids, stats, rejects, strict)
    if needed is None:
        chosen: Iterator[Article] = candidates
    elif chooser is not None:
        chosen = iter(chooser(candidates, needed))
    elif random_sample:
        chosen = iter(_seeded_sample(candidates, needed, seed))
    else:
        chosen = _first(candidates, needed)
    for article in chosen:
        stats.selected += 1
        yield article


def _candidates(spec, files, done_ids, stats, rejects, strict) -> Iterator[Article]:
    prefilter = Prefilter(spec)
    seen: set[str] = set()
    for article in read_articles(files, rejects=rejects, strict=strict, stats=stats.read):
        if article.id in seen:
            stats.duplicate_ids += 1
            continue
        seen.add(article.id)
        if article.id in done_ids:
            stats.already_labelled += 1
            continue
        stats.prefilter_checked += 1
        verdict = prefilter.check(article)
        if verdict != PASSED:
            stats.prefilter_blocked[verdict.split("(")[0]] += 1
            continue
        yield article


def _first(articles: Iterator[Article], needed: int) -> Iterator[Article]:
    if needed <= 0:
        return
    for count, article in enumerate(articles, start=1):
        yield article
        if count >= needed:
            return


def _seeded_sample(articles: Iterator[Article], needed: int, seed: int) -> list[Article]:
    if needed <= 0:
        for _ in articles:  # still read everything, for the counts in the summary
            pass
        return []
    heap: list[tuple[int, str, Article]] = []  # max-heap on rank via negation
    for article in articles:
        rank = seeded_rank(seed, article.id)  # the same ranks as --select random
        item = (-rank, article.id, article)
        if len(heap) < needed:
            heapq.heappush(heap, item)
        elif item > heap[0]:
            heapq.heapreplace(heap, item)
    return [article for _, _, article in sorted(heap, reverse=True)]
