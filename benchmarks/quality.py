"""Student against the oracle on held-out labels, beside the baselines it must beat.

The split comes from distill-prepare: either a prepared folder (train, val,
test) or a labelled file, which is prepared here with the same seed and
defaults as `distill-prepare`, so a student trained on those defaults is
scored on articles it never saw. The mean predictor and TF-IDF + ridge are
fitted on the same train split (ridge's alpha on val). Metrics, baselines and
prediction are distill-evaluate's own functions, so this table and the
evaluation report can never disagree on what a number means.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.benchmarks.common import BenchResult
from distill.settings import Settings

SPLIT_FILES = ("train.jsonl", "val.jsonl", "test.jsonl")
HELD_OUT = ("test", "val")  # the splits --split may score
PREDICTORS = {"student": "student", "tfidf_ridge": "TF-IDF + ridge", "mean": "mean predictor"}


@dataclass
class QualitySettings(Settings):
    model: Path = field(metadata={"help": "student folder with distill.json (a distill-train run or a merged export)"})
    data: Path = field(metadata={"help": "a distill-prepare folder (train/val/test.jsonl) or a labelled JSONL file to split here"})
    filter: str | None = field(default=None, metadata={"help": "filter of the labels; default: the one the model was trained for"})
    split: str = field(default="test", metadata={"choices": HELD_OUT, "help": "held-out split to score: test or val"})
    seed: int = field(default=42, metadata={"help": "split seed when --data is a labelled file (distill-prepare's default)"})
    limit: int = field(default=0, metadata={"help": "score only the first N held-out articles (0: all)"})
    batch_size: int = field(default=32, metadata={"help": "articles per student forward pass"})
    slice_by: list[str] = field(default_factory=list, metadata={"flag": "--slice-by", "help": (
        "also give MAE, tier accuracy and rare-tier recall per value of this carried article field "
        "(language, source, ...); repeat for several")})
    min_slice: int = field(default=20, metadata={"help": "--slice-by values with fewer articles are pooled into '(other)'"})

    def problems(self) -> list[str]:
        problems = []
        if not (Path(self.model) / "distill.json").is_file():
            problems.append(f"--model: {self.model} has no distill.json (train or export a student first)")
        data = Path(self.data)
        if data.is_dir():
            problems += [f"--data: {data / name} is missing (run distill-prepare)" for name in SPLIT_FILES
                         if not (data / name).is_file()]
        elif not data.is_file():
            problems.append(f"--data: {data}: no such file or folder")
        if self.split not in HELD_OUT:
            problems.append(f"--split: test or val (got {self.split!r})")
        if self.limit < 0 or self.batch_size < 1 or self.min_slice < 1:
            problems.append("--limit must be 0 or more, --batch-size and --min-slice at least 1")
        return problems


def prepared_folder(settings: QualitySettings, filter_name: str, work: Path) -> Path:
    """The prepared splits: --data itself, or a labelled file split into `work`."""
    data = Path(settings.data)
    if data.is_dir():
        return data
    from distill.prepare.pipeline import run_prepare
    from distill.prepare.settings import PrepareSettings

    return run_prepare(PrepareSettings(inputs=[data], filter=filter_name, output_dir=work,
                                       seed=settings.seed)).output_dir


def predict_all(settings: QualitySettings, folder: Path, dims: int) -> dict[str, Any]:
    """Held-out targets and every predictor's scores on them, with timings."""
    from distill.artifact import Calibration
    from distill.ensemble import TokenRidge
    from distill.evaluate.baselines import MeanPredictor, TfidfRidge
    from distill.splits import read_split
    from distill.student.load import load_student
    from distill.student.predict import predict_scores

    train, val = (read_split(folder / f"{name}.jsonl", dims) for name in ("train", "val"))
    held = read_split(folder / f"{settings.split}.jsonl", dims)
    limit = settings.limit or len(held.texts)
    texts, true, fields = held.texts[:limit], held.targets[:limit], held.fields[:limit]
    model, tokenizer, info = load_student(settings.model)
    calibration = Calibration.load(settings.model)
    start = time.perf_counter()
    student = predict_scores(model, tokenizer, texts, info, settings.batch_size, calibration,
                             TokenRidge.load(settings.model))
    student_seconds = time.perf_counter() - start
    tfidf = TfidfRidge().fit(train.texts, train.targets, val.texts, val.targets)
    mean = MeanPredictor().fit(train.texts, train.targets)
    return {
        "true": true, "fields": fields,
        "predictions": {"student": student, "tfidf_ridge": tfidf.predict(texts), "mean": mean.predict(texts)},
        "student_seconds": student_seconds, "calibrated": calibration is not None,
        "train_examples": len(train.texts), "tfidf_alpha": tfidf.alpha, "info": info,
    }


