"""`distill-train`: train the regression student on distill-prepare splits."""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path
from typing import Union, get_args, get_origin

import click

from distill.cli import run_main
from distill.train.settings import LOSSES, TrainSettings


def _option(f: dataclasses.Field) -> click.Option:
    """A click option from a settings field: its help, default and type."""
    flag = "--" + f.name.replace("_", "-")
    kind = f.type if not isinstance(f.type, str) else eval(f.type, {"Path": Path})  # noqa: S307 - our own annotations
    if get_origin(kind) in (Union, types.UnionType):
        kind = next(a for a in get_args(kind) if a is not type(None))
    required = f.default is dataclasses.MISSING
    default = None if required else f.default
    if kind is bool:
        return click.Option([flag], is_flag=True, default=default, help=f.metadata["help"], show_default=True)
    click_type = click.Choice(LOSSES) if f.name == "loss" else click.Path(path_type=Path) if kind is Path else kind
    return click.Option([flag], type=click_type, default=default, required=required,
                        help=f.metadata["help"], show_default=not required and default is not None)


@click.command(params=[_option(f) for f in dataclasses.fields(TrainSettings)])
def command(**kwargs) -> None:
    """Train a regression student: standardised per-dimension targets, LoRA (or
    full fine-tune), val MAE per epoch, checkpoint-best, early stopping, resume.

    Example: distill-train --filter sustainability/v1 --data-dir datasets/sustainability/v1
    --model-name Qwen/Qwen2.5-1.5B --output-dir models/sustainability/qwen-1.5b
    """
    from distill.train.loop import train

    train(TrainSettings(**kwargs), echo=click.echo)


main = run_main(command)
