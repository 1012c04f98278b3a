"""`distill-export MODEL_DIR -o exports/NAME [--onnx] [--quantize int8] [--fp16] [--tensorrt]`."""

from __future__ import annotations

import click

from distill.cli import run_main
from distill.export.settings import ExportSettings
from distill.settings import options_from


@click.command()
@options_from(ExportSettings)
def command(**values) -> None:
    """Merge a trained student into a plain Hugging Face model and, with --onnx,
    export it to ONNX, check it against PyTorch (left- and right-padded
    batches), optionally quantise it (kept only within the MAE gate) and time
    every variant. Writes MODEL.onnx and friends plus export_report.json into
    --output; nothing is left behind if any check fails."""
    from distill.export.pipeline import run_export

    settings = ExportSettings(**values)
    result = run_export(settings, echo=click.echo)
    click.echo(f"wrote {settings.output} ({len(result['files'])} files, report in export_report.json)")


main = run_main(command)
