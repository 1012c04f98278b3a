"""distill-evaluate: metrics, post-processing, baselines, and the report end to end."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from distill.evaluate.baselines import MeanPredictor, TfidfRidge
from distill.evaluate.calibrate import fit_calibration, post_processings, rounded
from distill.evaluate.metrics import evaluate_predictions, success_criteria, tier_report
from distill.evaluate.settings import METHODS, EvaluateSettings
from distill.filter_spec import load_filter
from distill.settings import help_of
from distill.stats import spearman

SPEC = load_filter("sustainability/v1")


def test_tier_report_counts_precision_recall_and_confusion():
    true = ["promising", "promising", "monitoring", "not_relevant"]
    pred = ["promising", "monitoring", "monitoring", "monitoring"]
    report = tier_report(SPEC, true, pred)
    assert report["accuracy"] == 0.5
    promising = report["per_tier"]["promising"]
    assert (promising["precision"], promising["recall"], promising["support"]) == (1.0, 0.5, 2)
    assert report["per_tier"]["monitoring"]["precision"] == pytest.approx(1 / 3)
    labels = report["confusion"]["labels"]
    assert report["confusion"]["matrix"][labels.index("not_relevant")][labels.index("monitoring")] == 1


def test_success_criteria_use_top_populated_tier():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 11, size=(60, 8)).astype(float)
    good = evaluate_predictions(SPEC, true + rng.normal(0, 0.2, true.shape), true)
    bad = evaluate_predictions(SPEC, np.full_like(true, 2.0), true)
    assert all(c["passed"] for c in success_criteria(SPEC, good))
    failed = [c["criterion"] for c in success_criteria(SPEC, bad) if not c["passed"]]
    assert any("MAE < 1.5" in c for c in failed) and any("recall of top populated tier" in c for c in failed)


def test_calibration_undoes_shrinkage_and_rounding_is_integer():
    rng = np.random.default_rng(1)
    true = rng.integers(0, 11, size=(400, 2)).astype(float)
    shrunk = 5 + 0.4 * (true - 5) + rng.normal(0, 0.3, true.shape)  # pulled toward the mean
    for method in ("isotonic", "linear"):
        calibration = fit_calibration(shrunk, true, ["a", "b"], method)
        fixed = calibration.apply(shrunk, ["a", "b"])
        assert np.abs(fixed - true).mean() < np.abs(shrunk - true).mean()
        assert fixed.std() > shrunk.std()
    assert set(np.unique(rounded(shrunk))) <= set(range(11))
    stairs = fit_calibration(shrunk, true, ["a", "b"], "isotonic+rounded").apply(shrunk, ["a", "b"])
    plain = fit_calibration(shrunk, true, ["a", "b"], "isotonic").apply(shrunk, ["a", "b"])
    # the stored staircase is isotonic then rounding; they may differ only where the
    # isotonic value sits on a .5 tie or within a grid step of a jump
    assert set(np.unique(stairs)) <= set(range(11))
    assert np.abs(stairs - rounded(plain)).max() <= 1 and np.mean(stairs == rounded(plain)) > 0.95
    only_round = fit_calibration(shrunk, true, ["a", "b"], "rounded").apply(shrunk, ["a", "b"])
    assert np.mean(only_round == rounded(shrunk)) > 0.99
    assert abs(np.abs(stairs - true).mean() - np.abs(rounded(plain) - true).mean()) < 0.01
    variants = post_processings(shrunk, true, ["a", "b"])
    assert set(variants) == {"raw", "rounded", "isotonic", "isotonic+rounded", "linear", "linear+rounded"}


def test_tfidf_ridge_beats_the_mean_predictor():
    rng = np.random.default_rng(2)
    texts, targets = [], []
    for _ in range(120):
        k = int(rng.integers(0, 6))
        texts.append(" ".join(["solar"] * k + ["news", "today", "market"][: int(rng.integers(1, 4))]))
        targets.append([2.0 * k, 10 - 2.0 * k])
    targets = np.array(targets)
    tfidf = TfidfRidge().fit(texts[:80], targets[:80], texts[80:100], targets[80:100])
    mean = MeanPredictor().fit(texts[:80], targets[:80])
    tfidf_mae = np.abs(tfidf.predict(texts[100:]) - targets[100:]).mean()
    mean_mae = np.abs(mean.predict(texts[100:]) - targets[100:]).mean()
    assert tfidf_mae < 0.5 * mean_mae and tfidf.alpha in (0.3, 1.0, 3.0, 10.0)


def test_spearman_matches_scipy_with_ties():
    scipy = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(4)
    a = rng.integers(0, 11, 300).astype(float)
    b = a + rng.normal(0, 3, 300)
    assert spearman(a, b) == pytest.approx(scipy.spearmanr(a, b).statistic, abs=1e-12)
    assert np.isnan(spearman(np.ones(5), np.arange(5.0)))


def test_evaluate_flags_and_their_help_come_from_the_settings():
    from click.testing import CliRunner

    from distill.evaluate.cli import command

    text = CliRunner().invoke(command, ["--help"]).output
    words = " ".join(re.sub(r"-\n\s+", "-", text).split())  # click wraps at hyphens too
    assert f"--calibration-method [{'|'.join(METHODS)}]" in words
    for name in ("calibration_method", "ensemble", "batch_size"):
        assert " ".join(help_of(EvaluateSettings, name).split()) in words
    assert "[default: reports/model_evaluation.md]" in words


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert_dir):
    pytest.importorskip("peft")
    from test_train_loop import train_tiny

    return train_tiny(tiny_bert_dir, tmp_path_factory.mktemp("evaluate"), n_train=32, n_val=16)


def test_evaluate_writes_report_metrics_plots_and_calibration(trained, tmp_path):
    from distill.evaluate.cli import main

    model, data = trained
    report = tmp_path / "reports" / "model_evaluation.md"
    main(["--model-checkpoint", str(model), "--data-dir", str(data), "--output", str(report),
          "--calibrate", "--num-threads", "1"])
    metrics = json.loads((report.parent / "metrics.json").read_text())
    assert (model / "calibration.json").is_file() and metrics["post_processing"] == "calibration.json"
    assert set(metrics["variants"]) == {"student", "tfidf_ridge", "mean"}
    assert set(metrics["student"]["dimensions"]) == set(SPEC.dimension_names)
    assert {"mae", "overall_mae", "tiers"} <= set(metrics["student"])
    assert [c["criterion"].split()[0] for c in metrics["criteria"]][:2] == ["MAE", "tier"]
    text = report.read_text()
    for heading in ("## Success criteria", "TF-IDF + ridge", "mean predictor", "Confusion matrix", "Retrain with"):
        assert heading in text
    for png in ("model_evaluation_scatter.png", "model_evaluation_confusion.png"):
        assert (report.parent / png).read_bytes()[:4] == b"\x89PNG"


def test_evaluate_reports_missing_inputs_in_one_line(tmp_path, capsys):
    from distill.evaluate.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--model-checkpoint", str(tmp_path / "nope"), "--data-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--model-checkpoint" in err and "test.jsonl is missing" in err and "Traceback" not in err
