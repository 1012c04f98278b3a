"""Sampling, prefilter, bad lines, budget cap and --plan."""

from __future__ import annotations

import json
import sqlite3

import pytest
from conftest import write_jsonl
from fake_gemini import FakeGemini
from label_helpers import SECRET, label_args, make_articles, read_output, run_cli, write_articles

from distill.filter_spec import load_filter
from distill.label.plan import make_plan
from distill.label.settings import LabelSettings


@pytest.fixture
def fake():
    with FakeGemini() as server:
        yield server


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", SECRET)


def journal_statuses(folder) -> dict:
    """Every call outcome of every journal under `folder`, to explain a failure."""
    return {str(p): sqlite3.connect(p).execute("SELECT status, message FROM calls WHERE status != 'ok'").fetchall()
            for p in folder.rglob("journal.sqlite")}



def test_target_count_random_sample_is_seeded_and_resumes(tmp_path, fake):
    source = write_articles(tmp_path / "in.jsonl", 40)
    picks = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert run_cli(label_args(source, out, fake.url, "--target-count", "10", "--random-sample", "--seed", "5")) == 0
        picks.append(sorted(r["id"] for r in read_output(out)))
    assert picks[0] == picks[1] and len(picks[0]) == 10, journal_statuses(tmp_path)
    assert picks[0] != [f"a{i}" for i in range(10)]
    # raising the target labels only the difference; without --random-sample the first
    # articles of the file are chosen (written in the order their calls finish)
    out = tmp_path / "c"
    assert run_cli(label_args(source, out, fake.url, "--target-count", "5")) == 0
    assert sorted(r["id"] for r in read_output(out)) == [f"a{i}" for i in range(5)]
    calls = len(fake.calls)
    assert run_cli(label_args(source, out, fake.url, "--target-count", "8")) == 0
    assert sorted(r["id"] for r in read_output(out)) == sorted(f"a{i}" for i in range(8))
    assert len(fake.calls) - calls == 3, journal_statuses(tmp_path)


def test_prefilter_rate_bad_lines_and_twins(tmp_path, fake, capsys):
    rows = make_articles(4)
    twin = dict(rows[0], id="twin-of-a0")  # same text: one call serves both
    short = {"id": "short", "title": "t", "content": "too short to matter"}
    source = write_jsonl(tmp_path / "in.jsonl", [*rows, twin, short, "{not json", {"id": "x"}, rows[1]])
    out = tmp_path / "out"
    assert run_cli(label_args(source, out, fake.url)) == 0
    assert sorted(r["id"] for r in read_output(out)) == ["a0", "a1", "a2", "a3", "twin-of-a0"]
    assert fake.successes() == 4
    err = capsys.readouterr().err
    assert "5 of 6 (83.3%)" in err and "too_short" in err and "duplicate ids skipped" in err
    assert f"bad line {source}:7: not JSON" in err
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["file"]) for r in rejects] == [(7, str(source)), (8, str(source))]
    assert "missing" in rejects[1]["reason"]
    # --strict: the first bad line is fatal, named with file:line
    assert run_cli(label_args(source, tmp_path / "strict", fake.url, "--strict")) == 2
    assert f"{source}:7" in capsys.readouterr().err


def test_max_cost_stops_before_exceeding(tmp_path, fake, capsys):
    source = write_articles(tmp_path / "in.jsonl", 30)
    out = tmp_path / "out"
    cap = 0.002
    assert run_cli(label_args(source, out, fake.url, "--max-cost", str(cap), "--concurrency", "3")) == 0
    db = sqlite3.connect(out / "journal.sqlite")
    spent = db.execute("SELECT SUM(cost_usd) FROM calls").fetchone()[0]
    labelled = len(read_output(out))
    assert 0 < spent <= cap and 0 < labelled < 30
    assert len(fake.calls) == labelled
    assert "--max-cost reached" in capsys.readouterr().err
    assert run_cli(label_args(source, out, fake.url, "--max-cost", "1")) == 0
    assert len(read_output(out)) == 30 and len(fake.calls) == 30


def test_plan_estimates_without_calls_or_key(tmp_path, fake, monkeypatch, capsys):
    monkeypatch.delenv("GEMINI_API_KEY")
    source = write_articles(tmp_path / "in.jsonl", 10)
    out = tmp_path / "out"
    assert run_cli(label_args(source, out, fake.url, "--plan")) == 0
    err = capsys.readouterr().err
    assert "oracle calls needed" in err and "cost, batch API" in err
    assert fake.calls == [] and not out.exists()


def test_plan_on_real_shared_data(shared_labelled):
    spec = load_filter("sustainability/v1")
    settings = LabelSettings(source=(str(shared_labelled),), output_dir=shared_labelled.parent / "no-such-dir")
    plan = make_plan(spec, settings, rejects=[])
    assert plan.selection.read.records == 6689
    assert 0 < plan.selection.pass_rate < 1
    assert plan.calls + plan.in_journal == plan.articles == plan.selection.prefilter_passed
    # ~1,300 tokens per call: the ~1,100-token prompt plus a median ~170-word article
    assert 900 < plan.input_tokens / plan.calls < 2500
    assert plan.batch_cost_usd == pytest.approx(plan.sync_cost_usd * spec.oracle.batch_discount)
    p_in, p_out = settings.prices(spec)
    assert plan.sync_cost_usd == pytest.approx((plan.input_tokens * p_in + plan.output_tokens * p_out) / 1e6)


def test_bad_settings_are_reported_together(tmp_path, capsys):
    code = run_cli(["--source", str(tmp_path / "missing.jsonl"), "--concurrency", "0", "--llm", "openai",
                    "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "missing.jsonl" in err and "--concurrency" in err and "--base-url" in err


def test_the_library_validates_settings_before_touching_anything(tmp_path):
    from distill.errors import ConfigError
    from distill.label.run import run_labelling

    spec = load_filter("sustainability/v1")
    settings = LabelSettings(source=[str(tmp_path / "missing.jsonl")], output_dir=tmp_path / "out", concurrency=0)
    for call in (lambda: run_labelling(spec, settings), lambda: make_plan(spec, settings)):
        with pytest.raises(ConfigError, match=r"(?s)missing\.jsonl.*--concurrency: must be at least 1"):
            call()
    assert not (tmp_path / "out").exists()


def test_batch_with_a_backend_that_has_no_batch_api_names_the_backend(tmp_path, capsys):
    source = write_articles(tmp_path / "in.jsonl", 1)
    out = tmp_path / "out"
    for extra in ((), ("--plan",)):
        code = run_cli(["--source", str(source), "--output-dir", str(out), "--llm", "openai", "--model", "m",
                        "--base-url", "http://127.0.0.1:1/v1", "--batch", "--no-progress", *extra])
        err = capsys.readouterr().err
        assert code == 2
        assert "--batch: the openai backend (--llm openai) has no batch API" in err
        assert "--llm gemini, gemini-flash, gemini-pro" in err
    assert not out.exists()
