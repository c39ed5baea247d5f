"""The `model_intervals` MLflow model, as the "model from code" file MLflow runs to load it: the run's fitted
pipeline (its `model`, copied in as an artifact and loaded by MLflow's scikit-learn flavor, skops' trusted types and
all) answering with its conformal interval or set; the calibration comes as the model's `model_config`, so nothing
is pickled. `mlflow.pyfunc.load_model(uri).predict(rows)` returns `prediction` plus `lower`/`upper` (regression) or
`prediction_set` (classification).

The one module of tabtrack_runtime that imports MLflow, and registers the model when imported: only MLflow loads it.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.models import set_model

from tabtrack_runtime.intervals import with_intervals


class IntervalModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        import mlflow.sklearn

        self.calibration = dict(context.model_config["calibration"])
        self.model = mlflow.sklearn.load_model(context.artifacts["model"])

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return with_intervals(self.model, self.calibration, model_input)


set_model(IntervalModel())
