"""prepare_report.json and the summary table printed at the end of a run.

The report holds no timestamp, so a rerun with the same inputs and settings
writes it byte for byte again.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from distill.filter_spec import FilterSpec
from distill.prepare.validate import Example
from distill.splits import SPLITS


def split_summary(spec: FilterSpec, natural: list[Example], written: list[Example]) -> dict[str, Any]:
    """Counts per tier (natural and as written, with copies) and per-dimension mean/std."""
    tiers = Counter(ex.tier for ex in natural)
    rows = Counter(ex.tier for ex in written)
    matrix = np.array([ex.scores for ex in natural], dtype=float).reshape(-1, len(spec.dimensions))
    dims = {
        name: {
            "mean": round(float(matrix[:, j].mean()), 4) if len(matrix) else None,
            "std": round(float(matrix[:, j].std()), 4) if len(matrix) else None,
        }
        for j, name in enumerate(spec.dimension_names)
    }
    return {
        "examples": len(natural),
        "rows": len(written),
        "tiers": {t: tiers.get(t, 0) for t in spec.tier_names},
        "tiers_written": {t: rows.get(t, 0) for t in spec.tier_names},
        "dimensions": dims,
    }


def missing_tier_warnings(spec: FilterSpec, splits: dict[str, list[Example]], ratios: dict[str, float]) -> list[str]:
    """Tiers with >= 3 examples that some split (with a share above 0) lacks."""
    total = Counter(ex.tier for rows in splits.values() for ex in rows)
    warnings = []
    for tier in spec.tier_names:
        if total[tier] < 3:
            continue
        lacking = [n for n in SPLITS if ratios[n] > 0 and not any(ex.tier == tier for ex in splits[n])]
        if lacking:
            warnings.append(
                f"tier {tier} ({total[tier]} examples) is missing from {', '.join(lacking)}: "
                "its examples sit in too few near-duplicate groups"
            )
    return warnings


def reject_reasons(reasons: list[str]) -> dict[str, int]:
    """Counts by the part of each reason before its value (e.g. "field 'scores.x'")."""
    return dict(sorted(Counter(r.split(":")[0].split(" (")[0] for r in reasons).items()))


def write_report(path: Path, report: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def print_summary(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    splits = report["splits"]
    table = Table(title=f"{report['filter']['id']} -> {report['output_dir']}")
    table.add_column("tier")
    for name in SPLITS:
        table.add_column(name, justify="right")
    table.add_column("total", justify="right")
    for tier in report["filter"]["tiers"]:
        cells = [_count(splits[n]["tiers"][tier], splits[n]["tiers_written"][tier]) for n in SPLITS]
        table.add_row(tier, *cells, str(sum(splits[n]["tiers"][tier] for n in SPLITS)))
    cells = [_count(splits[n]["examples"], splits[n]["rows"]) for n in SPLITS]
    table.add_row("all", *cells, str(report["counts"]["examples"]), style="bold")
    console.print(table)
    dims = Table(title="dimension scores: mean ± std")
    dims.add_column("dimension")
    for name in SPLITS:
        dims.add_column(name, justify="right")
    for dim in report["filter"]["dimensions"]:
        dims.add_row(dim, *(_mean_std(splits[n]["dimensions"][dim]) for n in SPLITS))
    console.print(dims)
    counts, trunc = report["counts"], report["truncation"]
    console.print(
        f"read {counts['records_read']} records: {counts['rejected']} rejected, "
        f"{counts['duplicate_ids']} duplicate ids dropped, "
        f"{report['near_duplicates']['groups']} near-duplicate groups "
        f"({report['near_duplicates']['examples']} examples) kept within one split; "
        f"{trunc['truncated_examples']} texts cut to {trunc['budget']} {trunc['unit']}"
    )
    if report["rejects"]["count"]:
        console.print(f"rejects: {report['rejects']['file']}  {report['rejects']['reasons']}")
    for warning in report["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {warning}")


def _count(natural: int, written: int) -> str:
    """Examples, plus the oversampled copies written on top of them."""
    return f"{natural} (+{written - natural})" if written != natural else str(natural)


def _mean_std(stats: dict[str, float | None]) -> str:
    if stats["mean"] is None:
        return "-"
    return f"{stats['mean']:.2f} ± {stats['std']:.2f}"
