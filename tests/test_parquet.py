"""Parquet files and datasets.save_to_disk folders in distill-score, distill-label and
distill-prepare: rows are lines (same rejects, resume and exactly-once), `-o out.parquet`
is journalled and published whole, and a missing pyarrow is one clear line."""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import first_rows, tiny_student, write_jsonl
from test_score import GOSSIP, student_info

import distill.columnar as columnar
from distill.columnar import journal_path, publish_parquet
from distill.errors import ConfigError, OutputError, RecordError
from distill.records import iter_objects, read_articles
from distill.serve.runner import score_corpus
from distill.serve.settings import ScoreSettings

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def write_parquet(path: Path, rows: list[dict], row_group_size: int | None = None) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


def save_dataset(folder: Path, rows: list[dict], shards: int = 2) -> Path:
    """A save_to_disk folder: with `datasets` when installed, else the same files with pyarrow
    (Arrow IPC stream shards, state.json listing them, dataset_info.json)."""
    try:
        import datasets
    except ImportError:
        table = pa.Table.from_pylist(rows)
        folder.mkdir(parents=True)
        names, size = [], -(-len(rows) // shards)
        for k in range(shards):
            names.append(f"data-{k:05d}-of-{shards:05d}.arrow")
            with pa.OSFile(str(folder / names[-1]), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table.slice(k * size, size))
        (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": n} for n in names]}))
        (folder / "dataset_info.json").write_text("{}")
        return folder
    datasets.Dataset.from_list(rows).save_to_disk(str(folder), num_shards=shards)
    return folder


# Reading


def test_a_parquet_row_is_a_line_bad_rows_are_rejects_naming_file_row_and_field(tmp_path):
    rows = [
        {"id": "a", "title": "A", "content": "first text", "when": datetime.datetime(2024, 5, 1, 12, 0),
         "blob": b"utf-8 bytes"},
        {"id": None, "title": "no id", "content": "text", "when": None, "blob": None},
        {"id": "c", "title": None, "content": "", "when": None, "blob": None},
        {"id": "d", "title": "D", "content": "fourth text", "when": None, "blob": b"\xff\xfe"},
        {"id": "e", "title": "E", "content": "fifth text", "when": None, "blob": None},
    ]
    path = write_parquet(tmp_path / "in.parquet", rows, row_group_size=2)  # rejects cross row groups
    rejects = []
    articles = list(read_articles([path], rejects=rejects))
    assert [a.id for a in articles] == ["a", "e"]
    assert articles[0].extra == {"when": "2024-05-01T12:00:00", "blob": "utf-8 bytes"}  # JSON-ready
    assert articles[1].extra == {}  # null columns are columns the row does not use
    assert [(r.path, r.line_no) for r in rejects] == [(str(path), 2), (str(path), 3), (str(path), 4)]
    assert "field 'id'" in rejects[0].reason and "field 'content'" in rejects[1].reason
    assert "field 'blob'" in rejects[2].reason and "UTF-8" in rejects[2].reason
    assert json.loads(rejects[1].raw)["id"] == "c"
    with pytest.raises(RecordError, match=r"in\.parquet:2: field 'id'"):
        list(read_articles([path], strict=True))


def test_invalid_utf8_in_a_string_column_rejects_only_its_row(tmp_path):
    raw = pa.array([b"good text", b"bad \xff text", b"more text"], type=pa.binary())
    content = pa.Array.from_buffers(pa.string(), 3, raw.buffers())  # a writer that skipped validation
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "content": content}), path)
    rejects = []
    assert [a.id for a in read_articles([path], rejects=rejects)] == ["a", "c"]
    assert [(r.line_no, r.reason) for r in rejects] == [(2, "field 'content': not valid UTF-8 text")]


def test_damaged_files_are_one_reject_after_every_readable_row(tmp_path):
    good = write_parquet(tmp_path / "good.parquet", [{"id": f"a{i}", "content": "text"} for i in range(4)])
    torn = tmp_path / "torn.parquet"
    torn.write_bytes(good.read_bytes()[:-40])  # the footer is gone
    rejects = []
    assert list(read_articles([torn, good], rejects=rejects))[-1].id == "a3"  # the next file is still read
    assert [(r.path, r.line_no) for r in rejects] == [(str(torn), 1)]
    assert rejects[0].reason.startswith("cannot be read")
    folder = save_dataset(tmp_path / "ds", [{"id": f"b{i}", "content": "text"} for i in range(6)], shards=2)
    second = columnar.data_files(folder)[1]
    second.write_bytes(second.read_bytes()[:50])  # the second shard is cut short
    rejects = []
    assert [a.id for a in read_articles([folder], rejects=rejects)] == ["b0", "b1", "b2"]
    assert [r.line_no for r in rejects] == [4] and "every row before it was read" in rejects[0].reason


