"""Tables printed at the end of a run or a plan (rich, to stderr)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from distill.label.calls import BUDGET, RunStats
from distill.label.plan import CostPlan
from distill.label.selection import SelectionStats


def _selection_rows(table: Table, sel: SelectionStats) -> None:
    table.add_row("input lines read", f"{sel.read.lines:,}")
    table.add_row("bad lines (rejected)", f"{sel.read.rejected:,}")
    if sel.duplicate_ids:
        table.add_row("duplicate ids skipped", f"{sel.duplicate_ids:,}")
    table.add_row("already labelled (skipped)", f"{sel.already_labelled:,}")
    rate = f" ({sel.pass_rate:.1%})" if sel.pass_rate is not None else ""
    table.add_row("prefilter passed", f"{sel.prefilter_passed:,} of {sel.prefilter_checked:,}{rate}")
    for reason, count in sel.prefilter_blocked.most_common():
        table.add_row(f"  blocked: {reason}", f"{count:,}")


def plan_table(plan: CostPlan, model: str) -> Table:
    table = Table(title=f"Label plan ({model}); nothing was sent", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    _selection_rows(table, plan.selection)
    table.add_row("articles selected", f"{plan.articles:,}")
    table.add_row("already paid for (journal) or twins", f"{plan.in_journal:,}")
    table.add_row("oracle calls needed", f"{plan.calls:,}")
    table.add_row("articles cut to the word budget", f"{plan.words_truncated:,}")
    table.add_row("input tokens (est., 4 chars/token)", f"{plan.input_tokens:,}")
    table.add_row(f"output tokens (est., {plan.output_tokens_per_call:.0f}/call)", f"{plan.output_tokens:,}")
    table.add_row("cost, sync API", f"${plan.sync_cost_usd:,.4f}")
    table.add_row("cost, batch API (--batch)", f"${plan.batch_cost_usd:,.4f}")
    return table


def summary_table(stats: RunStats, sel: SelectionStats, model: str) -> Table:
    table = Table(title=f"Label run {stats.run_id} ({model})", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    _selection_rows(table, sel)
    table.add_row("articles labelled this run", f"{stats.labelled:,}")
    table.add_row("  of which from the journal (no call)", f"{stats.from_journal:,}")
    table.add_row("oracle calls", f"{stats.calls:,}")
    for kind, count in stats.call_failures.most_common():
        table.add_row(f"  failed attempts: {kind}", f"{count:,}")
    for kind, count in stats.failed_articles.most_common():
        table.add_row(f"articles failed ({kind}); rerun retries", f"{count:,}")
    if stats.not_attempted:
        table.add_row("articles left for a later run", f"{stats.not_attempted:,}")
    table.add_row("tokens in / out", f"{stats.input_tokens:,} / {stats.output_tokens:,}")
    table.add_row("spend", f"${stats.spend_usd:,.4f}")
    paid = stats.labelled - stats.from_journal
    if paid:
        table.add_row("cost per article", f"${stats.spend_usd / paid:,.6f}")
    rate = stats.labelled / stats.elapsed_s if stats.elapsed_s else 0.0
    table.add_row("elapsed", f"{stats.elapsed_s:,.1f} s ({rate:,.1f} articles/s)")
    if stats.stopped == BUDGET:
        table.add_row("[yellow]stopped[/]", "[yellow]--max-cost reached; rerun with a higher cap to go on[/]")
    return table


def print_table(table: Table) -> None:
    Console(stderr=True, width=100).print(table)
