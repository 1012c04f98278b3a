"""`distill-train`: train the regression student on distill-prepare splits."""

from __future__ import annotations

import click

from distill.cli import run_main
from distill.settings import options_from
from distill.train.settings import TrainSettings


@click.command()
@options_from(TrainSettings)
def command(**values) -> None:
    """Train a regression student: standardised per-dimension targets, LoRA (or
    full fine-tune), val MAE per epoch, checkpoint-best, early stopping, resume.

    Example: distill-train --filter sustainability/v1 --data-dir datasets/sustainability/v1
    --model-name Qwen/Qwen2.5-1.5B --output-dir models/sustainability/qwen-1.5b
    """
    from distill.train.loop import train

    train(TrainSettings(**values), echo=click.echo)


main = run_main(command)
