"""distill-evaluate, top to bottom: `load` the student and the splits, `predict`
val and test (through the ensemble, fitted on train with --ensemble),
`post_process` (calibration fitted on val with --calibrate, the tiers'
operating point fitted on val with --target-recall), fit the `baselines`,
`score` every predictor under every post-processing on test, the `slices`
(--slice-by), then `write_outputs`: metrics.json, the markdown report and the
plots. Every choice is made on val (or train); test is only scored, once, at
the end, and `choices` records which split each choice was fitted on."""

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
from distill.evaluate.metrics import evaluate_predictions, success_criteria, tier_support
from distill.evaluate.operating_point import fit_operating_point, operating_point_effect
from distill.evaluate.report import write_report
from distill.evaluate.settings import EvaluateSettings
from distill.evaluate.slices import slice_labels, slice_metrics
from distill.filter_spec import FilterSpec, load_filter
from distill.model_card import refresh_metrics
from distill.scoring import top_populated_tier
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
    shipped = {s: calibration.apply(p, run.spec.dimension_names) if calibration else p
               for s, p in student.shipped.items()}
    shifts = calibration.tier_shifts if calibration else {}
    headline = evaluate_predictions(run.spec, shipped["test"], run.data["test"].targets, shifts)
    metrics = {
        "model": str(run.model_dir), "artifact": run.info.artifact_id, "filter": run.spec.id,
        "post_processing": "calibration.json" if calibration else "raw",
        "student": headline, "criteria": success_criteria(run.spec, headline),
        "variants": results, "tfidf_alpha": tfidf.alpha,
        "ensemble_student_weight": student.ensemble.student_weight if student.ensemble else None,
        "operating_point": operating_point(run, shipped, shifts),
        "slices": slices(settings, run, headline, (shipped["test"], shifts), predictions["tfidf_ridge"], calibration),
        "choices": choices(settings, run, student, calibration, tfidf),
        "test_examples": len(shipped["test"]), "predict_seconds": round(student.seconds, 1),
        "training": run.info.training, "settings": settings.to_json(),
    }
    out, metrics_path, figures = write_outputs(settings, run, metrics, shipped["test"])
    passed = all(c["passed"] for c in metrics["criteria"])
    echo(f"Test MAE {headline['mae']:.3f} (TF-IDF+ridge {results['tfidf_ridge']['raw']['mae']:.3f}, "
         f"mean {results['mean']['raw']['mae']:.3f}); tier accuracy {headline['tiers']['accuracy']:.1%}; "
         f"criteria {'all passed' if passed else 'NOT all passed'}")
    echo(f"Wrote {out}, {metrics_path} and {len(figures)} plots")
    with writing(run.model_dir, "refresh the model card"):
        card = refresh_metrics(run.model_dir, metrics)
    if card is not None:
        echo(f"Refreshed the test metrics in {card}")
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
    """The calibration the model folder ships: with --calibrate its maps, with --target-recall its
    tiers' operating point (after those maps), each fitted on val here and saved first."""
    names, val_pred, val_true = run.spec.dimension_names, student.shipped["val"], run.data["val"].targets
    calibration = Calibration.load(run.model_dir)
    if settings.calibrate:
        if calibration is not None and calibration.tier_shifts and not settings.targets:
            echo("note: the new calibration drops calibration.json's tier_shifts (fitted to the old one); "
                 "pass --target-recall to fit them again")
        calibration = fit_calibration(val_pred, val_true, names, settings.calibration_method)
        calibration.method = settings.calibration_method
    if settings.targets:
        calibration = calibration or Calibration({})  # no maps: the operating point alone
        calibration.tier_shifts = fit_operating_point(run.spec, calibration.apply(val_pred, names), val_true,
                                                      settings.targets)
    if settings.calibrate or settings.targets:
        with writing(run.model_dir, "save calibration.json"):
            path = calibration.save(run.model_dir)
        fitted = [f"{settings.calibration_method} calibration"] if settings.calibrate else []
        fitted += [f"tier shifts {_shifts(calibration.tier_shifts)}"] if settings.targets else []
        echo(f"Saved {' and '.join(fitted)} (fitted on val) to {path}")
    if calibration is not None:
        calibration.check_tier_shifts(run.spec, run.model_dir)
    return calibration


