"""The rows a converted model is checked on against its scikit-learn pipeline (`export`, `serve` converting at
start-up): the run's own test split when its data file is still where the run read it, unchanged (its
`data.sha256`), i.e. the rows `evaluation/test_predictions.csv` names; otherwise the model's input example. Both add
probe rows (models/portable.py).
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from tabtrack.errors import TabtrackError


def run_rows(run_id: str | None, uri: str) -> tuple[pd.DataFrame, str]:
    """The run's test rows, raw, without its target and dropped columns, else the model's input example; and
    what they are, in words."""
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
    return input_example(uri), "the model's input example (the run's data file is not where it was, unchanged)"


def input_example(uri: str) -> pd.DataFrame:
    import mlflow

    folder = mlflow.artifacts.download_artifacts(uri)
    example = mlflow.models.Model.load(folder).load_input_example(folder)
    if example is None:
        raise TabtrackError(f"model {uri!r} has no input example and its run's data file is gone: nothing to check on.")
    return pd.DataFrame(example)
