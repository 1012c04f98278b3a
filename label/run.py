"""One labelling run, wired together: settings -> oracle, journal, output.

Output folder layout:
  labelled.jsonl    the labels (article fields + scores + oracle)
  journal.sqlite    every call and every label (resume, never pay twice)
  rejects.jsonl     bad input lines of the latest run, with file and line
  label_runs.jsonl  one line per run: settings, filter id and hash, counts
  selection.jsonl   with --select: each round's picks and why (label/active.py)
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from distill import __version__
from distill.errors import DistillError
from distill.filter_spec import FilterSpec
from distill.label.active import make_chooser
from distill.label.calls import (
    ERROR,
    INTERRUPTED,
    Budget,
    CallLedger,
    LabelWriter,
    Pricing,
    RunStats,
    unexpected,
)
from distill.label.concurrent import ConcurrentRunner
from distill.label.journal import Journal, utc_now
from distill.label.limiter import RateLimiter
from distill.label.oracle.base import Oracle, backend_class, key_from_env
from distill.label.selection import SelectionStats, select_articles
from distill.label.settings import LabelSettings
from distill.records import JsonlWriter, RejectsWriter, dumps_line, read_ids

OUTPUT_NAME = "labelled.jsonl"
JOURNAL_NAME = "journal.sqlite"


def make_oracle(settings: LabelSettings, spec: FilterSpec) -> Oracle:
    """The backend named by --llm, with its key (an error here if it needs one and
    none is set); heavy SDK imports happen only here."""
    backend = backend_class(settings.backend)
    key = key_from_env(backend)
    config, dimensions = settings.generation(spec), spec.dimension_names
    if settings.backend == "openai":
        return backend(config, dimensions, settings.base_url, key, timeout_s=settings.timeout_s)
    return backend(config, dimensions, key, settings.timeout_s, settings.base_url, settings.api_version)


@contextmanager
def output_lock(folder: Path) -> Iterator[None]:
    """One run per output folder: two would race on the same journal and output."""
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".label.lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DistillError(f"another distill-label run is using {folder}; wait for it or pick another --output-dir") from None
    try:
        yield
    finally:
        handle.close()


def run_labelling(spec: FilterSpec, settings: LabelSettings, progress=None) -> tuple[RunStats, SelectionStats]:
    """Label what the settings select; `progress(advance, spend)` is told as labels land."""
    settings.validate()
    oracle = make_oracle(settings, spec)  # fails early on a missing key, before touching files
    folder = Path(settings.output_dir)
    stats, selection = RunStats(), SelectionStats()
    with output_lock(folder):
        journal = Journal(folder / JOURNAL_NAME)  # an unreadable journal stops here, before any call
        journal.mark_interrupted()
        rejects_path = folder / "rejects.jsonl"
        rejects_path.unlink(missing_ok=True)
        try:
            with JsonlWriter(folder / OUTPUT_NAME) as out, RejectsWriter(rejects_path) as rejects:
                done_ids = read_ids(folder / OUTPUT_NAME)  # after the writer repaired a torn tail
                chooser = make_chooser(spec, settings, folder, folder / OUTPUT_NAME, record=True)
                articles = select_articles(spec, settings.source_files(), done_ids, settings.target_count,
                                           settings.random_sample, settings.seed, selection, rejects,
                                           settings.strict, chooser)
                notify = progress or (lambda advance, spend: None)
                writer = LabelWriter(out, stats, lambda n: notify(n, stats.spend_usd))
                runner = _runner(spec, settings, oracle, journal, writer, stats,
                                 lambda: notify(0, stats.spend_usd))
                try:
                    asyncio.run(_run_and_close(runner, oracle, articles))
                finally:
                    selection.first_rejects = list(rejects.first)
        except BaseException as exc:
            stats.stopped = stats.stopped or (INTERRUPTED if isinstance(exc, KeyboardInterrupt) else ERROR)
            raise
        finally:
            journal.close()
            _record_run(folder, spec, settings, stats, selection)  # a stopped run is recorded too
    return stats, selection


def _runner(spec, settings, oracle, journal, writer, stats, on_call):
    p_in, p_out = settings.prices(spec)
    discount = spec.oracle.batch_discount if settings.batch else 1.0
    ledger = CallLedger(spec=spec, config=settings.generation(spec), journal=journal, writer=writer,
                        pricing=Pricing(p_in * discount, p_out * discount), budget=Budget(settings.max_cost),
                        stats=stats, on_call=on_call)
    if settings.batch:
        from distill.label.batch import BatchRunner

        return BatchRunner(ledger, oracle, batch_size=settings.batch_size, poll_s=settings.poll_s,
                           max_attempts=settings.max_attempts)
    return ConcurrentRunner(ledger, oracle, limiter=RateLimiter(settings.rpm, settings.tpm),
                            concurrency=settings.concurrency, max_attempts=settings.max_attempts,
                            backoff_base_s=settings.backoff_base_s, backoff_max_s=settings.backoff_max_s,
                            expected_output_tokens=settings.expected_output_tokens)


async def _run_and_close(runner, oracle, articles) -> None:
    try:
        await runner.run(articles)
    except DistillError:
        raise
    except Exception as exc:  # one line for the CLI, whichever runner it came from
        raise unexpected(exc) from exc
    finally:
        await oracle.aclose()


def _record_run(folder: Path, spec: FilterSpec, settings: LabelSettings, stats: RunStats,
                selection: SelectionStats) -> None:
    """How this output was made: appended, one line per run (never the API key)."""
    record = {
        "run_id": stats.run_id,
        "finished_at": utc_now(),
        "distill_version": __version__,
        "filter": spec.id,
        "filter_config_hash": spec.config_hash,
        "prompt_sha256": spec.prompt_sha256,
        "settings": settings.to_json(),
        "selected": selection.selected,
        "prefilter_pass_rate": selection.pass_rate,
        "rejected_lines": selection.read.rejected,
        "labelled": stats.labelled,
        "from_journal": stats.from_journal,
        "calls": stats.calls,
        "call_failures": dict(stats.call_failures),
        "failed_articles": dict(stats.failed_articles),
        "not_attempted": stats.not_attempted,
        "spend_usd": stats.spend_usd,
        "stopped": stats.stopped,
        "elapsed_s": round(stats.elapsed_s, 3),
    }
    with open(folder / "label_runs.jsonl", "a", encoding="utf-8") as handle:
        handle.write(dumps_line(json.loads(json.dumps(record, default=str))))
        handle.flush()
        os.fsync(handle.fileno())
