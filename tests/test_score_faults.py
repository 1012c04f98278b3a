"""distill-score under faults, driven through its CLI as a user would: a concurrent
run on the same output, poison and torn input, huge articles, odd line ends,
small windows, garbage in the output, a full disk and a read-only folder."""

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
import zlib
from pathlib import Path

import pytest
from conftest import tiny_student, write_jsonl
from test_score import student_info

from distill.records import RAW_LIMIT
from distill.truncation import clip_chars

WORDS = ("solar", "panels", "grid", "storage", "battery", "the", "council", "approved", "a", "new",
         "wind", "farm", "near", "town", "with", "carbon", "savings", "of", "tonnes", "per", "year")


def article(i: int) -> dict:
    """A synthetic article the sustainability prefilter passes; lengths vary with i."""
    words = " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(30 + (i * 13) % 40))
    return {"id": f"a{i}", "title": f"Solar project {i}", "content": f"Solar farm {i}: {words}."}


@pytest.fixture(scope="module")
def student(tmp_path_factory, tiny_bert_dir) -> Path:
    return tiny_student(tmp_path_factory, tiny_bert_dir, student_info())


def score(capsys, *args, progress: bool = False) -> tuple[int, str]:
    """Run `distill-score ARGS` in this process: (exit code, stderr)."""
    from distill.serve.cli import main

    flags = ["--workers", "0", "--threads", "1", "--progress" if progress else "--no-progress"]
    try:
        main([str(a) for a in args] + flags)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def ids_of(path: Path) -> list[str]:
    return [r["id"] for r in lines_of(path)]


def _count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


# 1. Two runs on one output -------------------------------------------------------------------------


