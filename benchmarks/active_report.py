"""The label-selection simulation's table, its verdict against random, and its plot.

Rows are means over seeds (± the standard deviation across seeds). Every
strategy of a seed starts from the same labels, so the verdict compares each
strategy with random seed by seed (paired differences), which is what says
whether a difference is more than noise.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from distill.scoring import top_populated_tier

DEFAULT = "mixed"


def rare_tier(spec: Any, records: list[dict[str, Any]], student: str) -> str:
    """The top tier the test split has any article of (sustainability v1: promising)."""
    support = {t: v["support"] for t, v in records[0]["metrics"][student]["per_tier"].items()}
    return top_populated_tier(spec, support) or spec.tier_names[0]


def _values(records, strategy: str, labels: int, pick) -> np.ndarray:
    return np.array([pick(r) for r in records if r["strategy"] == strategy and r["labels"] == labels], dtype=float)


def _ms(values: np.ndarray) -> str:
    return f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.3f}"


def table_rows(records: list[dict[str, Any]], students: tuple[str, ...], rare: str) -> list[dict[str, Any]]:
    """One row per (strategy, labels): the first student's metrics, every student's rare-tier F1."""
    first = students[0]
    rows = []
    for strategy, labels in dict.fromkeys((r["strategy"], r["labels"]) for r in records):
        def get(pick, s=strategy, n=labels):
            return _values(records, s, n, pick)

        f1 = {s: get(lambda r, s=s: r["metrics"][s]["per_tier"][rare]["f1"]) for s in students}
        row = {"strategy": strategy, "labels": labels,
               f"{rare} labelled": float(get(lambda r: r["labelled_tiers"].get(rare, 0)).mean()),
               "MAE": float(get(lambda r: r["metrics"][first]["mae"]).mean()),
               "overall MAE": float(get(lambda r: r["metrics"][first]["overall_mae"]).mean()),
               "tier acc": float(get(lambda r: r["metrics"][first]["tier_accuracy"]).mean()),
               f"{rare} recall": float(get(lambda r: r["metrics"][first]["per_tier"][rare]["recall"]).mean())}
        row |= {f"{rare} F1 {s}": _ms(f1[s]) for s in students}
        row |= {f"f1_mean_{s}": float(f1[s].mean()) for s in students}
        rows.append(row)
    return rows


def columns(students: tuple[str, ...], rare: str) -> list[str]:
    return ["strategy", "labels", f"{rare} labelled", "MAE", "overall MAE", "tier acc", f"{rare} recall",
            *(f"{rare} F1 {s}" for s in students)]


def verdict(records: list[dict[str, Any]], students: tuple[str, ...], rare: str, budget: int) -> list[str]:
    """Each strategy against random at the budget, seed by seed, for every student."""
    notes = []
    strategies = list(dict.fromkeys(r["strategy"] for r in records))
    if "random" not in strategies:
        return notes
    by = {(r["seed"], r["strategy"], r["labels"]): r for r in records}
    seeds = sorted({r["seed"] for r in records})
    for student in students:
        f1 = lambda r, s=student: r["metrics"][s]["per_tier"][rare]["f1"]  # noqa: E731
        mae = lambda r, s=student: r["metrics"][s]["overall_mae"]  # noqa: E731
        for strategy in (s for s in strategies if s != "random"):
            d_f1 = np.array([f1(by[k, strategy, budget]) - f1(by[k, "random", budget]) for k in seeds])
            d_mae = np.array([mae(by[k, strategy, budget]) - mae(by[k, "random", budget]) for k in seeds])
            notes.append(f"{student}, {strategy} - random at {budget:,} labels: {rare} F1 {_signed(d_f1)}, "
                         f"overall MAE {_signed(d_mae)} (paired over {len(seeds)} seeds)"
                         + _reaches(records, student, strategy, rare, budget, f1))
    return notes


def _signed(values: np.ndarray) -> str:
    spread = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():+.3f} ± {spread:.3f}"


def _reaches(records, student: str, strategy: str, rare: str, budget: int, f1) -> str:
    """The fewest labels at which `strategy`'s mean F1 reaches random's at the budget."""
    goal = _values(records, "random", budget, f1).mean()
    for labels in sorted({r["labels"] for r in records}):
        if _values(records, strategy, labels, f1).mean() >= goal:
            return f"; reaches random's {budget:,}-label F1 ({goal:.3f}) at {labels:,} labels"
    return f"; never reaches random's {budget:,}-label F1 ({goal:.3f})"


def plot(records: list[dict[str, Any]], students: tuple[str, ...], rare: str, path: Path) -> Path:
    """F1 of the rare tier per student, overall MAE and rare labels found, against labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(f"{rare} F1, {s}", lambda r, s=s: r["metrics"][s]["per_tier"][rare]["f1"]) for s in students]
    panels += [(f"overall MAE, {students[0]}", lambda r: r["metrics"][students[0]]["overall_mae"]),
               (f"{rare} articles labelled", lambda r: r["labelled_tiers"].get(rare, 0))]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    series = defaultdict(list)
    for r in records:
        series[r["strategy"]].append(r)
    for ax, (title, pick) in zip(np.atleast_1d(axes), panels, strict=True):
        for strategy, rows in series.items():
            labels = sorted({r["labels"] for r in rows})
            values = [_values(rows, strategy, n, pick) for n in labels]
            ax.errorbar(labels, [v.mean() for v in values], yerr=[v.std() for v in values], capsize=3,
                        label=strategy, linewidth=2.4 if strategy == DEFAULT else 1.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("labels")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
