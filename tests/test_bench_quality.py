"""distill-bench quality: student, TF-IDF + ridge and mean predictor on the same held-out split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_jsonl

pytest.importorskip("sklearn")
torch = pytest.importorskip("torch")

from distill.benchmarks.cli import main  # noqa: E402
from distill.benchmarks.corpus import CorpusSettings, iter_corpus  # noqa: E402
from distill.benchmarks.quality import QualitySettings, run_quality  # noqa: E402
from distill.errors import ConfigError  # noqa: E402
from distill.filter_spec import load_filter  # noqa: E402

SPEC = load_filter("sustainability/v1")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """120 articles whose scores follow a marker word in the text, so TF-IDF can learn them."""
    rows = []
    bodies = iter_corpus(CorpusSettings(count=120, seed=5, short_share=0, median_words=40, sigma=0.2))
    for i, body in enumerate(bodies):
        level = i % 10
        marker = " ".join([f"marker{level}"] * 8)
        scores = {d: int(np.clip(level + (j % 3) - 1, 0, 10)) for j, d in enumerate(SPEC.dimension_names)}
        rows.append({"id": f"a{i}", "title": body["title"], "content": f"{marker} {body['content']}",
                     "scores": scores, "language": "nl" if i % 3 == 0 else "en"})
    return write_jsonl(tmp_path_factory.mktemp("labelled") / "labelled.jsonl", rows)


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory, tiny_bert_dir) -> Path:
    from distill.artifact import StudentInfo
    from distill.train.model import build_student, save_student

    torch.manual_seed(0)
    model, tokenizer, arch = build_student(str(tiny_bert_dir), len(SPEC.dimensions), full_finetune=True)
    info = StudentInfo(SPEC.name, SPEC.version, SPEC.config_hash, SPEC.dimension_names, str(tiny_bert_dir),
                       arch, "full", 64, SPEC.truncation.head_share, [5.0] * 8, [2.0] * 8)
    return save_student(model, tokenizer, info, tmp_path_factory.mktemp("student") / "model")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, labelled) -> Path:
    from distill.prepare.pipeline import run_prepare
    from distill.prepare.settings import PrepareSettings

    out = tmp_path_factory.mktemp("prepared")
    return run_prepare(PrepareSettings(inputs=[labelled], filter=SPEC.id, output_dir=out)).output_dir


def column(result, predictor: str) -> dict[str, float]:
    return {row["metric"]: row[predictor] for row in result.rows}


def targets(path: Path) -> np.ndarray:
    return np.array([json.loads(line)["dimension_scores"] for line in path.read_text().splitlines()])


def test_baselines_are_fitted_on_train_and_scored_on_test(student_dir, prepared):
    result = run_quality(QualitySettings(model=student_dir, data=prepared))
    mean, ridge, student = (column(result, p) for p in ("mean predictor", "TF-IDF + ridge", "student"))
    train, test = targets(prepared / "train.jsonl"), targets(prepared / "test.jsonl")
    # The mean predictor, recomputed here from the split files.
    expected = np.abs(test - train.mean(axis=0)).mean()
    assert mean["MAE, mean of dimensions"] == pytest.approx(expected)
    # Scores follow a marker word: a fitted TF-IDF + ridge must beat the mean by far.
    assert ridge["MAE, mean of dimensions"] < 0.6 * mean["MAE, mean of dimensions"]
    assert ridge["tier accuracy"] > mean["tier accuracy"]
    for name in SPEC.dimension_names:
        assert f"MAE {name}" in student and np.isfinite(student[f"MAE {name}"])
    assert {"overall-score MAE", "tier accuracy", "tier recall breakthrough"} <= set(student)
    assert f"{len(test)} held-out (test) articles" in result.notes[0]


def test_a_labelled_file_is_split_exactly_as_distill_prepare_splits_it(student_dir, labelled, prepared, tmp_path):
    from_dir = run_quality(QualitySettings(model=student_dir, data=prepared))
    main(["quality", "--model", str(student_dir), "--data", str(labelled), "--output-dir", str(tmp_path)])
    written = json.loads((tmp_path / "quality.json").read_text())
    assert written["rows"] == from_dir.to_json()["rows"]
    assert any("split made here" in note for note in written["notes"])
    assert written["settings"]["metrics"]["student"]["tiers"]["confusion"]["labels"] == SPEC.tier_names
    assert "| MAE, mean of dimensions |" in (tmp_path / "quality.md").read_text()


def test_slice_by_gives_each_language_its_own_rows(student_dir, prepared):
    result = run_quality(QualitySettings(model=student_dir, data=prepared, slice_by=["language"], min_slice=1))
    mean = column(result, "mean predictor")
    train = targets(prepared / "train.jsonl")
    rows = [json.loads(line) for line in (prepared / "test.jsonl").read_text().splitlines()]
    for language in ("en", "nl"):
        picked = np.array([r["dimension_scores"] for r in rows if r["fields"]["language"] == language])
        key = f"MAE, language={language} (n={len(picked)})"
        assert mean[key] == pytest.approx(np.abs(picked - train.mean(axis=0)).mean())
        assert np.isfinite(column(result, "student")[key])
    assert any(k.startswith("recall ") and "language=nl" in k for k in mean)


def test_limit_scores_only_the_first_articles(student_dir, prepared):
    result = run_quality(QualitySettings(model=student_dir, data=prepared, limit=3, split="val"))
    assert result.notes[0].startswith("3 held-out (val) articles")


def test_settings_problems_are_reported_together(tmp_path):
    (tmp_path / "prepared").mkdir()
    with pytest.raises(ConfigError) as error:
        QualitySettings(model=tmp_path, data=tmp_path / "prepared", split="train").validate()
    message = str(error.value)
    assert "has no distill.json" in message and "train.jsonl is missing" in message and "--split" in message
