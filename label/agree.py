"""Agreement between two label sets of the same articles: the noise floor.

Per dimension: mean absolute error, Spearman's rank correlation and
Krippendorff's alpha with the interval metric, on the articles both files
label (joined by id). Alpha is computed from its definition for two coders
with no missing values: 1 - D_o / D_e, where D_o is the mean squared
difference within an article and D_e the mean squared difference between any
two values in the pooled set of 2N scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.table import Table

from distill.errors import DistillError
from distill.records import check_score, iter_json_lines
from distill.stats import spearman


@dataclass(frozen=True)
class DimensionAgreement:
    name: str
    n: int
    mae: float
    spearman: float
    alpha: float


@dataclass(frozen=True)
class Agreement:
    common: int
    only_a: int
    only_b: int
    dimensions: list[DimensionAgreement]

    def to_json(self) -> dict:
        return {
            "common_articles": self.common,
            "only_in_a": self.only_a,
            "only_in_b": self.only_b,
            "dimensions": {d.name: {"n": d.n, "mae": d.mae, "spearman": d.spearman, "alpha": d.alpha}
                           for d in self.dimensions},
        }


def krippendorff_alpha_interval(a: np.ndarray, b: np.ndarray) -> float:
    pooled = np.concatenate([a, b]).astype(float)
    n = len(pooled)
    if n < 4:
        return float("nan")
    observed = float(np.mean((a - b) ** 2))
    expected = 2 * n * float(pooled.var()) / (n - 1)
    if expected == 0:
        return 1.0 if observed == 0 else float("nan")
    return 1 - observed / expected


def load_scores(path: Path) -> dict[str, dict[str, float]]:
    """id -> {dimension: score}; a line without usable scores is an error naming file:line."""
    scores: dict[str, dict[str, float]] = {}
    for line_no, obj in iter_json_lines(path):
        if not isinstance(obj, dict) or not isinstance(obj.get("scores"), dict) or "id" not in obj:
            raise DistillError(f"{path}:{line_no}: not a labelled record (needs id and scores)")
        try:
            scores[str(obj["id"])] = {k: check_score(v, f"scores.{k}") for k, v in obj["scores"].items()}
        except ValueError as exc:
            raise DistillError(f"{path}:{line_no}: {exc}") from None
    return scores


def agreement(path_a: Path, path_b: Path, dimensions: list[str] | None = None) -> Agreement:
    a, b = load_scores(path_a), load_scores(path_b)
    common = sorted(set(a) & set(b))
    if not common:
        raise DistillError(f"{path_a} and {path_b} share no article id")
    if dimensions is None:
        dimensions = [d for d in a[common[0]] if d in b[common[0]]]
    rows = []
    for dim in dimensions:
        pairs = [(a[i][dim], b[i][dim]) for i in common if dim in a[i] and dim in b[i]]
        if not pairs:
            raise DistillError(f"dimension {dim!r} is in neither file's shared articles")
        x = np.array([p[0] for p in pairs], dtype=float)
        y = np.array([p[1] for p in pairs], dtype=float)
        rows.append(DimensionAgreement(dim, len(pairs), float(np.mean(np.abs(x - y))), spearman(x, y),
                                       krippendorff_alpha_interval(x, y)))
    return Agreement(len(common), len(set(a) - set(b)), len(set(b) - set(a)), rows)


def agreement_table(result: Agreement, path_a: Path, path_b: Path) -> Table:
    table = Table(title=f"Agreement: {path_a.name} vs {path_b.name} on {result.common:,} articles "
                        f"(only in A: {result.only_a:,}, only in B: {result.only_b:,})")
    for column in ("dimension", "n", "MAE", "Spearman", "alpha (interval)"):
        table.add_column(column, justify="left" if column == "dimension" else "right")
    for d in result.dimensions:
        table.add_row(d.name, f"{d.n:,}", f"{d.mae:.3f}", f"{d.spearman:.3f}", f"{d.alpha:.3f}")
    if result.dimensions:
        mean = lambda attr: float(np.nanmean([getattr(d, attr) for d in result.dimensions]))  # noqa: E731
        table.add_row("[bold]mean[/]", "", f"{mean('mae'):.3f}", f"{mean('spearman'):.3f}", f"{mean('alpha'):.3f}")
    return table
