"""distill-label when things break: the endpoint dies mid-run, nothing listens,
a worker hits an error nobody foresaw, the budget is small. Each run must end
by itself with one line, leave the journal consistent, and resume on rerun."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager

import pytest
from fake_gemini import FakeGemini
from label_helpers import SECRET, label_args, make_articles, read_output, run_cli, write_articles
from test_label_resume import journal_label_keys, key_to_prompt_sha

from distill.filter_spec import load_filter
from distill.label import run as label_run
from distill.label.calls import Pricing, make_request, worst_case_cost
from distill.label.oracle.base import OracleReply
from distill.label.settings import LabelSettings
from distill.records import parse_article

CLI = [sys.executable, "-c", "from distill.label.cli import main; main()"]


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", SECRET)


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_subprocess(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    """The console script in its own process: a hang fails the test instead of blocking it."""
    env = dict(os.environ, GEMINI_API_KEY=SECRET)
    return subprocess.run(CLI + args, env=env, capture_output=True, text=True, timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def statuses(out) -> Counter:
    db = sqlite3.connect(out / "journal.sqlite")
    try:
        return Counter(status for (status,) in db.execute("SELECT status FROM calls"))
    finally:
        db.close()


def run_records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "label_runs.jsonl").read_text().splitlines()]


@contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging for ever) if the block takes longer than `seconds`."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds}s: the run hangs")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_endpoint_killed_mid_run_stops_with_one_line_then_rerun_resumes(tmp_path):
    n = 80
    source = write_articles(tmp_path / "in.jsonl", n)
    out = tmp_path / "out"
    sha_of = key_to_prompt_sha(make_articles(n))
    env = dict(os.environ, GEMINI_API_KEY=SECRET)
    fake = FakeGemini(latency_s=0.03).start()
    args = label_args(source, out, fake.url, "--concurrency", "4", "--max-attempts", "3")
    proc = subprocess.Popen(CLI + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        give_up = time.time() + 60
        while fake.successes() < 15 and proc.poll() is None and time.time() < give_up:
            time.sleep(0.002)
        assert proc.poll() is None, proc.communicate()[1]
        fake.kill()
        killed_at = time.time()
        _, err = proc.communicate(timeout=60)  # before the fix: hangs for ever
    finally:
        proc.kill()
    assert time.time() - killed_at < 30
    assert proc.returncode == 2
    lines = error_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"error: cannot reach {fake.url}")
    assert "rerun the same command" in lines[0]
    first = statuses(out)
    # the fake counts an answer before sending it: up to --concurrency of them were cut
    assert first["pending"] == 0 and first["connection"] > 0 and first["ok"] >= 15 - 4
    journaled = journal_label_keys(out)
    assert run_records(out)[-1]["stopped"] == "unreachable"

    with FakeGemini(port=fake.port) as back:  # the server comes back on the same address
        result = run_subprocess(args)
        assert result.returncode == 0, result.stderr
        again = back.successes_by_prompt()
    assert Counter(r["id"] for r in read_output(out)) == Counter(f"a{i}" for i in range(n))
    assert not any(again.get(sha_of[key]) for key in journaled)  # nothing journaled is paid twice
    assert sum(again.values()) == n - len(journaled)
    assert journal_label_keys(out) == set(sha_of) and statuses(out)["pending"] == 0


def test_refused_connection_is_one_line_and_journal_consistent_then_resumes(tmp_path, capsys):
    source = write_articles(tmp_path / "in.jsonl", 6)
    out = tmp_path / "out"
    port = closed_port()
    args = label_args(source, out, f"http://127.0.0.1:{port}", "--max-attempts", "2")
    with deadline(30):
        assert run_cli(args) == 2
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"cannot reach http://127.0.0.1:{port}" in lines[0] and re.search(r"Connect(or)?Error", lines[0])
    calls = statuses(out)
    assert calls["pending"] == 0 and calls["connection"] >= 2 and calls["ok"] == 0
    assert read_output(out) == []
    with FakeGemini(port=port) as fake:
        with deadline(30):
            assert run_cli(args) == 0
        assert fake.successes() == 6
    assert sorted(r["id"] for r in read_output(out)) == [f"a{i}" for i in range(6)]


class StubOracle:
    """An oracle whose calls answer, hang, or raise what a test tells them to."""

    name, needs_key, supports_schema, supports_batch = "stub", False, True, False
    endpoint = "stub://oracle"

    def __init__(self, dims: list[str], behaviour=None):
        self.dims = dims
        self.behaviour = behaviour or (lambda prompt, call_no: None)
        self.prompts: list[str] = []

    async def score(self, prompt: str) -> OracleReply:
        self.prompts.append(prompt)
        action = self.behaviour(prompt, len(self.prompts))
        if action == "hang":
            await asyncio.sleep(3600)
        elif isinstance(action, BaseException):
            raise action
        return OracleReply({d: 5 for d in self.dims}, "stub", 100, 20)

    async def aclose(self) -> None:
        pass


def use_stub(monkeypatch, stub: StubOracle) -> None:
    monkeypatch.setattr(label_run, "make_oracle", lambda settings, spec: stub)


def test_an_unexpected_worker_error_ends_the_run_at_once_and_rerun_resumes(tmp_path, monkeypatch, capsys):
    dims = load_filter("sustainability/v1").dimension_names
    source = write_articles(tmp_path / "in.jsonl", 30)
    out = tmp_path / "out"

    def behaviour(prompt: str, call_no: int):
        if "Report 0." in prompt:
            return "hang"  # in flight when the run stops: must be cancelled, not waited for
        return RuntimeError("boom") if call_no == 6 else None

    use_stub(monkeypatch, StubOracle(dims, behaviour))
    started = time.monotonic()
    with deadline(30):
        code = run_cli(label_args(source, out, "unused", "--concurrency", "3"))
    assert time.monotonic() - started < 10
    assert code == 2
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert lines == ["error: labelling stopped on an unexpected RuntimeError: boom; the journal is intact, "
                     "rerun the same command to resume"], err
    calls = statuses(out)
    assert calls["pending"] == 0 and calls["error"] == 1 and calls["interrupted"] >= 1
    journaled = journal_label_keys(out)
    assert len(read_output(out)) == len(journaled) >= 1
    assert run_records(out)[-1]["stopped"] == "error"

    again = StubOracle(dims)
    use_stub(monkeypatch, again)
    with deadline(30):
        assert run_cli(label_args(source, out, "unused")) == 0
    assert Counter(r["id"] for r in read_output(out)) == Counter(f"a{i}" for i in range(30))
    assert len(again.prompts) == 30 - len(journaled) == len(set(again.prompts))


def worst_of(row: dict) -> float:
    """The worst case the runner reserves for this article's call."""
    spec = load_filter("sustainability/v1")
    settings = LabelSettings()
    config = settings.generation(spec)
    request = make_request(spec, config, parse_article(row))
    return worst_case_cost(Pricing(*settings.prices(spec)), config, request.prompt)


