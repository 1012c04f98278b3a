"""Shared pieces for the label tests: synthetic articles and CLI arguments."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import write_jsonl
from fake_gemini import API_VERSION

SECRET = "sk-test-NEVER-LEAK-1234567890"


def make_articles(n: int, start: int = 0) -> list[dict]:
    """Articles long enough for the sustainability prefilter, each text unique."""
    body = "A utility commissioned grid battery storage next to a solar farm, cutting evening gas use. " * 4
    return [
        {"id": f"a{i}", "title": f"Storage project {i}", "content": f"Report {i}. {body}", "source": "test"}
        for i in range(start, start + n)
    ]


def write_articles(path: Path, n: int, start: int = 0) -> Path:
    return write_jsonl(path, make_articles(n, start))


def label_args(source: Path, out: Path, url: str, *extra: str) -> list[str]:
    return ["--source", str(source), "--output-dir", str(out), "--base-url", url,
            "--api-version", API_VERSION, "--no-progress", "--backoff-base", "0.01",
            "--backoff-max", "0.05", "--timeout", "10", *extra]


def read_output(out: Path) -> list[dict]:
    path = out / "labelled.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run_cli(args: list[str]) -> int:
    """distill-label in-process, as its console script would run; returns the exit code."""
    from distill.label.cli import main

    try:
        main(args)
    except SystemExit as exc:
        return exc.code or 0
    return 0
