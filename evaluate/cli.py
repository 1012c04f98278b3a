"""`distill-evaluate`: score a student on test against the oracle and baselines."""

from __future__ import annotations

from pathlib import Path

import click

from distill.cli import run_main


@click.command()
@click.option("--model-checkpoint", type=click.Path(path_type=Path), required=True,
              help="model folder written by distill-train (or a merged export with distill.json)")
@click.option("--data-dir", type=click.Path(path_type=Path), required=True,
              help="folder with train/val/test.jsonl from distill-prepare: test is scored, val fits "
                   "post-processing, train fits the baselines")
@click.option("--output", type=click.Path(path_type=Path), default=Path("reports/model_evaluation.md"),
              show_default=True, help="markdown report; metrics.json and PNG plots go beside it")
@click.option("--calibrate", is_flag=True, default=False, show_default=True,
              help="fit per-dimension calibration on val and save calibration.json in the model folder "
                   "(later stages apply it)")
@click.option("--ensemble", is_flag=True, default=False, show_default=True,
              help="fit a TF-IDF + ridge over the student's own tokens on train, choose its blend weight with "
                   "the student on val (under the calibration method's rounding) and save ensemble.npz in the "
                   "model folder (later stages apply it)")
@click.option("--calibration-method", type=click.Choice(["isotonic", "linear", "isotonic+rounded", "linear+rounded", "rounded"]), default="isotonic",
              show_default=True, help="isotonic (monotone map) or linear (variance-restoring line); +rounded then rounds to "
                   "integers like the oracle's labels, stored in the same knots; rounded alone fits nothing")
@click.option("--batch-size", type=int, default=32, show_default=True, help="articles per forward pass")
@click.option("--num-threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
def command(**kwargs) -> None:
    """Per-dimension MAE/RMSE/Spearman, overall MAE, tier accuracy, per-tier
    precision/recall/F1 and confusion matrix, the seed's success criteria, and
    TF-IDF + ridge and mean baselines side by side under the same post-processing.
    """
    from distill.evaluate.run import EvaluateSettings, evaluate

    evaluate(EvaluateSettings(**kwargs), echo=click.echo)


main = run_main(command)
