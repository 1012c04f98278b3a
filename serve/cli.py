"""`distill-score`: score corpus JSONL files with a student (the postfilter).

Only click, rich and tqdm load at import, so `--help` stays fast; the
runner (and torch or onnxruntime) is imported when a run starts.
"""

from __future__ import annotations

from pathlib import Path

import click

from distill.cli import run_main
from distill.serve.settings import ScoreSettings
from distill.settings import options_from


@click.command()
@options_from(ScoreSettings)
@click.option("--show", type=int, default=0, show_default=True,
              help="print the first N records of each output as a table (id, tier, overall, strongest dimensions)")
def command(show: int, **options) -> None:
    """Score articles in INPUTS (JSONL, Parquet or datasets folders) with a student model; write scored JSONL or Parquet.

    Each output line: id, scores {dimension: 0-10}, overall_score, tier,
    prefilter ("passed" or why the article was blocked), model. Records come
    in input order. Rerunning the same command resumes: ids already in the
    output are skipped, so after any interruption the output ends up with
    every valid input id exactly once. Bad input lines go to
    OUTPUT.rejects.jsonl (rewritten each run) with file, line and reason.
    One run at a time per output: a second stops at once, naming the first.

    Several filters in one pass (`-f a -f b`, or several `-m`): each article
    is read and tokenised once and run once through each distinct model; each
    filter gets its own output, FOLDER/<filter>.jsonl for `-o FOLDER` or the
    path with {filter} filled in, and the rejects go to FOLDER/rejects.jsonl.
    `--engine ray` runs the same job as a Ray Data pipeline with the same output.
    """
    from distill.serve.runner import score_corpus

    settings = ScoreSettings(**options)
    bar = _ProgressBar(settings.inputs) if settings.progress else None
    try:
        summary = score_corpus(settings, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    if show > 0:
        for job in summary.jobs:
            _print_records(job.output, show)
    _print_summary(summary)


def _print_records(path: Path, limit: int) -> None:
    """The first records of an output file, read back as a user would; a line that is
    not a scored record (garbage someone appended) is flagged in the table, not fatal."""
    from rich.console import Console
    from rich.table import Table

    from distill.records import Reject, iter_objects

    table = Table(title=f"first {limit} records of {path}")
    for name in ("id", "tier", "overall", "strongest dimensions"):
        table.add_column(name, justify="right" if name == "overall" else "left")
    for shown, (line_no, record) in enumerate(iter_objects(path)):
        if shown == limit:
            break
        row = None if isinstance(record, Reject) else _record_row(record)
        if row is None:
            why = record.reason if isinstance(record, Reject) else "not a scored record"
            row = (f"line {line_no}", "-", "-", f"[red]unreadable: {why}[/]")
        table.add_row(*row)
    Console(stderr=True).print(table)


def _record_row(record: dict) -> tuple[str, str, str, str] | None:
    """Table cells for a scored or blocked record; None if it has not that shape."""
    scores, overall = record.get("scores"), record.get("overall_score")
    if not isinstance(record.get("id"), str):
        return None
    if scores is None:
        return record["id"], "-", "-", f"blocked: {record.get('prefilter')}"
    if not isinstance(scores, dict) or not isinstance(overall, int | float) or isinstance(overall, bool):
        return None
    if not all(isinstance(v, int | float) for v in scores.values()):
        return None
    top = sorted(scores.items(), key=lambda kv: -kv[1])[:2]
    return (record["id"], str(record.get("tier")), f"{overall:.2f}",
            ", ".join(f"{name} {value:.1f}" for name, value in top))


class _ProgressBar:
    """Progress over the input lines, opened at the run's first progress call: by then
    the run has checked its settings, so a missing input is its error, not the bar's."""

    def __init__(self, inputs: list[Path]):
        self.inputs, self.bar = inputs, None

    def __call__(self, done: int) -> None:
        if self.bar is None:
            from distill.progress import Progress

            self.bar = Progress(count_lines(self.inputs), "scoring", "articles", scale_units=True)
        self.bar.advance_to(done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def count_lines(paths: list[Path]) -> int:
    """Input lines (an upper bound on articles) for the progress bar's ETA.

    A torn .gz counts up to where its data ends; the run reports it as a reject.
    Parquet files and datasets folders count their rows."""
    from distill.columnar import count_rows, is_columnar
    from distill.records import open_lines

    total = 0
    for path in paths:
        if is_columnar(path):
            total += count_rows(path)
            continue
        with open_lines(path) as handle:
            while block := handle.read(1 << 22):
                total += block.count(b"\n")
    return total


def _print_summary(summary) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    for note in summary.notes:
        console.print(f"[yellow]note:[/] {note}")
    t = summary.timings
    table = Table(title=f"distill-score: {summary.filter_id} with {summary.model_id} "
                        f"({summary.backend}, {summary.engine} engine)", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for job in summary.jobs:
        prefix = f"{job.spec.id}: " if len(summary.jobs) > 1 else ""
        table.add_row(f"{prefix}scored", f"{job.scored:,}")
        for tier, count in sorted(job.tiers.items(), key=lambda kv: -kv[1]):
            table.add_row(f"  tier {tier}", f"{count:,}")
        table.add_row(f"{prefix}blocked by prefilter", f"{job.blocked:,}")
        table.add_row(f"{prefix}already scored (skipped)", f"{job.resumed:,}")
        table.add_row(f"{prefix}output", str(job.output))
    table.add_row("rejected lines", f"{summary.rejected:,}" + (f" -> {summary.rejects}" if summary.rejected else ""))
    table.add_row("throughput", f"{summary.articles_per_second:,.1f} articles/s over {summary.seconds:,.1f} s")
    table.add_row("startup (model, workers, resume scan)", f"{summary.startup:.1f} s")
    table.add_row("time: read / tokenise / wait / infer / write",
                  " / ".join(f"{x:.1f}" for x in (t.read, t.tokenise, t.wait, t.infer, t.write)) + " s")
    table.add_row("batches (padding share)", f"{t.batches:,} ({t.padding_share:.1%})")
    console.print(table)


main = run_main(command)
