"""The model card's scoring recipe: distill-score's numbers from plain transformers + numpy.

The card shows this code verbatim, with the filter's rules filled in, so a user
without distill (or on the Hub) gets the same scores; a test runs the code
taken from a written card against distill-score. It reads the scaler,
truncation and calibration from the folder's own distill.json and
calibration.json, so only the filter's rules are written into it.
"""

from __future__ import annotations

from distill.filter_spec import FilterSpec

RECIPE = '''\
import json
from pathlib import Path

import numpy as np
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

# The filter's rules ({filter_id}): weights, gatekeepers, tier minimums (highest first).
WEIGHTS = {weights}
# (dimension, below, cap, unless_dimension, unless_min): a score below `below` caps the overall score.
GATEKEEPERS = {gatekeepers}
TIERS = {tiers}


def read(folder, name):
    path = Path(folder) / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {{}}


def load_model(folder):
    """Weights in the folder (a merged export), or a LoRA adapter on its base (needs peft)."""
    info = read(folder, "distill.json")
    if (Path(folder) / "adapter_config.json").is_file():
        from peft import AutoPeftModelForSequenceClassification

        model = AutoPeftModelForSequenceClassification.from_pretrained(
            folder, num_labels=len(info["dimensions"]), problem_type="regression").merge_and_unload()
    else:
        model = AutoModelForSequenceClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:  # decoders: eos pads, as in training
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer, info


def outputs_with_pipeline(texts, folder):
    """Standardised outputs [n, D] from a text-classification pipeline. It cuts long
    texts at the end only, distill at head + tail, so every text must fit max_tokens."""
    model, tokenizer, info = load_model(folder)
    for text in texts:
        if len(tokenizer(text)["input_ids"]) > info["max_tokens"]:
            raise ValueError(f"a text is longer than {{info['max_tokens']}} tokens: use outputs_any_length")
    scorer = pipeline("text-classification", model=model, tokenizer=tokenizer, function_to_apply="none", top_k=None)
    labels = [model.config.id2label[j] for j in range(len(info["dimensions"]))]
    rows = scorer(list(texts))
    return np.array([[{{r["label"]: r["score"] for r in row}}[label] for label in labels] for row in rows])


def head_tail_ids(text, tokenizer, info):
    """distill-score's cut: max_tokens ids with the special tokens, head_share of them
    from the start of the text and the rest from its end."""
    bare = tokenizer("distill probe", add_special_tokens=False)["input_ids"]
    full = tokenizer("distill probe")["input_ids"]
    start = next(i for i in range(len(full) - len(bare) + 1) if full[i:i + len(bare)] == bare)
    prefix, suffix = full[:start], full[start + len(bare):]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    budget = max(1, info["max_tokens"] - len(prefix) - len(suffix))
    if len(ids) > budget:
        head = min(budget, max(1, round(budget * info["head_share"]))) if info["head_share"] > 0 else 0
        ids = ids[:head] + ids[len(ids) - (budget - head):]
    return prefix + ids + suffix


def outputs_any_length(texts, folder):
    """Standardised outputs [n, D] for texts of any length, one at a time."""
    import torch

    model, tokenizer, info = load_model(folder)
    rows = []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([head_tail_ids(text, tokenizer, info)])
            rows.append(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].float().numpy())
    return np.array(rows, dtype=np.float64)


def to_records(outputs, folder):
    """Standardised outputs -> distill-score's fields: the target scaler, clip to 0-10,
    calibration, then overall score and tier by the filter's rules."""
    info, calibration = read(folder, "distill.json"), read(folder, "calibration.json")
    dims = info["dimensions"]
    scores = np.clip(np.asarray(outputs, dtype=np.float64) * info["target_std"] + info["target_mean"], 0, 10)
    for j, name in enumerate(dims):
        knots = calibration.get("dimensions", {{}}).get(name)
        if knots:
            scores[:, j] = np.interp(scores[:, j], knots["x"], knots["y"])
    scores = np.clip(scores, 0, 10)
    shifts = calibration.get("tier_shifts", {{}})  # the operating point, when one was fitted
    weights = np.array([WEIGHTS[d] for d in dims])
    records = []
    for row in scores:
        value = dict(zip(dims, row))
        overall = float(row @ (weights / weights.sum()))
        for dim, below, cap, unless, unless_min in GATEKEEPERS:
            if value[dim] < below and (unless is None or value[unless] < unless_min):
                overall = min(overall, cap)
        overall = round(overall, 6)
        tier = next((name for name, low in TIERS if overall >= round(low - shifts.get(name, 0.0), 6)), TIERS[-1][0])
        records.append({{"scores": {{d: float(v) for d, v in value.items()}}, "overall_score": overall, "tier": tier}})
    return records


if __name__ == "__main__":
    folder = "."  # this folder, or huggingface_hub.snapshot_download("<you>/<repo>")
    text = "Solar farm opens\\n\\nThe 50 MW plant began feeding the grid on Monday ..."  # title, blank line, body
    print(to_records(outputs_any_length([text], folder), folder))
'''


def render_recipe(spec: FilterSpec) -> str:
    """The recipe with `spec`'s weights, gatekeepers and tiers written in."""
    weights = "{\n" + "".join(f"    {d.name!r}: {d.weight!r},\n" for d in spec.dimensions) + "}"
    gatekeepers = "[\n" + "".join(
        f"    ({d.name!r}, {float(g.threshold)!r}, {float(g.cap)!r}, {g.unless_dimension!r}, "
        f"{None if g.unless_min is None else float(g.unless_min)!r}),\n"
        for d in spec.dimensions if (g := d.gatekeeper) is not None) + "]"
    tiers = "[" + ", ".join(f"({t.name!r}, {float(t.min_score)!r})" for t in spec.tiers) + "]"
    return RECIPE.format(filter_id=spec.id, weights=weights, gatekeepers=gatekeepers, tiers=tiers)