def test_rows_are_streamed_a_batch_at_a_time(tmp_path, monkeypatch):
    """One 50-row row group is still turned into Python objects 8 rows at a time."""
    path = write_parquet(tmp_path / "in.parquet", [{"id": f"a{i}", "content": "t"} for i in range(50)])
    assert pq.ParquetFile(path).metadata.num_row_groups == 1
    seen = []
    real = columnar._batch_rows
    monkeypatch.setattr(columnar, "BATCH_ROWS", 8)
    monkeypatch.setattr(columnar, "_batch_rows", lambda p, before, batch: seen.append(batch.num_rows)
                        or real(p, before, batch))
    assert [n for n, _ in iter_objects(path)] == list(range(1, 51))
    assert max(seen) == 8 and sum(seen) == 50


def test_a_save_to_disk_folder_is_one_input_numbered_across_its_shards(tmp_path):
    rows = [{"id": f"a{i}", "content": f"text {i}"} for i in range(7)]
    rows[5] = {"id": "a5", "content": None}
    folder = save_dataset(tmp_path / "ds", rows, shards=3)
    assert len(columnar.data_files(folder)) == 3
    rejects = []
    assert [a.id for a in read_articles([folder], rejects=rejects)] == ["a0", "a1", "a2", "a3", "a4", "a6"]
    assert [(r.path, r.line_no) for r in rejects] == [(str(folder), 6)]
    assert columnar.count_rows(folder) == 7


def test_the_real_datasets_library_writes_what_we_read(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"id": f"a{i}", "content": f"text {i}", "n": i} for i in range(5)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    assert [obj for _, obj in iter_objects(tmp_path / "ds")] == rows
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "dd"))
    problem = columnar.folder_problem(tmp_path / "dd")
    assert "DatasetDict" in problem and str(tmp_path / "dd" / "train") in problem


# distill-score


@pytest.fixture(scope="module")
def student(tmp_path_factory, tiny_bert_dir) -> Path:
    return tiny_student(tmp_path_factory, tiny_bert_dir, student_info())


@pytest.fixture(scope="module")
def real_rows(real_articles) -> list[dict]:
    return [{k: r[k] for k in ("id", "title", "content", "url")} for r in first_rows(real_articles, 60)]


