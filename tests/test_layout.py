"""The layout says what depends on what: a stage imports the shared core, never another stage,
and the core imports no stage."""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("label", "prepare", "train", "evaluate", "export", "serve")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, absolute names, wherever in the file the import sits."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "distill" and parts[1] in STAGES else None


def crossings(folder: Path, own: str | None) -> list[str]:
    return sorted(
        f"{path.relative_to(ROOT)} imports {module}"
        for path in folder.rglob("*.py")
        for module in imported_modules(path)
        if stage_of(module) not in (None, own)
    )


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_no_other_stage(stage):
    assert crossings(ROOT / stage, stage) == []


def test_the_core_imports_no_stage():
    assert crossings(ROOT / "distill", None) == []


def test_every_stage_is_a_top_level_folder_installed_as_distill_stage():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    mapping = dict(
        line.split(" = ") for line in config["options"]["package_dir"].strip().splitlines()
    )
    for stage in STAGES:
        assert mapping[f"distill.{stage}"] == stage
        assert (ROOT / stage / "__init__.py").is_file()
        assert not (ROOT / "distill" / stage).exists(), f"distill/{stage} would shadow the stage folder"


def test_the_walker_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from distill.train.model import x\n")
    assert imported_modules(module) == {"distill.train.model"}
    assert stage_of("distill.train.model") == "train" and stage_of("distill.records") is None
