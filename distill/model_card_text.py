"""The body of a model card (distill.model_card writes the front matter and the file):
what the outputs mean, how they become an overall score and a tier, how good
they are, and how to score with distill-score or with plain transformers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.artifact import Calibration, StudentInfo
from distill.card_recipe import render_recipe
from distill.filter_spec import FilterSpec
from distill.scoring import tier_minimums

NOTES_START, NOTES_END = "<!-- distill:notes -->", "<!-- /distill:notes -->"
ENSEMBLE_FILE = "ensemble.npz"


def body_sections(info: StudentInfo, spec: FilterSpec | None, summary: dict[str, Any] | None,
                  export: dict[str, Any] | None, folder: Path, calibration: Calibration | None, notes: str,
                  name: str) -> str:
    filter_id = f"{info.filter_name}/v{info.filter_version}"
    parts = [
        _title(info, spec, filter_id),
        _outputs(info, spec),
        _tiers(spec, calibration, filter_id),
        _calibration(calibration, (summary or {}).get("calibration_method"), folder),
        _input(info, spec),
        _quality(info, summary),
        _export(export) if export else "",
        _training(info),
        _distill_score(name, filter_id),
        _transformers(info, spec, folder, filter_id),
        _push(name),
        f"## Notes\n\n{NOTES_START}\n{notes}\n{NOTES_END}\n" if notes else
        f"## Notes\n\n{NOTES_START}\n{NOTES_END}\n(Text between these markers is kept when distill rewrites this card.)\n",
    ]
    return "\n".join(p for p in parts if p)


def _title(info: StudentInfo, spec: FilterSpec | None, filter_id: str) -> str:
    kind = {"peft-lora": "a LoRA adapter with its regression head", "merged": "LoRA merged into the base weights",
            "full": "a full fine-tune"}.get(info.weights_format, info.weights_format)
    about = f" {spec.description.strip()}" if spec and spec.description else ""
    return (f"# {filter_id} student on {Path(info.base_model).name}\n\n"
            f"A small regression model that reproduces an oracle LLM's article scores for the distill filter "
            f"`{filter_id}`: {len(info.dimensions)} dimension scores from 0 to 10 per article, from which the "
            f"filter's rules give an overall score and a tier.{about} Trained with distill-train ({info.architecture} "
            f"`{info.base_model}`, {kind}; distill {info.distill_version}).\n")


def _outputs(info: StudentInfo, spec: FilterSpec | None) -> str:
    dims = {d.name: d for d in spec.dimensions} if spec else {}
    rows = ["| # | dimension | weight | gatekeeper | target mean | target std | what it rates |", "|---|---|---|---|---|---|---|"]
    for j, name in enumerate(info.dimensions):
        dim = dims.get(name)
        gate = dim.gatekeeper if dim else None
        gate_text = "" if gate is None else f"below {gate.threshold:g}: overall ≤ {gate.cap:g}" + (
            f" (unless {gate.unless_dimension} ≥ {gate.unless_min:g})" if gate.unless_dimension else "")
        rows.append(f"| {j} | `{name}` | {dim.weight:g} | {gate_text} | {info.target_mean[j]:.4f} | "
                    f"{info.target_std[j]:.4f} | {dim.description} |" if dim else
                    f"| {j} | `{name}` | | | {info.target_mean[j]:.4f} | {info.target_std[j]:.4f} | |")
    return ("## What the outputs mean\n\n"
            f"The model has {len(info.dimensions)} outputs (`config.json` `id2label` names them in a merged export), "
            "one per dimension, in the order below. They are **standardised**: the model was trained on each "
            "dimension's score minus its training-split mean, divided by its standard deviation (the *target "
            "scaler*, in `distill.json` as `target_mean` / `target_std`). A score on the oracle's 0–10 scale is\n\n"
            "    score[j] = clip(output[j] × target_std[j] + target_mean[j], 0, 10)\n\n"
            "then the calibration below, if any. "
            "`pipeline(\"text-classification\", function_to_apply=\"none\")` returns the standardised outputs, "
            "not scores: map them back as above (the recipe at the end does).\n\n" + "\n".join(rows) + "\n")


def _tiers(spec: FilterSpec | None, calibration: Calibration | None, filter_id: str) -> str:
    if spec is None:
        return (f"## Overall score and tier\n\nThe weights, gatekeepers and tiers are in the filter `{filter_id}`'s "
                "`config.yaml`, which was not found when this card was written.\n")
    shifts = calibration.tier_shifts if calibration else {}
    here = tier_minimums(spec, shifts or None)
    rows = ["| tier | filter minimum | minimum at this model's operating point |", "|---|---|---|"]
    rows += [f"| `{t.name}` | {t.min_score:g} | {here[t.name]:g} |" for t in spec.tiers]
    caps = (" Content-type caps (" + ", ".join(f"{k} ≤ {v:g}" for k, v in spec.content_type_caps.items())
            + ") then apply to articles whose record has that `content_type`.") if spec.content_type_caps else ""
    return ("## Overall score and tier\n\n"
            "The overall score is the weighted mean of the dimension scores (weights above, normalised to sum 1); "
            f"then every gatekeeper that applies caps it.{caps} It is rounded to 6 decimals, and the tier is the "
            "first one, from the top, whose minimum the overall score reaches (distill/scoring.py, the same rule "
            "labelling used).\n\n" + "\n".join(rows) + "\n")


def _calibration(calibration: Calibration | None, evaluated_method: str | None, folder: Path) -> str:
    lines = ["## Calibration and operating point\n"]
    if calibration is None:
        lines.append("No `calibration.json`: scores are the scaler's output as is, and tiers use the filter's "
                     "own minimums.")
    else:
        method = calibration.method or evaluated_method
        method = f" (`{method}`)" if method else ""
        lines.append(f"`calibration.json`{method}, fitted on the validation split by `distill-evaluate --calibrate`, "
                     f"maps each of {len(calibration.knots)} dimensions' scores through a monotone piecewise-linear "
                     "map (`np.interp` over its `x` / `y` knots; a rounding method's knots are steps to whole "
                     "scores, as the oracle's labels are), then clips to 0–10.")
        if calibration.tier_shifts:
            lines.append("Its `tier_shifts` set the *operating point*: a tier is reached when overall score + "
                         "shift ≥ its minimum (the table above), chosen on val for a target recall "
                         f"(`distill-evaluate --target-recall`): {calibration.tier_shifts}.")
        else:
            lines.append("It sets no operating point (`tier_shifts`): tiers use the filter's own minimums.")
    if (folder / ENSEMBLE_FILE).is_file():
        lines.append(f"`{ENSEMBLE_FILE}` blends a TF-IDF + ridge over the model's own tokens into the outputs "
                     "before the scaler; distill-score applies it, the plain-transformers recipe below does not.")
    return "\n".join(lines) + "\n"


def _input(info: StudentInfo, spec: FilterSpec | None) -> str:
    head = round(info.head_share * 100)
    prefilter = (" distill-score first runs the filter's prefilter (`config.yaml` `prefilter`) and gives blocked "
                 "articles null scores; the recipe below scores whatever it is given.") if spec else ""
    return ("## Input\n\n"
            "One text per article: the title, a blank line, then the body (`title + \"\\n\\n\" + body`, both "
            "stripped), or the body alone. distill-score cuts it to "
            f"**{info.max_tokens} tokens, special tokens included: the first {head}% of the budget from the start "
            f"of the text and the rest from its end** (news puts claims first and numbers or caveats last), the "
            f"same cut as in training.{prefilter}\n")


def _quality(info: StudentInfo, summary: dict[str, Any] | None) -> str:
    if not summary:
        val = info.metrics.get("val_mae")
        figure = f"Best validation MAE during training: {val:.4f} (mean over dimensions)." if val is not None else \
            "No evaluation yet."
        return f"## Quality\n\n{figure} Run `distill-evaluate` for test metrics beside TF-IDF + ridge.\n"
    post = summary.get("calibration_method") or summary.get("post_processing") or "raw"
    rows = ["| predictor | MAE | tier accuracy |", "|---|---|---|",
            f"| this model ({post}) | {summary['mae']:.3f} | {summary['tier_accuracy']:.1%} |"]
    names = {"tfidf_ridge": "TF-IDF + ridge, same train split", "mean": "mean predictor"}
    rows += [f"| {names.get(k, k)} | {v:.3f} | |" for k, v in summary["baselines"].items() if v is not None]
    tiers = ["| tier | recall | precision | test articles |", "|---|---|---|---|"]
    tiers += [f"| `{name}` | {_fmt(t['recall'])} | {_fmt(t['precision'])} | {t['support']} |"
              for name, t in summary["tiers"].items()]
    dims = ["| dimension | MAE | Spearman |", "|---|---|---|"]
    dims += [f"| `{name}` | {_fmt(d['mae'])} | {_fmt(d['spearman'])} |" for name, d in summary["dimensions"].items()]
    return (f"## Quality\n\nOn {summary['examples']} held-out test articles of distill-prepare's split, against the "
            f"oracle's labels (the baselines under `{summary['baseline_post_processing']}` post-processing). "
            f"Overall-score MAE {_fmt(summary['overall_mae'])}, Spearman {_fmt(summary['overall_spearman'])}.\n\n"
            + "\n".join(rows) + "\n\n" + "\n".join(tiers) + "\n\n" + "\n".join(dims) + "\n")


def _export(export: dict[str, Any]) -> str:
    lines = ["## Export\n", f"Merged by distill-export from `{export['source']['model_dir']}` "
             f"({export['source']['weights_format']}); merge checked against the adapter "
             f"(max output difference {export['merge'].get('merge_max_abs_diff', 0):.1e})."]
    if export.get("parity"):
        parity = export["parity"]
        lines.append(f"`model.onnx` (inputs `input_ids`, `attention_mask`; output `scores` [batch, "
                     f"{len(export['source']['dimensions'])}], standardised like the PyTorch outputs) matches "
                     f"PyTorch within {max(parity['max_abs_diff_right_padded'], parity['max_abs_diff_left_padded']):.1e}.")
    for name, figures in (export.get("mae") or {}).items():
        if isinstance(figures, dict) and "mae" in figures:
            lines.append(f"- {name}: MAE {figures['mae']:.4f} on {export['mae']['articles']} validation articles")
    return "\n".join(lines) + "\n"


def _training(info: StudentInfo) -> str:
    t = info.training
    if not t:
        return ""
    shape = "full fine-tune" if t.get("full_finetune") else f"LoRA rank {t.get('lora_rank')} on all linear layers"
    minutes = f", {t['train_seconds'] / 60:.0f} min" if t.get("train_seconds") else ""
    return ("## Training\n\n"
            f"{shape}, loss `{t.get('loss')}` on standardised targets, {t.get('epochs')} epochs at peak learning rate "
            f"{t.get('learning_rate')}, batch {t.get('batch_size')}, tier balance {t.get('tier_balance')}, seed "
            f"{t.get('seed')}; {t.get('train_examples')} training and {t.get('val_examples')} validation "
            f"articles{minutes}. Every setting is in `distill.json` under `training`.\n")


def _distill_score(name: str, filter_id: str) -> str:
    return ("## Score with distill-score\n\n"
            "```bash\n"
            f"distill-score corpus.jsonl --model path/to/{name} --filter {filter_id} -o scored.jsonl\n"
            "```\n\n"
            "Input: JSONL with `id`, `content` (or `text`) and optional `title`. Each output line has `scores` "
            "(4 decimals), `overall_score`, `tier`, `prefilter` and `model`; calibration and the operating "
            "point in this folder are applied.\n")


def _transformers(info: StudentInfo, spec: FilterSpec | None, folder: Path, filter_id: str) -> str:
    if spec is None:
        return ""
    adapter = ("This folder is a LoRA adapter: `load_model` puts it on its base with peft "
               "(`pip install peft`; the base must be reachable), or run `distill-export` for a merged folder. "
               if info.weights_format == "peft-lora" else "")
    return ("## Score with plain transformers\n\n"
            f"{adapter}`to_records` gives distill-score's `scores`, `overall_score` and `tier` (unrounded; a test "
            "checks them against distill-score's fp32 torch backend within 1e-5 on a merged export; its bf16 and "
            "int8 backends differ from fp32 by their own small margins). `outputs_any_length` makes "
            "distill-score's head + tail cut; `outputs_with_pipeline` uses a text-classification pipeline, which "
            f"only cuts at the end, so it refuses texts over {info.max_tokens} tokens. It reads the scaler, cut and "
            f"calibration from this folder; the rules of `{filter_id}` are written in.\n\n"
            "```python\n" + render_recipe(spec) + "```\n")


def _push(name: str) -> str:
    return ("## Push to the Hugging Face Hub\n\n"
            "The folder is a model repository as it stands, this card included (checkpoints and reports "
            "need not go):\n\n"
            "```bash\n"
            f'hf upload <you>/<repo> path/to/{name} . --exclude "checkpoint-*/*"\n'
            "```\n\n"
            "or `huggingface_hub.upload_folder(repo_id=\"<you>/<repo>\", folder_path=..., "
            "ignore_patterns=[\"checkpoint-*/*\"])`.\n")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