def run(inputs, model, output, **options):
    options = {"workers": 0, "threads": 1, "progress": False, **options}
    return score_corpus(ScoreSettings(inputs=list(inputs), model=model, output=output, **options))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def read_parquet(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def same_records(parquet_rows: list[dict], jsonl_rows: list[dict]) -> None:
    assert [r["id"] for r in parquet_rows] == [r["id"] for r in jsonl_rows]
    for got, want in zip(parquet_rows, jsonl_rows, strict=True):
        def plain(record):  # a Parquet row has every column; a JSONL record only the fields it carries
            return {k: v for k, v in record.items() if k != "scores" and v is not None}

        assert plain(got) == plain(want)
        assert (got["scores"] is None) == (want["scores"] is None)
        if want["scores"]:
            assert list(got["scores"]) == list(want["scores"])
            assert max(abs(got["scores"][d] - want["scores"][d]) for d in want["scores"]) <= 1e-6


@pytest.fixture
def corpus(tmp_path, real_rows) -> tuple[Path, Path, list[str]]:
    """The same articles as Parquet and as JSONL: bad rows, a duplicate id and blocked articles."""
    rows = real_rows[:20] + [
        {"title": "no id", "content": "text " * 50},
        {"id": "no-text", "content": None},
        dict(real_rows[3], title="same id again"),
        {"id": "gossip-1", "content": GOSSIP},
    ] + real_rows[20:40]
    rows = [{"id": None, "title": None, "content": None, "url": None} | row for row in rows]  # one schema
    parquet = write_parquet(tmp_path / "corpus.parquet", rows, row_group_size=16)
    jsonl = write_jsonl(tmp_path / "corpus.jsonl", [{k: v for k, v in r.items() if v is not None} for r in rows])
    valid = [r["id"] for r in real_rows[:20]] + ["gossip-1"] + [r["id"] for r in real_rows[20:40]]
    return parquet, jsonl, valid


def test_parquet_in_parquet_out_scores_like_jsonl(tmp_path, student, corpus):
    parquet, jsonl, valid = corpus
    reference = tmp_path / "reference.jsonl"
    run([jsonl], student, reference, carry=("url",))
    out = tmp_path / "scored.parquet"
    summary = run([parquet], student, out, carry=("url",))
    assert (summary.scored, summary.blocked, summary.rejected) == (40, 1, 3)
    same_records(read_parquet(out), read_jsonl(reference))
    assert [r["id"] for r in read_parquet(out)] == valid
    assert not journal_path(out).exists() and not (tmp_path / "scored.parquet.lock").exists()
    rejects = read_jsonl(tmp_path / "scored.rejects.jsonl")
    assert [(r["file"], r["line"]) for r in rejects] == [(str(parquet), n) for n in (21, 22, 23)]
    reasons = " | ".join(r["reason"] for r in rejects)
    assert "field 'id'" in reasons and "field 'content'" in reasons and f"duplicate id {valid[3]!r}" in reasons
    again = run([parquet], student, out)
    assert (again.scored, again.resumed) == (0, len(valid))
    assert [r["id"] for r in read_parquet(out)] == valid


def test_a_save_to_disk_folder_is_scored_like_its_jsonl(tmp_path, student, real_rows):
    folder = save_dataset(tmp_path / "ds", real_rows[:30], shards=3)
    jsonl = write_jsonl(tmp_path / "in.jsonl", real_rows[:30])
    run([jsonl], student, tmp_path / "a.jsonl")
    run([folder], student, tmp_path / "b.jsonl")
    assert read_jsonl(tmp_path / "a.jsonl") == read_jsonl(tmp_path / "b.jsonl")


def test_an_interrupted_parquet_run_resumes_from_its_journal_with_every_id_once(tmp_path, student, corpus,
                                                                                monkeypatch):
    parquet, _, valid = corpus
    reference = tmp_path / "reference.parquet"
    run([parquet], student, reference)
    out = tmp_path / "scored.parquet"
    import distill.serve.runner as runner

    real_write, windows = runner._Pipeline._flush, []

    def stop_after_two_windows(self):
        if len(windows) == 2:
            raise KeyboardInterrupt  # a Ctrl-C between windows
        windows.append(1)
        real_write(self)

    monkeypatch.setattr(runner._Pipeline, "_flush", stop_after_two_windows)
    with pytest.raises(KeyboardInterrupt):
        run([parquet], student, out, window=8)
    monkeypatch.undo()
    journal = journal_path(out)
    assert not out.exists() and len(read_jsonl(journal)) == 16  # two windows journalled, nothing published
    with open(journal, "a", encoding="utf-8") as handle:
        handle.write('{"id": "torn')  # and a torn last line, as a kill leaves
    summary = run([parquet], student, out)
    assert summary.resumed == 16 and any("torn" in note for note in summary.notes)
    assert not journal.exists()
    same_records(read_parquet(out), read_parquet(reference))


def test_a_crash_between_publishing_and_dropping_the_journal_writes_nothing_twice(tmp_path, student, corpus,
                                                                                  monkeypatch, real_rows):
    parquet, _, valid = corpus
    out = tmp_path / "scored.parquet"

    def crash(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(columnar, "_remove", crash)
    with pytest.raises(KeyboardInterrupt):
        run([parquet], student, out)
    monkeypatch.undo()
    assert journal_path(out).exists() and [r["id"] for r in read_parquet(out)] == valid
    more = write_parquet(tmp_path / "more.parquet", real_rows[40:45])
    summary = run([parquet, more], student, out)  # the journal's ids are all published: skipped, not copied
    assert summary.resumed == len(valid) and summary.scored + summary.blocked == 5
    assert [r["id"] for r in read_parquet(out)] == valid + [r["id"] for r in real_rows[40:45]]
    assert not journal_path(out).exists()


def test_sigkill_during_a_parquet_run_then_rerun_leaves_every_id_once(tmp_path, student, real_rows):
    rows = [dict(r, id=f"{r['id']}-{k}") for k in range(3) for r in real_rows]
    corpus = write_parquet(tmp_path / "big.parquet", rows, row_group_size=50)
    out = tmp_path / "scored.parquet"
    journal = journal_path(out)
    command = [sys.executable, "-c", "from distill.serve.cli import main; main()", str(corpus),
               "-m", str(student), "-o", str(out), "--window", "16", "--threads", "1",
               "--backend", "torch", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while proc.poll() is None and _lines(journal) < 20 and time.time() < deadline:
        time.sleep(0.005)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert killed and 0 < _lines(journal) < len(rows) and not out.exists()
    run([corpus], student, out)
    assert [r["id"] for r in read_parquet(out)] == [r["id"] for r in rows]
    assert not journal.exists()


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_an_output_parquet_that_distill_did_not_write_is_never_replaced(tmp_path, student, corpus):
    parquet, _, _ = corpus
    out = tmp_path / "scored.parquet"
    out.write_bytes(b"not parquet at all")
    with pytest.raises(OutputError, match="not a Parquet file distill-score wrote"):
        run([parquet], student, out)
    assert out.read_bytes() == b"not parquet at all"


def test_mixed_types_in_a_column_stop_publishing_and_keep_the_journal(tmp_path):
    out = tmp_path / "scored.parquet"
    write_jsonl(journal_path(out), [{"id": "a", "x": 1}, {"id": "b", "x": "text"}])
    with pytest.raises(OutputError, match="every record is kept in"):
        publish_parquet(out)
    assert not out.exists() and len(read_jsonl(journal_path(out))) == 2


def test_cli_scores_parquet_and_shows_its_records(tmp_path, student, corpus, monkeypatch):
    from distill.serve.cli import command

    monkeypatch.setenv("COLUMNS", "200")  # one table row per line
    parquet, _, valid = corpus
    out = tmp_path / "scored.parquet"
    result = CliRunner().invoke(command, [str(parquet), "-m", str(student), "-o", str(out), "--threads", "1",
                                          "--workers", "0", "--no-progress", "--show", "3"])
    assert result.exit_code == 0, result.output
    # rich wraps the title to the table's width, which the ids set: compare without whitespace.
    title = "".join(f"first 3 records of {out}".split())
    assert title in "".join(result.output.split()) and "unreadable" not in result.output
    assert valid[0] in result.output and valid[3] not in result.output
    assert len(read_parquet(out)) == len(valid)


def test_settings_name_parquet_outputs_and_their_rejects(tmp_path):
    corpus = write_parquet(tmp_path / "in.parquet", [{"id": "a", "content": "text"}])
    one = ScoreSettings(inputs=[corpus], output=tmp_path / "scored.parquet", model=[tmp_path])
    assert one.rejects_path == tmp_path / "scored.rejects.jsonl" and one.problems() == []
    several = dict(inputs=[corpus], model=[tmp_path], filter=["sustainability/v1", "uplifting/v1"])
    assert "--output: several filters" in " ".join(ScoreSettings(output=tmp_path / "x.parquet", **several).problems())
    template = ScoreSettings(output=tmp_path / "{filter}.parquet", **several)
    assert template.output_paths(["sustainability/v1", "uplifting/v1"]) == [
        tmp_path / "sustainability-v1.parquet", tmp_path / "uplifting-v1.parquet"]
    assert template.rejects_path == tmp_path / "rejects.jsonl"
    (tmp_path / "plain").mkdir()
    problems = ScoreSettings(inputs=[tmp_path / "plain"], output=tmp_path / "o.jsonl", model=[tmp_path]).problems()
    assert problems == [f"INPUTS: {tmp_path / 'plain'}: is a folder; give its files, e.g. "
                        f"{tmp_path / 'plain'}/*.jsonl, or a folder datasets.save_to_disk wrote"]


# pyarrow missing


def test_without_pyarrow_parquet_is_one_line_saying_what_to_install(tmp_path, monkeypatch):
    corpus = write_parquet(tmp_path / "in.parquet", [{"id": "a", "content": "text"}])
    folder = save_dataset(tmp_path / "ds", [{"id": "a", "content": "text"}], shards=1)
    jsonl = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "content": "text"}])
    for name in ("pyarrow", "pyarrow.parquet", "pyarrow.ipc"):
        monkeypatch.setitem(sys.modules, name, None)  # import pyarrow now raises ImportError
    hint = "pip install 'distill[parquet]'"
    with pytest.raises(ConfigError, match=r"in\.parquet: reading Parquet files and datasets folders needs pyarrow"):
        list(read_articles([corpus]))
    problems = ScoreSettings(inputs=[corpus, folder, jsonl], output=tmp_path / "o.parquet", model=[tmp_path]).problems()
    assert problems == [f"INPUTS: {corpus}: reading Parquet files and datasets folders needs pyarrow: {hint}",
                        f"INPUTS: {folder}: reading Parquet files and datasets folders needs pyarrow: {hint}",
                        f"--output: writing Parquet needs pyarrow: {hint}"]
    assert ScoreSettings(inputs=[jsonl], output=tmp_path / "o.jsonl", model=[tmp_path]).problems() == []
    assert [a.id for a in read_articles([jsonl])] == ["a"]  # JSONL never needs it

    from distill.prepare.settings import PrepareSettings

    prepare = PrepareSettings(inputs=[corpus], filter="sustainability/v1").problems()
    assert prepare == [f"--input: {corpus}: reading Parquet files and datasets folders needs pyarrow: {hint}"]


