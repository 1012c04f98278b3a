"""README.md of a model folder, as a Hugging Face model card.

distill-train and distill-export write one into every model folder, and
distill-evaluate refreshes its metrics, so a folder explains itself on disk
and on the Hub (`huggingface_hub.upload_folder` pushes it unchanged): YAML
front matter the Hub reads, then what the outputs mean and how to score.
Human notes between NOTES_START and NOTES_END survive every rewrite.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

from distill.artifact import Calibration, StudentInfo, read_info, write_text_atomic
from distill.filter_spec import FilterSpec, installed_filter
from distill.local_models import MINILM_HUB_ID
from distill.model_card_text import NOTES_END, NOTES_START, body_sections

CARD_FILE = "README.md"
EVALUATION_FILE = Path("report") / "metrics.json"  # where a folder keeps its own distill-evaluate report
# Base models whose licence is known here; anything else is "other" until its owner says.
LICENSES = {MINILM_HUB_ID: "apache-2.0", **{f"Qwen/Qwen2.5-{size}{kind}": "apache-2.0"
                                           for size in ("0.5B", "1.5B", "7B", "14B", "32B") for kind in ("", "-Instruct")}}


def write_card(folder: str | Path, info: StudentInfo | None = None, *, spec: FilterSpec | None = None,
               metrics: dict[str, Any] | None = None, source: str | Path | None = None,
               export: dict[str, Any] | None = None, name: str | None = None) -> Path:
    """(Re)write folder/README.md from its distill.json and calibration, the test figures
    (`metrics`, a distill-evaluate metrics.json; else those of `source` or the folder:
    report/metrics.json or what its card holds) and `export` (export_report.json).
    `name` is the folder's name where the card's commands use it (default its own)."""
    folder = Path(folder)
    info = info or read_info(folder)
    spec = spec or installed_filter(info.filter_name, info.filter_version)
    old = read_card(folder)
    summary = summarise(metrics) if metrics else evaluation_of(Path(source) if source else folder)
    front = front_matter(info, spec, summary, export, folder)
    body = body_sections(info, spec, summary, export, folder, Calibration.load(folder), _notes(old.get("text", "")),
                         name or folder.name)
    path = folder / CARD_FILE
    write_text_atomic(path, "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1000)
                      + "---\n\n" + body)
    return path


def read_card(folder: str | Path) -> dict[str, Any]:
    """An existing card's front matter ("meta") and whole text ("text"); {} when there is none."""
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    found = re.match(r"---\n(.*?)\n---\n", text, re.S)
    try:
        meta = yaml.safe_load(found.group(1)) if found else {}
    except yaml.YAMLError:
        meta = {}  # a hand-written card: rewritten, its notes kept
    return {"meta": meta if isinstance(meta, dict) else {}, "text": text}


