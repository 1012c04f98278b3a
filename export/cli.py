"""`distill-export MODEL_DIR -o exports/NAME [--onnx] [--quantize int8] [--fp16] [--tensorrt]`."""

from __future__ import annotations

from pathlib import Path

import click

from distill.cli import run_main
from distill.export.settings import QUANTIZE_CHOICES, ExportSettings, flag_spec


def _option(*names: str, field: str, **kwargs) -> click.decorators.FC:
    return click.option(*names, field, show_default=True, **flag_spec(field), **kwargs)


@click.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@_option("-o", "--output", field="output", type=click.Path(path_type=Path), required=True)
@_option("--onnx", field="onnx", is_flag=True)
@_option("--quantize", field="quantize", type=click.Choice(QUANTIZE_CHOICES))
@_option("--fp16", field="fp16", is_flag=True)
@_option("--tensorrt", field="tensorrt", is_flag=True)
@_option("--validation-data", field="validation_data", type=click.Path(path_type=Path))
@_option("--validation-limit", field="validation_limit", type=int)
@_option("--base-model", field="base_model")
@_option("--opset", field="opset", type=int)
@_option("--parity-tolerance", field="parity_tolerance", type=float)
@_option("--mae-tolerance", field="mae_tolerance", type=float)
@_option("--parity-texts", field="parity_texts", type=int)
@_option("--bench-batch", field="bench_batch", type=int)
@_option("--bench-articles", field="bench_articles", type=int)
@_option("--bench-rounds", field="bench_rounds", type=int)
@_option("--threads", field="threads", type=int)
@_option("--overwrite", field="overwrite", is_flag=True)
def command(**options) -> None:
    """Merge a trained student into a plain Hugging Face model and, with --onnx,
    export it to ONNX, check it against PyTorch (left- and right-padded
    batches), optionally quantise it (kept only within the MAE gate) and time
    every variant. Writes MODEL.onnx and friends plus export_report.json into
    --output; nothing is left behind if any check fails."""
    from distill.export.pipeline import run_export

    settings = ExportSettings(**options)
    result = run_export(settings, echo=click.echo)
    click.echo(f"wrote {settings.output} ({len(result['files'])} files, report in export_report.json)")


main = run_main(command)
