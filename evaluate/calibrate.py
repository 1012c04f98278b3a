"""Post-processing fitted on val and applied to any predictor alike.

- isotonic: per-dimension monotone map from predicted to oracle score (stored
  as knots in calibration.json, which evaluate and score apply).
- linear: per-dimension variance-restoring line (mean and spread of the oracle
  on val); undoes the pull toward the mean that a squared loss causes.
- rounded: to the nearest integer, as the oracle's labels are.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from distill.artifact import Calibration

# Grid on which a map followed by rounding is turned back into knots.
_STAIR_STEP = 0.001


def fit_calibration(
    val_pred: np.ndarray, val_true: np.ndarray, dimensions: list[str], method: str = "isotonic"
) -> Calibration:
    """Knots per dimension, mapping val predictions onto the oracle's scores.

    A "+rounded" method stores the map followed by rounding to integers (the
    oracle's scale) as a staircase of knots, so any stage applying
    calibration.json gets the rounding too.
    """
    base, _, then_round = method.partition("+")
    knots = {}
    for j, name in enumerate(dimensions):
        x, y = val_pred[:, j], val_true[:, j]
        if base == "rounded":  # rounding alone: nothing is fitted
            knots[name] = _staircase([0.0, 10.0], [0.0, 10.0])
            continue
        knots[name] = _isotonic_knots(x, y) if base == "isotonic" else _linear_knots(x, y)
        if then_round:
            knots[name] = _staircase(*knots[name])
    return Calibration(knots)


def _staircase(x: list[float], y: list[float]) -> tuple[list[float], list[float]]:
    """Knots of round(interp(., x, y)) on 0–10: each step is a jump 1e-9 wide."""
    grid = np.round(np.arange(0.0, 10.0 + _STAIR_STEP / 2, _STAIR_STEP), 6)
    levels = np.rint(np.interp(grid, x, y))
    xs, ys = [0.0], [float(levels[0])]
    for j in np.flatnonzero(np.diff(levels)) + 1:
        xs += [float(grid[j]) - 1e-9, float(grid[j])]
        ys += [float(levels[j - 1]), float(levels[j])]
    if xs[-1] < 10.0:
        xs, ys = xs + [10.0], ys + [float(levels[-1])]
    return xs, ys


def _isotonic_knots(x: np.ndarray, y: np.ndarray) -> tuple[list[float], list[float]]:
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=10.0, out_of_bounds="clip").fit(x, y)
    return iso.X_thresholds_.tolist(), iso.y_thresholds_.tolist()


def _linear_knots(x: np.ndarray, y: np.ndarray) -> tuple[list[float], list[float]]:
    # Match the oracle's mean and standard deviation on val. The line clipped to
    # 0–10 is piecewise linear, so knots at 0, 10 and where it meets 0 and 10
    # describe it exactly (inputs are already clipped to 0–10).
    slope = y.std() / max(x.std(), 1e-6)
    intercept = y.mean() - slope * x.mean()
    crossings = [(level - intercept) / slope for level in (0.0, 10.0)] if slope > 0 else []
    xs = sorted({0.0, 10.0, *(float(c) for c in crossings if 0.0 < c < 10.0)})
    return xs, [float(np.clip(intercept + slope * v, 0.0, 10.0)) for v in xs]


def rounded(pred: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(pred), 0.0, 10.0)


PostProcess = Callable[[np.ndarray], np.ndarray]


def post_processings(
    val_pred: np.ndarray, val_true: np.ndarray, dimensions: list[str]
) -> dict[str, PostProcess]:
    """Every post-processing variant, fitted on this predictor's val predictions."""
    iso = fit_calibration(val_pred, val_true, dimensions, "isotonic")
    lin = fit_calibration(val_pred, val_true, dimensions, "linear")
    return {
        "raw": lambda p: p,
        "rounded": rounded,
        "isotonic": lambda p: iso.apply(p, dimensions),
        "isotonic+rounded": lambda p: rounded(iso.apply(p, dimensions)),
        "linear": lambda p: lin.apply(p, dimensions),
        "linear+rounded": lambda p: rounded(lin.apply(p, dimensions)),
    }
