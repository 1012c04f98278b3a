"""`distill-evaluate`: score a student on test against the oracle and baselines."""

from __future__ import annotations

import click

from distill.cli import run_main
from distill.evaluate.settings import EvaluateSettings
from distill.settings import options_from


@click.command()
@options_from(EvaluateSettings)
def command(**values) -> None:
    """Per-dimension MAE/RMSE/Spearman, overall MAE, tier accuracy, per-tier
    precision/recall/F1 and confusion matrix, the seed's success criteria, and
    TF-IDF + ridge and mean baselines side by side under the same post-processing;
    per-slice metrics with --slice-by, a tier operating point with --target-recall.
    Every choice is fitted on val; test is only scored.
    """
    from distill.evaluate.run import evaluate

    evaluate(EvaluateSettings(**values), echo=click.echo)


main = run_main(command)
