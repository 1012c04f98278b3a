"""The student + token TF-IDF ridge ensemble: fit, weight choice, file, and every stage applying it."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
from conftest import write_jsonl

from distill.ensemble import ENSEMBLE_FILE, TokenRidge, choose_student_weight, fit_ridge
from distill.errors import ModelArtifactError


def counting_data(n: int, seed: int) -> tuple[list[list[int]], np.ndarray]:
    """Targets: the share of tokens below 10, and +1/-1 for whether the pair 3,4 or 4,3 was
    inserted (same unigrams either way: only bigrams tell them apart)."""
    rng = np.random.default_rng(seed)
    ids, targets = [], []
    for _ in range(n):
        tokens = rng.integers(5, 40, size=int(rng.integers(10, 40))).tolist()
        forward = bool(rng.integers(0, 2))
        for _ in range(3):
            at = int(rng.integers(0, len(tokens)))
            tokens[at:at] = [3, 4] if forward else [4, 3]
        ids.append(tokens)
        targets.append([4 * sum(5 <= t < 10 for t in tokens) / len(tokens), 1.0 if forward else -1.0])
    return ids, np.array(targets)


def test_fit_ridge_picks_the_alpha_with_the_lowest_val_mae_after_post_processing():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 5))
    y = x @ np.array([[1.0, 0.0], [2.0, 1.0], [0.0, 0.0], [0.0, -1.0], [-1.0, 0.5]]) + rng.normal(0, 0.1, (200, 2))
    alpha, ridge = fit_ridge(x[:150], y[:150], x[150:], y[150:], (1e4, 0.1, 1e3))
    assert alpha == 0.1 and ridge.alpha == 0.1
    # a post-processing that maps every prediction to one value ties every alpha: the first wins
    alpha, _ = fit_ridge(x[:150], y[:150], x[150:], y[150:], (1e4, 0.1), post=lambda p: np.zeros_like(p))
    assert alpha == 1e4


def test_ridge_learns_unigrams_and_bigrams_and_survives_save_and_load(tmp_path):
    ids, y = counting_data(400, 0)
    ridge = TokenRidge.fit(ids[:300], y[:300], ids[300:350], y[300:350])
    mae = np.abs(ridge.predict(ids[350:]) - y[350:]).mean(axis=0)
    mean_mae = np.abs(y[:300].mean(axis=0) - y[350:]).mean(axis=0)
    assert (mae < np.array([0.7, 0.5]) * mean_mae).all()  # the bigram-only target too
    ridge.student_weight = 0.35
    ridge.save(tmp_path)
    loaded = TokenRidge.load(tmp_path)
    np.testing.assert_allclose(loaded.predict(ids[350:]), ridge.predict(ids[350:]), atol=1e-5)
    assert loaded.student_weight == 0.35
    student = np.ones((50, 2), dtype=np.float32)
    np.testing.assert_allclose(loaded.blend(student, ids[350:]), 0.35 + 0.65 * ridge.predict(ids[350:]), atol=1e-5)
    assert TokenRidge.load(tmp_path / "elsewhere") is None


def test_weight_goes_to_whichever_predictor_is_informative():
    rng = np.random.default_rng(1)
    true = rng.normal(size=(200, 3))
    good, noise = true + rng.normal(0, 0.1, true.shape), rng.normal(size=true.shape)
    identity = lambda p: p  # noqa: E731
    assert choose_student_weight(good, noise, identity, true, identity)[0] == 1.0
    assert choose_student_weight(noise, good, identity, true, identity)[0] == 0.0
    # two independent noisy views: the average beats either
    a, b = true + rng.normal(0, 0.5, true.shape), true + rng.normal(0, 0.5, true.shape)
    weight, maes = choose_student_weight(a, b, identity, true, identity)
    assert 0.3 <= weight <= 0.7 and maes[weight] < min(maes[0.0], maes[1.0])


def test_a_damaged_file_is_a_clear_error(tmp_path):
    (tmp_path / ENSEMBLE_FILE).write_bytes(b"not an npz")
    with pytest.raises(ModelArtifactError, match=ENSEMBLE_FILE):
        TokenRidge.load(tmp_path)


@pytest.fixture(scope="module")
def ensembled(tmp_path_factory, tiny_bert_dir):
    """A tiny trained student with an ensemble fitted by distill-evaluate."""
    pytest.importorskip("peft")
    from test_train_loop import train_tiny

    from distill.evaluate.cli import main

    root = tmp_path_factory.mktemp("ensemble")
    model, data = train_tiny(tiny_bert_dir, root, n_train=48, n_val=24)
    report = root / "report" / "model_evaluation.md"
    main(["--model-checkpoint", str(model), "--data-dir", str(data), "--output", str(report),
          "--ensemble", "--num-threads", "1"])
    return model, report


def test_evaluate_fits_saves_and_reports_the_ensemble(ensembled):
    model, report = ensembled
    metrics = json.loads((report.parent / "metrics.json").read_text())
    ridge = TokenRidge.load(model)
    assert ridge is not None and metrics["ensemble_student_weight"] == pytest.approx(ridge.student_weight)
    assert set(metrics["variants"]) == {"student", "student_alone", "tfidf_ridge", "mean"}
    assert "student without its ensemble ridge" in report.read_text()


def test_score_export_and_predict_all_apply_the_ensemble(ensembled, tmp_path):
    from distill.artifact import Calibration
    from distill.export.pipeline import run_export
    from distill.export.settings import ExportSettings
    from distill.serve.runner import score_corpus
    from distill.serve.settings import ScoreSettings
    from distill.student.load import load_student
    from distill.student.predict import predict_scores

    model, _ = ensembled
    rng = random.Random(5)
    words = "solar battery grid plant wind storage policy market city report".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(25, 60))) for _ in range(30)]
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"id": f"a{i}", "text": t} for i, t in enumerate(texts)])

    def score(folder, name, **options):
        out = tmp_path / f"{name}.jsonl"
        summary = score_corpus(ScoreSettings(inputs=[corpus], model=folder, output=out, workers=0, threads=1,
                                             progress=False, **options))
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        return summary, np.array([list(r["scores"].values()) for r in rows if r["scores"]])

    student, tokenizer, info = load_student(model)
    ridge = TokenRidge.load(model)
    want = predict_scores(student, tokenizer, texts, info, 8, Calibration.load(model), ridge)
    summary, got = score(model, "torch")
    assert summary.backend.endswith("+ridge") and np.abs(got - want).max() <= 1e-3

    alone = tmp_path / "alone"
    shutil.copytree(model, alone)
    (alone / ENSEMBLE_FILE).unlink()
    if ridge.student_weight < 1.0:  # without the ridge the scores are the network's own
        assert np.abs(score(alone, "alone")[1] - got).max() > 0

    export = tmp_path / "export"
    run_export(ExportSettings(model_dir=model, output=export, onnx=True, bench_articles=0, threads=1),
               echo=lambda _: None)
    assert (export / ENSEMBLE_FILE).is_file()
    summary, onnx = score(export, "onnx")
    assert summary.backend == "onnx-cpu-fp32+ridge" and np.abs(onnx - want).max() <= 1e-3