# distill-label


@pytest.fixture
def fake():
    from fake_gemini import FakeGemini

    with FakeGemini() as server:
        yield server


def test_label_reads_parquet_and_save_to_disk_folders(tmp_path, fake, monkeypatch):
    from label_helpers import SECRET, label_args, make_articles, run_cli
    from label_helpers import read_output as read_labelled

    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", SECRET)
    rows = make_articles(6)
    rows.insert(2, {"id": "no-text", "title": "x", "content": None, "source": "test"})
    source = write_parquet(tmp_path / "in.parquet", rows, row_group_size=3)
    out = tmp_path / "out"
    assert run_cli(label_args(source, out, fake.url, "--concurrency", "2")) == 0
    labelled = read_labelled(out)
    assert sorted(r["id"] for r in labelled) == [f"a{i}" for i in range(6)]
    assert all(r["source"] == "test" and len(r["scores"]) == 8 for r in labelled)
    rejects = read_jsonl(out / "rejects.jsonl")
    assert [(r["file"], r["line"]) for r in rejects] == [(str(source), 3)] and "field 'content'" in rejects[0]["reason"]
    folder = save_dataset(tmp_path / "ds", make_articles(4, start=6), shards=2)
    assert run_cli(label_args(folder, out, fake.url)) == 0  # the same output: only the new ids are sent
    assert sorted(r["id"] for r in read_labelled(out)) == sorted(f"a{i}" for i in range(10))
    assert fake.successes() == 10


