"""`serve` (by default where the run logged one, or `--runtime onnx`): answers from a run's `model_onnx` with ONNX
Runtime.

The session runs on one thread, as serve limits scikit-learn's (single rows gain nothing from more). Rows reach
it typed by the pipeline's input step (LoadedModel.prepare), so both runtimes refuse the same bad rows alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tabtrack.errors import TabtrackError

ONNX_MODEL = "model_onnx"


@dataclass
class OnnxScorer:
    session: Any
    inputs: dict[str, str]  # column -> "number" or "text"
    classes: list | None

    @classmethod
    def of_run(cls, run_id: str | None, uri: str, *, classes: list | None, required: bool = True) -> OnnxScorer | None:
        """The scorer of the run's model_onnx; where there is none (or no ONNX Runtime): an error naming the fix, or
        None when not `required`."""
        import mlflow
        from mlflow.exceptions import MlflowException

        from tabtrack.extras import installed, require
        from tabtrack.models.portable import METADATA_KEY, session_for

        if not required and not installed("onnxruntime"):
            return None
        require("onnxruntime", purpose="--runtime onnx")
        try:
            if run_id is None:
                raise OSError(f"{uri!r} names no run")
            folder = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/{ONNX_MODEL}")
            described = mlflow.models.Model.load(folder)
        except (MlflowException, OSError):
            if not required:
                return None
            raise TabtrackError(
                f"run {run_id} has no {ONNX_MODEL}: train with --onnx, or serve with --runtime sklearn."
            ) from None
        session = session_for(f"{folder}/{described.flavors['onnx']['data']}", threads=1)
        return cls(session, dict(described.metadata[METADATA_KEY]["inputs"]), classes)

    def score(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        from tabtrack.models.portable import feeds, probability_output

        if self.classes is None:
            (values,) = self.session.run(None, feeds(rows, self.inputs))[:1]
            return np.asarray(values, dtype="float64").ravel(), None
        names = [probability_output(c) for c in self.classes]
        proba = np.hstack(self.session.run(names, feeds(rows, self.inputs))).astype("float64")
        return np.asarray(self.classes)[np.argmax(proba, axis=1)], proba
