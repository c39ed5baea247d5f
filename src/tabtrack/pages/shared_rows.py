"""What the comparison page says about each run's test metrics against the first run's: a paired bootstrap
interval over the test rows both runs were scored on, or why there is none.

Rows pair by their `row` label in each run's `evaluation/test_predictions.csv` (the row in the file, for
`train`), and only when the two runs were tested on the same data (equal MLflow test-dataset digests where both
recorded one, or, where they differ because the runs used other columns, the very same test rows) and the paired
rows hold the same labels. Runs made before the file kept `row` pair by position,
when both files have the same labels in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tabtrack.evaluate.paired import LEVEL, RESAMPLES, PairedDifference, Scored, fast_metrics, paired_differences


@dataclass
class Versus:
    """One run against the first: each metric's PairedDifference, or `reason` when there is no interval."""

    differences: dict[str, PairedDifference] = field(default_factory=dict)
    reason: str | None = None
    rows: int = 0


def against_first(runs: Sequence, *, seed: int = 0, resamples: int = RESAMPLES, level: float = LEVEL) -> list:
    """`[None, Versus, Versus, ...]`: the first run, then every other run against it."""
    if not runs:
        return []
    first = runs[0]
    return [None, *(_versus(first, run, seed=seed, resamples=resamples, level=level) for run in runs[1:])]


def _versus(first, run, *, seed: int, resamples: int, level: float) -> Versus:
    if first.predictions is None or run.predictions is None:
        return Versus(reason="no test predictions recorded to pair (a run made before tabtrack kept them)")
    if not tested_alike(first, run):
        return Versus(reason="tested on different data (the test datasets' digests differ): no rows to pair")
    paired = _paired_rows(first.predictions, run.predictions)
    if isinstance(paired, str):
        return Versus(reason=paired)
    old, new = paired
    task = first.task
    y = old["y_true"].to_numpy(dtype=float) if task == "regression" else old["y_true"].astype(str).to_numpy()
    classes = [c.removeprefix("proba_") for c in old.columns if c.startswith("proba_")]
    with_proba = bool(classes) and [c for c in new.columns if c.startswith("proba_")] == [f"proba_{c}" for c in classes]
    recorded = set(_test_names(first)) & set(_test_names(run))
    metrics = [
        m for m in fast_metrics(task, len(classes) or len(set(y)))
        if m in recorded and (with_proba or m not in ("roc_auc", "log_loss"))
    ]  # fmt: skip
    if not metrics:
        return Versus(reason="no metric in common that can be recomputed from the test predictions", rows=len(y))
    models = [_scored(table, task, classes if with_proba else None) for table in (old, new)]
    found = paired_differences(
        task, y, models, metrics, classes=classes or None, resamples=resamples, seed=seed, level=level
    )
    return Versus(differences=found[1], rows=len(y))


def tested_alike(first, run) -> bool:
    """Equal test digests, or (a digest covers the columns a run used: another `drop_columns` changes it) the same
    test rows by their `row` labels."""
    if not (first.test_digest and run.test_digest) or first.test_digest == run.test_digest:
        return True
    old, new = first.predictions, run.predictions
    return (
        old is not None and new is not None and "row" in old.columns and "row" in new.columns
        and len(old) == len(new) and set(old["row"]) == set(new["row"])
    )  # fmt: skip


def _paired_rows(old: pd.DataFrame, new: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame] | str:
    """Both runs' predictions on the rows they share, in the same order; or why they share none."""
    if "row" in old.columns and "row" in new.columns:
        shared = old[["row"]].merge(new[["row"]].drop_duplicates(), on="row")["row"]
        if shared.empty:
            return "the two runs' test splits share no rows"
        old = old.set_index("row").loc[shared].reset_index()
        new = new.set_index("row").loc[shared].reset_index()
    elif len(old) != len(new):
        return "test predictions without row ids, of different lengths: the rows cannot be paired"
    if not np.array_equal(old["y_true"].astype(str).to_numpy(), new["y_true"].astype(str).to_numpy()):
        return "the rows labelled alike hold different targets: not the same test rows"
    return old, new


def _scored(table: pd.DataFrame, task: str, classes: Sequence[str] | None) -> Scored:
    if task == "regression":
        return Scored(table["y_pred"].to_numpy(dtype=float))
    proba = table[[f"proba_{c}" for c in classes]].to_numpy(dtype=float) if classes else None
    return Scored(table["y_pred"].astype(str).to_numpy(), proba)


def _test_names(run) -> list[str]:
    return [key.removeprefix("test_") for key in run.metrics if key.startswith("test_")]
