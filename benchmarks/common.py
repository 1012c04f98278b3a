"""What every benchmark shares: the machine it ran on, a rich table, JSON + markdown files.

A result is only worth its context, so each results file records the machine
(CPU model, cores, GPU, library versions), the date, the git commit and the
exact command line beside its rows. Nothing here imports torch unless torch
is already loaded by the benchmark itself.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from distill.tables import markdown_table

DEFAULT_OUTPUT_DIR = Path("benchmarks/results")
LIBRARIES = ("torch", "transformers", "peft", "onnxruntime", "tokenizers", "numpy", "scikit-learn")


@dataclass
class BenchResult:
    """One benchmark run: its rows plus everything needed to reproduce or doubt them."""

    name: str  # file stem: <name>.json and <name>.md
    title: str
    columns: list[str]  # row keys shown in the table, in order
    rows: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)

    def cells(self) -> list[list[str]]:
        """The rows as the tables show them: one formatted cell per column."""
        return [[format_cell(row.get(c)) for c in self.columns] for row in self.rows]

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "title": self.title,
            "machine": self.machine or describe_machine(),
            "command": command_line(),
            "settings": self.settings,
            "columns": self.columns,
            "rows": [{k: _finite(v) for k, v in row.items()} for row in self.rows],
            "notes": self.notes,
        }


def _finite(value: Any) -> Any:
    """NaN and infinity are not JSON: they are written as null."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    return value


def command_line() -> str:
    """How this run was asked for: the click command path and every flag not at
    its default (sys.argv when no click command is running)."""
    import click
    from click.core import ParameterSource

    ctx = click.get_current_context(silent=True)
    if ctx is None:
        program = Path(sys.argv[0]).name if sys.argv else "python"
        return " ".join([program, *sys.argv[1:]])
    parts = [ctx.command_path]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if (not isinstance(param, click.Option) or value is None or value == param.default
                or ctx.get_parameter_source(param.name) is ParameterSource.DEFAULT):
            continue
        flag = max(param.opts, key=len)
        if param.is_flag:
            parts.append(flag if value else (param.secondary_opts or [flag])[0])
        elif param.multiple:
            parts += [f"{flag} {shlex.quote(str(item))}" for item in value]
        else:  # a list given as one a,b,c flag is written back that way
            text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
            parts += [flag, shlex.quote(text)]
    return " ".join(parts)


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _gpu() -> dict[str, Any] | None:
    """GPU name and memory, only when the benchmark already imported torch."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {
        "name": props.name,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "cuda": torch.version.cuda,
        "count": torch.cuda.device_count(),
    }


def describe_machine() -> dict[str, Any]:
    """CPU model, cores, memory, GPU, library versions, date and commit."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "gpu": _gpu(),
        "python": platform.python_version(),
        "libraries": _versions(),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": _git_commit(),
        "host": platform.node(),
    }


def machine_label(machine: dict[str, Any]) -> str:
    """One short line for a table row: GPU name if any, else CPU model and cores."""
    gpu = machine.get("gpu")
    if gpu:
        return f"{gpu['name']} ({gpu['memory_gib']} GiB)"
    return f"{machine.get('cpu')}, {machine.get('cores')} cores"


def format_cell(value: Any) -> str:
    """Numbers get a precision that suits their size; None shows as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        magnitude = abs(value)
        if magnitude >= 1000:
            return f"{value:,.0f}"
        if magnitude >= 100:
            return f"{value:.1f}"
        if magnitude >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render_markdown(result: BenchResult) -> str:
    """A results section that can be pasted into a README as is."""
    data = result.to_json()
    machine = data["machine"]
    lines = [
        f"### {result.title}",
        "",
        f"Machine: {machine_label(machine)}; {machine['date']}; commit {machine.get('git_commit') or '?'}",
        "",
        f"Command: `{data['command']}`",
        "",
        *markdown_table(result.columns, result.cells()),
        "",
    ]
    lines += [f"- {note}" for note in result.notes]
    return "\n".join(lines).rstrip() + "\n"


def print_table(result: BenchResult) -> None:
    """The rows as a rich table on stdout, notes below it."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=result.title)
    for column in result.columns:
        table.add_column(column, justify="left" if column in _TEXT_COLUMNS else "right")
    for cells in result.cells():
        table.add_row(*cells)
    # Logs and captured output are read later, often wider than 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(table)
    for note in result.notes:
        console.print(f"  {note}")


# Columns that hold words rather than numbers are left-aligned.
_TEXT_COLUMNS = {"size", "run", "status", "variant", "metric"}


def write_result(result: BenchResult, output_dir: str | Path) -> tuple[Path, Path]:
    """<output_dir>/<name>.json and <name>.md; returns both paths."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if not result.machine:
        result.machine = describe_machine()
    json_path = folder / f"{result.name}.json"
    md_path = folder / f"{result.name}.md"
    json_path.write_text(json.dumps(result.to_json(), indent=2, allow_nan=False, default=str) + "\n")
    md_path.write_text(render_markdown(result))
    return json_path, md_path


def report(result: BenchResult, output_dir: str | Path) -> tuple[Path, Path]:
    """Print the table, write the files and say where they went."""
    print_table(result)
    paths = write_result(result, output_dir)
    print(f"wrote {paths[0]} and {paths[1]}")
    return paths
