"""`distill-label`: not built yet (see the open issue for this stage)."""

import click

from distill.cli import run_main


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def command() -> None:
    """Not built yet: this stage is planned but does nothing so far."""
    raise click.ClickException("distill-label is not built yet")


main = run_main(command)