def metric_rows(spec: Any, metrics: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per metric, one column per predictor (lower MAE, higher others = better)."""
    def row(name: str, pick) -> dict[str, Any]:
        return {"metric": name} | {PREDICTORS[p]: pick(m) for p, m in metrics.items()}

    rows = [row("MAE, mean of dimensions", lambda m: m["mae"])]
    rows += [row(f"MAE {d}", lambda m, d=d: m["dimensions"][d]["mae"]) for d in spec.dimension_names]
    rows += [
        row("overall-score MAE", lambda m: m["overall_mae"]),
        row("overall-score Spearman", lambda m: m["overall_spearman"]),
        row("tier accuracy", lambda m: m["tiers"]["accuracy"]),
    ]
    for tier in spec.tier_names:
        rows.append(row(f"tier precision {tier}", lambda m, t=tier: m["tiers"]["per_tier"][t]["precision"]))
        rows.append(row(f"tier recall {tier}", lambda m, t=tier: m["tiers"]["per_tier"][t]["recall"]))
        rows.append(row(f"tier F1 {tier}", lambda m, t=tier: m["tiers"]["per_tier"][t]["f1"]))
    return rows


def slice_rows(settings: QualitySettings, spec: Any, run: dict[str, Any],
               metrics: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per --slice-by value: MAE, tier accuracy and rare-tier recall, one column per predictor."""
    from distill.evaluate.metrics import tier_support
    from distill.evaluate.slices import slice_labels, slice_metrics
    from distill.scoring import top_populated_tier

    rare = top_populated_tier(spec, tier_support(metrics["student"]))  # as distill-evaluate's slices
    rows = []
    for name in settings.slice_by:
        labels, pooled = slice_labels(run["fields"], name, settings.min_slice)
        table = slice_metrics(spec, labels, pooled, {p: (pred, {}) for p, pred in run["predictions"].items()},
                              run["true"], rare)
        for entry in table:
            where = f"{name}={entry['value']} (n={entry['n']})"
            for label, key in (("MAE", "mae"), ("tier accuracy", "tier_accuracy"), (f"recall {rare}", "rare_recall")):
                rows.append({"metric": f"{label}, {where}"} | {PREDICTORS[p]: entry[p][key] for p in PREDICTORS})
    return rows


def run_quality(settings: QualitySettings) -> BenchResult:
    from distill.artifact import read_info
    from distill.evaluate.metrics import evaluate_predictions
    from distill.filter_spec import load_filter

    settings.validate()
    info = read_info(settings.model)
    spec = load_filter(settings.filter or f"{info.filter_name}/v{info.filter_version}")
    info.check_filter(spec)
    with tempfile.TemporaryDirectory(prefix="distill-quality-") as work:
        folder = prepared_folder(settings, spec.id, Path(work))
        run = predict_all(settings, folder, len(spec.dimensions))
    metrics = {name: evaluate_predictions(spec, pred, run["true"]) for name, pred in run["predictions"].items()}
    n = len(run["true"])
    support = {t: metrics["student"]["tiers"]["per_tier"][t]["support"] for t in spec.tier_names}
    notes = [
        f"{n} held-out ({settings.split}) articles; baselines fitted on {run['train_examples']} train "
        f"examples (ridge alpha {run['tfidf_alpha']:g}, picked on val)",
        f"oracle tiers in this split: {', '.join(f'{t} {c}' for t, c in support.items())}",
        f"student: {run['info'].artifact_id}, {'calibrated (calibration.json)' if run['calibrated'] else 'raw outputs'}, "
        f"{1000 * run['student_seconds'] / n:.1f} ms/article to predict here",
    ]
    if not Path(settings.data).is_dir():
        notes.append(f"split made here from {settings.data} with distill-prepare defaults, seed {settings.seed}: "
                     "honest only if the student was trained on the same split")
    return BenchResult(
        name="quality", title=f"quality on {spec.id}: student vs oracle and baselines",
        columns=["metric", *PREDICTORS.values()], rows=metric_rows(spec, metrics) + slice_rows(settings, spec, run, metrics),
        notes=notes,
        settings=settings.to_json() | {"metrics": _jsonable(metrics)},
    )


def _jsonable(value: Any) -> Any:
    """Metrics hold numpy scalars and NaN; JSON gets plain floats and null."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
