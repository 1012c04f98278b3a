"""distill-label against the fake Gemini server, through the real google-genai SDK."""

from __future__ import annotations

import sqlite3
from collections import Counter

import pytest
from fake_gemini import FakeGemini
from label_helpers import SECRET, label_args, read_output, run_cli, write_articles

from distill.filter_spec import load_filter


@pytest.fixture
def fake():
    with FakeGemini() as server:
        yield server


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", SECRET)



def test_labels_every_article_once_with_validated_scores(tmp_path, fake, capsys):
    source = write_articles(tmp_path / "in.jsonl", 20)
    out = tmp_path / "out"
    assert run_cli(label_args(source, out, fake.url, "--concurrency", "4")) == 0
    rows = read_output(out)
    spec = load_filter("sustainability/v1")
    assert sorted(r["id"] for r in rows) == sorted(f"a{i}" for i in range(20))
    for row in rows:
        assert list(row["scores"]) == spec.dimension_names
        assert all(isinstance(v, int) and 0 <= v <= 10 for v in row["scores"].values())
        assert row["oracle"]["model"] == "gemini-2.0-flash"
        assert row["oracle"]["prompt_sha256"] == spec.prompt_sha256
        assert row["oracle"]["input_tokens"] > 0 and row["oracle"]["cost_usd"] > 0
        assert row["source"] == "test"  # article fields carried through
    assert fake.successes() == 20
    # the rendered prompt went out: filter prompt around the truncated article
    assert fake.request_headers[0]["x-goog-api-key"] == SECRET


def test_rerun_makes_no_calls_and_key_never_stored(tmp_path, fake, capsys):
    source = write_articles(tmp_path / "in.jsonl", 10)
    out = tmp_path / "out"
    assert run_cli(label_args(source, out, fake.url)) == 0
    first = read_output(out)
    assert run_cli(label_args(source, out, fake.url)) == 0
    assert read_output(out) == first
    assert fake.successes() == 10 and len(fake.calls) == 10
    captured = capsys.readouterr()
    for path in out.iterdir():
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in captured.out + captured.err


@pytest.mark.parametrize("fault", ["429", "500", "malformed", "truncated", "out_of_range", "missing", "empty"])
def test_a_failed_attempt_is_retried_never_a_label(tmp_path, fake, fault):
    source = write_articles(tmp_path / "in.jsonl", 3)
    out = tmp_path / "out"
    fake.script = [fault, fault]
    assert run_cli(label_args(source, out, fake.url, "--concurrency", "1")) == 0
    rows = read_output(out)
    assert len(rows) == 3 and all(max(r["scores"].values()) <= 10 for r in rows)
    assert fake.outcomes() == Counter({"ok": 3, fault: 2})
    db = sqlite3.connect(out / "journal.sqlite")
    statuses = Counter(s for (s,) in db.execute("SELECT status FROM calls"))
    kind = {"429": "rate_limited", "500": "server_error", "malformed": "invalid_json",
            "out_of_range": "out_of_range", "missing": "missing_dimension", "empty": "empty",
            "truncated": "truncated"}[fault]
    assert statuses == Counter({"ok": 3, kind: 2})
    assert db.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == 3


def test_slow_answer_times_out_and_is_retried(tmp_path, fake):
    source = write_articles(tmp_path / "in.jsonl", 1)
    out = tmp_path / "out"
    fake.slow_s = 1.5
    fake.script = ["slow"]
    assert run_cli(label_args(source, out, fake.url, "--timeout", "0.3")) == 0
    assert len(read_output(out)) == 1
    db = sqlite3.connect(out / "journal.sqlite")
    assert [s for (s,) in db.execute("SELECT status FROM calls ORDER BY id")] == ["timeout", "ok"]


def test_blocked_prompt_is_not_retried_and_not_labelled(tmp_path, fake, capsys):
    source = write_articles(tmp_path / "in.jsonl", 4)
    out = tmp_path / "out"
    fake.per_prompt = {"Report 2.": "blocked"}
    assert run_cli(label_args(source, out, fake.url)) == 0
    assert sorted(r["id"] for r in read_output(out)) == ["a0", "a1", "a3"]
    assert fake.outcomes() == Counter({"ok": 3, "blocked": 1})
    assert "articles failed (blocked)" in capsys.readouterr().err
    # a rerun retries the failed key (and only it)
    fake.per_prompt = {}
    assert run_cli(label_args(source, out, fake.url)) == 0
    assert sorted(r["id"] for r in read_output(out)) == ["a0", "a1", "a2", "a3"]
    assert fake.outcomes() == Counter({"ok": 4, "blocked": 1})


def test_retries_stop_at_max_attempts(tmp_path, fake):
    source = write_articles(tmp_path / "in.jsonl", 1)
    out = tmp_path / "out"
    fake.script = ["500"] * 10
    assert run_cli(label_args(source, out, fake.url, "--max-attempts", "3")) == 0
    assert read_output(out) == []
    assert len(fake.calls) == 3


def test_missing_key_is_a_clear_error(tmp_path, fake, monkeypatch, capsys):
    monkeypatch.delenv("GEMINI_API_KEY")
    source = write_articles(tmp_path / "in.jsonl", 1)
    assert run_cli(label_args(source, tmp_path / "out", fake.url)) == 2
    err = capsys.readouterr().err
    assert "GEMINI_API_KEY" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_llm_shorthands_pick_the_gemini_backend_and_model(tmp_path, fake, capsys):
    """The seed guide's `--llm gemini-flash` / `gemini-pro` spellings."""
    source = write_articles(tmp_path / "in.jsonl", 2)
    assert run_cli(label_args(source, tmp_path / "flash", fake.url, "--llm", "gemini-flash")) == 0
    assert {r["oracle"]["model"] for r in read_output(tmp_path / "flash")} == {"gemini-2.0-flash"}
    assert {c["model"] for c in fake.calls} == {"gemini-2.0-flash"}

    fake.calls.clear()
    assert run_cli(label_args(source, tmp_path / "pro", fake.url, "--llm", "gemini-pro")) == 0
    rows = read_output(tmp_path / "pro")
    assert {r["oracle"]["model"] for r in rows} == {"gemini-2.5-pro"}
    # 2.5 Pro cannot turn thinking off, and is priced as Pro, not as the filter's Flash
    assert {(c["model"], c["thinking_budget"]) for c in fake.calls} == {("gemini-2.5-pro", 128)}
    for row in rows:
        oracle = row["oracle"]
        assert oracle["cost_usd"] == pytest.approx(
            (oracle["input_tokens"] * 1.25 + oracle["output_tokens"] * 10.0) / 1e6)
    capsys.readouterr()
    assert run_cli(["--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "gemini-flash" in help_text and "gemini-pro" in help_text and "gemini-2.5-pro" in help_text
    assert run_cli(label_args(source, tmp_path / "x", fake.url, "--llm", "gemini-pro",
                              "--thinking-budget", "0")) == 2
    assert "--thinking-budget" in capsys.readouterr().err
