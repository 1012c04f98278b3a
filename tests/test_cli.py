"""The command group lists every stage; --help is fast and imports no heavy library."""

from __future__ import annotations

import importlib
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from distill.cli import STAGES, cli

CONSOLE_SCRIPTS = ["distill-label", "distill-prepare", "distill-train", "distill-evaluate",
                   "distill-export", "distill-score", "distill-bench"]


def test_group_lists_every_stage():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ["label", "prepare", "train", "evaluate", "export", "score", "serve", "bench"]:
        assert f"  {name} " in result.output
    listed = [line.split()[0] for line in result.output.split("Stages:")[1].splitlines() if line.strip()]
    assert listed == ["label", "prepare", "train", "evaluate", "export", "score", "serve", "bench"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_each_stage_name_dispatches_to_its_own_command(stage):
    module, attr, _ = STAGES[stage]
    own = getattr(importlib.import_module(module), attr)
    assert isinstance(own, click.Command)
    with click.Context(cli) as ctx:
        assert cli.get_command(ctx, stage) is own
    # Through the group, the stage parses its own flags: an unknown one is its usage error.
    result = CliRunner().invoke(cli, [stage, "--no-such-flag"])
    assert result.exit_code == 2 and "No such option" in result.output and "--no-such-flag" in result.output
    assert f"Usage: cli {stage}" in result.output


def test_an_unknown_stage_exits_2_naming_it():
    result = CliRunner().invoke(cli, ["scroe"])
    assert result.exit_code == 2 and "No such command 'scroe'" in result.output


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_help_works_without_importing_torch(stage):
    code = (
        "import sys; from distill.cli import main\n"
        f"sys.argv = ['distill', '{stage}', '--help']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'google.genai', 'onnxruntime') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--help" in result.stdout


@pytest.mark.parametrize("script", CONSOLE_SCRIPTS + ["distill"])
def test_console_scripts_installed(script):
    result = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
