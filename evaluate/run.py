"""distill-evaluate, top to bottom: load the student and splits, predict,
optionally fit calibration on val, score student and baselines under every
post-processing on test, write metrics.json, the markdown report and plots."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distill.errors import raise_settings_problems

Echo = Callable[[str], None]
SPLITS = ("train", "val", "test")


@dataclass
class EvaluateSettings:
    model_checkpoint: Path = field(metadata={"help": "model folder written by distill-train (or a merged export with distill.json)"})
    data_dir: Path = field(metadata={"help": "folder with train/val/test.jsonl from distill-prepare: test is scored, val fits post-processing, train fits the baselines"})
    output: Path = field(default=Path("reports/model_evaluation.md"), metadata={"help": "markdown report; metrics.json and PNG plots go beside it"})
    calibrate: bool = field(default=False, metadata={"help": "fit per-dimension calibration on val and save calibration.json in the model folder (later stages apply it)"})
    ensemble: bool = field(default=False, metadata={"help": "fit a TF-IDF + ridge over the student's own tokens on train, choose its blend weight with the student on val and save ensemble.npz in the model folder (later stages apply it)"})
    calibration_method: str = field(default="isotonic", metadata={"help": "isotonic, linear (variance-restoring line), or either +rounded to integers"})
    batch_size: int = field(default=32, metadata={"help": "articles per forward pass"})
    num_threads: int | None = field(default=None, metadata={"help": "CPU threads for torch (default: torch's choice)"})

    def validate(self) -> None:
        from distill.evaluate.calibrate import METHODS

        problems = []
        if not (Path(self.model_checkpoint) / "distill.json").is_file():
            problems.append(f"--model-checkpoint: {self.model_checkpoint} has no distill.json (train a model first)")
        problems += [f"--data-dir: {Path(self.data_dir) / f'{s}.jsonl'} is missing" for s in SPLITS
                     if not (Path(self.data_dir) / f"{s}.jsonl").is_file()]
        if self.calibration_method not in METHODS:
            problems.append(f"--calibration-method: one of {', '.join(METHODS)} (got {self.calibration_method!r})")
        if self.batch_size < 1:
            problems.append(f"--batch-size: must be at least 1 (got {self.batch_size})")
        raise_settings_problems(problems)


def evaluate(settings: EvaluateSettings, echo: Echo = print) -> dict[str, Any]:
    import torch

    from distill.artifact import Calibration, TargetScaler, write_text_atomic, writing
    from distill.ensemble import TokenRidge
    from distill.evaluate import plots
    from distill.evaluate.baselines import MeanPredictor, TfidfRidge
    from distill.evaluate.calibrate import fit_calibration, post_processings
    from distill.evaluate.metrics import evaluate_predictions, success_criteria
    from distill.evaluate.report import write_report
    from distill.filter_spec import load_filter
    from distill.train.data import read_split
    from distill.train.model import encode_texts, load_student, predict_raw

    settings.validate()
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    model_dir = Path(settings.model_checkpoint)
    model, tokenizer, info = load_student(model_dir)
    spec = load_filter(f"{info.filter_name}/v{info.filter_version}")
    info.check_filter(spec)
    if spec.config_hash != info.filter_config_hash:
        echo(f"warning: filter {spec.id} changed since training (config hash differs)")
    dims = spec.dimension_names
    data = {s: read_split(Path(settings.data_dir) / f"{s}.jsonl", len(dims)) for s in SPLITS}
    echo(f"Evaluating {model_dir} on {len(data['test'].texts)} test articles "
         f"({len(data['val'].texts)} val, {len(data['train'].texts)} train for baselines)")

    started = time.monotonic()
    scaler = TargetScaler.from_info(info)
    # Train is only tokenised when an ensemble is fitted on it.
    splits = SPLITS if settings.ensemble else ("val", "test")
    token_ids = {s: encode_texts(tokenizer, data[s].texts, info.max_tokens, info.head_share) for s in splits}
    raw = {s: predict_raw(model, tokenizer, token_ids[s], settings.batch_size) for s in ("val", "test")}
    seconds = time.monotonic() - started
    ensemble = TokenRidge.load(model_dir)
    if settings.ensemble:
        ensemble = fit_ensemble(settings, raw["val"], token_ids, data, scaler)
        with writing(model_dir, "save ensemble.npz"):
            echo(f"Saved ensemble (student weight {ensemble.student_weight:.2f}, chosen on val) to {ensemble.save(model_dir)}")
    student = {s: scaler.to_scores(ensemble.blend(raw[s], token_ids[s]) if ensemble else raw[s]) for s in raw}
    if settings.calibrate:
        calibration = fit_calibration(student["val"], data["val"].targets, dims, settings.calibration_method)
        with writing(model_dir, "save calibration.json"):
            echo(f"Saved {settings.calibration_method} calibration (fitted on val) to {calibration.save(model_dir)}")
    shipped = Calibration.load(model_dir)

    tfidf = TfidfRidge().fit(data["train"].texts, data["train"].targets, data["val"].texts, data["val"].targets)
    mean = MeanPredictor().fit(data["train"].texts, data["train"].targets)
    predictions = {
        "student": student,
        **({"student_alone": {s: scaler.to_scores(raw[s]) for s in raw}} if ensemble else {}),
        "tfidf_ridge": {s: tfidf.predict(data[s].texts) for s in ("val", "test")},
        "mean": {s: mean.predict(data[s].texts) for s in ("val", "test")},
    }
    true = data["test"].targets
    results: dict[str, dict[str, Any]] = {}
    for name, pred in predictions.items():
        variants = post_processings(pred["val"], data["val"].targets, dims)
        results[name] = {pp: evaluate_predictions(spec, fn(pred["test"]), true) for pp, fn in variants.items()}
    headline_pred = shipped.apply(student["test"], dims) if shipped else student["test"]
    headline = evaluate_predictions(spec, headline_pred, true)

    out = Path(settings.output)
    with writing(out.parent, "write the evaluation report"):
        out.parent.mkdir(parents=True, exist_ok=True)
        figures = {
            "scatter": plots.predicted_vs_oracle(headline_pred, true, dims, out.with_name(out.stem + "_scatter.png")),
            "confusion": plots.confusion_matrix(headline["tiers"]["confusion"]["labels"],
                                                headline["tiers"]["confusion"]["matrix"],
                                                out.with_name(out.stem + "_confusion.png")),
        }
    metrics = {
        "model": str(model_dir), "artifact": info.artifact_id, "filter": spec.id,
        "post_processing": "calibration.json" if shipped else "raw",
        "student": headline, "criteria": success_criteria(spec, headline),
        "variants": results, "tfidf_alpha": tfidf.alpha,
        "ensemble_student_weight": ensemble.student_weight if ensemble else None,
        "test_examples": len(true), "predict_seconds": round(seconds, 1),
        "training": info.training, "settings": {k: str(v) for k, v in asdict(settings).items()},
    }
    metrics_path = out.with_name("metrics.json")
    with writing(out.parent, "write the evaluation report"):
        write_text_atomic(metrics_path, json.dumps(metrics, indent=1, default=float) + "\n")
        write_report(out, spec, metrics, figures)
    passed = all(c["passed"] for c in metrics["criteria"])
    echo(f"Test MAE {headline['mae']:.3f} (TF-IDF+ridge {results['tfidf_ridge']['raw']['mae']:.3f}, "
         f"mean {results['mean']['raw']['mae']:.3f}); tier accuracy {headline['tiers']['accuracy']:.1%}; "
         f"criteria {'all passed' if passed else 'NOT all passed'}")
    echo(f"Wrote {out}, {metrics_path} and {len(figures)} plots")
    return metrics


def fit_ensemble(settings: EvaluateSettings, student_val: Any, token_ids: dict[str, list[list[int]]],
                 data: dict[str, Any], scaler: Any) -> Any:
    """Ridge on train, then the blend weight with the lowest val MAE under the rounding
    the calibration method applies (none for plain isotonic/linear)."""
    from distill.ensemble import TokenRidge, choose_student_weight
    from distill.evaluate.calibrate import rounded

    ensemble = TokenRidge.fit(token_ids["train"], scaler.standardise(data["train"].targets),
                              token_ids["val"], scaler.standardise(data["val"].targets))
    post = rounded if settings.calibration_method.endswith("rounded") else (lambda p: p)
    weight, _ = choose_student_weight(student_val, ensemble.predict(token_ids["val"]), scaler.to_scores,
                                      data["val"].targets, post)
    ensemble.student_weight = weight
    return ensemble
