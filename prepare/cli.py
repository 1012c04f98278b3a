"""`distill-prepare`: validate labelled JSONL and write stratified train/val/test splits."""

from __future__ import annotations

import click

from distill.cli import run_main
from distill.prepare.settings import PrepareSettings
from distill.settings import options_from


@click.command()
@options_from(PrepareSettings)
@click.pass_context
def command(ctx: click.Context, **values) -> None:
    """Validate labelled articles and write train/val/test splits for the student.

    Splits are stratified by tier (small tiers fall back to overall-score bins),
    keep near-duplicate texts in one split, and are byte-identical for the same
    inputs and seed. Train is balanced by copying minority-tier examples
    (--oversample-ratio) or by loss weights (--weighting); val and test keep the
    natural distribution. Texts are cut with the filter's student truncation.

    Example: distill-prepare --filter sustainability/v1 --input labelled.jsonl
    """
    if values["weighting"] and ctx.get_parameter_source("oversample_ratio") is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--weighting replaces oversampling: give --weighting or --oversample-ratio, not both")
    from distill.prepare.pipeline import run_prepare
    from distill.prepare.report import print_summary

    result = run_prepare(PrepareSettings(**values))
    print_summary(result.report)


main = run_main(command)
