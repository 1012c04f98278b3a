"""JSONL records: good and bad lines, rejects, strict mode, atomic appends, torn tails."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import write_jsonl
from hypothesis import given, settings
from hypothesis import strategies as st

from distill.errors import RecordError
from distill.records import (
    JsonlWriter,
    ReadStats,
    RejectsWriter,
    check_score,
    iter_json_lines,
    read_articles,
    read_ids,
    repair_tail,
)

GOOD = {"id": "a1", "title": "Solar farm", "content": "A 50 MW solar farm opened.", "url": "u"}


def test_good_articles_keep_extra_fields(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [GOOD, {"id": 7, "text": "numeric id, text field"}])
    articles = list(read_articles([path]))
    assert [a.id for a in articles] == ["a1", "7"]
    assert articles[0].extra == {"url": "u"}
    assert articles[1].text == "numeric id, text field"


@pytest.mark.parametrize(
    "line, reason",
    [
        ("{not json", "not JSON"),
        ('["a list"]', "not a JSON object"),
        ('{"content": "no id"}', "field 'id'"),
        ('{"id": "", "content": "empty id"}', "field 'id'"),
        ('{"id": "x"}', "field 'content': missing"),
        ('{"id": "x", "content": "cut mid-stri', "Unterminated string"),
        ('{"id": "x", "content": 5}', "field 'content'"),
        ('{"id": "x", "content": "  "}', "field 'content'"),
        ('{"id": "x", "content": "ok", "title": 3}', "field 'title'"),
        ('{"id": true, "content": "bool id"}', "field 'id'"),
    ],
)
def test_bad_line_is_rejected_with_file_line_and_reason(tmp_path, line, reason):
    path = write_jsonl(tmp_path / "in.jsonl", [GOOD, line, {**GOOD, "id": "a2"}])
    rejects: list = []
    stats = ReadStats()
    articles = list(read_articles([path], rejects=rejects, stats=stats))
    assert [a.id for a in articles] == ["a1", "a2"]
    assert len(rejects) == 1 and stats.rejected == 1 and stats.records == 2
    assert rejects[0].line_no == 2 and rejects[0].path == str(path)
    assert reason in rejects[0].reason


def test_strict_makes_a_bad_line_fatal(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [GOOD, "{broken"])
    with pytest.raises(RecordError, match=r"in.jsonl:2: not JSON"):
        list(read_articles([path], strict=True))


def test_invalid_utf8_and_blank_lines(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n\n" + b'{"id": "b", "content": "caf\xe9"}\n')
    rejects: list = []
    stats = ReadStats()
    assert [a.id for a in read_articles([path], rejects=rejects, stats=stats)] == ["a1"]
    assert stats.blank == 1
    assert rejects[0].reason == "invalid UTF-8" and rejects[0].line_no == 3


def test_rejects_writer_creates_file_only_when_needed(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [GOOD])
    with RejectsWriter(tmp_path / "rejects.jsonl") as rejects:
        list(read_articles([good], rejects=rejects))
    assert not (tmp_path / "rejects.jsonl").exists()
    bad = write_jsonl(tmp_path / "bad.jsonl", ["nope", GOOD])
    with RejectsWriter(tmp_path / "rejects.jsonl") as rejects:
        list(read_articles([bad], rejects=rejects))
    row = json.loads((tmp_path / "rejects.jsonl").read_text())
    assert row["file"] == str(bad) and row["line"] == 1 and row["raw"] == "nope"


def test_gzip_roundtrip(tmp_path):
    path = tmp_path / "out.jsonl.gz"
    with JsonlWriter(path) as writer:
        writer.append(GOOD)
        writer.append({**GOOD, "id": "a2"})
    assert [a.id for a in read_articles([path])] == ["a1", "a2"]
    assert gzip.open(path).read().count(b"\n") == 2


def test_writer_refuses_nan(tmp_path):
    with JsonlWriter(tmp_path / "o.jsonl") as writer, pytest.raises(ValueError):
        writer.append({"id": "x", "score": float("nan")})


def test_repair_tail_trims_only_the_torn_line(tmp_path):
    path = tmp_path / "o.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "sco')
    assert repair_tail(path)
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'
    assert not repair_tail(path)
    path.write_text('{"id": "only half')
    assert repair_tail(path) and path.read_text() == ""


def test_writer_resumes_after_torn_tail(tmp_path):
    path = tmp_path / "o.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b", "tor')
    with JsonlWriter(path) as writer:
        writer.append({"id": "c"})
    assert read_ids(path) == {"a", "c"}
    assert all(isinstance(obj, dict) for _, obj in iter_json_lines(path))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=1), min_size=1, max_size=20))
def test_any_text_roundtrips(tmp_path_factory, texts):
    path = tmp_path_factory.mktemp("rt") / "o.jsonl"
    with JsonlWriter(path) as writer:
        for i, text in enumerate(texts):
            writer.append({"id": f"i{i}", "content": text if text.strip() else text + "x"})
    back = list(read_articles([path]))
    assert len(back) == len(texts)


def test_killed_writer_never_leaves_a_line_that_breaks_the_reader(tmp_path):
    """SIGKILL a process appending big records; every complete line stays readable."""
    path = tmp_path / "o.jsonl"
    script = (
        "import sys; from distill.records import JsonlWriter\n"
        "w = JsonlWriter(sys.argv[1])\n"
        "i = 0\n"
        "while True:\n"
        "    w.append({'id': str(i), 'content': 'x' * 200000}); i += 1\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)])
    deadline = time.time() + 20
    while (not path.exists() or path.stat().st_size < 2_000_000) and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    repair_tail(path)
    ids = [obj["id"] for _, obj in iter_json_lines(path)]
    assert ids == [str(i) for i in range(len(ids))] and len(ids) >= 5


@pytest.mark.parametrize("value", [0, 10, 5.5, {"score": 7}])
def test_check_score_accepts(value):
    assert 0 <= check_score(value, "dim") <= 10


@pytest.mark.parametrize("value", [-1, 10.5, float("nan"), float("inf"), "7", None, True])
def test_check_score_rejects_naming_the_field(value):
    with pytest.raises(ValueError, match="field 'dim'"):
        check_score(value, "dim")
