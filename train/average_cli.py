"""`distill-average`: one student whose weights are the mean of several (seeds or folds)."""

from __future__ import annotations

from pathlib import Path

import click

from distill.cli import run_main


@click.command()
@click.argument("model_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--output-dir", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="folder for the averaged student (a full-weights model folder, like a full fine-tune's)")
def command(model_dirs: tuple[Path, ...], output_dir: Path) -> None:
    """Average the weights of students trained from one base on one split
    (same filter, token budget and target scaling), e.g. the same recipe run
    with different --seed values. LoRA students are merged first. Scoring the
    result costs one model; run distill-evaluate on it to see on val whether
    the mean beats its parts.

    Example: distill-average models/s42 models/s7 -o models/soup
    """
    from distill.train.average import average_students

    average_students(list(model_dirs), output_dir, echo=click.echo)


main = run_main(command)
