"""PNG plots for the evaluation report (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def predicted_vs_oracle(pred: np.ndarray, true: np.ndarray, dimensions: list[str], path: Path) -> Path:
    """One panel per dimension: oracle score (x, jittered: labels are integers) vs prediction."""
    plt = _pyplot()
    cols = min(4, len(dimensions))
    rows = math.ceil(len(dimensions) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    jitter = np.random.default_rng(0).uniform(-0.2, 0.2, size=true.shape)
    for j, name in enumerate(dimensions):
        ax = axes[j // cols][j % cols]
        ax.scatter(true[:, j] + jitter[:, j], pred[:, j], s=4, alpha=0.35)
        ax.plot([0, 10], [0, 10], color="grey", linewidth=0.8)
        ax.set(xlim=(-0.5, 10.5), ylim=(-0.5, 10.5), title=name, xlabel="oracle", ylabel="student")
        ax.title.set_fontsize(9)
    for k in range(len(dimensions), rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def confusion_matrix(labels: list[str], matrix: list[list[int]], path: Path) -> Path:
    plt = _pyplot()
    data = np.array(matrix)
    fig, ax = plt.subplots(figsize=(1.3 * len(labels) + 1.5, 1.1 * len(labels) + 1.2))
    ax.imshow(data, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="student tier", ylabel="oracle tier")
    for i in range(len(labels)):
        for k in range(len(labels)):
            colour = "white" if data[i, k] > data.max() / 2 else "black"
            ax.text(k, i, str(data[i, k]), ha="center", va="center", color=colour)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def slice_bars(slices: dict, path: Path) -> Path:
    """One row per --slice-by field: MAE and rare-tier recall per slice, student beside TF-IDF + ridge."""
    plt = _pyplot()
    fields = slices["fields"]
    width = max(len(rows) for rows in fields.values())
    fig, axes = plt.subplots(len(fields), 2, figsize=(2.0 + 0.9 * width * 2, 3.2 * len(fields)), squeeze=False)
    for row_axes, (name, rows) in zip(axes, fields.items(), strict=True):
        x = np.arange(len(rows))
        # the recall panel names each slice's rare-tier support: a bar at 0 over no articles means nothing
        panels = ((row_axes[0], "mae", "MAE", [f"{r['value']}\n(n={r['n']})" for r in rows]),
                  (row_axes[1], "rare_recall", f"{slices['rare_tier']} recall",
                   [f"{r['value']}\n({r['rare_support']} {slices['rare_tier']})" for r in rows]))
        for ax, key, title, labels in panels:
            for offset, (predictor, label) in zip((-0.2, 0.2), (("student", "student"), ("tfidf_ridge", "TF-IDF + ridge")),
                                                  strict=True):
                ax.bar(x + offset, [np.nan_to_num(r[predictor][key]) for r in rows], width=0.4, label=label)
            ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
            ax.set_title(f"{title} by {name}", fontsize=9)
        row_axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