# distill-prepare


def test_prepare_splits_parquet_and_a_dataset_folder_like_the_same_jsonl(tmp_path):
    from test_prepare import DIMS, mixed, prepare, record

    rows = mixed({"promising": 30, "monitoring": 60, "not_relevant": 40})
    bad = record(999, "promising")
    bad["scores"] = dict(bad["scores"], **{DIMS[0]: 11})
    rows.insert(5, bad)
    jsonl = write_jsonl(tmp_path / "labelled.jsonl", rows)
    parquet = write_parquet(tmp_path / "labelled.parquet", rows, row_group_size=40)
    folder = save_dataset(tmp_path / "ds", rows, shards=2)
    reports = {name: prepare(tmp_path, [path], out=name) for name, path in
               (("jsonl", jsonl), ("parquet", parquet), ("folder", folder))}
    for name in ("train", "val", "test"):
        want = (tmp_path / "jsonl" / f"{name}.jsonl").read_bytes()
        assert (tmp_path / "parquet" / f"{name}.jsonl").read_bytes() == want
        assert (tmp_path / "folder" / f"{name}.jsonl").read_bytes() == want
    for name, path in (("parquet", parquet), ("folder", folder)):
        rejects = read_jsonl(tmp_path / name / "rejects.jsonl")
        assert [(r["file"], r["line"]) for r in rejects] == [(str(path), 6)]
        assert f"scores.{DIMS[0]}" in rejects[0]["reason"]
        assert reports[name]["inputs"][0]["sha256"] and reports[name]["inputs"][0]["lines"] == len(rows)


# distill-bench corpus


def test_bench_corpus_writes_the_same_records_as_parquet(tmp_path, monkeypatch):
    from distill.benchmarks.corpus import CorpusSettings, write_corpus

    monkeypatch.setattr(columnar, "ROW_GROUP_ROWS", 40)
    settings = CorpusSettings(count=100, seed=3)
    write_corpus(settings, tmp_path / "c.jsonl")
    write_corpus(settings, tmp_path / "c.parquet")
    assert pq.ParquetFile(tmp_path / "c.parquet").metadata.num_row_groups == 3
    assert [o for _, o in iter_objects(tmp_path / "c.parquet")] == read_jsonl(tmp_path / "c.jsonl")
    assert not (tmp_path / "c.parquet.tmp").exists()
