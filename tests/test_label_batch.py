"""--batch through the real SDK's batch calls against the fake server."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import pytest
from fake_gemini import FakeGemini
from label_helpers import SECRET, label_args, make_articles, read_output, run_cli, write_articles
from test_label_resume import key_to_prompt_sha


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", SECRET)



def test_batch_joins_by_key_and_resubmits_only_failed_keys(tmp_path):
    n = 12
    source = write_articles(tmp_path / "in.jsonl", n)
    out = tmp_path / "out"
    keys = list(key_to_prompt_sha(make_articles(n)))
    with FakeGemini(batch_polls_until_done=2) as fake:
        fake.batch_drop_keys = {keys[3], keys[7]}
        args = label_args(source, out, fake.url, "--batch", "--batch-size", "5", "--poll", "0.01")
        assert run_cli(args) == 0
        created = [job["requests"] for job in fake.batches.values()]
    assert [len(r) for r in created] == [5, 5, 2, 2]  # three jobs, then the two failed keys
    resubmitted = {r["metadata"]["key"] for r in created[3]}
    assert resubmitted == {keys[3], keys[7]}
    rows = read_output(out)
    assert Counter(r["id"] for r in rows) == Counter(f"a{i}" for i in range(n))
    # labels match the article they were asked for (the fake reverses result order)
    spec_scores = {r["id"]: r["scores"] for r in rows}
    sync_out = tmp_path / "sync"
    with FakeGemini() as fake:
        assert run_cli(label_args(source, sync_out, fake.url)) == 0
    assert {r["id"]: r["scores"] for r in read_output(sync_out)} == spec_scores
    db = sqlite3.connect(out / "journal.sqlite")
    assert Counter(s for (s,) in db.execute("SELECT status FROM calls WHERE mode='batch'")) == \
        Counter({"ok": n, "server_error": 2})
    batch_cost = db.execute("SELECT SUM(cost_usd) FROM calls WHERE status='ok'").fetchone()[0]
    sync_cost = sqlite3.connect(sync_out / "journal.sqlite").execute(
        "SELECT SUM(cost_usd) FROM calls").fetchone()[0]
    assert batch_cost == pytest.approx(sync_cost * 0.5)


def test_batch_killed_while_polling_resumes_the_same_job(tmp_path):
    source = write_articles(tmp_path / "in.jsonl", 6)
    out = tmp_path / "out"
    with FakeGemini(batch_polls_until_done=10**9) as fake:
        args = label_args(source, out, fake.url, "--batch", "--poll", "0.05")
        env = dict(os.environ, GEMINI_API_KEY=SECRET)
        cmd = [sys.executable, "-c", "from distill.label.cli import main; main()", *args]
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while not any(job["polls"] >= 2 for job in fake.batches.values()) and time.time() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        fake.batch_polls_until_done = 1
        assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
        assert len(fake.batches) == 1  # polled again, never resubmitted
    assert sorted(r["id"] for r in read_output(out)) == [f"a{i}" for i in range(6)]