def test_small_cap_is_spent_to_well_over_half_and_never_crossed(tmp_path, capsys):
    """Before: --max-cost 0.005 stopped at $0.0011, reserving every worker's worst case."""
    cap = 0.005
    n = 120
    source = write_articles(tmp_path / "in.jsonl", n)
    out = tmp_path / "out"
    with FakeGemini() as fake:
        assert run_cli(label_args(source, out, fake.url, "--concurrency", "8", "--max-cost", str(cap))) == 0
        paid = fake.successes()
    assert "--max-cost reached" in capsys.readouterr().err
    db = sqlite3.connect(out / "journal.sqlite")
    spent = db.execute("SELECT SUM(cost_usd) FROM calls").fetchone()[0]
    assert spent <= cap
    worst = max(worst_of(row) for row in make_articles(n))
    assert spent > cap - worst > cap / 2  # stopped only when one more call might not fit
    assert len(read_output(out)) == paid < n
    assert run_records(out)[-1]["spend_usd"] == pytest.approx(spent)


def test_budget_holds_when_every_call_costs_close_to_its_worst_case(tmp_path, monkeypatch):
    """Adversarial costs: 16 calls in flight, each billed up to its worst case."""
    import random

    spec = load_filter("sustainability/v1")
    config = LabelSettings().generation(spec)
    rng = random.Random(1)

    class Costly(StubOracle):
        async def score(self, prompt: str) -> OracleReply:
            await asyncio.sleep(rng.uniform(0, 0.01))
            tokens_in = rng.randint(len(prompt.encode()) // 2, len(prompt.encode()))
            return OracleReply({d: 5 for d in self.dims}, "", tokens_in,
                               rng.randint(config.max_output_tokens // 2, config.max_output_tokens))

    use_stub(monkeypatch, Costly(spec.dimension_names))
    source = write_articles(tmp_path / "in.jsonl", 200)
    out = tmp_path / "out"
    cap = 0.02
    with deadline(60):
        assert run_cli(label_args(source, out, "unused", "--concurrency", "16", "--max-cost", str(cap))) == 0
    spent = sqlite3.connect(out / "journal.sqlite").execute("SELECT SUM(cost_usd) FROM calls").fetchone()[0]
    assert cap - max(worst_of(row) for row in make_articles(200)) < spent <= cap
    assert run_records(out)[-1]["stopped"] == "budget"


def test_fake_kill_cuts_open_connections_and_a_restart_serves_again():
    """The test helper itself: what the tests above rely on when they kill the server."""
    import httpx

    fake = FakeGemini(latency_s=0.5).start()

    async def call():
        async with httpx.AsyncClient(timeout=5) as client:
            return await client.post(f"{fake.url}/v1beta/models/m:generateContent", json={})

    async def go():
        task = asyncio.create_task(call())
        await asyncio.sleep(0.2)
        fake.kill()
        with pytest.raises(httpx.TransportError):
            await task
        with pytest.raises(httpx.ConnectError):
            await call()
        with FakeGemini(port=fake.port):
            assert (await call()).status_code == 200

    asyncio.run(go())


def test_batch_mode_against_a_refused_connection_is_one_line(tmp_path, capsys):
    source = write_articles(tmp_path / "in.jsonl", 3)
    port = closed_port()
    with deadline(30):
        code = run_cli(label_args(source, tmp_path / "out", f"http://127.0.0.1:{port}", "--batch"))
    assert code == 2
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"cannot reach http://127.0.0.1:{port}" in lines[0] and "rerun the same command" in lines[0]
