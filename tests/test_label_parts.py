"""Units of distill-label: limiter, backoff, journal migrations and keys, agreement."""

from __future__ import annotations

import asyncio
import itertools
import random
import sqlite3

import numpy as np
import pytest
from conftest import write_jsonl

from distill.errors import DistillError
from distill.label.agree import agreement, krippendorff_alpha_interval
from distill.label.journal import MIGRATIONS, Journal, call_key, migrate
from distill.label.limiter import RateLimiter, backoff_delay
from distill.label.oracle.base import GenerationConfig, OracleReply
from distill.stats import rankdata, spearman


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_rpm_limiter_spaces_requests_after_the_burst():
    clock = FakeClock()
    limiter = RateLimiter(rpm=60, tpm=None, clock=clock, sleep=clock.sleep)

    async def go():
        for _ in range(65):
            await limiter.acquire()

    asyncio.run(go())
    # 60 at once (a full minute's bucket), then one a second
    assert clock.now == pytest.approx(5.0)


def test_tpm_limiter_and_pause():
    clock = FakeClock()
    limiter = RateLimiter(rpm=None, tpm=6000, clock=clock, sleep=clock.sleep)

    async def go():
        await limiter.acquire(6000)
        await limiter.acquire(3000)  # bucket empty: refills at 100 tokens/s
        assert clock.now == pytest.approx(30.0)
        limiter.pause(7.5)  # a 429 asked everyone to wait
        await limiter.acquire(0)
        assert clock.now == pytest.approx(37.5)

    asyncio.run(go())


def test_backoff_grows_jitters_caps_and_honours_retry_delay():
    rng = random.Random(0)
    delays = [backoff_delay(i, 1.0, 60.0, None, rng) for i in range(10)]
    assert all(0.5 * min(60, 2**i) <= d <= min(60, 2**i) for i, d in enumerate(delays))
    assert len({round(d, 6) for d in delays[:3]}) == 3
    assert backoff_delay(0, 1.0, 60.0, 17.0, rng) == 17.0


def test_call_key_changes_with_each_part():
    config = GenerationConfig("gemini-2.0-flash", 0.0, 0, 1024)
    base = call_key("p", "article", config)
    assert base == call_key("p", "article", config)
    assert len({base, call_key("q", "article", config), call_key("p", "article!", config),
                call_key("p", "article", GenerationConfig("gemini-2.5-flash", 0.0, 0, 1024)),
                call_key("p", "article", GenerationConfig("gemini-2.0-flash", 0.2, 0, 1024))}) == 5


def test_migrations_are_forward_only_and_upgrade_an_old_journal(tmp_path):
    path = tmp_path / "journal.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    assert migrate(db, MIGRATIONS[:1]) == ["001_calls_and_labels"]
    db.execute("INSERT INTO labels VALUES ('k', 'm', 'p', '{\"a\": 3}', '', 1, 2, 0.5, 'now')")
    db.close()
    journal = Journal(path)  # applies the rest, keeps the data
    assert journal.label("k").scores == {"a": 3}
    names = [n for (n,) in journal.db.execute("SELECT name FROM _migrations ORDER BY name")]
    assert names == [name for name, _ in MIGRATIONS]
    assert migrate(journal.db) == []
    journal.close()


def test_journal_records_calls_labels_and_interrupted(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    first = journal.start_call("k1", "a1", 1, "run1")
    journal.finish_call(first, "rate_limited", 0.1, 0, 0, 0.0, "slow down")
    second = journal.start_call("k1", "a1", 2, "run1")
    label = journal.record_label(second, "k1", "m", "sha", OracleReply({"d": 4}, "ok", 10, 5), 0.25, 0.2)
    assert label.scores == {"d": 4} and journal.attempts("k1") == 2
    journal.start_call("k2", "a2", 1, "run1")  # left pending, as by a kill
    assert journal.mark_interrupted() == 1
    db = sqlite3.connect(journal.path)
    assert dict(db.execute("SELECT status, COUNT(*) FROM calls GROUP BY status")) == \
        {"rate_limited": 1, "ok": 1, "interrupted": 1}
    assert db.execute("SELECT SUM(cost_usd) FROM calls WHERE run_id='run1'").fetchone()[0] == pytest.approx(0.25)
    db.close()
    journal.close()


def test_rankdata_and_spearman_match_definitions():
    assert rankdata(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    x = np.array([1, 2, 3, 4, 5.0])
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)


def brute_alpha(a, b) -> float:
    """Krippendorff's alpha (interval) straight from the coincidence definition."""
    values = list(a) + list(b)
    n = len(values)
    d_o = sum((x - y) ** 2 * 2 for x, y in zip(a, b, strict=True)) / n  # each unit: 2 ordered pairs / (m-1)
    d_e = sum((x - y) ** 2 for x, y in itertools.permutations(values, 2)) / (n * (n - 1))
    return 1 - d_o / d_e


def test_krippendorff_alpha_matches_brute_force():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 11, 40).astype(float)
    b = np.clip(a + rng.integers(-2, 3, 40), 0, 10)
    assert krippendorff_alpha_interval(a, b) == pytest.approx(brute_alpha(a, b))
    assert krippendorff_alpha_interval(a, a) == 1.0
    assert krippendorff_alpha_interval(a, rng.permutation(a)) < 0.3


def test_agree_joins_by_id(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": str(i), "scores": {"x": i % 11, "y": 5}} for i in range(30)])
    b_rows = [{"id": str(i), "scores": {"x": min(10, i % 11 + 1), "y": 5}} for i in reversed(range(5, 35))]
    b = write_jsonl(tmp_path / "b.jsonl", b_rows)
    result = agreement(a, b)
    assert (result.common, result.only_a, result.only_b) == (25, 5, 5)
    x = result.dimensions[0]
    assert x.name == "x" and x.n == 25 and 0.5 < x.mae < 1.0 and x.spearman > 0.9
    with pytest.raises(DistillError, match="share no article"):
        agreement(a, write_jsonl(tmp_path / "c.jsonl", [{"id": "zz", "scores": {"x": 1}}]))
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "1", "scores": {"x": 12}}])
    with pytest.raises(DistillError, match="bad.jsonl:1"):
        agreement(a, bad)


def test_agree_cli(tmp_path):
    from click.testing import CliRunner

    from distill.label.cli import command

    a = write_jsonl(tmp_path / "a.jsonl", [{"id": str(i), "scores": {"x": i % 11}} for i in range(20)])
    result = CliRunner().invoke(command, ["agree", str(a), str(a), "--json-out", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert "Krippendorff" not in result.output and "alpha" in result.output
    assert '"mae": 0.0' in (tmp_path / "r.json").read_text()