def _shifts(shifts: dict[str, float]) -> str:
    return ", ".join(f"{tier} {shift:+g}" for tier, shift in shifts.items())


def operating_point(run: Loaded, shipped: Predictions, shifts: dict[str, float]) -> dict[str, Any] | None:
    """What the tiers' operating point does on val (where it was fitted) and on test: each shifted
    tier's recall and precision at the filter's thresholds and at the shifted ones."""
    if not shifts:
        return None
    return {"shifts": dict(shifts), "fitted_on": "val",
            **{s: operating_point_effect(run.spec, shipped[s], run.data[s].targets, shifts) for s in HELD_OUT}}


def slices(settings: EvaluateSettings, run: Loaded, headline: dict[str, Any], student: tuple[np.ndarray, dict],
           tfidf: Predictions, calibration: Calibration | None) -> dict[str, Any] | None:
    """--slice-by: per-slice metrics of the student as shipped and of TF-IDF + ridge under the
    same post-processing (fitted on its val predictions; raw when the method is not recorded)."""
    if not settings.slice_by:
        return None
    test = run.data["test"]
    variants = post_processings(tfidf["val"], run.data["val"].targets, run.spec.dimension_names)
    maps = calibration is not None and calibration.knots
    post = calibration.method if maps and calibration.method in variants else None if maps else "raw"
    baseline = (variants[post or "raw"](tfidf["test"]), {})
    rare = top_populated_tier(run.spec, tier_support(headline))
    fields = {}
    for name in settings.slice_by:
        labels, pooled = slice_labels(test.fields, name, settings.min_slice)
        fields[name] = slice_metrics(run.spec, labels, pooled, {"student": student, "tfidf_ridge": baseline},
                                     test.targets, rare)
    return {"rare_tier": rare, "tfidf_post_processing": post, "min_slice": settings.min_slice, "fields": fields}


def choices(settings: EvaluateSettings, run: Loaded, student: StudentPredictions, calibration: Calibration | None,
            tfidf: TfidfRidge) -> list[dict[str, str]]:
    """Every choice behind this report's numbers and the split it was fitted on (never test)."""
    method = (calibration.method or "method not recorded") if calibration else ""
    shifts = calibration.tier_shifts if calibration else {}
    here = "fitted on val by this run"
    earlier = "loaded from the model folder (fitted on val when distill-evaluate made it)"
    rows = [
        ("calibration (calibration.json maps)", f"{method}, {here if settings.calibrate else earlier}"
         if calibration and calibration.knots else "none"),
        ("ensemble blend weight (ensemble.npz)",
         "none" if not student.ensemble else f"{student.ensemble.student_weight:.2f}, "
         + ("ridge fitted on train, weight on val, by this run" if settings.ensemble else earlier)),
        ("tier operating point (calibration.json tier_shifts)",
         f"{_shifts(shifts)}, {here if settings.targets else earlier}" if shifts else "none: the filter's thresholds"),
        ("post-processing of every predictor in the comparison", "each fitted on val, per predictor, by this run"),
        ("TF-IDF + ridge", f"fitted on train, alpha {tfidf.alpha:g} chosen on val, by this run"),
        ("training (epochs, checkpoint)", "by distill-train, on train with val MAE per epoch (history.json); "
         "this run cannot see how the epoch count was picked"),
    ]
    return [{"choice": choice, "how": how} for choice, how in rows]


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
        if metrics["slices"]:
            figures["slices"] = plots.slice_bars(metrics["slices"], out.with_name(out.stem + "_slices.png"))
        write_text_atomic(metrics_path, json.dumps(metrics, indent=1, default=float) + "\n")
        write_report(out, run.spec, metrics, figures)
    return out, metrics_path, figures
