"""`--report-to`: training metrics through accelerate's experiment trackers.

TensorBoard writes event files under OUTPUT_DIR/runs and works offline; MLflow
and Weights & Biases log wherever their own settings point. Only process 0
logs (accelerate's trackers see to that). Without --report-to nothing here
is imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from distill.errors import ConfigError

# --report-to value -> the package it needs (pip name, import name).
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow"),
            "wandb": ("wandb", "wandb")}
RUNS_DIR = "runs"
PROJECT = "distill"


class Tracker:
    """Log scalars against the optimiser step; `close` ends the run."""

    def __init__(self, accelerator: Any):
        self.accelerator = accelerator

    def log(self, values: dict[str, float], step: int) -> None:
        self.accelerator.log(values, step=step)

    def close(self) -> None:
        self.accelerator.end_training()


def require_package(report_to: str | None) -> None:
    """One ConfigError naming the package `report_to` needs, if it is not installed."""
    if report_to is None:
        return
    pip_name, module = PACKAGES[report_to]
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"--report-to {report_to}: the {pip_name} package is not installed: pip install {pip_name}")


def open_tracker(report_to: str | None, out: Path, config: dict[str, Any]) -> Tracker | None:
    """A started tracker for `report_to` (None: none asked for), with the run's resolved
    settings as its config; a missing package is one ConfigError naming it."""
    if report_to is None:
        return None
    require_package(report_to)
    from accelerate import Accelerator

    # An Accelerator of its own for logging; under `accelerate launch` it shares the run's process state.
    accelerator = Accelerator(log_with=report_to, project_dir=str(out / RUNS_DIR))
    accelerator.init_trackers(PROJECT, config=_flat(config))
    return Tracker(accelerator)


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    """Tracker configs take scalars only (TensorBoard's hparams refuse None, paths, lists)."""
    return {k: v if isinstance(v, bool | int | float | str) else str(v) for k, v in config.items()}
