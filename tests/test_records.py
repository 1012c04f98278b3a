"""JSONL records: good and bad lines, rejects, strict mode, atomic appends, torn tails."""

from __future__ import annotations

import errno
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import write_jsonl
from hypothesis import given, settings
from hypothesis import strategies as st

from distill.errors import OutputError, RecordError
from distill.records import (
    RAW_LIMIT,
    JsonlWriter,
    LabelledRecord,
    ReadStats,
    Reject,
    RejectsWriter,
    TrainingExample,
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
    assert rejects[0].reason == "invalid UTF-8 (byte 28 of the line)" and rejects[0].line_no == 3
    assert rejects[0].raw.endswith('caf\\xe9"}')  # the bad byte shown, not dropped


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


def test_bom_crlf_and_bare_cr_lines_are_numbered_as_an_editor_does(tmp_path):
    path = tmp_path / "in.jsonl"
    bare_cr = b'{"id": "cr", "content": "one\rtwo"}'  # a raw CR inside a string: invalid JSON
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\r\n" + bare_cr + b"\r\n"
                     + b'{"id":\r"a2", "content": "x"}\n' + b"{broken\n")
    items = list(iter_json_lines(path))
    assert [n for n, _ in items] == [1, 2, 3, 4]
    assert items[0][1] == GOOD and items[2][1]["id"] == "a2"  # a CR between tokens is whitespace
    assert items[1][1].reason.startswith("not JSON (Invalid control character")
    assert items[3][1].reason.startswith("not JSON")
    assert read_ids(path) == {"a1", "a2"}


@pytest.mark.parametrize(
    "line, where",
    [
        ('{"id": "x", "content": "bad \\ud800 text"}', "field 'content'"),
        ('{"id": "x\\udc00", "content": "ok"}', "field 'id'"),
        ('{"id": "x", "content": "ok", "meta": {"k": ["a", "\\udcff"]}}', "field 'meta.k[1]'"),
        ('{"id": "x", "content": "ok", "\\udfff": 1}', "field '\\udfff'"),
    ],
)
def test_a_lone_surrogate_rejects_its_line_naming_the_field(tmp_path, line, where):
    path = write_jsonl(tmp_path / "in.jsonl", [GOOD, line, '{"id": "emoji", "content": "\\ud83d\\ude00"}'])
    rejects: list = []
    articles = list(read_articles([path], rejects=rejects))
    assert [a.id for a in articles] == ["a1", "emoji"] and articles[1].text == "\U0001f600"
    assert rejects[0].line_no == 2 and rejects[0].reason.startswith(f"{where}: holds a lone surrogate")
    with RejectsWriter(tmp_path / "rejects.jsonl") as writer:  # the reject itself writes as valid UTF-8
        writer.append(rejects[0])
    (tmp_path / "rejects.jsonl").read_bytes().decode("utf-8")


def test_writer_keeps_a_lone_surrogate_as_an_escape_never_as_bad_bytes(tmp_path):
    path = tmp_path / "o.jsonl"
    with JsonlWriter(path) as writer:
        writer.append({"id": "s", "note": "half \udcff pair"})
    data = path.read_bytes()
    assert data == b'{"id":"s","note":"half \\udcff pair"}\n'  # ASCII, so valid UTF-8
    assert json.loads(data)["note"] == "half \udcff pair"


def _gzip_of(lines: list[bytes]) -> bytes:
    return gzip.compress(b"".join(lines))


