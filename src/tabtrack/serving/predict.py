"""`tabtrack predict`: score a file with a logged or registered model."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tabtrack.data.load import load_table
from tabtrack.serving.model import load


def predict_file(model_uri: str, data: str | Path, output: str | Path, *, tracking_uri: str | None = None) -> int:
    """Write the input rows plus `prediction` and, for classifiers, `proba_<class>` per class; returns the row count."""
    model = load(model_uri, tracking_uri=tracking_uri)
    frame = load_table(data)
    predictions, proba = model.score(frame)
    result = frame.copy()
    result["prediction"] = predictions
    if proba is not None:
        for index, label in enumerate(model.classes):
            result[f"proba_{label}"] = proba[:, index]
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(result).to_csv(output, index=False)
    return len(result)
