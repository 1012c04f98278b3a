"""The markdown evaluation report, from the metrics dict evaluate() builds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.evaluate.metrics import tier_support
from distill.filter_spec import FilterSpec
from distill.scoring import top_populated_tier
from distill.tables import markdown_table

PREDICTORS = {"student": "student", "student_alone": "student without its ensemble ridge",
              "tfidf_ridge": "TF-IDF + ridge", "mean": "mean predictor"}


def _f(value: float, digits: int = 3) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"  # NaN check without numpy


def write_report(path: Path, spec: FilterSpec, metrics: dict[str, Any], figures: dict[str, Path]) -> Path:
    lines = [
        f"# Evaluation: {metrics['artifact']}",
        "",
        f"Model `{metrics['model']}`, filter `{metrics['filter']}`, {metrics['test_examples']} test articles; "
        f"post-processing as shipped: {metrics['post_processing']}. Student prediction took "
        f"{metrics['predict_seconds']} s for val + test.",
        "",
        "## Success criteria",
        "",
        *markdown_table(["criterion", "value", "result"],
                        [[c["criterion"], c["value"], "PASS" if c["passed"] else "FAIL"] for c in metrics["criteria"]]),
        "",
        *_dimensions(metrics["student"]),
        "",
        *_baselines(spec, metrics),
        "",
        *_tiers(metrics["student"], metrics.get("operating_point")),
        "",
        *_operating_point(metrics.get("operating_point")),
        *_slices(metrics.get("slices")),
        *[f"![{name}]({p.name})" for name, p in figures.items()],
        "",
        *_choices(metrics),
        "",
        "## How it was trained",
        "",
        *_training(metrics.get("training", {})),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _dimensions(student: dict[str, Any]) -> list[str]:
    return [
        "## Per dimension (student as shipped)",
        "",
        *markdown_table(["dimension", "MAE", "RMSE", "Spearman"],
                        [[n, _f(d["mae"]), _f(d["rmse"]), _f(d["spearman"])] for n, d in student["dimensions"].items()]),
        "",
        f"Mean MAE over dimensions {_f(student['mae'])}; overall-score MAE {_f(student['overall_mae'])} "
        f"(Spearman {_f(student['overall_spearman'])}).",
    ]


def _baselines(spec: FilterSpec, metrics: dict[str, Any]) -> list[str]:
    top = top_populated_tier(spec, tier_support(metrics["student"])) or spec.tier_names[0]
    return [
        "## Student vs baselines, under the same post-processing",
        "",
        "Every post-processing is fitted on val for each predictor separately and applied to test."
        + (f" The student is an ensemble: {metrics['ensemble_student_weight']:.2f} x the network + the rest x a "
           "TF-IDF + ridge over its own tokens (ensemble.npz); the network alone is listed too."
           if metrics.get("ensemble_student_weight") is not None else ""),
        "",
        *_comparison(metrics, top),
    ]


def _tiers(student: dict[str, Any], point: dict[str, Any] | None) -> list[str]:
    at = f" at the operating point ({_shifts(point['shifts'])}, see below)" if point else ""
    return [
        "## Tiers (student as shipped)",
        "",
        f"Tier accuracy {student['tiers']['accuracy']:.1%}{at}.",
        "",
        *markdown_table(["tier", "precision", "recall", "F1", "support", "predicted"],
                        [[t, _f(m["precision"]), _f(m["recall"]), _f(m["f1"]), str(m["support"]), str(m["predicted"])]
                         for t, m in student["tiers"]["per_tier"].items()]),
        "",
        "Confusion matrix (rows: oracle tier, columns: student tier):",
        "",
        *_confusion(student["tiers"]["confusion"]),
    ]


def _shifts(shifts: dict[str, float]) -> str:
    return ", ".join(f"`{tier}` boundary shifted by {shift:+g}" for tier, shift in shifts.items())


def _operating_point(point: dict[str, Any] | None) -> list[str]:
    if not point:
        return []
    rows = [[f"`{tier}` {shift:+.3f}", split, f"{m['default']['recall']:.3f} / {m['default']['precision']:.3f}",
             f"{m['shifted']['recall']:.3f} / {m['shifted']['precision']:.3f}",
             f"{m['default']['predicted']} → {m['shifted']['predicted']} of {m['shifted']['support']}",
             f"{m['default']['accuracy']:.1%} → {m['shifted']['accuracy']:.1%}"]
            for tier, shift in point["shifts"].items() for split in ("val", "test")
            for m in [point[split][tier]]]
    return [
        "## Operating point for tiers",
        "",
        "A tier is reached when the overall score + its shift reaches the tier's minimum (the overall score "
        "itself is unchanged). Each shift is the smallest that reaches the --target-recall on **val**, where it "
        "was fitted; the test rows show what it costs on articles it never saw. It is saved in calibration.json "
        "(`tier_shifts`), so distill-score and distill-serve tier the same way; without it every tier starts at "
        "the filter's own minimum.",
        "",
        *markdown_table(["tier, shift", "split", "recall / precision at the filter's thresholds",
                         "at the operating point", "predicted (of oracle support)", "tier accuracy"], rows),
        "",
    ]


def _slices(slices: dict[str, Any] | None) -> list[str]:
    if not slices:
        return []
    rare = slices["rare_tier"] or "rare tier"
    post = slices["tfidf_post_processing"]
    lines = [
        "## Slices of the test split",
        "",
        "The student as shipped beside TF-IDF + ridge under the same post-processing "
        f"({post or 'raw: the calibration method is not recorded'}) on the same articles. "
        f"Rare tier: `{rare}` (the top populated tier of the whole test split). Values with fewer than "
        f"{slices['min_slice']} test articles are pooled into `(other)`.",
        "",
    ]
    header = ["slice", "articles", f"{rare} support", "MAE student", "MAE TF-IDF", "tier acc. student",
              "tier acc. TF-IDF", f"{rare} recall student", f"{rare} recall TF-IDF"]
    for name, rows in slices["fields"].items():
        table = [[f"{name} = {r['value']}" + (f" ({r['values']} values)" if "values" in r else ""), str(r["n"]),
                  str(r["rare_support"]), _f(r["student"]["mae"]), _f(r["tfidf_ridge"]["mae"]),
                  f"{r['student']['tier_accuracy']:.1%}", f"{r['tfidf_ridge']['tier_accuracy']:.1%}",
                  _f(r["student"]["rare_recall"]), _f(r["tfidf_ridge"]["rare_recall"])] for r in rows]
        lines += [*markdown_table(header, table), ""]
    return lines


def _choices(metrics: dict[str, Any]) -> list[str]:
    return [
        "## Which split each choice was fitted on",
        "",
        *markdown_table(["choice", "how it was made"], [[c["choice"], c["how"]] for c in metrics["choices"]]),
        "",
        f"Nothing here was chosen on test: the {metrics['test_examples']} test articles are read once, at the end, "
        "for the numbers above (only the operating point's val rows are on val).",
    ]


def _comparison(metrics: dict[str, Any], top: str) -> list[str]:
    rows = []
    for post in metrics["variants"]["student"]:
        tfidf = metrics["variants"]["tfidf_ridge"][post]["mae"]
        for key, label in PREDICTORS.items():
            if key not in metrics["variants"]:
                continue
            m = metrics["variants"][key][post]
            gain = "" if key == "tfidf_ridge" or not tfidf else f"{(tfidf - m['mae']) / tfidf:+.1%}"
            rows.append([post, label, _f(m["mae"]), gain, _f(m["overall_mae"]), f"{m['tiers']['accuracy']:.1%}",
                         _f(m["tiers"]["per_tier"][top]["recall"]), _f(m["tiers"]["per_tier"][top]["precision"])])
    header = ["post-processing", "predictor", "MAE", "below TF-IDF", "overall MAE", "tier acc.",
              f"{top} recall", f"{top} precision"]
    return markdown_table(header, rows)


def _confusion(confusion: dict[str, Any]) -> list[str]:
    labels = confusion["labels"]
    return markdown_table(["oracle \\ student", *labels],
                          [[label, *map(str, row)] for label, row in zip(labels, confusion["matrix"], strict=True)])


def _training(training: dict[str, Any]) -> list[str]:
    if not training:
        return ["(no training record in distill.json)"]
    keys = ("model_name", "epochs", "batch_size", "learning_rate", "loss", "tier_balance", "full_finetune",
            "lora_rank", "max_length", "seed", "train_seconds", "train_examples")
    rows = [[k, f"`{training[k]}`"] for k in keys if k in training]
    flags = " ".join(
        f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
        for k, v in training.items()
        if k in keys[:-2] and v not in (None, False) and k != "train_seconds"
    )
    return [*markdown_table(["setting", "value"], rows), "", "Retrain with:", "",
            f"    distill-train --filter <filter> --data-dir <splits> {flags}"]
