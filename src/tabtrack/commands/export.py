"""`tabtrack export MODEL --format onnx -o model.onnx`: a logged model as one portable ONNX file, checked first.

The check runs on the run's own test split when its data file is still where the run read it, unchanged (its
`data.sha256`): the rows `evaluation/test_predictions.csv` names. Otherwise on the input example the model was
logged with, and the command says so.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tabtrack.errors import TabtrackError

FORMATS = ("onnx",)


@dataclass
class Exported:
    path: Path
    verification: Any  # models.portable.Verification
    checked_on: str  # what the rows were: "the run's test split" or "the model's input example"
    inputs: dict[str, str]


def export_onnx(model_uri: str, output: Path, *, tracking_uri: str | None = None) -> Exported:
    from tabtrack.models import portable
    from tabtrack.models.loading import load_logged_model
    from tabtrack.serving.model import describe

    if re.fullmatch(r"[0-9a-f]{32}", model_uri):  # a run's id: its model
        model_uri = f"runs:/{model_uri}/model"
    try:
        uri, lineage = describe(model_uri, tracking_uri=tracking_uri)
    except TabtrackError as exc:
        run = re.fullmatch(r"runs:/([0-9a-f]{32})/model", model_uri)
        if run is None:
            raise
        raise TabtrackError(f"run {run[1]} has no model to export ({exc}); pass a run that logged one, e.g. one of "
                            "a comparison's model runs rather than its parent.") from exc  # fmt: skip
    pipeline = load_logged_model(uri)
    rows, checked_on = _test_rows(lineage.get("run_id"), uri)
    converted = portable.convert(pipeline, rows)
    check = portable.verify(converted, pipeline, rows)
    if not check.passed:
        raise TabtrackError(f"the ONNX model answers differently from {uri} ({check.summary()}); nothing written.")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(converted.model.SerializeToString())
    return Exported(output, check, checked_on, converted.inputs)


def _test_rows(run_id: str | None, uri: str) -> tuple[pd.DataFrame, str]:
    """The run's test rows, raw, without its target and dropped columns; else the model's input example."""
    from mlflow import MlflowClient

    from tabtrack.commands.runs import artifact_text
    from tabtrack.data.fingerprint import sha256_of
    from tabtrack.data.load import load_table
    from tabtrack.evaluate.fitted_model import PREDICTIONS_FILE

    if run_id:
        client = MlflowClient()
        run = client.get_run(run_id)
        path, digest = run.data.tags.get("data.path"), run.data.tags.get("data.sha256")
        listed = artifact_text(client, run_id, PREDICTIONS_FILE)
        if path and digest and listed and Path(path).is_file() and sha256_of(path) == digest:
            labels = pd.read_csv(io.StringIO(listed))
            if "row" in labels.columns:
                table = load_table(path)
                unused = [run.data.params.get("target"), *run.data.params.get("drop_columns", "").split(",")]
                rows = table.loc[labels["row"]].drop(columns=[c for c in unused if c in table.columns])
                return rows.reset_index(drop=True), f"the run's {len(rows)} test rows"
    return _input_example(uri), "the model's input example (the run's data file is not where it was, unchanged)"


def _input_example(uri: str) -> pd.DataFrame:
    import mlflow

    folder = mlflow.artifacts.download_artifacts(uri)
    example = mlflow.models.Model.load(folder).load_input_example(folder)
    if example is None:
        raise TabtrackError(f"model {uri!r} has no input example and its run's data file is gone: nothing to check on.")
    return pd.DataFrame(example)
