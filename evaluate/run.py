"""distill-evaluate, top to bottom: `load` the student and the splits, `predict`
val and test (through the ensemble, fitted on train with --ensemble),
`post_process` (calibration fitted on val with --calibrate), fit the
`baselines`, `score` every predictor under every post-processing on test, then
`write_outputs`: metrics.json, the markdown report and the plots."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.artifact import Calibration, StudentInfo, TargetScaler, write_text_atomic, writing
from distill.ensemble import TokenRidge, choose_student_weight
from distill.evaluate import plots
from distill.evaluate.baselines import MeanPredictor, TfidfRidge
from distill.evaluate.calibrate import fit_calibration, post_processings, rounded
from distill.evaluate.metrics import evaluate_predictions, success_criteria
from distill.evaluate.report import write_report
from distill.evaluate.settings import EvaluateSettings
from distill.filter_spec import FilterSpec, load_filter
from distill.splits import SPLITS, Split, read_split
from distill.student.encode import encode_texts
from distill.student.load import load_student
from distill.student.predict import predict_raw

Echo = Callable[[str], None]
HELD_OUT = ("val", "test")  # every predictor predicts both: val fits post-processing, test is scored
Predictions = dict[str, np.ndarray]  # split -> [N, D] scores on 0-10


@dataclass
class Loaded:
    """The student and the splits it is evaluated on."""

    model_dir: Path
    model: Any
    tokenizer: Any
    info: StudentInfo
    spec: FilterSpec
    data: dict[str, Split]


@dataclass
class StudentPredictions:
    shipped: Predictions  # as later stages predict, before calibration: through the ensemble if there is one
    network: Predictions  # the network alone
    ensemble: TokenRidge | None
    seconds: float  # tokenising and predicting val + test


def evaluate(settings: EvaluateSettings, echo: Echo = print) -> dict[str, Any]:
    import torch

    settings.validate()
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    run = load(settings, echo)
    student = predict(settings, run, echo)
    calibration = post_process(settings, run, student, echo)
    predictions, tfidf = baselines(run, student)
    results = {name: score(run, pred) for name, pred in predictions.items()}
    test = student.shipped["test"]
    headline_pred = calibration.apply(test, run.spec.dimension_names) if calibration else test
    headline = evaluate_predictions(run.spec, headline_pred, run.data["test"].targets)
    metrics = {
        "model": str(run.model_dir), "artifact": run.info.artifact_id, "filter": run.spec.id,
        "post_processing": "calibration.json" if calibration else "raw",
        "student": headline, "criteria": success_criteria(run.spec, headline),
        "variants": results, "tfidf_alpha": tfidf.alpha,
        "ensemble_student_weight": student.ensemble.student_weight if student.ensemble else None,
        "test_examples": len(test), "predict_seconds": round(student.seconds, 1),
        "training": run.info.training, "settings": settings.to_json(),
    }
    out, metrics_path, figures = write_outputs(settings, run, metrics, headline_pred)
    passed = all(c["passed"] for c in metrics["criteria"])
    echo(f"Test MAE {headline['mae']:.3f} (TF-IDF+ridge {results['tfidf_ridge']['raw']['mae']:.3f}, "
         f"mean {results['mean']['raw']['mae']:.3f}); tier accuracy {headline['tiers']['accuracy']:.1%}; "
         f"criteria {'all passed' if passed else 'NOT all passed'}")
    echo(f"Wrote {out}, {metrics_path} and {len(figures)} plots")
    return metrics


def load(settings: EvaluateSettings, echo: Echo) -> Loaded:
    """The student, the filter it was trained for (checked against its record) and the three splits."""
    model_dir = Path(settings.model_checkpoint)
    model, tokenizer, info = load_student(model_dir)
    spec = load_filter(f"{info.filter_name}/v{info.filter_version}")
    info.check_filter(spec)
    if spec.config_hash != info.filter_config_hash:
        echo(f"warning: filter {spec.id} changed since training (config hash differs)")
    data = {s: read_split(Path(settings.data_dir) / f"{s}.jsonl", len(spec.dimensions)) for s in SPLITS}
    echo(f"Evaluating {model_dir} on {len(data['test'].texts)} test articles "
         f"({len(data['val'].texts)} val, {len(data['train'].texts)} train for baselines)")
    return Loaded(model_dir, model, tokenizer, info, spec, data)


def predict(settings: EvaluateSettings, run: Loaded, echo: Echo) -> StudentPredictions:
    """The student on val and test; with --ensemble its ridge partner is fitted (train) and weighed (val) first."""
    info, data = run.info, run.data
    started = time.monotonic()
    scaler = TargetScaler.from_info(info)
    # Train is only tokenised when an ensemble is fitted on it.
    splits = SPLITS if settings.ensemble else HELD_OUT
    token_ids = {s: encode_texts(run.tokenizer, data[s].texts, info.max_tokens, info.head_share) for s in splits}
    raw = {s: predict_raw(run.model, run.tokenizer, token_ids[s], settings.batch_size) for s in HELD_OUT}
    seconds = time.monotonic() - started
    ensemble = TokenRidge.load(run.model_dir)
    if settings.ensemble:
        ensemble = fit_ensemble(settings, raw["val"], token_ids, data, scaler)
        with writing(run.model_dir, "save ensemble.npz"):
            echo(f"Saved ensemble (student weight {ensemble.student_weight:.2f}, chosen on val) to "
                 f"{ensemble.save(run.model_dir)}")
    shipped = {s: scaler.to_scores(ensemble.blend(raw[s], token_ids[s]) if ensemble else raw[s]) for s in raw}
    return StudentPredictions(shipped, {s: scaler.to_scores(raw[s]) for s in raw}, ensemble, seconds)


def fit_ensemble(settings: EvaluateSettings, student_val: Any, token_ids: dict[str, list[list[int]]],
                 data: dict[str, Split], scaler: TargetScaler) -> TokenRidge:
    """Ridge on train, then the blend weight with the lowest val MAE under the rounding
    the calibration method applies (none for plain isotonic/linear)."""
    ensemble = TokenRidge.fit(token_ids["train"], scaler.standardise(data["train"].targets),
                              token_ids["val"], scaler.standardise(data["val"].targets))
    post = rounded if settings.calibration_method.endswith("rounded") else (lambda p: p)
    weight, _ = choose_student_weight(student_val, ensemble.predict(token_ids["val"]), scaler.to_scores,
                                      data["val"].targets, post)
    ensemble.student_weight = weight
    return ensemble


def post_process(settings: EvaluateSettings, run: Loaded, student: StudentPredictions, echo: Echo) -> Calibration | None:
    """The calibration the model folder ships: with --calibrate, fitted on val here and saved first."""
    if settings.calibrate:
        calibration = fit_calibration(student.shipped["val"], run.data["val"].targets, run.spec.dimension_names,
                                      settings.calibration_method)
        with writing(run.model_dir, "save calibration.json"):
            echo(f"Saved {settings.calibration_method} calibration (fitted on val) to {calibration.save(run.model_dir)}")
    return Calibration.load(run.model_dir)


def baselines(run: Loaded, student: StudentPredictions) -> tuple[dict[str, Predictions], TfidfRidge]:
    """Every predictor's val and test scores: the student (and its network alone, when it is an
    ensemble), then TF-IDF + ridge and the mean predictor, both fitted on train."""
    train, val = run.data["train"], run.data["val"]
    tfidf = TfidfRidge().fit(train.texts, train.targets, val.texts, val.targets)
    mean = MeanPredictor().fit(train.texts, train.targets)
    predictions = {
        "student": student.shipped,
        **({"student_alone": student.network} if student.ensemble else {}),
        "tfidf_ridge": {s: tfidf.predict(run.data[s].texts) for s in HELD_OUT},
        "mean": {s: mean.predict(run.data[s].texts) for s in HELD_OUT},
    }
    return predictions, tfidf


def score(run: Loaded, pred: Predictions) -> dict[str, dict[str, Any]]:
    """One predictor's test metrics under every post-processing, each fitted on its own val predictions."""
    variants = post_processings(pred["val"], run.data["val"].targets, run.spec.dimension_names)
    return {name: evaluate_predictions(run.spec, fn(pred["test"]), run.data["test"].targets)
            for name, fn in variants.items()}


def write_outputs(settings: EvaluateSettings, run: Loaded, metrics: dict[str, Any],
                  headline_pred: np.ndarray) -> tuple[Path, Path, dict[str, Path]]:
    """The plots, metrics.json and the markdown report (--output); returns their paths."""
    out = Path(settings.output)
    metrics_path = out.with_name("metrics.json")
    confusion = metrics["student"]["tiers"]["confusion"]
    with writing(out.parent, "write the evaluation report"):
        out.parent.mkdir(parents=True, exist_ok=True)
        figures = {
            "scatter": plots.predicted_vs_oracle(headline_pred, run.data["test"].targets, run.spec.dimension_names,
                                                 out.with_name(out.stem + "_scatter.png")),
            "confusion": plots.confusion_matrix(confusion["labels"], confusion["matrix"],
                                                out.with_name(out.stem + "_confusion.png")),
        }
        write_text_atomic(metrics_path, json.dumps(metrics, indent=1, default=float) + "\n")
        write_report(out, run.spec, metrics, figures)
    return out, metrics_path, figures
