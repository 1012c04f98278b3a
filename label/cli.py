"""`distill-label`: label articles with the oracle, journaled, resumable and budgeted.

`distill-label --source ... [options]` runs (or with --plan, estimates) a
labelling run; `distill-label agree A.jsonl B.jsonl` compares two label sets.
Nothing heavy is imported at module level, so --help stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from distill.cli import run_main
from distill.label.settings import LabelSettings
from distill.settings import options_from


@click.group(invoke_without_command=True)
@options_from(LabelSettings)
@click.pass_context
def command(ctx: click.Context, **values) -> None:
    """Label articles with the oracle (Gemini by default).

    Every call and label goes to OUTPUT_DIR/journal.sqlite before the label is
    appended to OUTPUT_DIR/labelled.jsonl; rerun the same command to resume
    (done keys are skipped, failed ones retried, nothing is paid twice).
    The API key is read from GEMINI_API_KEY or GOOGLE_API_KEY.

    A run stops by itself, with one line saying what to do, when the endpoint
    still cannot be reached after --max-attempts, when the journal exists but
    cannot be read (it is never replaced), or when one more call could take
    spend past --max-cost; labels already journaled are kept in every case.

    \b
    Examples:
      distill-label --source "datasets/raw/*.jsonl" --plan
      distill-label --source "datasets/raw/*.jsonl" --target-count 5000 \\
          --random-sample --seed 7 --max-cost 5 --output-dir labelled/sust
      distill-label agree run_a/labelled.jsonl run_b/labelled.jsonl
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = LabelSettings(**values)
    from distill.filter_spec import load_filter

    spec = load_filter(settings.filter)
    if settings.plan:
        _plan(spec, settings)
    else:
        _label(spec, settings)


def _plan(spec, settings: LabelSettings) -> None:
    from distill.label.plan import make_plan
    from distill.label.report import plan_table, print_table

    plan = make_plan(spec, settings, rejects=[])
    print_table(plan_table(plan, settings.generation(spec).model))


def _label(spec, settings: LabelSettings) -> None:
    from distill.label.report import print_table, summary_table
    from distill.label.run import run_labelling
    from distill.progress import Progress

    with Progress(settings.target_count, "labelling", "articles", enabled=settings.progress) as bar:
        stats, selection = run_labelling(
            spec, settings, lambda advance, spend: bar.update(advance, spend=f"${spend:.4f}")
        )
    print_table(summary_table(stats, selection, settings.generation(spec).model))
    for reject in selection.first_rejects:
        click.echo(f"bad line {reject.path}:{reject.line_no}: {reject.reason}", err=True)
    if selection.read.rejected:
        click.echo(f"{selection.read.rejected} bad input line(s) written to "
                   f"{settings.output_dir / 'rejects.jsonl'}", err=True)


@command.command("agree")
@click.argument("a", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("b", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--filter", "filter_name", default=None,
              help="filter whose dimensions to compare (default: every dimension both files share)")
@click.option("--json-out", type=click.Path(path_type=Path), default=None,
              help="also write the figures to this JSON file")
def agree_command(a: Path, b: Path, filter_name: str | None, json_out: Path | None) -> None:
    """Agreement between two label sets of the same articles (joined by id):
    per-dimension MAE, Spearman and Krippendorff's alpha (interval). This is
    the noise floor: no student can agree with the oracle better than the
    oracle agrees with itself."""
    from distill.label.agree import agreement, agreement_table

    dims = None
    if filter_name:
        from distill.filter_spec import load_filter

        dims = load_filter(filter_name).dimension_names
    result = agreement(a, b, dims)
    from rich.console import Console

    Console(width=100).print(agreement_table(result, a, b))
    if json_out:
        import json

        json_out.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")


main = run_main(command)
