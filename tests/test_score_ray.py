"""distill-score --engine ray against the local engine on real articles (local Ray, 2 CPUs).

The student is real all-MiniLM-L6-v2 weights with an untrained regression
head, so the token ids, attention and batching are the real thing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import first_rows, write_jsonl

from distill.artifact import StudentInfo, write_info
from distill.errors import RecordError
from distill.filter_spec import load_filter
from distill.serve.runner import score_corpus
from distill.serve.settings import ScoreSettings

pytestmark = pytest.mark.timeout(420)
SPEC = load_filter("sustainability/v1")
UPLIFT = load_filter("uplifting/v1")


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance with 2 CPU workers for this module, shut down after it."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'distill[ray]'")
    pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'distill[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def minilm_student(folder: Path, minilm_dir: Path, spec, seed: int) -> Path:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(minilm_dir), num_labels=len(spec.dimensions), problem_type="regression")
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(minilm_dir)).save_pretrained(folder)
    write_info(folder, StudentInfo(spec.name, spec.version, spec.config_hash, spec.dimension_names,
                                   "all-MiniLM-L6-v2", "encoder", "full", 96, 0.8, [5.0] * 8, [20.0] * 8))
    return folder


@pytest.fixture(scope="module")
def student(tmp_path_factory, minilm_dir) -> Path:
    return minilm_student(tmp_path_factory.mktemp("minilm"), minilm_dir, SPEC, 0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, real_articles) -> Path:
    """200 real articles with a bad line, a duplicate id and one the prefilter blocks."""
    rows = first_rows(real_articles, 200)
    rows[50:50] = ["{not json", dict(rows[3], title="same id again"),
                   {"id": "short-1", "title": "Tiny", "content": "Too short to judge."}]
    rows.append({"title": "no id", "content": "text " * 40})
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", rows)


def run(corpus: Path, model, output: Path, engine: str, **options):
    options = {"workers": 1, "threads": 1, "progress": False, "window": 64, **options}
    return score_corpus(ScoreSettings(inputs=[corpus], model=model, output=output, engine=engine, **options))


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_same_records(got: list[dict], want: list[dict]) -> None:
    assert [r["id"] for r in got] == [r["id"] for r in want]
    for a, b in zip(got, want, strict=True):
        assert (a["tier"], a["prefilter"], a["model"]) == (b["tier"], b["prefilter"], b["model"])
        if b["scores"]:
            assert max(abs(a["scores"][d] - b["scores"][d]) for d in b["scores"]) <= 1e-5


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, student, corpus) -> tuple[object, Path]:
    """The local engine's summary and output: the reference every Ray run is held to."""
    output = tmp_path_factory.mktemp("local") / "local.jsonl"
    return run(corpus, student, output, "local"), output


def test_ray_engine_writes_what_the_local_engine_writes(tmp_path, ray_local, student, corpus, local_run):
    local, reference = local_run
    ray = run(corpus, student, tmp_path / "ray.jsonl", "ray")
    assert (ray.scored, ray.blocked, ray.rejected) == (local.scored, local.blocked, local.rejected) == (200, 1, 3)
    assert ray.engine == "ray" and ray.backend == local.backend == "torch-cpu-fp32"
    records = read(tmp_path / "ray.jsonl")
    assert_same_records(records, read(reference))
    assert len({r["overall_score"] for r in records if r["scores"]}) > 50  # real per-article outputs
    assert read(tmp_path / "ray.rejects.jsonl") == read(reference.with_name("local.rejects.jsonl"))
    assert ray.timings.batches == local.timings.batches and ray.timings.infer > 0


def test_ray_resumes_a_killed_output_like_the_local_engine(tmp_path, ray_local, student, corpus, local_run):
    reference = local_run[1]
    lines = reference.read_text(encoding="utf-8").splitlines(keepends=True)
    torn = "".join(lines[:70]) + lines[70][:30]  # a run killed mid-line after 70 records
    outputs = {}
    for engine in ("local", "ray"):
        outputs[engine] = tmp_path / f"resumed-{engine}.jsonl"
        outputs[engine].write_text(torn, encoding="utf-8")
        summary = run(corpus, student, outputs[engine], engine)
        assert summary.resumed == 70 and any("torn" in note for note in summary.notes)
    assert_same_records(read(outputs["ray"]), read(outputs["local"]))
    assert [r["id"] for r in read(outputs["ray"])] == [r["id"] for r in read(reference)]
    again = run(corpus, student, outputs["ray"], "ray")
    assert (again.scored, again.resumed) == (0, 201)


def test_ray_strict_stops_at_the_first_bad_line_with_our_error(tmp_path, ray_local, student, corpus):
    with pytest.raises(RecordError, match=rf"{corpus.name}:51: not JSON"):
        run(corpus, student, tmp_path / "strict.jsonl", "ray", strict=True)


def test_ray_scores_two_filters_in_one_pass_like_local(tmp_path, ray_local, student, minilm_dir, corpus):
    uplifting = minilm_student(tmp_path / "uplifting", minilm_dir, UPLIFT, 1)
    head = tmp_path / "head.jsonl"  # the first 80 lines keep this test short; they hold the bad lines
    head.write_text("".join(corpus.read_text(encoding="utf-8").splitlines(keepends=True)[:80]), encoding="utf-8")
    summaries = {engine: run(head, [student, uplifting], tmp_path / engine, engine, window=32)
                 for engine in ("local", "ray")}
    assert summaries["ray"].articles == summaries["local"].articles == 77
    for name in ("sustainability-v1", "uplifting-v1", "rejects"):
        got, want = read(tmp_path / "ray" / f"{name}.jsonl"), read(tmp_path / "local" / f"{name}.jsonl")
        if name == "rejects":
            assert got == want
        else:
            assert_same_records(got, want)