def test_a_second_run_on_the_same_output_stops_at_once_naming_the_first(tmp_path, student, capsys):
    rows = [article(i) for i in range(100)]
    corpus = write_jsonl(tmp_path / "corpus.jsonl", rows + ["{bad line"])
    out = tmp_path / "scored.jsonl"
    first = subprocess.Popen(
        [sys.executable, "-c", "from distill.serve.cli import main; main()", str(corpus), "-m", str(student),
         "-o", str(out), "--window", "8", "--workers", "0", "--threads", "1", "--no-progress"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while first.poll() is None and _count_lines(out) < 1 and time.time() < deadline:
            time.sleep(0.005)
        assert first.poll() is None, first.stderr.read().decode()
        first.send_signal(signal.SIGSTOP)  # mid-run, holding the lock
        _wait_until_stopped(first.pid)  # the signal lands asynchronously: a line may still be written before
        written = out.read_bytes()
        started = time.perf_counter()
        code, err = score(capsys, corpus, "-m", student, "-o", out)
        assert time.perf_counter() - started < 30
        assert code == 2
        assert err.strip().splitlines() == [
            f"error: {out}: another distill-score run (pid {first.pid}) is writing it; wait for it to "
            "finish or score into another --output"]
        assert out.read_bytes() == written  # the second run touched nothing
    finally:
        first.send_signal(signal.SIGCONT)
        first.wait(timeout=180)
    assert first.returncode == 0
    assert ids_of(out) == [r["id"] for r in rows]  # every record once
    assert len(lines_of(tmp_path / "scored.rejects.jsonl")) == 1
    assert not (tmp_path / "scored.jsonl.lock").exists()


def _wait_until_stopped(pid: int, timeout: float = 30) -> None:
    """Until the kernel reports the process stopped (state T in /proc/PID/stat)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        if state in ("T", "t"):
            return
        time.sleep(0.001)
    raise AssertionError(f"process {pid} did not stop within {timeout} s")


def test_a_lock_left_by_a_killed_run_does_not_block_the_rerun(tmp_path, student, capsys):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [article(i) for i in range(5)])
    out = tmp_path / "scored.jsonl"
    (tmp_path / "scored.jsonl.lock").write_text("999999\n")  # its process is gone: the kernel dropped the flock
    code, err = score(capsys, corpus, "-m", student, "-o", out)
    assert code == 0, err
    assert ids_of(out) == [f"a{i}" for i in range(5)]
    assert not (tmp_path / "scored.jsonl.lock").exists()


# 2. Poison lines --------------------------------------------------------------------------------


def test_lone_surrogates_reject_their_line_and_the_rest_is_scored_on_every_run(tmp_path, student, capsys):
    corpus = tmp_path / "corpus.jsonl"
    good = [article(i) for i in range(4)]
    raw_lines = [
        json.dumps(good[0]),
        '{"id": "p-content", "content": "solar panels \\ud800 on the council roof, twenty words of text here"}',
        json.dumps(good[1]),
        '{"id": "a\\udc00", "content": "solar panels on the roof of the town hall, with many more words here"}',
        '{"id": "p-carried", "content": "solar panels ' + "word " * 25 + '", "tags": ["ok", "\\udcff"]}',
        '{"id": "pair", "content": "solar \\ud83d\\ude00 panels ' + "word " * 25 + '"}',  # a valid pair
        json.dumps(good[2]),
        json.dumps(good[3]),
    ]
    corpus.write_text("\n".join(raw_lines) + "\n", encoding="utf-8")
    out = tmp_path / "scored.jsonl"
    for _ in range(2):  # the poison never stops a run, first or rerun
        code, err = score(capsys, corpus, "-m", student, "-o", out, "--carry", "tags")
        assert code == 0, err
        out.read_bytes().decode("utf-8")  # strict: the output is valid UTF-8
        assert ids_of(out) == ["a0", "a1", "pair", "a2", "a3"]
        rejects = lines_of(tmp_path / "scored.rejects.jsonl")
        assert [(r["file"], r["line"]) for r in rejects] == [(str(corpus), n) for n in (2, 4, 5)]
        reasons = [r["reason"] for r in rejects]
        assert reasons[0].startswith("field 'content': holds a lone surrogate")
        assert reasons[1].startswith("field 'id': holds a lone surrogate")
        assert reasons[2].startswith("field 'tags[1]': holds a lone surrogate")


# 3. A torn .gz ----------------------------------------------------------------------------------


def test_a_truncated_gz_scores_every_complete_line_then_reports_the_torn_end(tmp_path, student, capsys):
    rows = [article(i) for i in range(60)]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    packed = gzip.compress(data)
    corpus = tmp_path / "corpus.jsonl.gz"
    corpus.write_bytes(packed[: len(packed) * 2 // 3])  # a download cut short
    readable = zlib.decompressobj(wbits=31).decompress(corpus.read_bytes())
    complete = readable.count(b"\n")
    assert 10 < complete < 60
    out = tmp_path / "scored.jsonl"
    code, err = score(capsys, corpus, "-m", student, "-o", out, progress=True)  # the bar counts lines too
    assert code == 0, err
    assert "Aborted" not in err
    assert ids_of(out) == [r["id"] for r in rows[:complete]]
    [torn] = lines_of(tmp_path / "scored.rejects.jsonl")
    assert torn["file"] == str(corpus) and torn["line"] == complete + 1
    assert "gzip data ends here, truncated or corrupt" in torn["reason"]
    assert torn["raw"] == readable[readable.rindex(b"\n") + 1:].decode()  # the fragment, shown


# 4. A huge article ---------------------------------------------------------------------------------


def test_a_huge_article_is_cut_before_tokenising_and_a_huge_bad_line_is_capped(tmp_path, student, capsys,
                                                                                monkeypatch):
    import distill.serve.tokenize as tokenize

    seen: list[int] = []
    real_encode = tokenize.encode_texts

    def spy(tokenizer, texts, max_tokens, head_share):
        seen.extend(map(len, texts))
        return real_encode(tokenizer, texts, max_tokens, head_share)

    monkeypatch.setattr(tokenize, "encode_texts", spy)
    huge = {"id": "huge", "title": "Solar", "content": "solar panels on every roof. " * 700_000}  # ~20 MB
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [article(0), huge, '{"id": "bad", "content": "' + "x" * 2_000_000,
                                                     article(1)])
    out = tmp_path / "scored.jsonl"
    started = time.perf_counter()
    code, err = score(capsys, corpus, "-m", student, "-o", out)
    assert code == 0, err
    assert time.perf_counter() - started < 60  # whole, this article took minutes and gigabytes
    assert ids_of(out) == ["a0", "huge", "a1"] and lines_of(out)[1]["scores"] is not None
    assert max(seen) <= len(clip_chars("x" * 10**8, 64, 0.8)) < 5_000
    rejects_file = tmp_path / "scored.rejects.jsonl"
    [bad] = lines_of(rejects_file)
    assert bad["line"] == 3 and bad["reason"].startswith("not JSON")
    assert len(bad["raw"]) == RAW_LIMIT and bad["raw_length"] == 2_000_000 + len('{"id": "bad", "content": "')
    assert rejects_file.stat().st_size < 2 * RAW_LIMIT


# 5. BOM and line ends ------------------------------------------------------------------------------


def test_bom_crlf_and_a_bare_cr_count_lines_as_editors_do(tmp_path, student, capsys):
    lines = [json.dumps(article(0)), json.dumps(article(1)),
             json.dumps(article(2)).replace('"content"', '\r"content"'),  # a bare CR between tokens: valid JSON
             json.dumps(article(3)).replace("Solar farm", "Solar\rfarm"),  # inside a string: a control char
             "{not json", json.dumps(article(4))]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")  # BOM, Windows line ends
    out = tmp_path / "scored.jsonl"
    code, err = score(capsys, corpus, "-m", student, "-o", out)
    assert code == 0, err
    assert ids_of(out) == ["a0", "a1", "a2", "a4"]  # the BOM line is the first record
    rejects = lines_of(tmp_path / "scored.rejects.jsonl")
    assert [r["line"] for r in rejects] == [4, 5]  # as an editor numbers them: CR splits nothing
    assert rejects[0]["reason"].startswith("not JSON (Invalid control character")
    assert "\r" in rejects[0]["raw"]


# 6. --window, --show, a folder as input ---------------------------------------------------------


def test_a_window_below_the_read_chunk_takes_effect(tmp_path, student, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one table row per line
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [article(i) for i in range(40)])
    batches = {}
    for window in (8, 2048):
        out = tmp_path / f"w{window}.jsonl"
        code, err = score(capsys, corpus, "-m", student, "-o", out, "--window", window, "--max-batch", 64,
                          "--token-budget", 8192)  # room for all 40 in one batch: only the window limits
        assert code == 0, err
        batches[window] = int(re.search(r"batches \(padding share\)\D*(\d+) \(", err).group(1))
    assert batches == {8: 5, 2048: 1}  # 40 articles: five windows of 8, each one batch
    assert ids_of(tmp_path / "w8.jsonl") == ids_of(tmp_path / "w2048.jsonl")


def test_show_flags_a_garbage_line_in_the_output_instead_of_crashing(tmp_path, student, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [article(i) for i in range(3)])
    out = tmp_path / "scored.jsonl"
    out.write_text('garbage\n{"id": "x", "scores": "nope"}\n', encoding="utf-8")
    code, err = score(capsys, corpus, "-m", student, "-o", out, "--show", 4)
    assert code == 0, err
    assert "line 1" in err and "unreadable: not JSON" in err
    assert "line 2" in err and "not a scored record" in err
    assert re.search(r"\ba0\b", err) and re.search(r"\ba1\b", err)
    assert not re.search(r"\ba2\b", err)  # four rows shown


def test_a_folder_as_input_says_it_is_a_folder(tmp_path, student, capsys):
    folder = tmp_path / "corpus"
    folder.mkdir()
    code, err = score(capsys, folder, "-m", student, "-o", tmp_path / "o.jsonl")
    assert code == 2
    assert f"INPUTS: {folder}: is a folder; give its files, e.g. {folder}/*.jsonl" in err
    assert "no such file" not in err and "Traceback" not in err


# 7. A full disk, a read-only folder -------------------------------------------------------------


def test_a_full_disk_keeps_whole_lines_says_one_line_and_the_rerun_completes(tmp_path, student, capsys,
                                                                              monkeypatch):
    rows = [article(i) for i in range(40)]
    corpus = write_jsonl(tmp_path / "corpus.jsonl", rows)
    out = tmp_path / "scored.jsonl"
    real_write = os.write
    room = {"left": 5000}  # bytes the disk still takes for the output

    def full_disk_write(fd: int, data) -> int:
        if os.readlink(f"/proc/self/fd/{fd}") != str(out):
            return real_write(fd, data)
        if room["left"] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done = real_write(fd, bytes(data[: room["left"]]))  # a short write, as a filling disk gives
        room["left"] -= done
        return done

    monkeypatch.setattr(os, "write", full_disk_write)
    code, err = score(capsys, corpus, "-m", student, "-o", out)
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: {out}: cannot write a record: No space left on device; the disk is full: free space, "
        "then rerun the same command to resume (every line already in it is whole and kept)"]
    data = out.read_bytes()
    assert data.endswith(b"\n") and 0 < data.count(b"\n") < 40  # the torn record was cut back
    kept = ids_of(out)
    assert kept == [r["id"] for r in rows[: len(kept)]]
    monkeypatch.setattr(os, "write", real_write)
    code, err = score(capsys, corpus, "-m", student, "-o", out)
    assert code == 0, err
    assert ids_of(out) == [r["id"] for r in rows]


def test_a_read_only_output_folder_is_one_line_and_the_rerun_resumes(tmp_path, student, capsys, monkeypatch):
    rows = [article(i) for i in range(12)]
    corpus = write_jsonl(tmp_path / "corpus.jsonl", rows)
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "scored.jsonl"
    assert score(capsys, corpus, "-m", student, "-o", out)[0] == 0
    out.write_text("".join(out.read_text().splitlines(keepends=True)[:5]))  # an earlier run stopped here
    before = out.read_bytes()
    _make_read_only(folder, monkeypatch)
    code, err = score(capsys, corpus, "-m", student, "-o", out)
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith(f"error: {out}: cannot create its lock file scored.jsonl.lock: Permission denied; "
                           "no permission to write there")
    assert out.read_bytes() == before  # nothing already written is lost
    monkeypatch.undo()
    folder.chmod(0o755)
    assert score(capsys, corpus, "-m", student, "-o", out)[0] == 0
    assert ids_of(out) == [r["id"] for r in rows]


def _make_read_only(folder: Path, monkeypatch) -> None:
    """chmod 0o555; root ignores that, so as root refuse writes there at os.open instead."""
    folder.chmod(0o555)
    if os.geteuid() != 0:
        return
    real_open = os.open
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def read_only_open(path, flags, *args, **kwargs):
        if flags & writing and Path(path).parent == folder:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_open)


def test_an_output_path_through_a_file_is_one_line(tmp_path, student, capsys):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [article(0)])
    blocker = tmp_path / "results"
    blocker.write_text("a file where a folder should be")
    code, err = score(capsys, corpus, "-m", student, "-o", blocker / "scored.jsonl")
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith(f"error: {blocker / 'scored.jsonl'}: cannot create its lock file")
    assert line.endswith("a part of the path is a file, not a folder: write somewhere else")
