"""`distill-prepare`: validate labelled JSONL and write stratified train/val/test splits."""

from __future__ import annotations

from pathlib import Path

import click

from distill.cli import run_main
from distill.prepare.settings import PrepareSettings, default_for, help_for


def _option(flag: str, name: str, **kwargs) -> click.Option:
    """A flag whose help and default come from PrepareSettings."""
    if "default" not in kwargs and not kwargs.get("required"):
        kwargs["default"] = default_for(name)
    kwargs.setdefault("show_default", True)
    return click.option(flag, name, help=help_for(name), **kwargs)


@click.command()
@_option("--input", "inputs", multiple=True, required=True, type=click.Path(dir_okay=False, path_type=Path))
@_option("--filter", "filter", required=True)
@_option("--output-dir", "output_dir", type=click.Path(file_okay=False, path_type=Path))
@_option("--train-ratio", "train_ratio", type=float)
@_option("--val-ratio", "val_ratio", type=float)
@_option("--test-ratio", "test_ratio", type=float)
@_option("--oversample-ratio", "oversample_ratio", type=float)
@_option("--weighting/--no-weighting", "weighting")
@_option("--seed", "seed", type=int)
@_option("--scores-field", "scores_field")
@_option("--tokenizer", "tokenizer", type=click.Path(file_okay=False, path_type=Path))
@_option("--strict/--no-strict", "strict")
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

    values["inputs"] = list(values["inputs"])
    result = run_prepare(PrepareSettings(**values))
    print_summary(result.report)


main = run_main(command)