def test_a_truncated_gz_yields_its_complete_lines_then_one_reject(tmp_path):
    lines = [json.dumps({**GOOD, "id": f"g{i}", "content": "text " * 30}).encode() + b"\n" for i in range(200)]
    packed = _gzip_of(lines)
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(packed[: len(packed) // 2])
    rejects: list = []
    stats = ReadStats()
    ids = [a.id for a in read_articles([path], rejects=rejects, stats=stats)]
    assert 10 < len(ids) < 200 and ids == [f"g{i}" for i in range(len(ids))]
    [torn] = rejects
    assert torn.path == str(path) and torn.line_no == len(ids) + 1 and "gzip data ends here" in torn.reason
    with pytest.raises(RecordError, match=rf"in.jsonl.gz:{len(ids) + 1}: the gzip data ends here"):
        list(read_articles([path], strict=True))
    path.write_bytes(packed[:-4])  # only the length trailer lost: every line is there
    assert len(list(read_articles([path], rejects=(rejects := [])))) == 200 and len(rejects) == 1
    path.write_bytes(b'{"id": "plain text named .gz"}\n')
    [(line_no, reject)] = list(iter_json_lines(path))
    assert line_no == 1 and "Not a gzipped file" in reject.reason


def test_a_reject_copies_at_most_raw_limit_characters(tmp_path):
    long_line = '{"id": "big", "content": "' + "x" * 100_000  # torn, so not JSON
    path = write_jsonl(tmp_path / "in.jsonl", [long_line])
    rejects: list = []
    list(read_articles([path], rejects=rejects))
    row = rejects[0].to_json()
    assert row["raw"] == long_line[:RAW_LIMIT] and row["raw_length"] == len(long_line)
    assert "raw_length" not in Reject("f", 1, "short", "abc").to_json()


def test_a_full_disk_cuts_the_torn_record_back_and_raises_one_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "o.jsonl"
    real_write = os.write
    with JsonlWriter(path) as writer:
        writer.append({"id": "kept"})

        def half_then_full(fd, data):
            if len(data) > 5:
                return real_write(fd, bytes(data[:5]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "write", half_then_full)
        with pytest.raises(OutputError, match=r"o.jsonl: cannot write a record: No space left on device; "
                                              r"the disk is full"):
            writer.append({"id": "lost", "content": "x" * 50})
        monkeypatch.setattr(os, "write", real_write)
        writer.append({"id": "after"})  # the writer goes on from the last whole line
    assert path.read_text() == '{"id":"kept"}\n{"id":"after"}\n'
    assert writer.written == 2


def test_writer_in_a_path_through_a_file_raises_output_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="a part of the path is a file"):
        JsonlWriter(tmp_path / "file" / "o.jsonl")


# --- typed records: one parser and one writer per record kind ---------------------------


def test_labelled_record_round_trips_as_distill_label_writes_it():
    oracle = {"model": "gemini-2.0-flash", "prompt_sha256": "abc", "input_tokens": 10}
    line = {**GOOD, "scores": {"a": 3, "b": {"score": 7.5}}, "oracle": oracle}
    record = LabelledRecord.from_json(line, ["a", "b"])
    assert record.scores == {"a": 3.0, "b": 7.5} and record.oracle == oracle
    assert record.article.id == "a1" and record.article.extra == {"url": "u"}
    assert record.to_json() == {**GOOD, "scores": {"a": 3.0, "b": 7.5}, "oracle": oracle}
    assert LabelledRecord.from_json(record.to_json(), ["a", "b"]) == record


def test_labelled_record_names_the_bad_field():
    cases = [
        ({**GOOD, "scores": {"a": 1}}, "field 'scores': missing dimension(s) b"),
        ({**GOOD, "scores": {"a": 1, "b": 2, "c": 3}}, "field 'scores': unexpected dimension(s) c"),
        ({**GOOD, "scores": {"a": 1, "b": 11}}, "field 'scores.b': 11 is outside 0..10"),
        ({**GOOD, "scores": [1, 2]}, "field 'scores': missing or not an object"),
        ({"id": "x", "scores": {"a": 1, "b": 2}}, "field 'content': missing"),
    ]
    for line, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            LabelledRecord.from_json(line, ["a", "b"])
    nested = {**GOOD, "analysis": {"a": 1, "b": {"score": 2}, "c": 5, "content_type": "opinion", "note": "x"}}
    loose = LabelledRecord.from_json(nested, ["a", "b"], scores_field="analysis", allow_extra=True)
    assert loose.scores == {"a": 1.0, "b": 2.0} and loose.content_type == "opinion"


def test_training_example_round_trips_and_names_the_bad_field():
    row = {"id": "a", "text": "solar", "dimension_scores": [1.0, 2.0], "overall_score": 1.5, "tier": "low"}
    example = TrainingExample.from_json(row, 2)
    assert example.weight is None and example.to_json() == row
    weighted = TrainingExample.from_json({**row, "weight": 2}, 2)
    assert weighted.weight == 2.0 and list(weighted.to_json()) == [*row, "weight"]
    bare = TrainingExample.from_json({"text": "x", "dimension_scores": [0, 10]}, 2)
    assert (bare.id, bare.tier, bare.overall_score) == ("", "", None)
    cases = [
        ({**row, "text": " "}, "field 'text': missing or not a non-empty string"),
        ({**row, "dimension_scores": [1.0]}, "field 'dimension_scores': expected a list of 2 scores"),
        ({**row, "dimension_scores": [1.0, "x"]}, "field 'dimension_scores': not a number"),
        ({**row, "weight": 0}, "field 'weight': must be a positive number"),
    ]
    for line, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            TrainingExample.from_json(line, 2)
