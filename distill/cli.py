"""The `distill` command group. It only dispatches: each stage lives in its own
module and is imported when called, so `distill --help` imports no torch."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

import click

from distill import __version__
from distill.errors import DistillError

# name -> (module, click command, one-line help); the module is imported on use.
STAGES: dict[str, tuple[str, str, str]] = {
    "label": ("distill.label.cli", "command", "Label articles with the oracle (journaled, resumable, budgeted)."),
    "prepare": ("distill.prepare.cli", "command", "Validate labels and write stratified train/val/test splits."),
    "train": ("distill.train.cli", "command", "Train the regression student (LoRA or full fine-tune)."),
    "evaluate": ("distill.evaluate.cli", "command", "Evaluate a student against the oracle and baselines."),
    "export": ("distill.export.cli", "command", "Merge, export to ONNX, validate and quantise a student."),
    "score": ("distill.serve.cli", "command", "Score corpus JSONL files with a student (the postfilter)."),
    "serve": ("distill.serve.server.cli", "command", "Score articles online over HTTP (dynamic batching)."),
    "bench": ("distill.benchmarks.cli", "command", "Run benchmark harnesses and write JSON + markdown."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(STAGES)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in STAGES:
            return None
        module, attr, _ = STAGES[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help text comes from STAGES so listing the stages imports none of them.
        with formatter.section("Stages"):
            formatter.write_dl([(name, stage[2]) for name, stage in STAGES.items()])


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="distill")
def cli() -> None:
    """distill: label articles with an oracle LLM, train a small student on
    the labels, export it, and score large corpora locally.

    Pipeline: label -> prepare -> train -> evaluate -> export -> score.
    Each stage is also its own command (distill-label, distill-prepare, ...).
    """


def run_main(command: click.Command) -> Callable[..., None]:
    """Wrap a stage so library errors print as one clean line (exit 2)."""

    def main(args: list[str] | None = None) -> None:
        try:
            command.main(args=args, standalone_mode=False)
        except click.exceptions.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(130)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except DistillError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("Interrupted; rerun the same command to resume.", err=True)
            sys.exit(130)

    return main


main = run_main(cli)
