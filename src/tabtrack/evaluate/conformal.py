"""Split conformal calibration: how far off the fitted model is on calibration rows it never saw, as the quantile
that makes intervals (regression: `prediction ± quantile` of the absolute residuals) or sets (classification: the
classes whose probability is at least `1 - quantile` of the scores `1 - p(true class)`) hold for `level` of new
rows. Rows: a share of the training split held out of the fit (data/prepare.py), so the test split stays an honest
check of the coverage (`test_interval_coverage`) and of the price (`test_interval_width`: the mean interval width,
or the mean set size).

Our own code, not MAPIE: the calibration is one quantile over one pass of the model on the calibration rows,
stored as a plain dict in the logged model's metadata, so predict, serve and pyfunc apply it without importing a
library (and MAPIE 1.x's conformalize/predict_interval would have to ship inside every logged model).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tabtrack.errors import TabtrackError
from tabtrack_runtime.intervals import bounds, prediction_sets

METHODS = {"regression": "split conformal, absolute residual", "classification": "split conformal, 1 - p(true class)"}


def rows_needed(level: float) -> int:
    """The fewest calibration rows `level` can be calibrated on: the ceil((n + 1) x level)-th score must exist."""
    return int(np.ceil(level / (1 - level)))


def calibrate(model: Any, X: Any, y: Any, *, task: str, classes: Sequence | None, level: float) -> dict[str, Any]:
    """The calibration `level` needs, from the model's answers on the calibration rows `X`, `y`."""
    y = np.asarray(y)
    if task == "regression":
        scores = np.abs(y.astype(float) - np.asarray(model.predict(X), dtype=float))
    else:
        proba = np.asarray(model.predict_proba(X), dtype=float)
        classes = list(getattr(model, "classes_", classes))  # the order of predict_proba's columns
        position = {c: i for i, c in enumerate(classes)}
        unknown = sorted({v for v in y.tolist() if v not in position}, key=str)
        if unknown:
            raise TabtrackError(f"calibration labels {unknown[:5]} are not among the model's classes {list(classes)}.")
        scores = 1.0 - proba[np.arange(len(y)), [position[v] for v in y.tolist()]]
    rank = int(np.ceil((len(scores) + 1) * level))  # hold_out_calibration made sure rank <= rows
    quantile = float(np.sort(scores)[min(rank, len(scores)) - 1])
    return {"level": level, "task": task, "method": METHODS[task], "quantile": quantile, "rows": len(scores)}


def calibrate_on(model: Any, rows: Any, *, level: float | None, task: str, classes: Sequence | None) -> dict[str, Any]:
    """`calibrate` for the own-code door, `Run.evaluate(..., intervals=LEVEL, calibration=(X_cal, y_cal))`; a
    missing or short half is one line naming it."""
    if level is None or not 0 < level < 1:
        raise TabtrackError(f"evaluate(intervals=...): give the share of rows intervals must hold for, in (0, 1), "
                            f"e.g. 0.9; got {level!r}.")  # fmt: skip
    if rows is None or len(rows) != 2:
        raise TabtrackError("evaluate(intervals=...) needs calibration=(X_cal, y_cal): rows the model was not "
                            "fitted on (hold out a share of the training rows).")  # fmt: skip
    needed = rows_needed(level)
    if len(rows[1]) < needed:
        raise TabtrackError(
            f"evaluate(intervals={level}) needs at least {needed} calibration rows; got {len(rows[1])}."
        )
    return calibrate(model, rows[0], rows[1], task=task, classes=classes, level=level)


def coverage(calibration: Mapping[str, Any], y_true: Any, predictions: Any, proba: Any, classes: Sequence | None):
    """`{"interval_coverage", "interval_width"}` on rows with known answers (the test split)."""
    y = np.asarray(y_true)
    if calibration["task"] == "regression":
        lower, upper = bounds(calibration, predictions)
        inside = (lower <= y.astype(float)) & (y.astype(float) <= upper)
        return {"interval_coverage": float(inside.mean()), "interval_width": float(np.mean(upper - lower))}
    sets = prediction_sets(calibration, proba, classes)
    labels = [v.item() if hasattr(v, "item") else v for v in y]
    inside = [label in chosen for label, chosen in zip(labels, sets, strict=True)]
    return {"interval_coverage": float(np.mean(inside)), "interval_width": float(np.mean([len(s) for s in sets]))}
