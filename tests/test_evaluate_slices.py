"""distill-evaluate's slices (--slice-by) and the tiers' operating point (--target-recall):
fields carried by prepare, per-slice metrics on hand-checkable cases, the smallest shift
fitted on val, calibration.json, and distill-score tiering at the saved operating point."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import first_rows, tiny_student, write_jsonl

from distill.artifact import Calibration, StudentInfo
from distill.errors import ConfigError, ModelArtifactError
from distill.evaluate.operating_point import fit_operating_point, operating_point_effect
from distill.evaluate.settings import EvaluateSettings
from distill.evaluate.slices import OTHER, slice_labels, slice_metrics
from distill.filter_spec import load_filter
from distill.records import TrainingExample
from distill.scoring import overall_scores, tier_for
from distill.splits import SPLITS, read_split

SPEC = load_filter("sustainability/v1")
DIMS = len(SPEC.dimensions)


def rows_with_overall(values: list[float]) -> np.ndarray:
    """Score rows whose overall score is exactly each value: technical_credibility stays at its
    gatekeeper (5) below 5, so nothing is capped; weights are 0.2 for it and 0.8 for the rest."""
    rows = []
    for v in values:
        tc = max(v, 5.0)
        rest = (v - 0.2 * tc) / 0.8
        rows.append([rest, tc] + [rest] * (DIMS - 2))
    out = np.array(rows)
    np.testing.assert_allclose(overall_scores(SPEC, out), values, atol=1e-9)
    return out


# --- prepare carries the article's fields -----------------------------------------------------------------

def test_prepare_carries_plain_article_fields_into_every_split(tmp_path):
    from test_prepare import mixed

    from distill.prepare.pipeline import run_prepare
    from distill.prepare.settings import PrepareSettings

    rows = mixed({"promising": 12, "monitoring": 30, "not_relevant": 30})
    for i, row in enumerate(rows):
        row |= {"language": "nl" if i % 3 == 0 else "en", "source": f"feed_{i % 2}", "published_date": None,
                "analysis": {"nested": True}}  # a nested object is not carried
    labelled = write_jsonl(tmp_path / "labelled.jsonl", rows)
    out = tmp_path / "out"
    run_prepare(PrepareSettings(inputs=[labelled], filter="sustainability/v1", output_dir=out))
    by_id = {r["id"]: r for r in rows}
    for name in SPLITS:
        split = read_split(out / f"{name}.jsonl", DIMS)
        assert split.fields and len(split.fields) == len(split.ids)
        for article_id, fields in zip(split.ids, split.fields, strict=True):
            want = by_id[article_id]
            assert fields == {"language": want["language"], "source": want["source"], "published_date": None}


def test_training_example_round_trips_its_fields_and_old_lines_have_none():
    row = {"id": "a", "text": "solar", "dimension_scores": [1.0, 2.0], "overall_score": 1.5, "tier": "low",
           "fields": {"language": "nl", "source": "nos"}}
    example = TrainingExample.from_json(row, 2)
    assert example.fields == {"language": "nl", "source": "nos"} and example.to_json() == row
    old = {k: v for k, v in row.items() if k != "fields"}
    assert TrainingExample.from_json(old, 2).fields == {} and "fields" not in TrainingExample.from_json(old, 2).to_json()


# --- slices -------------------------------------------------------------------------------------------

def test_slice_labels_pool_rare_values_and_name_missing_fields():
    fields = [{"language": "en"}] * 3 + [{"language": "nl"}] * 2 + [{"language": "de"}, {}]
    labels, pooled = slice_labels(fields, "language", min_size=2)
    assert labels == ["en"] * 3 + ["nl"] * 2 + [OTHER, OTHER] and pooled == 2  # "de" and "(missing)"
    assert slice_labels(fields, "language", min_size=1)[0][-2:] == ["de", "(missing)"]
    with pytest.raises(ConfigError, match=r"--slice-by source: no test article carries field 'source' "
                                          r"\(fields the splits carry: language"):
        slice_labels(fields, "source", min_size=1)


def test_slice_metrics_by_hand():
    # a, b promising (all 6); c, d not_relevant (all 2). en = a, c; nl = b, d.
    true = np.array([[6.0] * DIMS, [6.0] * DIMS, [2.0] * DIMS, [2.0] * DIMS])
    student = np.array([[6.0] * DIMS,   # a: exact, promising
                        [4.0] * DIMS,   # b: off by 2, technical_credibility 4 caps it: monitoring
                        [2.0] * DIMS,   # c: exact, not_relevant
                        [3.0] * DIMS])  # d: off by 1, overall 3: monitoring
    labels = ["en", "nl", "en", "nl"]
    rows = slice_metrics(SPEC, labels, 0, {"student": (student, {}), "tfidf_ridge": (true, {})}, true, "promising")
    by_value = {r["value"]: r for r in rows}
    assert [r["value"] for r in rows] == ["en", "nl"] and by_value["en"]["n"] == 2
    en, nl = by_value["en"], by_value["nl"]
    assert (en["student"]["mae"], en["student"]["tier_accuracy"], en["student"]["rare_recall"]) == (0.0, 1.0, 1.0)
    assert (nl["student"]["mae"], nl["student"]["tier_accuracy"], nl["student"]["rare_recall"]) == (1.5, 0.0, 0.0)
    assert en["rare_support"] == nl["rare_support"] == 1
    assert nl["tfidf_ridge"]["mae"] == 0.0 and nl["tfidf_ridge"]["rare_recall"] == 1.0
    # the student's operating point counts in its slices: a shift of 1.0 lets b's capped 4.0 into promising
    shifted = slice_metrics(SPEC, labels, 0, {"student": (student, {"promising": 1.0})}, true, "promising")
    assert shifted[1]["student"]["rare_recall"] == 1.0


# --- operating point ----------------------------------------------------------------------------------

# val: five promising articles (oracle overall 6) predicted at these overall scores, and three
# monitoring ones (oracle 4.2) predicted just under the promising boundary
PROMISING_PRED = [6.0, 5.5, 4.9, 4.7, 4.0]
MONITORING_PRED = [4.95, 4.8, 3.5]


@pytest.fixture
def val() -> tuple[np.ndarray, np.ndarray]:
    pred = rows_with_overall(PROMISING_PRED + MONITORING_PRED)
    true = rows_with_overall([6.0] * 5 + [4.2] * 3)
    return pred, true


@pytest.mark.parametrize("target, shift", [(0.4, -0.5), (0.5, 0.1), (0.6, 0.1), (0.8, 0.3), (1.0, 1.0), (0.2, -1.0)])
def test_fit_reaches_the_recall_with_the_smallest_shift(val, target, shift):
    pred, true = val
    shifts = fit_operating_point(SPEC, pred, true, {"promising": target})
    assert shifts == {"promising": pytest.approx(shift)}
    effect = operating_point_effect(SPEC, pred, true, shifts)["promising"]
    assert effect["shifted"]["recall"] >= target
    smaller = {"promising": shifts["promising"] - 1e-4}
    assert operating_point_effect(SPEC, pred, true, smaller)["promising"]["shifted"]["recall"] < target


def test_operating_point_effect_shows_what_the_recall_costs(val):
    pred, true = val
    effect = operating_point_effect(SPEC, pred, true, {"promising": 0.3})["promising"]
    assert effect["default"] == {"recall": 0.4, "precision": 1.0, "predicted": 2, "support": 5, "accuracy": 5 / 8}
    # 4.9 and 4.7 come in, and so do the monitoring articles at 4.95 and 4.8
    assert effect["shifted"] == {"recall": 0.8, "precision": pytest.approx(4 / 6), "predicted": 6, "support": 5,
                                 "accuracy": 5 / 8}


def test_fit_refuses_what_it_cannot_do(val):
    pred, true = val
    with pytest.raises(ConfigError, match="'promisng' is not a tier"):
        fit_operating_point(SPEC, pred, true, {"promisng": 0.7})
    with pytest.raises(ConfigError, match="'not_relevant' is the lowest tier"):
        fit_operating_point(SPEC, pred, true, {"not_relevant": 0.7})
    with pytest.raises(ConfigError, match="val has no breakthrough articles"):
        fit_operating_point(SPEC, pred, true, {"breakthrough": 0.7})
    # the last promising article sits at 2.0: reaching it would move promising below monitoring's 3.0
    low = rows_with_overall([6.0, 2.0])
    with pytest.raises(ConfigError, match=r"no shift of the promising boundary reaches it on val .*recall 0\.500"):
        fit_operating_point(SPEC, low, rows_with_overall([6.0, 6.0]), {"promising": 1.0})


def test_target_recall_flag_is_checked_up_front(tmp_path):
    settings = EvaluateSettings(model_checkpoint=tmp_path, data_dir=tmp_path,
                                target_recall=["promising=0.7", "promising", "monitoring=1.5", "x=abc"])
    problems = [p for p in settings.problems() if p.startswith("--target-recall")]
    assert len(problems) == 3 and "'promising' is not TIER=RECALL" in problems[0]
    assert EvaluateSettings(model_checkpoint=tmp_path, data_dir=tmp_path,
                            target_recall=["promising=0.7", " monitoring =1"]).targets == {"promising": 0.7,
                                                                                          "monitoring": 1.0}


def test_calibration_json_keeps_the_operating_point(tmp_path):
    calibration = Calibration({"a": ([0.0, 10.0], [0.0, 10.0])}, "rounded", {"promising": 0.25})
    calibration.save(tmp_path)
    loaded = Calibration.load(tmp_path)
    assert (loaded.method, loaded.tier_shifts, loaded.knots) == ("rounded", {"promising": 0.25}, calibration.knots)
    plain = Calibration({"a": ([0.0, 10.0], [0.0, 10.0])})
    plain.save(tmp_path)
    assert set(json.loads((tmp_path / "calibration.json").read_text())) == {"dimensions"}  # the old form
    assert Calibration.load(tmp_path).tier_shifts == {}
    (tmp_path / "calibration.json").write_text('{"dimensions": {}, "tier_shifts": {"promising": "high"}}')
    with pytest.raises(ModelArtifactError, match="tier_shifts.promising is 'high', not a finite number"):
        Calibration.load(tmp_path)
    with pytest.raises(ModelArtifactError, match="its tier_shifts do not fit filter uplifting/v1: tier 'promising'"):
        Calibration({}, tier_shifts={"promising": 0.25}).check_tier_shifts(load_filter("uplifting/v1"), tmp_path)


# --- distill-score tiers at the saved operating point ------------------------------------------------------

def score(corpus: Path, model: Path, out: Path) -> list[dict]:
    from distill.serve.runner import score_corpus
    from distill.serve.settings import ScoreSettings

    score_corpus(ScoreSettings(inputs=[corpus], model=model, output=out, workers=0, threads=1, progress=False))
    return [json.loads(line) for line in out.read_text().splitlines() if json.loads(line)["scores"]]


def test_distill_score_applies_the_operating_point(tmp_path_factory, tmp_path, tiny_bert_dir, real_articles):
    pytest.importorskip("torch")
    info = StudentInfo(SPEC.name, SPEC.version, SPEC.config_hash, SPEC.dimension_names, "tiny", "encoder", "full",
                       64, 0.8, [4.0] * DIMS, [6.0] * DIMS)
    student = tiny_student(tmp_path_factory, tiny_bert_dir, info)
    corpus = write_jsonl(tmp_path / "corpus.jsonl", first_rows(real_articles, 30))
    plain = score(corpus, student, tmp_path / "plain.jsonl")  # no calibration.json: the filter's thresholds
    assert all(r["tier"] == tier_for(SPEC, r["overall_score"]) for r in plain)
    # the shift that lifts one article just onto the boundary of the tier above its own (half the
    # records' rounding step below its score, so no record's rounded score straddles the new boundary)
    names = SPEC.tier_names
    minimum = {t.name: t.min_score for t in SPEC.tiers}
    lifted = next(r for r in plain if r["tier"] != names[0] and r["overall_score"] > minimum[r["tier"]])
    above = names[names.index(lifted["tier"]) - 1]
    shifts = {above: round(minimum[above] - lifted["overall_score"] + 0.00005, 6)}
    folder = tmp_path / "shifted"
    shutil.copytree(student, folder)
    Calibration({}, tier_shifts=shifts).save(folder)
    shifted = score(corpus, folder, tmp_path / "shifted.jsonl")
    assert [r["overall_score"] for r in shifted] == [r["overall_score"] for r in plain]  # only tiers move
    assert next(r for r in shifted if r["id"] == lifted["id"])["tier"] == above
    assert all(r["tier"] == tier_for(SPEC, r["overall_score"], shifts) for r in shifted)
    bad = tmp_path / "bad"
    shutil.copytree(student, bad)
    Calibration({}, tier_shifts={"not_relevant": 1.0}).save(bad)
    with pytest.raises(ModelArtifactError, match="calibration.json: its tier_shifts do not fit .* lowest tier"):
        score(corpus, bad, tmp_path / "bad.jsonl")


# --- distill-evaluate end to end ----------------------------------------------------------------------

def tiny_split(folder: Path) -> Path:
    """Two thirds promising (all 7), a third monitoring (4, technical_credibility 5: overall 4.2),
    so a tiny student predicts near 6 and every boundary shift stays in reach; fields alternate."""
    words = "solar wind battery grid policy storage carbon pilot plant market city river".split()
    rng = random.Random(0)
    folder.mkdir(parents=True)
    for name, n in (("train", 48), ("val", 24), ("test", 24)):
        rows = []
        for i in range(n):
            scores = [7.0] * DIMS if i % 3 else [4.0, 5.0] + [4.0] * (DIMS - 2)
            rows.append({"id": f"{name}-{i}", "text": " ".join(rng.choices(words, k=rng.randint(5, 20))),
                         "dimension_scores": scores, "tier": "promising" if i % 3 else "monitoring",
                         "fields": {"language": "nl" if i % 2 else "en", "source": f"s{i % 4}"}})
        write_jsonl(folder / f"{name}.jsonl", rows)
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert_dir):
    pytest.importorskip("peft")
    from test_train_loop import loop, settings_for

    root = tmp_path_factory.mktemp("slices")
    data = tiny_split(root / "data")
    return loop.train(settings_for(tiny_bert_dir, data, root / "model", epochs=1), echo=lambda _: None), data


def test_evaluate_reports_slices_and_saves_the_operating_point(trained, tmp_path):
    from distill.evaluate.cli import main

    model, data = trained
    folder = tmp_path / "model"
    shutil.copytree(model, folder)
    report = tmp_path / "report" / "model_evaluation.md"
    main(["--model-checkpoint", str(folder), "--data-dir", str(data), "--output", str(report), "--num-threads", "1",
          "--calibrate", "--calibration-method", "rounded", "--slice-by", "language", "--slice-by", "source",
          "--min-slice", "7", "--target-recall", "promising=0.9"])
    metrics = json.loads((report.parent / "metrics.json").read_text())
    saved = json.loads((folder / "calibration.json").read_text())
    point = metrics["operating_point"]
    assert saved["method"] == "rounded" and saved["tier_shifts"] == point["shifts"] and "promising" in point["shifts"]
    assert point["fitted_on"] == "val" and point["val"]["promising"]["shifted"]["recall"] >= 0.9
    # the headline student is tiered at the operating point: its test recall is the shifted one
    assert metrics["student"]["tiers"]["per_tier"]["promising"]["recall"] == point["test"]["promising"]["shifted"]["recall"]
    slices = metrics["slices"]
    assert slices["rare_tier"] == "promising" and slices["tfidf_post_processing"] == "rounded"
    assert [r["value"] for r in slices["fields"]["language"]] == ["en", "nl"]
    assert [r["n"] for r in slices["fields"]["language"]] == [12, 12]
    assert [r["value"] for r in slices["fields"]["source"]] == ["(other)"] and slices["fields"]["source"][0]["values"] == 4
    assert {"student", "tfidf_ridge"} <= set(slices["fields"]["language"][0])
    text = report.read_text()
    for heading in ("## Operating point for tiers", "## Slices of the test split", "| language = en | 12 |",
                    "## Which split each choice was fitted on", "read once", "rounded, fitted on val by this run"):
        assert heading in text, heading
    assert (report.parent / "model_evaluation_slices.png").read_bytes()[:4] == b"\x89PNG"
    # a later --calibrate without --target-recall drops the shifts fitted to the old calibration
    lines = []
    from distill.evaluate.run import evaluate

    evaluate(EvaluateSettings(model_checkpoint=folder, data_dir=data, output=report, calibrate=True,
                              calibration_method="rounded", num_threads=1), echo=lines.append)
    assert "tier_shifts" not in json.loads((folder / "calibration.json").read_text())
    assert any("drops calibration.json's tier_shifts" in line for line in lines)
    assert json.loads((report.parent / "metrics.json").read_text())["operating_point"] is None
