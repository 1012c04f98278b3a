"""Sampling, prefilter, bad lines, budget cap and --plan."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter

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


# --select: label selection by a predictor's scores of the unlabelled pool

def selection_rounds(out) -> list[tuple[dict, list[dict]]]:
    """(header, picks) per round of OUTPUT_DIR/selection.jsonl."""
    rounds: list[tuple[dict, list[dict]]] = []
    for line in (out / "selection.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "key" in row:
            rounds.append((row, []))
        else:
            rounds[-1][1].append(row)
    return rounds


def label_start(source, out, url, count=60):
    """A seeded random start: the labels the ridge of --select is fitted on."""
    assert run_cli(label_args(source, out, url, "--target-count", str(count), "--select", "random",
                              "--seed", "1")) == 0


def test_select_random_is_random_sample(tmp_path, fake):
    source = write_articles(tmp_path / "in.jsonl", 40)
    assert run_cli(label_args(source, tmp_path / "a", fake.url, "--target-count", "10", "--random-sample",
                              "--seed", "5")) == 0
    assert run_cli(label_args(source, tmp_path / "b", fake.url, "--target-count", "10", "--select", "random",
                              "--seed", "5")) == 0
    assert sorted(r["id"] for r in read_output(tmp_path / "a")) == sorted(r["id"] for r in read_output(tmp_path / "b"))
    [(header, picks)] = selection_rounds(tmp_path / "b")
    assert header["picks"] == 10 and header["key"]["strategy"] == "random"
    assert {p["reason"] for p in picks} == {"random (seed 5)"}


@pytest.mark.parametrize("strategy", ["boundary", "uncertain", "rare", "mixed"])
def test_select_is_deterministic_for_a_seed_and_says_why(tmp_path, fake, strategy):
    source = write_articles(tmp_path / "in.jsonl", 120)
    picked = []
    for name in ("a", "b"):
        out = tmp_path / name
        label_start(source, out, fake.url)
        assert run_cli(label_args(source, out, fake.url, "--target-count", "80", "--select", strategy,
                                  "--seed", "3")) == 0
        rounds = selection_rounds(out)
        assert len(rounds) == 2 and rounds[1][0]["picks"] == 20
        assert "TF-IDF + ridge on 60 labels" in rounds[1][0]["predictor"]
        picks = rounds[1][1]
        assert {p["id"] for p in picks} == {r["id"] for r in read_output(out)} - {p["id"] for p in rounds[0][1]}
        picked.append([(p["id"], p["strategy"], p["reason"]) for p in picks])
    assert picked[0] == picked[1]
    components = {component for _, component, _ in picked[0]}
    assert {"mixed": {"rare", "uncertain", "random"}, "rare": {"rare", "random"}}.get(
        strategy, {strategy}) == components
    first = picked[0][0]
    assert first[2].startswith({"mixed": "rare", "rare": "rare"}.get(strategy, strategy))


def test_select_orders_by_the_predictor(tmp_path, fake):
    """rare picks the highest predicted overall first, boundary the nearest a threshold."""
    source = write_articles(tmp_path / "in.jsonl", 100)
    out = tmp_path / "out"
    label_start(source, out, fake.url)
    assert run_cli(label_args(source, out, fake.url, "--target-count", "70", "--select", "boundary")) == 0
    [_, (_, picks)] = selection_rounds(out)
    distance = [min(abs(p["predicted_overall"] - t) for t in (3.0, 5.0, 7.5)) for p in picks]
    assert all("nearest tier" in p["reason"] or "gatekeeper" in p["reason"] for p in picks)
    assert distance[0] <= max(distance)
    assert run_cli(label_args(source, out, fake.url, "--target-count", "80", "--select", "rare")) == 0
    rare = [p for p in selection_rounds(out)[-1][1] if p["strategy"] == "rare"]
    overall = [p["predicted_overall"] for p in rare]
    assert overall == sorted(overall, reverse=True) and len(rare) == 8


def test_select_respects_the_budget_and_finishes_its_round(tmp_path, fake, capsys):
    source = write_articles(tmp_path / "in.jsonl", 120)
    out = tmp_path / "out"
    label_start(source, out, fake.url)
    args = ("--target-count", "100", "--select", "mixed", "--concurrency", "2")
    assert run_cli(label_args(source, out, fake.url, *args, "--max-cost", "0.002")) == 0
    assert "--max-cost reached" in capsys.readouterr().err
    assert 60 < len(read_output(out)) < 100
    capped = json.loads((out / "label_runs.jsonl").read_text().splitlines()[-1])
    assert 0 < capped["spend_usd"] <= 0.002 and capped["settings"]["select"] == "mixed"
    # the same command with room to spend resumes the same round: no new picks
    assert run_cli(label_args(source, out, fake.url, *args, "--max-cost", "1")) == 0
    rounds = selection_rounds(out)
    assert len(rounds) == 2
    assert {r["id"] for r in read_output(out)} == {p["id"] for _, picks in rounds for p in picks}
    assert len(read_output(out)) == 100 and len(fake.calls) == 100


def test_select_resumes_its_picks_after_a_kill(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    source = write_articles(tmp_path / "in.jsonl", 150)
    out = tmp_path / "out"
    with FakeGemini(latency_s=0.05) as fake:
        label_start(source, out, fake.url)
        args = label_args(source, out, fake.url, "--target-count", "110", "--select", "rare", "--concurrency", "2")
        env = dict(os.environ, GEMINI_API_KEY=SECRET)
        proc = subprocess.Popen([sys.executable, "-c", "from distill.label.cli import main; main()", *args],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(read_output(out)) < 70 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert 60 < len(read_output(out)) < 110, "the kill should land mid-run"
        assert run_cli(args) == 0
        rounds = selection_rounds(out)
        assert len(rounds) == 2  # the rerun kept the killed run's picks
        ids = [r["id"] for r in read_output(out)]
        assert len(ids) == len(set(ids)) == 110
        assert set(ids) == {p["id"] for _, picks in rounds for p in picks}
        # only calls in flight at the kill (never journalled) can have been answered twice
        assert fake.successes() <= 110 + 2


def test_select_problems_and_too_few_labels(tmp_path, fake, capsys):
    source = write_articles(tmp_path / "in.jsonl", 20)
    assert run_cli(label_args(source, tmp_path / "a", fake.url, "--select", "rare")) == 2
    assert "--select: give --target-count" in capsys.readouterr().err
    assert run_cli(label_args(source, tmp_path / "a", fake.url, "--select", "rare", "--target-count", "5",
                              "--random-sample")) == 2
    assert "use --select random" in capsys.readouterr().err
    assert run_cli(label_args(source, tmp_path / "a", fake.url, "--student", str(tmp_path), "--target-count", "5")) == 2
    assert "has no distill.json" in capsys.readouterr().err
    assert run_cli(label_args(source, tmp_path / "a", fake.url, "--select", "boundary", "--target-count", "5")) == 2
    assert "0 article(s) labelled" in capsys.readouterr().err and fake.calls == []


def test_select_with_a_student_defaults_to_mixed(tmp_path_factory, tmp_path, fake, tiny_bert_dir):
    from conftest import tiny_student

    from distill.artifact import StudentInfo

    spec = load_filter("sustainability/v1")
    info = StudentInfo(spec.name, spec.version, spec.config_hash, spec.dimension_names, "tiny", "encoder",
                       "full", 64, 0.8, [4.0] * 8, [20.0] * 8)  # a wide std spreads the random head's outputs
    student = tiny_student(tmp_path_factory, tiny_bert_dir, info)
    source = write_articles(tmp_path / "in.jsonl", 40)
    picked = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert run_cli(label_args(source, out, fake.url, "--student", str(student), "--target-count", "10")) == 0
        [(header, picks)] = selection_rounds(out)
        assert header["key"]["strategy"] == "mixed" and "dropout pass" in header["predictor"]
        picked.append([(p["id"], p["reason"]) for p in picks])
    assert picked[0] == picked[1] and len(picked[0]) == 10
    assert {r["id"] for r in read_output(tmp_path / "a")} == {i for i, _ in picked[0]}


def test_picker_keeps_shares_bounded_memory_and_chunking_does_not_matter():
    import numpy as np

    from distill.acquisition import Picker

    spec = load_filter("sustainability/v1")
    rng = np.random.default_rng(0)
    ids = [f"x{i}" for i in range(500)]
    predicted, second = rng.uniform(0, 8, (500, 8)), rng.uniform(0, 8, (500, 8))
    results = []
    for chunk in (500, 37):
        picker = Picker(spec, "mixed", 50, seed=4, labelled_tiers={"monitoring": 10, "promising": 1})
        for start in range(0, 500, chunk):
            part = slice(start, start + chunk)
            picker.add(ids[part], list(range(500))[part], predicted[part], second[part])
            assert all(len(heap) <= 50 for heap in picker._heaps.values())
        results.append([(p.id, p.component) for p in picker.picks()])
    assert results[0] == results[1]
    assert Counter(c for _, c in results[0]) == Counter({"rare": 30, "uncertain": 10, "random": 10})
    assert len({i for i, _ in results[0]}) == 50
    # interleaved by share: a run stopped after 10 labels already holds the mix
    assert set(c for _, c in results[0][:10]) == {"rare", "uncertain", "random"}
    with pytest.raises(ValueError, match="second predictor"):
        Picker(spec, "uncertain", 5, 0).add(ids[:5], ids[:5], predicted[:5])
