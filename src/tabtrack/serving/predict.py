"""`tabtrack predict`: score a file with a logged or registered model (batch scoring), its rows logged as `serve`
logs them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tabtrack.data.load import load_table
from tabtrack.serving.model import load
from tabtrack.serving.prediction_log import DEFAULT_LOCATION, new_request_id


def predict_file(
    model_uri: str,
    data: str | Path,
    output: str | Path,
    *,
    tracking_uri: str | None = None,
    log_predictions: str | None = DEFAULT_LOCATION,
    log_sample: float = 1.0,
) -> tuple[int, str]:
    """Write the input rows plus `prediction` and, for classifiers, `proba_<class>` per class; log the scored rows
    (one request id for the file, a row number for each row) where `log_predictions` says. Returns the row count
    and the request id."""
    from tabtrack.serving.prediction_log import opened_log

    model = load(model_uri, tracking_uri=tracking_uri)
    frame = load_table(data)
    predictions, proba = model.score(frame)
    request_id = new_request_id()
    prediction_log = opened_log(model, log_predictions, log_sample)
    if prediction_log is not None:
        prediction_log.record(frame, predictions, proba, request_id=request_id)
        prediction_log.close()
    result = with_predictions(frame, predictions, proba, model.classes, intervals=model.intervals)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    result.to_csv(output, index=False)
    return len(result), request_id


def with_predictions(frame: pd.DataFrame, predictions, proba, classes, *, intervals=None) -> pd.DataFrame:
    """`frame` plus `prediction` and, for classifiers, one `proba_<class>` column per class: what `predict` writes
    and `monitor` compares. With the model's conformal calibration, `lower` and `upper` (regression) or
    `prediction_set` (classification: the labels joined by `|`, most probable first)."""
    from tabtrack_runtime.intervals import bounds, prediction_sets

    result = frame.copy()
    result["prediction"] = predictions
    if proba is not None:
        for index, label in enumerate(classes):
            result[f"proba_{label}"] = proba[:, index]
    if intervals is not None and intervals["task"] == "regression":
        result["lower"], result["upper"] = bounds(intervals, predictions)
    elif intervals is not None and proba is not None:
        result["prediction_set"] = ["|".join(map(str, labels)) for labels in prediction_sets(intervals, proba, classes)]
    return result
