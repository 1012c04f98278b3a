"""One builder turns a settings dataclass into click flags with the field's help, default and type."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import click
import pytest
from click.testing import CliRunner

from distill.errors import ConfigError
from distill.settings import Settings, help_of, options_from


@dataclass
class DemoSettings(Settings):
    inputs: list[Path] = field(metadata={"help": "input files", "argument": True})
    output: Path = field(metadata={"help": "where to write", "aliases": ("-o",)})
    rate: float = field(default=0.5, metadata={"help": "a share"})
    mode: Literal["fast", "exact"] = field(default="fast", metadata={"help": "how"})
    label: str | None = field(default=None, metadata={"help": "optional name", "flag": "--name"})
    strict: bool = field(default=False, metadata={"help": "stop at the first problem"})
    tags: list[str] = field(default_factory=list, metadata={"help": "repeatable", "flag": "--tag"})
    internal: int = field(default=3, metadata={"help": "not a flag", "cli": False})

    def problems(self) -> list[str]:
        return [f"--rate: must be in 0..1 (got {self.rate})"] if not 0 <= self.rate <= 1 else []


@click.command()
@options_from(DemoSettings)
def demo(**values) -> None:
    settings = DemoSettings(**values)
    settings.validate()
    click.echo(repr(settings.to_json()))


def invoke(*args: str):
    return CliRunner().invoke(demo, list(args))


def test_flags_carry_the_fields_types_defaults_and_values():
    result = invoke("a.jsonl", "b.jsonl", "-o", "out", "--name", "x", "--strict", "--tag", "t1", "--tag", "t2")
    assert result.exit_code == 0, result.output
    assert eval(result.output) == {  # noqa: S307 - our own repr
        "inputs": ["a.jsonl", "b.jsonl"], "output": "out", "rate": 0.5, "mode": "fast",
        "label": "x", "strict": True, "tags": ["t1", "t2"], "internal": 3,
    }


def test_help_comes_from_the_dataclass_and_hides_non_cli_fields():
    text = invoke("--help").output
    for flag, help_text in (("--rate", "a share"), ("--name", "optional name"), ("--strict / --no-strict", "stop at the first")):
        assert flag in text and help_text in text
    assert "[default: 0.5]" in text
    assert "internal" not in text
    assert help_of(DemoSettings, "output") == "where to write"


def test_choices_and_required_flags_are_enforced_by_click():
    assert invoke("a", "-o", "x", "--mode", "slow").exit_code == 2
    missing = invoke("a")
    assert missing.exit_code == 2 and "--output" in missing.output


def test_validate_lists_problems_as_one_config_error():
    settings = DemoSettings(inputs=[Path("a")], output=Path("o"), rate=2.0)
    with pytest.raises(ConfigError, match=r"--rate: must be in 0..1 \(got 2.0\)"):
        settings.validate()


def test_a_field_of_an_unsupported_type_is_a_clear_type_error():
    @dataclass
    class Odd(Settings):
        mapping: dict = field(default_factory=dict, metadata={"help": "x"})

    with pytest.raises(TypeError, match="mapping: no click type"):
        options_from(Odd)


@dataclass
class ListSettings(Settings):
    sizes: tuple[str, ...] = field(default=("s", "m"), metadata={"help": "comma list", "separator": ","})
    counts: list[int] = field(default_factory=list, metadata={"help": "numbers, comma list", "separator": ","})
    keep: tuple[str, ...] = field(default=(), metadata={"help": "repeatable, kept a tuple"})
    write_all: bool = field(default=True, metadata={"help": "write every record", "off_flag": "--skip-some"})
    cores: int = field(default_factory=lambda: 7, metadata={"help": "default: the machine's"})


@click.command()
@options_from(ListSettings)
def lists(**values) -> None:
    click.echo(repr(ListSettings(**values)))


def test_separated_lists_off_flags_and_tuple_fields():
    result = CliRunner().invoke(lists, ["--sizes", "a, b,,c", "--counts", "1,2", "--keep", "x", "--keep", "y",
                                        "--skip-some"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == repr(ListSettings(sizes=("a", "b", "c"), counts=[1, 2], keep=("x", "y"),
                                                      write_all=False, cores=7))
    assert CliRunner().invoke(lists, []).output.strip() == repr(ListSettings())
    bad = CliRunner().invoke(lists, ["--counts", "1,two"])
    assert bad.exit_code == 2 and "'--counts'" in bad.output and "'two' is not a valid integer" in bad.output
    text = CliRunner().invoke(lists, ["--help"]).output
    assert "[default: s,m]" in text and "--write-all / --skip-some" in text
    assert "[default: 7]" not in text  # a factory's default is the machine's; the help says so
