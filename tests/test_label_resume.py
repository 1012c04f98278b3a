"""Never lose, never repay: SIGKILL mid-run then rerun; a crash between journal and output."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import pytest
from fake_gemini import FakeGemini, prompt_sha
from label_helpers import SECRET, label_args, make_articles, read_output, write_articles

from distill.filter_spec import load_filter
from distill.label.journal import call_key
from distill.label.selection import oracle_text
from distill.label.settings import LabelSettings
from distill.records import parse_article

CLI = [sys.executable, "-c", "from distill.label.cli import main; main()"]


def key_to_prompt_sha(articles: list[dict]) -> dict[str, str]:
    spec = load_filter("sustainability/v1")
    config = LabelSettings().generation(spec)
    mapping = {}
    for row in articles:
        text = oracle_text(spec, parse_article(row))
        mapping[call_key(spec.prompt_sha256, text, config)] = prompt_sha(spec.render_prompt(text))
    return mapping


def journal_label_keys(out) -> set[str]:
    path = out / "journal.sqlite"
    if not path.exists():
        return set()
    db = sqlite3.connect(path)
    try:
        return {k for (k,) in db.execute("SELECT key FROM labels")}
    finally:
        db.close()


def start(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, GEMINI_API_KEY=SECRET)
    return subprocess.Popen(CLI + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_sigkill_at_several_points_then_rerun_labels_each_article_once(tmp_path):
    n, concurrency = 90, 4
    rows = make_articles(n)
    source = write_articles(tmp_path / "in.jsonl", n)
    out = tmp_path / "out"
    sha_of = key_to_prompt_sha(rows)
    # successes per prompt at each kill, for the keys the journal held by then
    snapshots: list[tuple[set[str], dict[str, int]]] = []
    with FakeGemini(latency_s=0.02, fault_rate=0.1, fault_kinds=("500", "malformed", "429"), seed=3) as fake:
        args = label_args(source, out, fake.url, "--concurrency", str(concurrency))
        for kill_at in (15, 40, 65):
            proc = start(args)
            deadline = time.time() + 60
            while fake.successes() < kill_at and proc.poll() is None and time.time() < deadline:
                time.sleep(0.002)
            assert proc.poll() is None, proc.stderr.read().decode()
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            snapshots.append((journal_label_keys(out), fake.successes_by_prompt()))
        done = start(args)
        _, err = done.communicate(timeout=120)
        assert done.returncode == 0, err.decode()
        successes = fake.successes_by_prompt()

    ids = [r["id"] for r in read_output(out)]
    assert Counter(ids) == Counter(f"a{i}" for i in range(n))  # every article exactly once
    assert snapshots[0][0], "the kills came too early to test anything"
    for journaled, seen in snapshots:  # once journaled, a key is never paid again
        for key in journaled:
            assert successes[sha_of[key]] == seen[sha_of[key]]
    # only calls in flight at a kill can have been repaid: at most `concurrency` per kill
    assert sum(successes.values()) <= n + 3 * concurrency
    assert journal_label_keys(out) == set(sha_of)


def test_crash_between_journal_and_output_is_written_from_journal(tmp_path):
    source = write_articles(tmp_path / "in.jsonl", 6)
    out = tmp_path / "out"
    with FakeGemini() as fake:
        args = label_args(source, out, fake.url)
        proc = start(args)
        assert proc.wait(timeout=60) == 0
        # Simulate a kill after the journal commit: the last two labels never reached the
        # output, and the append of the one before was torn halfway.
        lines = (out / "labelled.jsonl").read_text().splitlines(keepends=True)
        (out / "labelled.jsonl").write_text("".join(lines[:3]) + lines[3][:25])
        proc = start(args)
        assert proc.wait(timeout=60) == 0
        assert fake.successes() == 6 and len(fake.calls) == 6  # no second call
    rows = read_output(out)
    assert sorted(r["id"] for r in rows) == [f"a{i}" for i in range(6)]


def test_second_run_on_same_output_is_refused(tmp_path):
    from distill.errors import DistillError
    from distill.label.run import output_lock

    with output_lock(tmp_path):
        with pytest.raises(DistillError, match="another distill-label run"):
            with output_lock(tmp_path):
                pass