def summarise(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures a card shows from a distill-evaluate metrics.json (test split)."""
    student = metrics["student"]
    method = (metrics.get("settings") or {}).get("calibration_method") if metrics.get("post_processing") != "raw" else None
    variant = method if method and method in metrics["variants"].get("tfidf_ridge", {}) else "raw"
    tiers = {name: {k: _number(t.get(k)) for k in ("precision", "recall", "support")}
             for name, t in student["tiers"]["per_tier"].items()}
    return {
        "split": "test", "examples": metrics.get("test_examples"), "post_processing": metrics.get("post_processing"),
        "calibration_method": method, "mae": _number(student["mae"]),
        "overall_mae": _number(student.get("overall_mae")), "overall_spearman": _number(student.get("overall_spearman")),
        "tier_accuracy": _number(student["tiers"]["accuracy"]), "tiers": tiers,
        "dimensions": {name: {"mae": _number(d["mae"]), "spearman": _number(d.get("spearman"))}
                       for name, d in student["dimensions"].items()},
        "baselines": {name: _number(v.get(variant, v["raw"])["mae"])
                      for name, v in metrics["variants"].items() if name in ("tfidf_ridge", "mean")},
        "baseline_post_processing": variant,
    }


def front_matter(info: StudentInfo, spec: FilterSpec | None, summary: dict[str, Any] | None,
                 export: dict[str, Any] | None, folder: Path) -> dict[str, Any]:
    filter_id = f"{info.filter_name}/v{info.filter_version}"
    tags = ["distill", "regression", "text-scoring", f"filter:{filter_id}", info.architecture]
    if (folder / "model.onnx").is_file():
        tags.append("onnx")
    meta: dict[str, Any] = {}
    if not Path(info.base_model).is_absolute():  # a hub id, not a path on the training machine
        meta["base_model"] = info.base_model
    meta |= {
        "library_name": "peft" if info.weights_format == "peft-lora" else "transformers",
        "license": LICENSES.get(info.base_model, "other"),
        "pipeline_tag": "text-classification",
        "tags": tags,
        "metrics": ["mae", "spearmanr", "accuracy"] if summary else ["mae"],
        "model-index": [{"name": f"{info.filter_name}-v{info.filter_version}-{Path(info.base_model).name}",
                         "results": [_result(info, summary, filter_id)]}],
        "distill": {"filter": info.filter_name, "filter_version": info.filter_version,
                    "filter_config_hash": info.filter_config_hash, "distill_version": info.distill_version,
                    "weights_format": info.weights_format, "dimensions": info.dimensions,
                    "evaluation": summary},
    }
    if spec is None:
        meta["distill"]["note"] = f"filter {filter_id} was not found when this card was written"
    return meta


def _result(info: StudentInfo, summary: dict[str, Any] | None, filter_id: str) -> dict[str, Any]:
    task = {"type": "text-classification", "name": f"{len(info.dimensions)}-dimension regression, 0-10"}
    if summary:
        metrics = [{"type": "mae", "value": summary["mae"], "name": "MAE, mean over dimensions"},
                   {"type": "mae", "value": summary["overall_mae"], "name": "overall-score MAE"},
                   {"type": "spearmanr", "value": summary["overall_spearman"], "name": "overall-score Spearman"},
                   {"type": "accuracy", "value": summary["tier_accuracy"], "name": "tier accuracy"}]
        for tier, figures in summary["tiers"].items():
            metrics += [{"type": kind, "value": figures[kind], "name": f"{tier} {kind}"}
                        for kind in ("recall", "precision") if figures["support"] and figures[kind] is not None]
        split = f"{filter_id} test split ({summary['examples']} articles)"
    else:
        metrics = [{"type": "mae", "value": _number(info.metrics["val_mae"]), "name": "val MAE, mean over dimensions"}] \
            if "val_mae" in info.metrics else []
        split = f"{filter_id} val split"
    return {"task": task, "dataset": {"type": "distill-prepare", "name": split},
            "metrics": [m for m in metrics if m["value"] is not None]}


def refresh_metrics(folder: str | Path, metrics: dict[str, Any]) -> Path | None:
    """distill-evaluate's hook: rewrite the folder's card with these test metrics.
    Only a card distill wrote is rewritten (None otherwise): a hand-written README stays."""
    if "distill" not in read_card(folder).get("meta", {}):
        return None
    return write_card(folder, metrics=metrics)


def evaluation_of(folder: Path) -> dict[str, Any] | None:
    """The test figures a folder carries: its report/metrics.json, else its card's."""
    path = folder / EVALUATION_FILE
    if path.is_file():
        try:
            return summarise(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            pass  # not a distill-evaluate report: fall back to what the card held
    kept = read_card(folder).get("meta", {}).get("distill", {})
    return kept.get("evaluation") if isinstance(kept, dict) else None


def _notes(text: str) -> str:
    found = re.search(re.escape(NOTES_START) + r"\n?(.*?)\n?" + re.escape(NOTES_END), text, re.S)
    return found.group(1).strip() if found else ""


def _number(value: Any) -> float | int | None:
    """JSON/YAML-safe: NaN (a recall with no support) becomes None, floats keep 4 decimals."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    value = float(value)
    return round(value, 4) if math.isfinite(value) else None
