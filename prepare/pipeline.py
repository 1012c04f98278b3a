"""`run_prepare`: labelled JSONL in, train/val/test JSONL and a report out.

Read and validate -> drop repeated ids -> student truncation -> group
near-duplicates -> stratified group split -> balance train -> write.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from distill import __version__
from distill.errors import ConfigError
from distill.filter_spec import NAME_PATTERN, FilterSpec, load_filter
from distill.prepare.dedup import (
    NEAR_DUP_METHOD,
    Duplicate,
    drop_duplicate_ids,
    groups_of,
    near_duplicate_groups,
)
from distill.prepare.oversample import Balance, oversample, tier_weights
from distill.prepare.report import (
    missing_tier_warnings,
    reject_reasons,
    split_summary,
    write_report,
)
from distill.prepare.settings import PrepareSettings
from distill.prepare.split import Stratum, split_examples
from distill.prepare.truncate import StudentTruncation
from distill.prepare.validate import Example, LoadResult, load_labelled
from distill.records import TrainingExample, dumps_line
from distill.splits import SPLITS

DATASETS_ROOT = Path("datasets")  # default output root, relative to the working folder
REPORT_NAME = "prepare_report.json"
REJECTS_NAME = "rejects.jsonl"


@dataclass
class PrepareResult:
    output_dir: Path
    report: dict[str, Any]


@dataclass
class Prepared:
    """Everything a run decided, kept for the report."""

    spec: FilterSpec
    loaded: LoadResult
    duplicates: list[Duplicate]
    examples: list[Example]
    truncation: StudentTruncation
    group_key: dict[str, str]
    splits: dict[str, list[Example]]  # natural, sorted by id
    strata: list[Stratum]
    written: dict[str, list[Example]]  # as written: train with copies, in seeded order
    balance: Balance


def default_output_dir(spec: FilterSpec) -> Path:
    return DATASETS_ROOT / spec.name / f"v{spec.version}"


def output_dir_for(settings: PrepareSettings, spec: FilterSpec) -> Path:
    """--output-dir as given, else datasets/<name>/v<N>, refused if it resolves outside datasets/.

    The loader already allows only plain filter names; this second guard keeps a
    FilterSpec built some other way (or a symlink under datasets/) from sending
    the splits anywhere else.
    """
    if settings.output_dir:
        return Path(settings.output_dir)
    out = default_output_dir(spec)
    root, resolved = DATASETS_ROOT.resolve(), out.resolve()
    if not resolved.is_relative_to(root):
        why = (
            "a symlink under datasets/ leads there" if NAME_PATTERN.fullmatch(spec.name)
            else f"filter name {spec.name!r} is not a plain name"
        )
        raise ConfigError(
            f"{spec.path / 'config.yaml'}: default output folder {out} resolves to {resolved}, "
            f"outside {root} ({why}); pass --output-dir to write elsewhere"
        )
    return out


def run_prepare(settings: PrepareSettings) -> PrepareResult:
    settings.validate()
    spec = load_filter(settings.filter)
    out = output_dir_for(settings, spec)
    loaded = load_labelled(settings.inputs, spec, settings.scores_field, settings.strict)
    examples, duplicates = drop_duplicate_ids(loaded.examples)
    if not examples:
        first = loaded.rejects[0] if loaded.rejects else None
        hint = f"; first: {first.path}:{first.line_no}: {first.reason}" if first else ""
        raise ConfigError(f"--input: no usable labelled records ({len(loaded.rejects)} line(s) rejected{hint})")
    truncation = StudentTruncation(spec.truncation.student_tokens, spec.truncation.head_share, settings.tokenizer)
    texts = truncation.apply([ex.text for ex in examples])
    examples = [replace(ex, text=text) for ex, text in zip(examples, texts, strict=True)]
    group_key = near_duplicate_groups(examples)
    splits, strata = split_examples(examples, group_key, spec, settings.ratios, settings.seed)
    if settings.weighting:
        train_rows, _ = oversample(splits["train"], 0, settings.seed)
        balance = tier_weights(splits["train"])
    else:
        train_rows, balance = oversample(splits["train"], settings.oversample_ratio, settings.seed)
    written = {"train": train_rows, "val": splits["val"], "test": splits["test"]}
    run = Prepared(spec, loaded, duplicates, examples, truncation, group_key, splits, strata, written, balance)

    out.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        weights = balance.weights if name == "train" else {}  # val and test stay natural
        write_jsonl(out / f"{name}.jsonl", [training_row(ex, weights) for ex in written[name]])
    rejects = loaded.rejects + [d.to_reject() for d in duplicates]
    write_jsonl(out / REJECTS_NAME, [r.to_json() for r in rejects])
    if not rejects:
        (out / REJECTS_NAME).unlink()  # a stale file from an earlier run would mislead
    report = build_report(settings, out, run)
    write_report(out / REPORT_NAME, report)
    return PrepareResult(out, report)


def build_report(settings: PrepareSettings, out: Path, run: Prepared) -> dict[str, Any]:
    """How the splits were made: inputs, filter, settings, counts and decisions."""
    spec, loaded = run.spec, run.loaded
    rejects = loaded.rejects + [d.to_reject() for d in run.duplicates]
    return {
        "distill_version": __version__,
        "output_dir": str(out),
        "filter": {
            "id": spec.id,
            "config_hash": spec.config_hash,
            "dimensions": spec.dimension_names,
            "tiers": {t.name: t.min_score for t in spec.tiers},
        },
        "inputs": [info.to_json() for info in loaded.inputs],
        "settings": settings.to_json(),
        "counts": {
            "records_read": len(loaded.examples) + len(loaded.rejects),
            "rejected": len(loaded.rejects),
            "duplicate_ids": len(run.duplicates),
            "examples": len(run.examples),
        },
        "splits": {n: split_summary(spec, run.splits[n], run.written[n]) for n in SPLITS},
        "strata": [s.to_json() for s in run.strata],
        "balancing": run.balance.to_json(),
        "truncation": run.truncation.describe(),
        "near_duplicates": near_duplicate_summary(run.group_key),
        "duplicates": [d.to_json() for d in run.duplicates],
        "rejects": {
            "count": len(loaded.rejects),
            "file": str(out / REJECTS_NAME) if rejects else None,  # also holds dropped duplicate ids
            "reasons": reject_reasons([r.reason for r in rejects]),
        },
        "warnings": missing_tier_warnings(spec, run.splits, settings.ratios),
    }


def near_duplicate_summary(group_key: dict[str, str]) -> dict[str, Any]:
    groups = groups_of(group_key)
    return {
        "method": NEAR_DUP_METHOD,
        "groups": len(groups),
        "examples": sum(len(g) for g in groups),
        "list": groups,
    }


def training_row(example: Example, weights: dict[str, float]) -> dict[str, Any]:
    """The training-example form train/ reads; `weight` only in train with --weighting;
    `fields` holds the article's plain fields for distill-evaluate --slice-by."""
    return TrainingExample(
        id=example.id, text=example.text, dimension_scores=list(example.scores),
        overall_score=example.overall_score, tier=example.tier,
        weight=weights[example.tier] if weights else None, fields=example.fields,
    ).to_json()


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace `path` whole: a rerun overwrites, never appends."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", errors="surrogateescape", newline="\n") as handle:
        handle.writelines(dumps_line(row) for row in rows)
    os.replace(tmp, path)
